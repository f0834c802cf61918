"""The translate task's data: sentence pairs split by source sentence, tokenised, and
encoded with the training split's vocabularies (:class:`Data`); and the held-out pairs a
run is evaluated on.

``numbers-en-es`` (:mod:`rnnkit.data.numbers`) is made here from the run's seed; any other
``--data`` is a TSV file of ``source<TAB>target`` pairs (:mod:`rnnkit.data.pairs`), whose
bad lines are counted and reported, not read. It is split by source sentence, or, when its
third column holds Bible verse keys (``rnnkit data bible-en-es``), by chapter.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rnnkit.data import bible, numbers
from rnnkit.data.pairs import (
    UNK,
    Splits,
    TokenVocab,
    bad_lines_summary,
    drop_long,
    read_keyed_pairs,
    read_pairs,
    split_by_group,
    tokenize,
)

if TYPE_CHECKING:
    from rnnkit.tasks.translate import Config


@dataclass
class Data:
    """Text pairs of each split, tokenised and encoded with the training vocabularies."""

    source_vocab: TokenVocab
    target_vocab: TokenVocab
    train: list[tuple[list[int], list[int]]]  # (source ids, target ids), no <sos>/<eos>
    val: list[tuple[list[int], list[int]]]
    test: list[tuple[list[str], list[str]]]  # (source tokens, target tokens): test.json's


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def text_splits(config: Config) -> Splits:
    if config.data == numbers.NAME:
        return numbers.make_splits(
            config.numbers, config.val_fraction, config.test_fraction, config.seed
        )
    pairs, keys, bad = read_keyed_pairs(config.data)
    if bad:
        say(bad_lines_summary(bad))
    groups = bible.chapters(keys)
    if groups is None:
        groups = [s for s, _ in pairs]
    else:
        say(f"{len(set(groups))} Bible chapters: each chapter is in one split")
    fractions = config.val_fraction, config.test_fraction
    return Splits(*split_by_group(pairs, groups, *fractions, config.seed, config.data))


def tokenized(config: Config, pairs) -> list[tuple[list[str], list[str]]]:
    def tok(text):
        return tokenize(text, config.tokens, config.lowercase)

    return [(tok(s), tok(t)) for s, t in pairs]


def encode_pairs(pairs, source_vocab: TokenVocab, target_vocab: TokenVocab):
    return [(source_vocab.encode(s) or [UNK], target_vocab.encode(t)) for s, t in pairs]


def prepare(config: Config, vocabs: tuple[TokenVocab, TokenVocab] | None = None) -> Data:
    """Splits, vocabularies of the training split, length filter, ids; report what was dropped."""
    splits = text_splits(config)
    train, dropped = drop_long(tokenized(config, splits.train), config.max_length)
    if dropped:
        say(f"dropped {dropped} training pairs longer than {config.max_length} tokens")
    if not train:
        raise ValueError(f"no training pair is at most {config.max_length} tokens long")
    source_vocab, target_vocab = vocabs or (
        TokenVocab.build([s for s, _ in train], config.min_freq),
        TokenVocab.build([t for _, t in train], config.min_freq),
    )
    val = tokenized(config, splits.val)
    return Data(
        source_vocab,
        target_vocab,
        encode_pairs(train, source_vocab, target_vocab),
        encode_pairs(val, source_vocab, target_vocab),
        tokenized(config, splits.test),
    )


def held_out_pairs(config: Config, data: str):
    """numbers-en-es: the run's own held-out test numbers; otherwise every good line of a TSV."""
    if data == numbers.NAME:
        test = numbers.split_numbers(
            config.numbers, config.val_fraction, config.test_fraction, config.seed
        )[2]
        return [numbers.pair(n) for n in test]
    pairs, bad = read_pairs(data)
    if bad:
        say(bad_lines_summary(bad))
    return pairs
