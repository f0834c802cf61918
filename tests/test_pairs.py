"""Parallel text: TSV reading and its messages, tokens, vocabularies, batches, data sets."""

import pytest
import torch

from rnnkit.data import CorpusError, bible, load_corpus, numbers
from rnnkit.data.pairs import (
    EOS,
    PAD,
    SOS,
    UNK,
    PairsError,
    TokenVocab,
    bad_lines_summary,
    bucket_batches,
    detokenize,
    drop_long,
    make_batch,
    padding_fraction,
    read_keyed_pairs,
    read_pairs,
    split_by_group,
    split_by_source,
    tokenize,
)


def write(tmp_path, text: str, name: str = "pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_good_lines_are_read_and_further_columns_ignored(tmp_path):
    path = write(tmp_path, "with you\tcontigo\tCC-BY 2.0 #123\n\nGo.\tVe.\n")
    pairs, bad = read_pairs(path)
    assert pairs == [("with you", "contigo"), ("Go.", "Ve.")]
    assert bad == []


def test_each_bad_line_is_named_by_file_and_line(tmp_path):
    path = write(tmp_path, "hello\thola\nno tab here\n\tvacío\nempty target\t \nbye\tadiós\n")
    pairs, bad = read_pairs(path)
    assert pairs == [("hello", "hola"), ("bye", "adiós")]
    assert bad == [f"{path}:2: no tab", f"{path}:3: empty source", f"{path}:4: empty target"]
    assert bad_lines_summary(bad, shown=2) == (
        f"skipped 3 bad line(s): {path}:2: no tab; {path}:3: empty source, and 1 more"
    )


def test_a_file_without_a_good_line_is_an_error(tmp_path):
    with pytest.raises(
        PairsError, match=r"no line of the form .* \(2 bad lines, first .*:1: no tab"
    ):
        read_pairs(write(tmp_path, "one\ntwo\n"))
    with pytest.raises(PairsError, match="the file is empty"):
        read_pairs(write(tmp_path, "", "empty.tsv"))
    with pytest.raises(PairsError, match="no such file"):
        read_pairs(tmp_path / "missing.tsv")


def test_bad_utf8_names_the_line(tmp_path):
    path = write(tmp_path, b"ok\tbien\nbad \xff byte\tmal\n")
    with pytest.raises(PairsError, match=r"pairs.tsv:2: not valid UTF-8 at byte 4"):
        read_pairs(path)


def test_word_tokens_split_punctuation_and_lower_case_any_script():
    assert tokenize("¿Dónde ESTÁ Ñandú?") == ["¿", "dónde", "está", "ñandú", "?"]
    assert tokenize("Don't", lowercase=False) == ["Don", "'", "t"]
    assert tokenize("Ab  c", level="char") == ["a", "b", " ", "c"]
    assert detokenize(["¿", "dónde", "está", "?"]) == "¿dónde está?"
    assert detokenize(list("a b"), level="char") == "a b"


def test_vocabulary_specials_min_freq_and_unknown():
    vocab = TokenVocab.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=2)
    assert vocab.tokens == ["<pad>", "<sos>", "<eos>", "<unk>", "a", "b"]
    assert (PAD, SOS, EOS, UNK) == (0, 1, 2, 3)
    assert vocab.encode(["a", "c", "b"]) == [4, UNK, 5]
    assert vocab.decode([SOS, 4, 5, EOS, 4]) == ["a", "b"]
    with pytest.raises(ValueError, match="min_freq must be at least 1"):
        TokenVocab.build([["a"]], min_freq=0)


def test_vocabulary_round_trips_through_json(tmp_path):
    vocab = TokenVocab.build([["niño", "año"]])
    vocab.save(tmp_path / "v.json")
    assert TokenVocab.load(tmp_path / "v.json").tokens == vocab.tokens


def test_length_filter_reports_how_many_it_dropped():
    pairs = [(["a"] * 3, ["b"] * 2), (["a"] * 6, ["b"]), (["a"], ["b"] * 7)]
    kept, dropped = drop_long(pairs, 5)
    assert kept == pairs[:1] and dropped == 2


def test_batch_holds_sos_and_eos_shifted_targets():
    batch = make_batch([([5, 6, 7], [8]), ([9], [10, 11])])
    assert batch.source.tolist() == [[5, 6, 7], [9, PAD, PAD]]
    assert batch.source_lengths.tolist() == [3, 1]
    assert batch.target_in.tolist() == [[SOS, 8, PAD], [SOS, 10, 11]]
    assert batch.target_out.tolist() == [[8, EOS, PAD], [10, 11, EOS]]
    assert batch.source.dtype == torch.long


