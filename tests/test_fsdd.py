"""The FSDD folder read into manifests split by speaker."""

import numpy as np
import pytest

from rnnkit import cli
from rnnkit.data import fsdd
from rnnkit.data.audio import write_wav
from rnnkit.data.corpus import CorpusError
from rnnkit.data.manifests import read_manifest

SPEAKERS = ("ann", "bob", "cy", "dee")


def folder(tmp_path, speakers=SPEAKERS, digits=(0, 7), takes=2):
    recordings = tmp_path / "fsdd" / "recordings"  # as the data set's repository has it
    recordings.mkdir(parents=True)
    tone = np.sin(np.linspace(0, 400 * np.pi, 2000)).astype(np.float32) * 0.3
    for speaker in speakers:
        for digit in digits:
            for take in range(takes):
                write_wav(recordings / f"{digit}_{speaker}_{take}.wav", tone, 8000)
    return tmp_path / "fsdd"


def test_manifests_hold_each_speaker_in_one_split_only(tmp_path):
    lines = fsdd.write_manifests(folder(tmp_path), tmp_path / "out", test=["bob"], val=["ann"])
    assert lines[0] == f"fsdd train: {tmp_path / 'out' / 'train.csv'} (8 recordings of cy, dee)"
    speakers = {}
    for split in ("train", "val", "test"):
        rows = (tmp_path / "out" / f"{split}.csv").read_text().splitlines()
        assert rows[0] == "path,transcript,speaker"
        speakers[split] = {row.rsplit(",", 1)[1] for row in rows[1:]}
        manifest = read_manifest(tmp_path / "out" / f"{split}.csv")  # the speech task's reader
        assert {e.transcript for e in manifest} == {"zero", "seven"}
        assert set(manifest.speakers) == speakers[split]
    assert speakers == {"train": {"cy", "dee"}, "val": {"ann"}, "test": {"bob"}}


def test_without_validation_speakers_the_last_training_speaker_validates():
    splits = fsdd.split_speakers(list(SPEAKERS), test=["ann"], val=[])
    assert splits == {"train": ["bob", "cy"], "val": ["dee"], "test": ["ann"]}


@pytest.mark.parametrize(
    "test, val, message",
    [
        (["zed"], [], r"no recordings of speaker\(s\) \['zed'\]; the speakers are \['ann'"),
        (["ann"], ["ann"], r"\['ann'\] named for both test and validation"),
        (["ann", "bob", "cy"], ["dee"], "need at least one for each of training"),
        ([], [], "need at least one for each of training"),
    ],
)
def test_impossible_splits_say_why(test, val, message):
    with pytest.raises(CorpusError, match=message):
        fsdd.split_speakers(list(SPEAKERS), test, val)


def test_a_wav_named_otherwise_is_named_in_the_error(tmp_path):
    data = folder(tmp_path, speakers=("ann",))
    (data / "recordings" / "hello.wav").write_bytes(b"")
    with pytest.raises(
        CorpusError, match=r"1 WAV file\(s\) not named digit_speaker_index.wav.*hello.wav"
    ):
        fsdd.read_recordings(data)
    with pytest.raises(CorpusError, match="not a directory of FSDD recordings"):
        fsdd.read_recordings(tmp_path / "missing")


def test_the_command_writes_the_manifests(tmp_path, capsys):
    code = cli.main(
        ["data", "fsdd", str(folder(tmp_path)), str(tmp_path / "m"), "--test-speakers", "cy"]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["fsdd train", "fsdd val", "fsdd test"]
    assert out[1].endswith("(4 recordings of dee)")
