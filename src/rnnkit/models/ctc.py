"""Decoding Connectionist Temporal Classification outputs, and scoring the transcripts.

A CTC network (Graves et al. 2006, "Connectionist Temporal Classification: Labelling
Unsegmented Sequence Data with Recurrent Neural Networks") gives, at each frame, a
distribution over the labels and a *blank*. A path (one symbol per frame) maps to a
labelling by the function B of section 3.1: merge repeated symbols, then drop blanks, so
``a a _ a b b`` reads ``a a b``. The probability of a labelling is the sum over every path
that B maps to it.

- :func:`greedy` takes the best symbol of each frame and applies B (the "best path"
  decoding of section 3.2); :class:`GreedyStream` does the same chunk by chunk, carrying
  the last symbol across chunk boundaries so a stream reads exactly what the whole does.
- :func:`prefix_beam_search` keeps the ``beam`` most probable labelling prefixes, each with
  the probability of its paths ending in blank and not ending in blank (Hannun et al. 2014,
  "First-Pass Large Vocabulary Continuous Speech Recognition using Bi-Directional Recurrent
  DNNs", algorithm 1), so that it sums paths where greedy picks one. With a language model
  it adds ``lm_weight`` times the model's log-probability of each label appended to a prefix
  (shallow fusion), and ``length_bonus`` per label, as that paper's equation 3 does with
  words (here the language model reads characters).
- :class:`CharLMScorer` is that language model: a trained ``charlm`` run stepped one
  character at a time through :class:`rnnkit.Stream`, its state kept per prefix.
- :func:`error_rates` gives the character and word error rates through ``jiwer``.

Labels are integers, the blank ``0`` unless given. Shape letters: T frames, V labels
including the blank.
"""

from __future__ import annotations

import math

import jiwer
import numpy as np
import torch

from rnnkit.scan import map_state

NEG_INF = -math.inf


# --- best path ---


def collapse(path, blank: int = 0) -> list[int]:
    """The function B of Graves et al. 2006: merge repeated symbols, then drop blanks."""
    labels, previous = [], None
    for symbol in path:
        symbol = int(symbol)
        if symbol != previous and symbol != blank:
            labels.append(symbol)
        previous = symbol
    return labels


def greedy(log_probs, blank: int = 0) -> list[int]:
    """Best-path decoding of one utterance: (T, V) scores -> labels."""
    scores = torch.as_tensor(log_probs)
    if scores.dim() != 2:
        raise ValueError(f"greedy expects (T, V) scores, got shape {tuple(scores.shape)}")
    return collapse(scores.argmax(-1).tolist(), blank)