def test_buckets_cover_every_pair_once_with_little_padding():
    lengths = [(n % 13 + 1, n % 7 + 1) for n in range(500)]
    batches = bucket_batches(lengths, 32, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 32 for b in batches)
    source = [s for s, _ in lengths]
    shuffled = [list(range(i, min(i + 32, 500))) for i in range(0, 500, 32)]
    assert padding_fraction(source, batches) < 0.05 < padding_fraction(source, shuffled)
    assert bucket_batches(lengths, 32, seed=3) == batches != bucket_batches(lengths, 32, seed=4)


def test_numbers_pairs_and_a_split_by_number():
    assert numbers.pair(342) == ("three hundred and forty-two", "trescientos cuarenta y dos")
    assert numbers.pair(70015) == ("seventy thousand and fifteen", "setenta mil quince")
    train, val, test = numbers.split_numbers(300, 0.1, 0.1, seed=2)
    assert (len(train), len(val), len(test)) == (240, 30, 30)
    assert not set(test) & set(train) and not set(val) & set(train)
    assert numbers.split_numbers(300, 0.1, 0.1, seed=2)[2] == test


def test_numbers_tsv_marks_each_split(tmp_path):
    splits = numbers.make_splits(20, 0.1, 0.1, seed=1)
    assert numbers.write_tsv(tmp_path / "n.tsv", splits) == 20
    pairs, bad = read_pairs(tmp_path / "n.tsv")
    assert len(pairs) == 20 and not bad
    columns = [line.split("\t")[2] for line in (tmp_path / "n.tsv").read_text().splitlines()]
    assert columns.count("test") == 2 and columns.count("val") == 2


# mod2imp's raw export of an OSIS module: "$$$key" lines, each followed by its entry's markup.
WEB_IMP = """$$$[ Module Heading ]
<milestone type="x-importer"/>
$$$Genesis 1:0
<chapter n="1" osisID="Gen.1" sID="Gen.1"/>
$$$Genesis 1:1
<w lemma="strong:H7225">In</w> <w lemma="strong:H7225">the beginning</w>, <w>God</w><note \
placement="foot"><reference type="annotateRef">1:1 </reference>The Hebrew word “God”.</note>\
<w>created</w> the heavens &amp; the earth.
$$$Genesis 1:2
<title type="x-section">The Creation</title><l level="1" sID="a"/>Darkness<l eID="a"/>\
<l level="2" sID="b"/>was <transChange type="added">on</transChange> the deep<note>x</note>.
$$$Tobit 1:1
The book of the words of Tobit.
"""
RV_IMP = """$$$Genesis 1:1
<w lemma="strong:H7225">EN el principio</w> <w>crió</w> Dios los cielos y la tierra.
$$$Genesis 1:2
Y la tierra estaba desordenada.
"""


def test_bible_reader_strips_markup_and_aligns_by_verse():
    english, spanish = bible.read_imp(WEB_IMP), bible.read_imp(RV_IMP)
    assert english == {
        "Genesis 1:1": "In the beginning, God created the heavens & the earth.",
        "Genesis 1:2": "Darkness was on the deep.",
        "Tobit 1:1": "The book of the words of Tobit.",
    }
    assert bible.align(english, spanish) == [
        (english["Genesis 1:1"], "EN el principio crió Dios los cielos y la tierra."),
        (english["Genesis 1:2"], "Y la tierra estaba desordenada."),
    ]


