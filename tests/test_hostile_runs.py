"""Hostile data through the command: exit status 2, one line naming the file, no traceback,
and a trained run directory left byte for byte as it was.

Each task gets one tiny trained run (a few steps through ``rnnkit train``). Then, with data
that cannot be used, ``rnnkit eval RUN --data BAD``, ``rnnkit train TASK --out RUN --data
BAD`` (a new run over an old one) and ``rnnkit train TASK --resume RUN`` after the run's own
data file was damaged must each fail before they write anything.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rnnkit import cli
from rnnkit.export import RUN_FILES

# Flags that keep every run to a few steps of a very small model on one thread.
TINY = ["--steps", "2", "--eval-every", "1", "--minutes", "0", "--device", "cpu"]
FLAGS = {
    "charlm": ["--hidden", "8", "--window", "8", "--batch-size", "2", "--val-chars", "0"],
    "translate": ["--hidden", "8", "--embedding", "4", "--batch-size", "4", "--beam", "1"],
    "forecast": ["--input-window", "6", "--horizon", "2", "--hidden", "4", "--batch-size", "4"],
    "seqclass": ["--hidden", "4", "--batch-size", "4", "--epochs", "0", "--dropout", "0"],
    "tag": ["--hidden", "4", "--batch-size", "4"],
    "classify": ["--embedding", "4", "--hidden", "4", "--min-count", "1", "--no-baseline"],
    "caption": ["--image-size", "24", "--blocks", "2", "--width", "2", "--hidden", "8"],
}
FLAGS["translate"] += ["--val-pairs", "4", "--threads", "1"]
FLAGS["classify"] += ["--epochs", "0", "--batch-size", "4"]
FLAGS["caption"] += ["--embedding", "4", "--batch-size", "4", "--val-images", "2"]
FLAGS["caption"] += ["--gallery", "0", "--threads", "1", "--attention", "none"]


def write_good(task: str, folder):
    """Data a tiny run of ``task`` trains on; returns its path."""
    rng = np.random.default_rng(0)
    if task == "charlm":
        (folder / "corpus.txt").write_text("hello world, hello there\n" * 40)
        return folder / "corpus.txt"
    if task == "translate":
        lines = [f"number {n}\tnúmero {n}\n" for n in range(40)]
        (folder / "pairs.tsv").write_text("".join(lines), encoding="utf-8")
        return folder / "pairs.tsv"
    if task == "forecast":
        rows = [f"2001-01-{1 + d:02d},{np.sin(d / 3):.4f}\n" for d in range(30)]
        (folder / "series.csv").write_text("date,value\n" + "".join(rows))
        return folder / "series.csv"
    if task in ("seqclass", "tag"):
        lengths = rng.integers(4, 8, 24)
        x = rng.standard_normal((lengths.sum(), 2)).astype(np.float32)
        if task == "seqclass":
            y = np.array(["up", "down"] * 12)
            np.savez(folder / "cases.npz", x=x, y=y, lengths=lengths)
        else:
            labels = rng.integers(0, 2, lengths.sum())
            np.savez(folder / "cases.npz", inputs=x, labels=labels, lengths=lengths)
        return folder / "cases.npz"
    if task == "classify":
        rows = [
            f"{'good fine' if i % 2 else 'bad poor'} {i},{'pos' if i % 2 else 'neg'}\n"
            for i in range(40)
        ]
        (folder / "texts.csv").write_text("text,label\n" + "".join(rows))
        return folder / "texts.csv"
    images = folder / "images"
    images.mkdir()
    rows = []
    for i in range(10):
        colour = ["red", "blue"][i % 2]
        pixels = np.zeros((24, 24, 3), np.uint8)
        pixels[..., 0 if colour == "red" else 2] = 200
        Image.fromarray(pixels).save(images / f"{i}.png")
        rows.append(f"{i}.png,a {colour} square\n")
    (images / "captions.csv").write_text("image,caption\n" + "".join(rows))
    return images


def write_bad(task: str, folder, good):
    """Data of the same kind as ``good`` that cannot be used; returns the path to name."""
    if task == "caption":
        bad = folder / "bad-images"
        bad.mkdir(exist_ok=True)
        (bad / "captions.csv").write_bytes(b"image,caption\n0.png,a \xff square\n")
        return bad / "captions.csv"
    bad = folder / f"bad{good.suffix}"
    if good.suffix == ".npz":
        objects = np.empty(2, dtype=object)
        objects[:] = [np.zeros((3, 2)), np.zeros((2, 2))]
        np.savez(bad, x=objects, y=np.array(["up", "down"]), inputs=objects, labels=objects)
    elif task == "forecast":
        bad.write_text("date,value\n2001-01-02,1\n2001-01-01,2\n" + "2001-02-01,1\n" * 30)
    else:
        bad.write_bytes(good.read_bytes()[:40] + b"\x00\x01\x02 binary")
    return bad


def snapshot(run) -> dict:
    """Every file under ``run`` by its relative path, and the SHA-256 of its bytes."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def refused(argv, capsys, name) -> None:
    """``rnnkit argv`` exits with 2 and one line ``rnnkit: error: ...`` naming ``name``."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnkit: error: ")
    assert str(name) in err[0] and "Traceback" not in err[0]


@pytest.fixture(scope="module", params=list(FLAGS))
def trained(request, tmp_path_factory, one_thread_for_module):
    """(task, run directory, its data, bad data) for one tiny trained run per task."""
    task, folder = request.param, tmp_path_factory.mktemp(request.param)
    good = write_good(task, folder)
    run = folder / "run"
    argv = ["train", task, "--data", str(good), "--out", str(run), *TINY, *FLAGS[task]]
    assert cli.main(argv) == 0
    return task, run, good, write_bad(task, folder, good)


def test_eval_on_bad_data_fails_cleanly_and_leaves_the_run(trained, capsys):
    task, run, _, bad = trained
    before = snapshot(run)
    refused(
        ["eval", str(run), "--data", str(bad.parent if task == "caption" else bad)], capsys, bad
    )
    assert snapshot(run) == before


def test_training_over_a_run_with_bad_data_fails_cleanly_and_leaves_it(trained, capsys):
    task, run, _, bad = trained
    before = snapshot(run)
    data = str(bad.parent if task == "caption" else bad)
    refused(["train", task, "--data", data, "--out", str(run), *TINY, *FLAGS[task]], capsys, bad)
    assert snapshot(run) == before


def test_resuming_after_the_data_was_damaged_fails_cleanly_and_leaves_the_run(
    trained, capsys, tmp_path
):
    """The run keeps the path of its data; damage that file (in a copy of the run's world)."""
    task, run, good, _ = trained
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str(good)
    saved = {p: p.read_bytes() for p in ([good] if good.is_file() else good.iterdir())}
    try:
        bad = write_bad(task, good.parent, good)
        target = good / "captions.csv" if task == "caption" else good
        target.write_bytes((bad if bad.is_file() else bad).read_bytes())
        before = snapshot(run)
        refused(["train", task, "--resume", str(run)], capsys, target)
        assert snapshot(run) == before
    finally:
        for path, raw in saved.items():
            path.write_bytes(raw)


def use_command(task: str, run, bad, folder):
    """The command that applies a ``task`` run to a file, on a bad file, and the name to see."""
    if task == "charlm":
        return ["inspect", str(run), "--text", str(bad), "--out", str(folder / "r.html")], bad
    if task == "forecast":
        return ["forecast", str(run), "--data", str(bad), "--out", str(folder / "f.csv")], bad
    if task == "classify":
        texts = folder / "texts.txt"
        texts.write_bytes(b"a fine text\nthen caf\xe9 in Latin-1\n")
        return ["classify", str(run), "--file", str(texts), "--out", str(folder / "p.csv")], texts
    if task == "caption":
        image = folder / "cut.png"
        image.write_bytes((bad.parent.parent / "images" / "0.png").read_bytes()[:60])
        return ["caption", str(run), str(image)], image
    return None, None


def test_using_a_run_on_a_bad_file_fails_cleanly_and_leaves_the_run(trained, capsys, tmp_path):
    task, run, _, bad = trained
    argv, name = use_command(task, run, bad, tmp_path)
    if argv is None:
        pytest.skip(f"{task} has no command that reads a file besides eval")
    before = snapshot(run)
    refused(argv, capsys, name)
    assert snapshot(run) == before and not list(tmp_path.glob("[rfp].*"))


@pytest.mark.parametrize("trained", ["charlm", "translate", "forecast"], indirect=True)
@settings(max_examples=10)  # each example is a whole `rnnkit eval`
@given(
    raw=st.one_of(
        st.binary(max_size=120),
        st.text(max_size=120).map(str.encode),
        st.sampled_from([b"", b"a", b"a\tb\n", b"value\n1\n", b"text,label\nx,pos\n"]),
    ),
    cut=st.integers(0, 200),
)
def test_eval_on_any_bytes_scores_or_fails_cleanly_and_leaves_the_run(
    trained, capsys, tmp_path, raw, cut
):
    """Any bytes in the place of a text file, or the run's own data cut short: exit 0 with
    scores, or 2 with one line naming the file; the run unchanged either way (these tasks
    write nothing when they evaluate)."""
    _, run, good, _ = trained
    path = tmp_path / good.name
    whole = good.read_bytes()
    path.write_bytes(raw if cut % 2 else whole[: len(whole) - cut])
    before = snapshot(run)
    capsys.readouterr()
    status = cli.main(["eval", str(run), "--data", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status in (0, 2) and snapshot(run) == before
    if status == 2:
        assert len(err) == 1 and err[0].startswith("rnnkit: error: ") and str(path) in err[0]


def test_a_damaged_run_file_is_named_and_the_run_left_as_it_was(trained, capsys, tmp_path):
    """Each JSON file a run is rebuilt from, cut in half (a crash of an older writer, a bad
    copy): ``rnnkit eval`` exits 2 naming that file and its line, and changes nothing."""
    task, run, good, _ = trained
    data = str(good)
    for name in RUN_FILES[task]:
        copy = tmp_path / name.replace(".", "-")
        shutil.copytree(run, copy)
        raw = (copy / name).read_bytes()
        (copy / name).write_bytes(raw[: len(raw) // 2])
        before = snapshot(copy)
        refused(["eval", str(copy), "--data", data], capsys, copy / name)
        assert snapshot(copy) == before
