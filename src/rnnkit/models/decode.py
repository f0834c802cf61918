"""Writing a sequence token by token: greedy, beam search and sampling, batched.

Any model that can take one step can be decoded; the functions here know nothing of
encoders, images or text. A model hands them

- ``step(tokens, state) -> (logits, state)``: ``tokens`` (B,) are the previous outputs
  (``sos`` at the first step), ``logits`` (B, V) score the next token;
- an initial ``state``: a tensor, or any nesting of tuples (NamedTuples too), lists and
  dicts of tensors, each with the batch as its first dimension, so that beam search can
  reorder hypotheses with :func:`select`. The translator's state holds the decoder's hidden
  state and the encoder's memory; a captioner's holds what it derived from the image.

Every function returns a :class:`Decoded`. A row stops at its first ``eos`` (kept in the
output, padded with ``pad`` after it) or at ``max_length`` tokens, the guard against a model
that never says ``eos``. With ``no_repeat_ngram`` n > 0 no n-gram repeats within an output
(:func:`repeated_ngrams`), the guard against a model caught in a loop (",,,,", "de la de la").

Shape letters: B batch, K beam width, V vocabulary, T output length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Step = Callable[[Tensor, object], tuple[Tensor, object]]


@dataclass
class Decoded:
    """Decoder outputs for a batch, one row per input."""

    tokens: Tensor  # (B, T) token ids after sos; eos included where reached, then pad
    lengths: Tensor  # (B,) tokens up to and including eos (T for a row the guard stopped)
    log_prob: Tensor  # (B,) sum of the log-probabilities of the row's tokens
    finished: Tensor  # (B,) True where the row reached eos within max_length


def select(state, index: Tensor):
    """The rows ``index`` of every tensor in ``state``, keeping its nesting."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a NamedTuple
        return type(state)(*(select(part, index) for part in state))
    if isinstance(state, (tuple, list)):
        return type(state)(select(part, index) for part in state)
    if isinstance(state, dict):
        return {key: select(part, index) for key, part in state.items()}
    raise TypeError(f"a decoding state holds tensors, tuples, lists or dicts, got {type(state)}")


def tensors_of(state) -> list[Tensor]:
    if isinstance(state, Tensor):
        return [state]
    parts = state.values() if isinstance(state, dict) else state if state is not None else []
    return [t for part in parts for t in tensors_of(part)]


