"""Language-model pretraining: each direction predicts its neighbour and never sees it."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.layers import make_layer
from rnnkit.tasks.classify_pretrain import IGNORE, pretrain, targets


def test_targets_golden_values():
    # Two texts, lengths 3 and 1, padded with 0; ids from 4 up are rare and share class 4.
    ids = torch.tensor([[7, 2], [3, 0], [4, 0]])  # (T=3, B=2)
    following, preceding = targets(ids, torch.tensor([3, 1]), classes=5)
    assert following.shape == preceding.shape == (3, 2)
    assert following[:, 0].tolist() == [3, 4, IGNORE]  # next token; 7 is rare -> 4
    assert preceding[:, 0].tolist() == [IGNORE, 4, 3]  # previous token
    assert following[:, 1].tolist() == preceding[:, 1].tolist() == [IGNORE] * 3


def small_model(vocab=20, bidirectional=True):
    torch.manual_seed(0)
    embed = nn.Embedding(vocab, 8, padding_idx=0)
    return embed, make_layer("lstm", 8, 16, bidirectional=bidirectional)


def random_texts(rng, n, vocab, pattern=False):
    """Texts of 5 to 12 tokens from ids 4..vocab-1: uniform noise, or a cycle 4, 5, 6, ..."""
    texts = []
    for _ in range(n):
        length = int(rng.integers(5, 13))
        if pattern:
            start = int(rng.integers(vocab - 4))
            texts.append([4 + (start + k) % (vocab - 4) for k in range(length)])
        else:
            texts.append(rng.integers(4, vocab, size=length).tolist())
    return texts


@pytest.mark.parametrize("bidirectional", [True, False])
def test_noise_stays_at_chance_and_a_pattern_is_learned(bidirectional):
    # If either direction could see the token it predicts, noise would be learned too.
    rng, vocab = np.random.default_rng(0), 20
    chance = math.log(vocab - 4)  # 16 equally likely tokens
    embed, rnn = small_model(vocab, bidirectional)
    noise = pretrain(embed, rnn, random_texts(rng, 200, vocab), 0, classes=vocab, lr=2e-2,
                     dropout=0.0, steps=80, batch_size=16)  # fmt: skip
    assert noise["steps"] == 80
    assert noise["last_loss"] > chance - 0.3  # a peeking model falls towards 0
    embed, rnn = small_model(vocab, bidirectional)
    pattern = pretrain(embed, rnn, random_texts(rng, 200, vocab, pattern=True), 0,
                       classes=vocab, lr=2e-2, dropout=0.0, steps=80, batch_size=16)  # fmt: skip
    assert pattern["last_loss"] < 0.5 * chance


def test_pretraining_changes_the_embedding_and_the_layer():
    embed, rnn = small_model()
    before = [p.detach().clone() for p in [*embed.parameters(), *rnn.parameters()]]
    pretrain(embed, rnn, [[4, 5, 6], [7, 8]], 0, classes=20, steps=2, batch_size=2)
    after = [*embed.parameters(), *rnn.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_bad_inputs_are_refused():
    embed = nn.Embedding(20, 8)
    deep = make_layer("lstm", 8, 16, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="num_layers=1, got 2"):
        pretrain(embed, deep, [[4, 5]], 0, steps=1)
    with pytest.raises(ValueError, match="at least two tokens"):
        pretrain(*small_model(), [[4], [5]], 0, steps=1)
