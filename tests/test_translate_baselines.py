"""The word-for-word baseline: IBM Model 1 on a toy corpus whose answer is known."""

import pytest
import torch

from rnnkit.data.pairs import TokenVocab
from rnnkit.tasks import translate_baselines as tb

# German to English, the textbook's corpus (Koehn, Statistical Machine Translation, 4.2):
# only EM can tell that "haus" is "house", since "das" and "the" sit beside it every time.
TOY = [("das haus", "the house"), ("das buch", "the book"), ("ein buch", "a book")]


def encoded(text_pairs):
    sources = [s.split() for s, _ in text_pairs]
    targets = [t.split() for _, t in text_pairs]
    source_vocab, target_vocab = TokenVocab.build(sources), TokenVocab.build(targets)
    pairs = [
        (source_vocab.encode(s), target_vocab.encode(t))
        for s, t in zip(sources, targets, strict=True)
    ]
    return pairs, source_vocab, target_vocab


def test_cooccurrences_pair_every_source_token_with_every_target_token_and_null():
    pairs = [([4, 5], [6]), ([5], [6, 6, 7])]
    seen = tb.cooccurrences(pairs, target_size=8)  # NULL is 8
    assert seen.tokens == 3 and seen.token.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    words = seen.source_word[seen.pair].tolist(), seen.target_word[seen.pair].tolist()
    cells = sorted(zip(*words, strict=True))
    assert cells == [(4, 6), (4, 8), (5, 6), (5, 6), (5, 6), (5, 7), (5, 8), (5, 8)]
    assert len(seen.source_word) == 5  # distinct (source, target) pairs


def test_model1_learns_that_haus_is_house():
    pairs, source_vocab, target_vocab = encoded(TOY)
    size = len(target_vocab)
    seen = tb.cooccurrences(pairs, size)
    probability = tb.model1_probabilities(seen, tb.model1_counts(seen, size, 10), size)
    words = seen.source_word.tolist(), seen.target_word.tolist()
    given = {  # (source word, target word) -> p(source | target)
        (source_vocab.tokens[s], "NULL" if t == size else target_vocab.tokens[t]): p
        for s, t, p in zip(*words, probability.tolist(), strict=True)
    }
    assert given["haus", "house"] > 0.9 and given["haus", "house"] > given["haus", "the"]
    assert given["das", "the"] > max(given["das", "house"], given["das", "book"])
    assert given["buch", "book"] > max(given["buch", "the"], given["buch", "a"])
    per_target = torch.zeros(size + 1).index_add_(0, seen.target_word, probability)
    torch.testing.assert_close(per_target[seen.target_word], torch.ones(len(probability)))
    table = tb.lexicon(pairs, source_vocab, target_vocab, iterations=10)
    assert table == {"das": "the", "haus": "house", "buch": "book", "ein": "a"}
    translated = tb.word_for_word([["das", "buch"], ["ein", "haus", "klein"]], table)
    assert translated == [["the", "book"], ["a", "house", "klein"]]  # the unseen word copied


def test_a_word_null_explains_best_is_dropped():
    # English "do" has no German word: it meets each subject and each verb a third of the
    # time, NULL every time, and NULL takes it.
    subjects, verbs = {"i": "ich", "you": "du", "we": "wir"}, {"go": "gehen", "see": "sehen"}
    text = [(f"{s} do {v}", f"{subjects[s]} {verbs[v]}") for s in subjects for v in verbs]
    text += [(s, g) for s, g in subjects.items()] + [(v, g) for v, g in verbs.items()]
    pairs, source_vocab, target_vocab = encoded(text)
    table = tb.lexicon(pairs, source_vocab, target_vocab, iterations=10)
    assert table == {**subjects, **verbs, "do": None}
    assert tb.word_for_word([["we", "do", "see"]], table) == [["wir", "sehen"]]


def test_special_tokens_are_never_written_and_iterations_are_checked():
    pairs, source_vocab, target_vocab = encoded(TOY)
    table = tb.lexicon(pairs, source_vocab, target_vocab)
    assert not set(table) & {"<pad>", "<sos>", "<eos>", "<unk>"}
    assert tb.word_for_word([["<unk>", "das"]], table) == [["the"]]
    with pytest.raises(ValueError, match="at least one EM iteration, got 0"):
        tb.model1_counts(tb.cooccurrences(pairs, len(target_vocab)), len(target_vocab), 0)
