import itertools
import math

import numpy as np
import pytest
import torch

from rnnkit.data import Vocab
from rnnkit.models import ctc
from rnnkit.tasks import charlm


def one_hot_scores(path, labels=4):
    """(T, V) log-probabilities that make ``path`` the best path by a wide margin."""
    scores = torch.full((len(path), labels), math.log(0.01 / (labels - 1)))
    scores[torch.arange(len(path)), torch.tensor(path)] = math.log(0.99)
    return scores


def peaked(T, V, seed):
    """Random (T, V) log-probabilities, each frame peaked on one symbol, blank often."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, V))
    best = np.where(rng.random(T) < 0.4, 0, rng.integers(0, V, T))
    logits[np.arange(T), best] += 8.0
    return torch.log_softmax(torch.tensor(logits), -1)


@pytest.mark.parametrize(
    "path, labels",
    [
        ([1, 1, 0, 1, 2, 2, 0, 0, 3], [1, 1, 2, 3]),  # a blank separates a repeat
        ([0, 0, 0, 0], []),  # all blank
        ([2, 2, 2], [2]),  # repeats merge
        ([0, 3, 0], [3]),
        ([1, 2, 1, 2], [1, 2, 1, 2]),
    ],
)
def test_greedy_collapses_repeats_and_drops_blanks(path, labels):
    assert ctc.collapse(path) == labels
    assert ctc.greedy(one_hot_scores(path)) == labels


def test_greedy_with_another_blank_index():
    assert ctc.collapse([3, 1, 1, 3, 1, 2, 3], blank=3) == [1, 1, 2]


def test_greedy_batch_reads_each_row_up_to_its_length():
    rows = [[1, 1, 0, 2, 3, 3], [2, 0, 2, 1, 1, 1]]
    scores = torch.stack([one_hot_scores(r) for r in rows], dim=1)  # (T, B, V)
    assert scores.shape == (6, 2, 4)
    assert ctc.greedy_batch(scores, [6, 3]) == [[1, 2, 3], [2, 2]]


@pytest.mark.parametrize("cuts", [[1, 2, 3], [4], [2, 2, 2, 2], [7]])
def test_greedy_stream_equals_whole_sequence_across_chunk_boundaries(cuts):
    path = [1, 1, 1, 0, 2, 2, 2, 0, 1]  # a repeat of 1 and of 2 straddles most cuts
    scores, stream, labels, start = one_hot_scores(path), ctc.GreedyStream(), [], 0
    for size in cuts + [len(path)]:
        labels += stream.push(scores[start : start + size])
        start += size
    assert labels == ctc.greedy(scores) == [1, 2, 1]


def test_beam_one_equals_greedy_on_peaked_distributions():
    for seed in range(5):
        scores = peaked(30, 6, seed)
        assert ctc.beam_decode(scores, beam=1) == ctc.greedy(scores)


def test_beam_finds_the_labelling_that_greedy_misses():
    # Each frame: blank 0.6, "a" 0.4. The best path is blank blank (0.36), but "a" has
    # three paths (aa, a_, _a) summing to 0.64.
    scores = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]]))
    assert ctc.greedy(scores) == []
    best, score = ctc.prefix_beam_search(scores, beam=4)[0]
    assert best == [1]
    assert score == pytest.approx(math.log(0.64))


def brute_force(probs: np.ndarray) -> dict[tuple, float]:
    """p(labelling | x) by summing over every path of T frames (V**T of them)."""
    T, V = probs.shape
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(ctc.collapse(path))
        totals[labels] = totals.get(labels, 0.0) + float(np.prod(probs[np.arange(T), path]))
    return totals


def test_prefix_beam_search_sums_every_path_like_brute_force():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=4)  # (T=4, V=3)
    exact = brute_force(probs)
    assert sum(exact.values()) == pytest.approx(1.0)
    found = ctc.prefix_beam_search(np.log(probs), beam=100, prune=-math.inf)
    assert len(found) == len(exact)
    for labels, score in found:
        assert math.exp(score) == pytest.approx(exact[tuple(labels)], rel=1e-9)
    assert tuple(found[0][0]) == max(exact, key=exact.get)


class FavourLabel:
    """A language model that puts almost all its probability on one label."""

    def __init__(self, favoured: int, labels: int):
        self.table = np.full(labels, math.log(1e-3))
        self.table[favoured] = math.log(0.99)
        self.resets = 0

    def next_log_probs(self, prefix):
        return self.table

    def end_log_prob(self, prefix):
        return 0.0

    def reset(self):
        self.resets += 1


def test_shallow_fusion_moves_a_close_call_and_weight_zero_ignores_it():
    # Frame 2 is nearly a tie between labels 1 and 2; the model slightly prefers 1.
    scores = torch.log(torch.tensor([[0.1, 0.45, 0.45], [0.05, 0.5, 0.45], [0.9, 0.05, 0.05]]))
    lm = FavourLabel(2, 3)
    assert ctc.beam_decode(scores, beam=4) == [1]
    assert ctc.beam_decode(scores, beam=4, lm=lm, lm_weight=0.0) == [1]
    assert ctc.beam_decode(scores, beam=4, lm=lm, lm_weight=0.5) == [2]
    assert lm.resets == 1


def test_charlm_scorer_matches_the_model_over_the_whole_prefix():
    torch.manual_seed(0)
    vocab = Vocab.build("one two three\n")
    model = charlm.CharLM(len(vocab), charlm.Config(hidden=16, cell="gru")).eval()
    labels = ["<blank>", *"ehnortw "]
    scorer = ctc.CharLMScorer(model, vocab, labels)
    prefix = tuple(labels.index(c) for c in "two t")
    with torch.no_grad():
        logits, _ = model(vocab.encode("\ntwo t").view(-1, 1))  # (T, 1, V_lm)
    expected = torch.log_softmax(logits[-1, 0], -1)
    got = scorer.next_log_probs(prefix)
    assert got.shape == (len(labels),)
    for index, char in enumerate(labels[1:], start=1):
        assert got[index] == pytest.approx(float(expected[vocab.encode(char)[0]]), abs=1e-5)
    assert scorer.end_log_prob(prefix) == pytest.approx(float(expected[vocab.encode("\n")[0]]))


def test_error_rates_count_edits_over_the_corpus():
    rates = ctc.error_rates(["one two", "three"], ["one", "three"])
    assert rates["wer"] == pytest.approx(1 / 3)  # one deleted word of three
    assert rates["cer"] == pytest.approx(4 / 12)  # " two" deleted, of 12 characters
    assert ctc.error_rates(["four"], ["four"]) == {"cer": 0.0, "wer": 0.0}
    with pytest.raises(ValueError, match="2 references but 1"):
        ctc.error_rates(["a", "b"], ["a"])
