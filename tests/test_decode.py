"""Decoding: greedy, beam search and sampling over a generic step function."""

from typing import NamedTuple

import pytest
import torch

from rnnkit.models import decode
from rnnkit.models.seq2seq import Seq2Seq

SOS, EOS, PAD = 1, 2, 0


class TableState(NamedTuple):
    previous: torch.Tensor  # (B,) the token fed at the last step
    steps: torch.Tensor  # (B,) steps taken


def table_step(table: torch.Tensor):
    """A model whose next-token logits depend only on the previous token: table (V, V)."""

    def step(tokens, state):
        state = TableState(tokens, state.steps + 1)
        return table[tokens], state

    return step


def start(batch: int) -> TableState:
    return TableState(torch.full((batch,), SOS), torch.zeros(batch, dtype=torch.long))


def test_beam_width_one_is_greedy_on_a_table():
    torch.manual_seed(0)
    table = torch.randn(7, 7) * 3
    step = table_step(table)
    greedy = decode.greedy(step, start(4), 4, SOS, EOS, 12)
    beam = decode.beam_search(step, start(4), 4, SOS, EOS, 12, width=1)
    assert torch.equal(greedy.tokens, beam.tokens)
    assert torch.equal(greedy.lengths, beam.lengths)
    torch.testing.assert_close(greedy.log_prob, beam.log_prob)


def test_beam_width_one_is_greedy_on_a_seq2seq_model():
    torch.manual_seed(0)
    for attention in ("none", "bahdanau", "luong"):
        model = Seq2Seq(12, 9, 8, 16, attention=attention).eval()
        source = torch.randint(4, 12, (3, 5))
        state = model.start(source, torch.tensor([5, 3, 1]))
        greedy = decode.greedy(model.step, state, 3, SOS, EOS, 10)
        beam = decode.beam_search(model.step, state, 3, SOS, EOS, 10, width=1)
        assert torch.equal(greedy.tokens, beam.tokens), attention
        torch.testing.assert_close(greedy.log_prob, beam.log_prob)


def test_greedy_stops_at_eos_and_pads_after_it():
    table = torch.full((5, 5), -10.0)
    table[SOS, 3] = table[3, 4] = table[4, EOS] = 0.0  # sos -> 3 -> 4 -> eos
    found = decode.greedy(table_step(table), start(2), 2, SOS, EOS, 10)
    assert found.tokens.tolist() == [[3, 4, EOS], [3, 4, EOS]]
    assert found.lengths.tolist() == [3, 3] and found.finished.all()


def test_max_length_guard_stops_a_model_that_never_ends():
    table = torch.zeros(5, 5)
    table[:, EOS] = -torch.inf
    for found in (
        decode.greedy(table_step(table), start(3), 3, SOS, EOS, 6),
        decode.beam_search(table_step(table), start(3), 3, SOS, EOS, 6, width=3),
        decode.sample(table_step(table), start(3), 3, SOS, EOS, 6),
    ):
        assert found.tokens.shape == (3, 6)
        assert found.lengths.tolist() == [6, 6, 6] and not found.finished.any()


def test_beam_search_finds_what_greedy_misses():
    # Greedy takes 3 (p 0.6) but every continuation of 3 is poor; 4 (p 0.4) leads to eos surely.
    logp = torch.full((6, 6), -30.0)
    logp[SOS, 3], logp[SOS, 4] = torch.tensor(0.6).log(), torch.tensor(0.4).log()
    logp[3, 5] = logp[3, EOS] = torch.tensor(0.5).log()
    logp[5, EOS] = 0.0
    logp[4, EOS] = 0.0
    greedy = decode.greedy(table_step(logp), start(1), 1, SOS, EOS, 5)
    beam = decode.beam_search(table_step(logp), start(1), 1, SOS, EOS, 5, width=2, length_penalty=0)
    assert greedy.tokens[0, 0] == 3
    assert beam.tokens[0].tolist() == [4, EOS]
    assert beam.log_prob.item() > greedy.log_prob.item()


def test_length_normalisation_changes_the_winner():
    # "3 eos" has p 0.5/0.95; "4 5 eos" has p 0.45/0.95, a better mean log-probability per token.
    logp = torch.full((6, 6), -30.0)
    logp[SOS, 3], logp[SOS, 4] = torch.tensor(0.5).log(), torch.tensor(0.45).log()
    logp[3, EOS] = logp[4, 5] = logp[5, EOS] = 0.0
    step = table_step(logp)
    plain = decode.beam_search(step, start(1), 1, SOS, EOS, 8, width=3, length_penalty=0.0)
    mean = decode.beam_search(step, start(1), 1, SOS, EOS, 8, width=3, length_penalty=1.0)
    assert plain.tokens[0].tolist() == [3, EOS]
    assert mean.tokens[0].tolist() == [4, 5, EOS]


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    torch.manual_seed(0)
    step = table_step(torch.randn(8, 8))

    def draw(seed, top_k=0):
        generator = torch.Generator().manual_seed(seed)
        return decode.sample(step, start(5), 5, SOS, EOS, 9, top_k=top_k, generator=generator)

    assert torch.equal(draw(3).tokens, draw(3).tokens)
    assert torch.equal(
        draw(3, top_k=1).tokens, decode.greedy(step, start(5), 5, SOS, EOS, 9).tokens
    )
    with pytest.raises(ValueError, match="temperature must be positive"):
        decode.sample(step, start(5), 5, SOS, EOS, 9, temperature=0.0)