def greedy_batch(log_probs: torch.Tensor, lengths, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of a padded batch: (T, B, V) scores and (B,) lengths."""
    if log_probs.dim() != 3 or log_probs.shape[1] != len(lengths):
        raise ValueError(
            f"expected (T, B, V) scores with B = {len(lengths)}, got {tuple(log_probs.shape)}"
        )
    best = log_probs.argmax(-1).T.tolist()  # (B, T)
    return [collapse(row[: int(n)], blank) for row, n in zip(best, lengths, strict=True)]


class GreedyStream:
    """Best-path decoding fed a chunk of frames at a time; :meth:`push` returns the labels
    that the new frames add. A label repeated across a chunk boundary is merged, as B
    merges it within a sequence, because the last symbol of the previous chunk is kept."""

    def __init__(self, blank: int = 0):
        self.blank, self.previous = blank, None

    def push(self, log_probs) -> list[int]:
        scores = torch.as_tensor(log_probs)
        path = scores.reshape(-1, scores.shape[-1])  # (T, V): a single frame (V,) too
        labels = []
        for symbol in path.argmax(-1).tolist():  # (T,)
            if symbol != self.previous and symbol != self.blank:
                labels.append(symbol)
            self.previous = symbol
        return labels


# --- prefix beam search ---


def _add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) of two log-probabilities, -inf allowed."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    top = max(a, b)
    return top + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(
    log_probs,
    beam: int = 8,
    blank: int = 0,
    lm=None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    prune: float = -12.0,
) -> list[tuple[list[int], float]]:
    """The ``beam`` best labellings of one utterance's (T, V) log-probabilities, best first,
    each with its score: log p(labelling | x), plus with ``lm`` ``lm_weight`` times the
    language model's log-probability of the labelling (its end included) and
    ``length_bonus`` per label.

    Each prefix carries two log-probabilities, of its paths so far ending in blank
    (``p_b``) and in a label (``p_nb``). Appending the prefix's own last label extends only
    its blank-ending paths (a non-blank repeat would merge); repeating the last label
    keeps the prefix. Labels whose frame log-probability is under ``prune`` are not tried
    (``-inf`` tries all: with a beam wide enough to hold every prefix the scores are then
    the exact sums over paths).
    """
    scores = np.asarray(torch.as_tensor(log_probs, dtype=torch.float64))
    if scores.ndim != 2:
        raise ValueError(f"prefix_beam_search expects (T, V) scores, got shape {scores.shape}")
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    fusion = lm is not None and lm_weight != 0.0
    if fusion:
        lm.reset()  # prefix states of an earlier utterance are of no use
    beams = {(): (0.0, NEG_INF)}  # prefix -> (log p_b, log p_nb)
    bonus = {(): 0.0}  # prefix -> lm_weight * log p_lm(prefix) + length_bonus * len(prefix)
    for frame in scores:  # (V,)
        tried = [v for v in np.flatnonzero(frame >= prune).tolist() if v != blank]
        following: dict[tuple, list[float]] = {}  # prefix -> [log p_b, log p_nb]
        for prefix, (p_b, p_nb) in beams.items():
            _extend(following, prefix, p_b, p_nb, frame, tried, blank)
            lm_next = lm.next_log_probs(prefix) if fusion and tried else None  # (V,)
            _add_bonuses(bonus, prefix, tried, lm_next, lm_weight, length_bonus)
        beams = _best(following, bonus, beam)
    ends = {p: lm_weight * lm.end_log_prob(p) if fusion else 0.0 for p in beams}
    final = [(list(p), _add(*s) + bonus[p] + ends[p]) for p, s in beams.items()]
    return sorted(final, key=lambda item: -item[1])


def _extend(following: dict, prefix: tuple, p_b: float, p_nb: float, frame, tried, blank: int):
    """Add to ``following`` the paths of ``prefix`` one frame on: kept by a blank or by its
    last label repeated (which merges), or grown by a label of ``tried``."""
    total = _add(p_b, p_nb)
    stay = following.setdefault(prefix, [NEG_INF, NEG_INF])
    stay[0] = _add(stay[0], total + frame[blank])
    for label in tried:
        grown = following.setdefault(prefix + (label,), [NEG_INF, NEG_INF])
        if prefix and label == prefix[-1]:
            stay[1] = _add(stay[1], p_nb + frame[label])  # a repeat merges
            grown[1] = _add(grown[1], p_b + frame[label])  # only after a blank
        else:
            grown[1] = _add(grown[1], total + frame[label])


def _add_bonuses(bonus: dict, prefix: tuple, tried, lm_next, lm_weight, length_bonus) -> None:
    """The bonus of each extension of ``prefix`` not scored yet: the prefix's, plus
    ``lm_weight`` times the language model's log-probability of the label (``lm_next``;
    None without a language model), plus ``length_bonus``."""
    for label in tried:
        extended = prefix + (label,)
        if extended not in bonus:
            fused = lm_weight * lm_next[label] if lm_next is not None else 0.0
            bonus[extended] = bonus[prefix] + fused + length_bonus


def _best(following: dict, bonus: dict, beam: int) -> dict:
    """The ``beam`` prefixes of highest score (their paths' and their bonus), each with its
    (log p_b, log p_nb)."""
    ranked = sorted(following.items(), key=lambda kv: -(_add(*kv[1]) + bonus[kv[0]]))
    # A prefix no path can reach (a repeat without the blank between) is dropped.
    return {prefix: tuple(p) for prefix, p in ranked[:beam] if _add(*p) > NEG_INF}


def beam_decode(log_probs, beam: int = 8, blank: int = 0, **options) -> list[int]:
    """The best labelling of :func:`prefix_beam_search`."""
    return prefix_beam_search(log_probs, beam, blank, **options)[0][0]


# --- a character language model as scorer ---


class CharLMScorer:
    """Log-probabilities of the next character from a trained ``charlm`` run, for
    :func:`prefix_beam_search`. ``labels`` are the CTC model's symbols by index (the blank's
    entry is ignored); a label the language model never saw gets its unknown symbol's score.
    Transcripts are read as lines: the state starts after a newline, and the end of a
    labelling is scored as the newline that follows it.
    """

    def __init__(self, model, vocab, labels: list[str]):
        import rnnkit

        self.to_lm = vocab.encode("".join(s if len(s) == 1 else "\0" for s in labels)).tolist()
        self.newline = int(vocab.encode("\n")[0])
        with torch.no_grad():
            logits, state = model(vocab.encode("\n").view(1, 1))  # (1, 1, V_lm)
        self.stream = rnnkit.Stream(model.rnn, embedding=_embedding(model), head=model.head)
        self.stream.state = map_state(lambda s: s.float(), state)
        self.cache = {(): (self.stream.state, torch.log_softmax(logits[-1, 0].float(), -1))}

    def _entry(self, prefix: tuple):
        if prefix not in self.cache:
            state, _ = self._entry(prefix[:-1])
            self.stream.state = state
            logits = self.stream.step(self.to_lm[prefix[-1]])[0]  # (V_lm,)
            self.cache[prefix] = (self.stream.state, torch.log_softmax(logits.float(), -1))
        return self.cache[prefix]

    def next_log_probs(self, prefix: tuple) -> np.ndarray:
        """(V,) log p_lm(label | prefix) for every CTC label."""
        return self._entry(prefix)[1][self.to_lm].numpy()

    def end_log_prob(self, prefix: tuple) -> float:
        return float(self._entry(prefix)[1][self.newline])

    def reset(self) -> None:
        """Forget the states of every prefix but the empty one (between utterances)."""
        self.cache = {(): self.cache[()]}


def _embedding(model):
    if model.embed is not None:
        return model.embed.weight
    return torch.eye(model.vocab_size)  # one-hot input


# --- error rates ---


def error_rates(references: list[str], hypotheses: list[str]) -> dict:
    """Character and word error rates over a corpus (edits summed over utterances, divided
    by the reference characters or words), by ``jiwer``."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("error rates need at least one utterance")
    return {
        "cer": float(jiwer.cer(references, hypotheses)),
        "wer": float(jiwer.wer(references, hypotheses)),
    }
