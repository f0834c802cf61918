"""Hostile text for the line-oriented loaders: corpora, TSV pairs, vocabularies, texts to label.

Each property writes arbitrary content to a file and calls the loader: it either returns
what the file holds, or raises a :class:`DataError` whose message names the file and, for a
problem on a line, that line. Any other exception (``UnicodeDecodeError``, ``KeyError``,
``TypeError``, ...) fails the test.
"""

import json

import pytest
from hostile import first_bad_line, outcome  # tests/hostile.py
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.data import DataError, Vocab, load_corpus
from rnnkit.data.pairs import PairsError, TokenVocab, read_pairs
from rnnkit.tasks import classify

# Text that is mostly valid, with a hostile byte or two spliced in: the likely real cases.
LINES = st.lists(st.text(st.characters(codec="utf-8"), max_size=30), max_size=8)
HOSTILE_BYTES = st.sampled_from([b"\0", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])


@st.composite
def spliced(draw) -> bytes:
    raw = "\n".join(draw(LINES)).encode("utf-8")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(HOSTILE_BYTES) + raw[at:]
    return raw


CONTENT = st.one_of(st.binary(max_size=200), spliced())


# --- text corpora ---


@given(raw=CONTENT)
def test_corpus_of_any_bytes_loads_or_names_file_and_line(tmp_path, raw):
    path = tmp_path / "corpus.txt"
    path.write_bytes(raw)
    corpus, message = outcome(load_corpus, str(path))
    bad = first_bad_line(raw)
    if corpus is not None:
        assert not bad and raw and corpus.text == raw.decode("utf-8")
        return
    assert str(path) in message
    if bad:
        assert f"line {bad}" in message
        assert ("binary" in message) if b"\0" in raw.splitlines()[bad - 1] else "UTF-8" in message
    else:
        assert not raw and "empty" in message


def test_corpus_problems_say_what_is_wrong(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"ab\ncd\x00\x01\x02")
    with pytest.raises(DataError, match=r"model\.bin: a NUL byte at byte offset 5, line 2: .*bin"):
        load_corpus(str(binary))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("one\ntwo\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not valid UTF-8 at byte offset 11, line 3"):
        load_corpus(str(latin))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("fine\n")
    (folder / "b.txt").write_bytes(b"\xff")
    with pytest.raises(DataError, match=r"b\.txt: not valid UTF-8 at byte offset 0, line 1"):
        load_corpus(str(folder))


def test_one_enormous_line_loads_and_a_bad_byte_at_its_end_is_placed(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"ab" * 1_000_000)
    assert len(load_corpus(str(path)).text) == 2_000_000
    path.write_bytes(b"ab" * 1_000_000 + b"\xfe")
    with pytest.raises(DataError, match=r"long\.txt: not valid UTF-8 at byte offset 2000000, line"):
        load_corpus(str(path))


def test_empty_files_make_an_empty_corpus_error(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"is empty .*a\.txt"):
        load_corpus(str(tmp_path))


# --- TSV pairs ---

CELL = st.text(st.characters(exclude_characters="\0\r\n"), max_size=8)  # NUL: see above
TSV_LINE = st.one_of(
    st.tuples(CELL, CELL).map("\t".join),  # maybe an empty or blank side
    st.text(st.characters(exclude_characters="\0\t\r\n")),  # no tab
    st.lists(CELL, min_size=3, max_size=4).map("\t".join),  # extra columns
)


@given(lines=st.lists(TSV_LINE, max_size=8))
def test_pairs_keep_good_lines_and_name_every_bad_one(tmp_path, lines):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("\n".join(lines).encode("utf-8"))
    result, message = outcome(read_pairs, path)
    numbered = list(enumerate(path.read_bytes().splitlines(), 1))  # as an editor numbers them
    good, bad = [], []
    for number, raw in numbered:
        columns = raw.decode("utf-8").split("\t")
        if not raw.decode("utf-8").strip():
            continue
        ok = len(columns) >= 2 and columns[0].strip() and columns[1].strip()
        (good if ok else bad).append(number)
    if result is None:
        assert not good and str(path) in message
        assert (f"{path}:{bad[0]}:" in message) if bad else "empty" in message
        return
    pairs, skipped = result
    assert len(pairs) == len(good)
    assert [int(s.split(":")[-2]) for s in skipped] == bad
    assert all(s.startswith(f"{path}:") for s in skipped)


@given(raw=CONTENT)
def test_pairs_of_any_bytes_load_or_name_file_and_line(tmp_path, raw):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(raw)
    result, message = outcome(read_pairs, path)
    bad = first_bad_line(raw)
    if result is not None:
        assert not bad and result[0]
        return
    assert str(path) in message
    if bad:
        assert f"{path}:{bad}:" in message


def test_a_directory_or_unreadable_path_is_a_pairs_error(tmp_path):
    with pytest.raises(PairsError, match="no such file"):
        read_pairs(tmp_path)


# --- vocabularies of a run (hand-edited or damaged) ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=7), inner),
    max_leaves=10,
)
VOCAB_JSON = st.one_of(
    JSON.map(json.dumps),
    st.lists(st.text(max_size=2), max_size=5).map(lambda s: json.dumps({"symbols": s})),
    st.lists(JSON, max_size=5).map(lambda s: json.dumps({"symbols": ["\ufffd", *s]})),
    st.lists(JSON, max_size=5).map(lambda s: json.dumps({"tokens": s})),
)


@given(text=VOCAB_JSON, cut=st.integers(0, 3))
def test_a_damaged_vocab_json_is_a_data_error_naming_it(tmp_path, text, cut):
    path = tmp_path / "vocab.json"
    raw = text.encode("utf-8")
    path.write_bytes(raw[: len(raw) - cut])  # sometimes truncated, as a disk-full write leaves it
    for load in (Vocab.load, TokenVocab.load):
        vocab, message = outcome(load, path)
        assert vocab is not None or str(path) in message


def test_a_good_vocab_json_still_loads(tmp_path):
    Vocab.build("hello").save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").decode([1, 2]) == "eh"
    (tmp_path / "v.json").write_text('{"symbols": ["\\ufffd", "a",\n "a"]}')
    with pytest.raises(DataError, match=r"v\.json: not a vocabulary"):
        Vocab.load(tmp_path / "v.json")
    (tmp_path / "v.json").write_text('{"symbols":\n [1, }')
    with pytest.raises(DataError, match=r"v\.json, line 2: not valid JSON"):
        Vocab.load(tmp_path / "v.json")


# --- texts to label (rnnkit classify RUN --file texts.txt) ---


@given(raw=CONTENT)
def test_texts_to_classify_load_or_name_file_and_line(tmp_path, raw):
    path = tmp_path / "texts.txt"
    path.write_bytes(raw)
    texts, message = outcome(classify.read_texts, path, classify.Config())
    bad = first_bad_line(raw)
    if texts is not None:
        assert not bad
        return
    assert str(path) in message and f"line {bad}" in message


def test_one_enormous_pair_loads_and_the_line_after_it_is_named(tmp_path):
    path = tmp_path / "long.tsv"
    path.write_bytes(b"a " * 500_000 + b"\tb\nno tab\n")
    pairs, bad = read_pairs(path)
    assert len(pairs[0][0]) == 999_999 and bad == [f"{path}:2: no tab"]