def test_select_keeps_the_nesting():
    state = {
        "a": (torch.arange(3), [torch.arange(6).view(3, 2)]),
        "b": TableState(*torch.eye(3)[:2]),
    }
    picked = decode.select(state, torch.tensor([2, 2, 0]))
    assert picked["a"][0].tolist() == [2, 2, 0]
    assert picked["a"][1][0].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert isinstance(picked["b"], TableState) and picked["b"].previous.shape == (3,)


def test_a_state_without_the_batch_first_is_refused():
    step = table_step(torch.zeros(4, 4))
    bad = TableState(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch \(3\) as its first dimension; got shape \(2,\)"):
        decode.greedy(step, bad, 3, SOS, EOS, 4)
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        decode.greedy(step, start(3), 3, SOS, EOS, 0)


def test_logits_of_the_wrong_shape_are_refused():
    def step(tokens, state):
        return torch.zeros(4), state  # (V,) instead of (B, V)

    with pytest.raises(ValueError, match=r"logits of shape \(2, vocabulary\), got \(4,\)"):
        decode.greedy(step, start(2), 2, SOS, EOS, 3)


def looping_table() -> torch.Tensor:
    """Logits after any token: 3 best, then 4, 5 and eos; a model caught in a loop of 3s."""
    table = torch.full((6, 6), -10.0)
    table[:, 3], table[:, 4], table[:, 5], table[:, EOS] = 0.0, -1.0, -2.0, -3.0
    return table


def repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_the_repetition_guard_blocks_an_ngram_from_coming_back():
    step = table_step(looping_table())
    loop = decode.greedy(step, start(2), 2, SOS, EOS, 8)
    assert loop.tokens[0].tolist() == [3] * 8 and not loop.finished.any()
    once = decode.greedy(step, start(2), 2, SOS, EOS, 8, no_repeat_ngram=1)
    assert once.tokens.tolist() == [[3, 4, 5, EOS]] * 2  # every token at most once
    # bigrams: 3 3, then 3 after 3 is blocked (4), 3, then 5, 3, and after 3 only eos is left
    pairs = decode.greedy(step, start(1), 1, SOS, EOS, 12, no_repeat_ngram=2)
    assert pairs.tokens[0].tolist() == [3, 3, 4, 3, 5, 3, EOS] and pairs.finished.all()
    # the log-probability is the model's own for the tokens written
    logp = torch.log_softmax(looping_table()[0], 0)
    torch.testing.assert_close(pairs.log_prob[0], logp[[3, 3, 4, 3, 5, 3, EOS]].sum())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_beam_search_and_sampling_keep_the_guard_too(n):
    step = table_step(looping_table())
    beam = decode.beam_search(step, start(2), 2, SOS, EOS, 15, width=3, no_repeat_ngram=n)
    one = decode.beam_search(step, start(2), 2, SOS, EOS, 15, width=1, no_repeat_ngram=n)
    greedy = decode.greedy(step, start(2), 2, SOS, EOS, 15, no_repeat_ngram=n)
    assert torch.equal(one.tokens, greedy.tokens)
    generator = torch.Generator().manual_seed(0)
    drawn = decode.sample(step, start(2), 2, SOS, EOS, 15, generator=generator, no_repeat_ngram=n)
    for found in (beam, greedy, drawn):
        for row, length in zip(found.tokens.tolist(), found.lengths.tolist(), strict=True):
            assert not repeats(row[:length], n), row


def test_repeated_ngrams_marks_what_would_complete_a_seen_ngram():
    history = torch.tensor([[5, 6, 5, 7, 5], [4, 4, 4, 4, 4]])
    assert decode.repeated_ngrams(history, 2, 9).nonzero().tolist() == [[0, 6], [0, 7], [1, 4]]
    assert decode.repeated_ngrams(history, 3, 9).nonzero().tolist() == [[1, 4]]
    assert decode.repeated_ngrams(history, 1, 9)[0].nonzero().flatten().tolist() == [5, 6, 7]
    assert not decode.repeated_ngrams(history, 0, 9).any()
    assert not decode.repeated_ngrams(history[:, :2], 3, 9).any()  # no n-gram yet