def test_bible_command_names_the_missing_apt_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(bible.shutil, "which", lambda name: None)
    monkeypatch.setattr(bible, "MODULE_DIRS", (tmp_path,))
    with pytest.raises(PairsError, match=r"apt-get install libsword-utils sword-text-web sword-t"):
        bible.write_tsv(tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()


def test_a_sword_module_reads_as_running_text_a_chapter_heading_then_a_verse_a_line(
    monkeypatch, tmp_path
):
    (tmp_path / "engWEB2015eb.conf").write_text("[engWEB2015eb]\n")
    monkeypatch.setattr(bible, "MODULE_DIRS", (tmp_path,))
    monkeypatch.setattr(bible.shutil, "which", lambda name: "/usr/bin/mod2imp")
    monkeypatch.setattr(bible, "export", lambda module: WEB_IMP)
    corpus = load_corpus("sword:engWEB2015eb")
    assert corpus.text == (
        "Genesis 1\nIn the beginning, God created the heavens & the earth.\n"
        "Darkness was on the deep.\n\nTobit 1\nThe book of the words of Tobit.\n"
    )


def test_a_sword_module_not_installed_is_named_with_what_is(monkeypatch, tmp_path):
    (tmp_path / "engKJV2006eb.conf").write_text("[engKJV2006eb]\n")
    monkeypatch.setattr(bible, "MODULE_DIRS", (tmp_path,))
    monkeypatch.setattr(bible.shutil, "which", lambda name: "/usr/bin/mod2imp")
    with pytest.raises(CorpusError, match=r"sword:KJV: no SWORD module 'KJV' .*engKJV2006eb"):
        load_corpus("sword:KJV")
    monkeypatch.setattr(bible.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match=r"apt-get install libsword-utils"):
        load_corpus("sword:engKJV2006eb")


def test_the_bible_tsv_keys_each_verse_and_its_chapter_is_read_back(tmp_path):
    english, spanish = bible.read_imp(WEB_IMP), bible.read_imp(RV_IMP)
    path = write(tmp_path, "".join(bible.tsv_lines(english, spanish)))
    pairs, keys, bad = read_keyed_pairs(path)
    assert pairs == bible.align(english, spanish) and not bad
    assert keys == ["Genesis 1:1", "Genesis 1:2"]
    assert bible.chapters(keys + ["I Samuel 12:3"]) == ["Genesis 1"] * 2 + ["I Samuel 12"]
    # an older two-column file, or a third column of something else, is not split by chapter
    assert read_pairs(path) == (pairs, [])
    assert bible.chapters(["", ""]) is None and bible.chapters(["train", "Genesis 1:1"]) is None


def many_chapters_imp() -> str:
    """mod2imp text of 3 books of 6 chapters of 2 to 6 verses; Exodus 1:1 and I Samuel 1:1
    are the same sentence, as "And the LORD spake unto Moses, saying," recurs in the Bible."""
    entries = []
    for book in ("Genesis", "Exodus", "I Samuel"):
        for chapter in range(1, 7):
            entries.append(f"$$${book} {chapter}:0\n<chapter/>")
            for verse in range(1, 2 + (chapter + len(book)) % 5 + 1):
                shared = verse == chapter == 1 and book != "Genesis"
                text = "And he said," if shared else f"{book} {chapter}"
                entries.append(f"$$${book} {chapter}:{verse}\n<w>{text}</w> verse {verse}.")
    return "\n".join(entries) + "\n"


def test_bible_pairs_split_by_chapter_keep_each_chapter_in_one_split(tmp_path):
    verses = bible.read_imp(many_chapters_imp())
    path = write(tmp_path, "".join(bible.tsv_lines(verses, verses)))
    pairs, keys, _ = read_keyed_pairs(path)
    chapters = bible.chapters(keys)
    assert len(set(chapters)) == 18 and len(pairs) == len(verses)
    for seed in range(5):
        splits = split_by_group(pairs, chapters, 0.2, 0.2, seed)
        split_of = {pair: i for i, split in enumerate(splits) for pair in split}
        assert sum(map(len, splits)) == len(pairs)
        spans = {}
        for pair, chapter in zip(pairs, chapters, strict=True):
            spans.setdefault(chapter, set()).add(split_of[pair])
        assert all(len(splits) == 1 for splits in spans.values()), spans
        assert all(splits), "every split holds some chapters"
        # chapters sharing a source sentence ("And he said, verse 1.") are joined in one split
        assert len(spans["Exodus 1"] | spans["I Samuel 1"]) == 1
        assert len(splits[2]) >= round(0.2 * len(pairs))


def test_a_split_by_source_is_a_split_by_group_of_one_source_each():
    pairs = [(f"s{i % 40}", f"t{i}") for i in range(100)]
    train, val, test = split_by_source(pairs, 0.1, 0.1, seed=7)
    assert not {s for s, _ in test} & {s for s, _ in train}
    assert not {s for s, _ in val} & {s for s, _ in train}
    assert (train, val, test) == split_by_group(pairs, [s for s, _ in pairs], 0.1, 0.1, 7)
    with pytest.raises(PairsError, match="1 distinct groups of pairs leave an empty"):
        split_by_group(pairs, ["one"] * 100, 0.1, 0.1, 7)