def check_start(state, batch_size: int, max_length: int) -> torch.device:
    """Every tensor of the state must have ``batch_size`` rows; return their device."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    tensors = tensors_of(state)
    if not tensors:
        raise ValueError("the decoding state holds no tensor (nothing to start from)")
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != batch_size:
            raise ValueError(
                f"every tensor of the decoding state needs the batch ({batch_size}) as its "
                f"first dimension; got shape {tuple(t.shape)}"
            )
    return tensors[0].device


def repeated_ngrams(history: Tensor, n: int, vocabulary: int) -> Tensor:
    """(N, V) True for each token that would complete an n-gram already in its row of
    ``history`` (N, t): blocking them keeps an output from repeating itself (Paulus et al.
    2018, section 2.5, block repeated trigrams in beam search; fairseq and Hugging Face call
    it no_repeat_ngram_size). n 0 blocks nothing; n 1 blocks every token already written."""
    N, t = history.shape
    blocked = torch.zeros(N, vocabulary, dtype=torch.bool, device=history.device)
    if n < 1 or t < n:
        return blocked
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n) every n-gram so far
    prefix = history[:, t - n + 1 :].unsqueeze(1)  # (N, 1, n - 1) the last n - 1 tokens
    rows, starts = (windows[:, :, :-1] == prefix).all(dim=2).nonzero(as_tuple=True)
    blocked[rows, windows[rows, starts, -1]] = True
    return blocked


def without_repeats(log_probs: Tensor, history: Tensor, n: int) -> Tensor:
    """``log_probs`` (N, V) with the tokens :func:`repeated_ngrams` blocks at -inf."""
    if n < 1:
        return log_probs
    return log_probs.masked_fill(repeated_ngrams(history, n, log_probs.shape[1]), -torch.inf)


def checked_step(step: Step, tokens: Tensor, state) -> tuple[Tensor, object]:
    """One step; its logits must be (B, V) for the B tokens given."""
    logits, state = step(tokens, state)
    if logits.dim() != 2 or logits.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"step must return logits of shape ({tokens.shape[0]}, vocabulary), "
            f"got {tuple(logits.shape)}"
        )
    return logits, state


@torch.no_grad()
def generate(
    step: Step,
    state,
    batch_size: int,
    sos: int,
    eos: int,
    max_length: int,
    choose: Callable[[Tensor], Tensor],
    pad: int = 0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """Feed each chosen token back in: ``choose`` maps (B, V) log-probabilities to (B,) ids,
    after the tokens that would repeat an n-gram of ``no_repeat_ngram`` are blocked."""
    device = check_start(state, batch_size, max_length)
    tokens = torch.full((batch_size,), sos, dtype=torch.long, device=device)
    out = torch.full((batch_size, max_length), pad, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch_size, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    lengths = torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    for t in range(max_length):
        logits, state = checked_step(step, tokens, state)
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, V)
        log_probs = without_repeats(log_probs, out[:, :t], no_repeat_ngram)
        tokens = choose(log_probs).masked_fill(finished, pad)  # finished rows write pad
        picked = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (B,)
        log_prob += picked.masked_fill(finished, 0.0)
        out[:, t] = tokens
        ends = ~finished & (tokens == eos)
        lengths[ends], finished = t + 1, finished | ends
        if finished.all():
            out = out[:, : t + 1]
            break
    return Decoded(out, lengths, log_prob, finished)


def greedy(
    step: Step,
    state,
    batch_size: int,
    sos: int,
    eos: int,
    max_length: int,
    pad: int = 0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """At each step the most likely token (that repeats no n-gram of ``no_repeat_ngram``)."""

    def most_likely(log_probs: Tensor) -> Tensor:
        return log_probs.argmax(dim=-1)

    return generate(
        step, state, batch_size, sos, eos, max_length, most_likely, pad, no_repeat_ngram
    )


def sample(
    step: Step,
    state,
    batch_size: int,
    sos: int,
    eos: int,
    max_length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    pad: int = 0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """At each step a token drawn from softmax(logits / temperature), among the ``top_k``
    most likely when ``top_k`` > 0 (and repeating no n-gram of ``no_repeat_ngram``)."""
    if temperature <= 0:
        raise ValueError(
            f"temperature must be positive (greedy() takes the most likely), got {temperature}"
        )

    def draw(log_probs: Tensor) -> Tensor:
        scores = log_probs / temperature  # (B, V)
        if 0 < top_k < scores.shape[1]:
            kth = scores.topk(top_k, dim=1).values[:, -1:]  # (B, 1)
            scores = scores.masked_fill(scores < kth, -torch.inf)
        probs = torch.softmax(scores, dim=1)
        drawn = torch.multinomial(probs.cpu(), 1, generator=generator)  # (B, 1)
        return drawn.squeeze(1).to(log_probs.device)

    return generate(step, state, batch_size, sos, eos, max_length, draw, pad, no_repeat_ngram)


def normalised(scores: Tensor, lengths: Tensor, length_penalty: float) -> Tensor:
    """log p / length ** alpha: alpha 0 ranks by probability alone (which favours short
    outputs), alpha 1 by the mean log-probability per token (Wu et al. 2016, section 7,
    use ((5 + length) / 6) ** alpha; the plain length here is the simpler form)."""
    return scores / lengths.clamp(min=1).float() ** length_penalty


@dataclass
class Beams:
    """The K hypotheses kept for each of B rows during beam search."""

    scores: Tensor  # (B, K) summed log-probabilities
    lengths: Tensor  # (B, K) tokens written, eos included (frozen once finished)
    finished: Tensor  # (B, K) True once the hypothesis wrote eos
    history: Tensor  # (B, K, t) the tokens written so far

    @classmethod
    def start(cls, B: int, K: int, device) -> Beams:
        scores = torch.full((B, K), -torch.inf, device=device)
        scores[:, 0] = 0.0  # one live hypothesis at the start, so the K are not copies
        zeros = torch.zeros(B, K, dtype=torch.long, device=device)
        empty = torch.zeros(B, K, 0, dtype=torch.long, device=device)
        return cls(scores, zeros, zeros.bool(), empty)

    def extend(self, log_probs: Tensor, eos: int, pad: int, length_penalty: float):
        """Keep the K best of the K*V one-token extensions; return the token and its parent.

        A finished hypothesis extends only by ``pad``, at no cost and no length, so it keeps
        competing with the unfinished ones under the same normalised score.
        """
        B, K, V = log_probs.shape
        frozen = torch.full_like(log_probs[0, 0], -torch.inf)
        frozen[pad] = 0.0
        log_probs = torch.where(self.finished.unsqueeze(2), frozen, log_probs)
        total = self.scores.unsqueeze(2) + log_probs  # (B, K, V)
        lengths = torch.where(self.finished, self.lengths, self.lengths + 1)  # (B, K)
        rank = normalised(total, lengths.unsqueeze(2), length_penalty).view(B, K * V)
        best = rank.topk(K, dim=1).indices  # (B, K) indices into K*V
        parent, token = best // V, best % V
        self.scores = total.view(B, K * V).gather(1, best)
        self.lengths = lengths.gather(1, parent)
        self.finished = self.finished.gather(1, parent) | (token == eos)
        kept = self.history.gather(1, parent.unsqueeze(2).expand_as(self.history))
        self.history = torch.cat([kept, token.unsqueeze(2)], dim=2)  # (B, K, t+1)
        return token, parent

    def best(self, length_penalty: float) -> Decoded:
        """Each row's hypothesis with the best normalised score."""
        pick = normalised(self.scores, self.lengths, length_penalty).argmax(1, keepdim=True)
        tokens = self.history.gather(1, pick.unsqueeze(2).expand(-1, -1, self.history.shape[2]))
        length = self.lengths.gather(1, pick).squeeze(1)  # (B,)
        tokens = tokens.squeeze(1)[:, : int(length.max())]  # others may have run longer
        log_prob = self.scores.gather(1, pick).squeeze(1)
        return Decoded(tokens, length, log_prob, self.finished.gather(1, pick).squeeze(1))


@torch.no_grad()
def beam_search(
    step: Step,
    state,
    batch_size: int,
    sos: int,
    eos: int,
    max_length: int,
    width: int = 5,
    length_penalty: float = 1.0,
    pad: int = 0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """Keep the ``width`` best hypotheses of each row (:class:`Beams`); return the best by
    normalised score. Width 1 is greedy decoding. No hypothesis repeats an n-gram of
    ``no_repeat_ngram`` tokens (0: any may)."""
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    device = check_start(state, batch_size, max_length)
    B, K = batch_size, width
    first_of_row = torch.arange(B, device=device).unsqueeze(1) * K  # (B, 1)
    state = select(state, torch.arange(B, device=device).repeat_interleave(K))  # (B*K, ...)
    tokens = torch.full((B * K,), sos, dtype=torch.long, device=device)
    beams = Beams.start(B, K, device)
    for _ in range(max_length):
        logits, state = checked_step(step, tokens, state)
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        history = beams.history.reshape(B * K, beams.history.shape[2])  # (B*K, t)
        log_probs = without_repeats(log_probs, history, no_repeat_ngram).view(B, K, -1)
        token, parent = beams.extend(log_probs, eos, pad, length_penalty)
        state = select(state, (first_of_row + parent).view(-1))
        tokens = token.view(-1)
        if beams.finished.all():
            break
    return beams.best(length_penalty)
