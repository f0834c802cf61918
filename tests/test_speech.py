import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from rnnkit.data import audio
from rnnkit.tasks import speech
from rnnkit.training.trainer import Progress, Trainer

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every speech test on one torch thread (conftest's one_thread)."""


def tones(seconds: float, seed: int) -> np.ndarray:
    """A wave of a few tones in noise, changing every tenth of a second."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    pitch = np.repeat(rng.uniform(200, 3000, int(seconds * 10) + 1), audio.SAMPLE_RATE // 10)
    wave = 0.3 * np.sin(2 * np.pi * pitch[: len(t)] * t) + 0.01 * rng.normal(size=len(t))
    return wave.astype(np.float32)


def spoken(text: str, voice: str, path) -> np.ndarray:
    subprocess.run([ESPEAK, "-v", voice, "-w", str(path), text], check=True)
    return audio.read_wav(path)


def unit_features(n_mels: int = 20) -> speech.Features:
    return speech.Features(
        audio.LogMel(n_mels=n_mels),
        np.zeros(n_mels, np.float32) - 5.0,
        np.full(n_mels, 4.0, np.float32),
    )


def test_stack_frames_puts_neighbours_side_by_side():
    x = torch.arange(7 * 2 * 2, dtype=torch.float).view(7, 2, 2)  # (T, B, F)
    steps, lengths = speech.stack_frames(x, torch.tensor([7, 4]), stack=3, stride=2)
    assert steps.shape == (3, 2, 6)
    assert torch.equal(steps[1, 0], torch.cat([x[2, 0], x[3, 0], x[4, 0]]))
    assert lengths.tolist() == [3, 1]  # 1 + (7 - 3) // 2 and 1 + (4 - 3) // 2
    short, n = speech.stack_frames(x[:2], torch.tensor([2, 1]), stack=3, stride=3)
    assert short.shape == (1, 2, 6) and n.tolist() == [1, 1]
    assert torch.equal(short[0, 0, 4:], torch.zeros(2))  # padded with zeros


def test_bucketed_batches_cover_each_utterance_once_per_epoch():
    lengths = list(np.random.default_rng(0).integers(10, 500, 100))
    seen = [i for step in range(13) for i in speech.bucketed_batch(step, lengths, 8, seed=3)]
    assert sorted(seen) == list(range(100))  # 13 steps of 8 (the last 4) are one epoch
    assert speech.bucketed_batch(13, lengths, 8, 3) != speech.bucketed_batch(0, lengths, 8, 3)
    assert speech.bucketed_batch(5, lengths, 8, 3) == speech.bucketed_batch(5, lengths, 8, 3)


def test_padding_does_not_change_the_ctc_loss():
    torch.manual_seed(0)
    config = speech.Config(hidden=8, layers=2, dropout=0.0)
    model = speech.SpeechRecognizer(5, 4, config).eval()
    series = [torch.randn(n, 5) for n in (30, 12, 21)]
    targets = [torch.tensor(t) for t in ([1, 2, 3], [2], [3, 3, 1])]
    together, steps = speech.batch_loss(model, series, targets, "sum")
    pairs = zip(series, targets, strict=True)
    alone = sum(speech.batch_loss(model, [s], [t], "sum")[0] for s, t in pairs)
    assert together.item() == pytest.approx(alone.item(), rel=1e-5)
    assert steps == 10 + 4 + 7


def unidirectional(n_mels: int, labels: int, stack: int, stride: int, cell: str):
    torch.manual_seed(1)
    config = speech.Config(
        cell=cell, hidden=16, layers=2, bidirectional=False, stack=stack, stride=stride, dropout=0.0
    )
    model = speech.SpeechRecognizer(n_mels, labels, config).eval()
    with torch.no_grad():
        model.head.weight.mul_(10.0)  # random weights, but labels that change often
    return model


@pytest.mark.parametrize("stack, stride, cell", [(3, 3, "gru"), (3, 2, "lstm"), (1, 1, "rnn")])
@pytest.mark.parametrize("chunk", [1000, 2777])  # neither divides the 160-sample hop
def test_streaming_transcription_equals_offline(stack, stride, cell, chunk):
    labels = [speech.BLANK, *"abcdefg"]
    features = unit_features()
    model = unidirectional(20, len(labels), stack, stride, cell)
    wave = tones(2.0, seed=stack + stride)
    offline = speech.decode(
        speech.log_probs_of(model, [torch.from_numpy(features(wave))])[0], labels
    )
    recognizer = speech.StreamingRecognizer(model, features, labels)
    pieces = [recognizer.push(wave[i : i + chunk]) for i in range(0, len(wave), chunk)]
    assert "".join(pieces) == offline
    assert len(offline) >= 4, "the random model should say something to compare"
    assert sum(1 for p in pieces if p) >= 3  # the text arrives as the audio does


def test_streaming_refuses_a_bidirectional_model():
    model = speech.SpeechRecognizer(20, 4, speech.Config(hidden=8, layers=1))
    with pytest.raises(ValueError, match="unidirectional"):
        speech.StreamingRecognizer(model, unit_features(), [speech.BLANK, *"abc"])


def test_features_round_trip_through_the_run(tmp_path):
    features = speech.Features(
        audio.LogMel(n_mels=24, hop_ms=12.5),
        np.arange(24.0, dtype=np.float32),
        np.ones(24, np.float32),
    )
    features.save(tmp_path / "features.json")
    again = speech.Features.load(tmp_path / "features.json")
    wave = tones(0.5, seed=4)
    assert again.logmel == features.logmel
    np.testing.assert_array_equal(again(wave), features(wave))


@needs_espeak
def test_model_overfits_three_utterances_to_zero_errors(tmp_path):
    torch.manual_seed(0)
    texts = ["one two", "nine", "three eight five"]
    voices = ["en-us", "en-gb", "en-us+f3"]
    logmel = audio.LogMel(n_mels=20)
    cases = enumerate(zip(texts, voices, strict=True))
    raw = [logmel(spoken(t, v, tmp_path / f"{i}.wav")) for i, (t, v) in cases]
    mean, std = audio.feature_stats(raw)
    series = [torch.from_numpy(audio.normalise(f, mean, std)) for f in raw]
    labels = [speech.BLANK] + sorted(set("".join(texts)))
    parts = {"train": (series, texts), "val": (series, texts)}
    config = speech.Config(
        hidden=64,
        layers=1,
        batch_size=3,
        dropout=0.0,
        lr=1e-2,
        warmup=10,
        minutes=0.0,
        steps=200,
        eval_every=200,
        device="cpu",
        weight_decay=0.0,
        stack=3,
        stride=2,
        schedule="constant",  # zero errors by step 60 to 110 over seeds 0 to 3
    )
    task = speech.build_task(config, labels, parts)
    trainer = Trainer(config, task, tmp_path / "run", Progress(io.StringIO()))
    trainer.fit()  # its CPU time: benchmarks/speech_overfit_time.py
    assert trainer.step == 200
    task.model.eval()
    scores, found = speech.transcript_scores(task.model, series, texts, labels)
    assert found == texts
    assert scores == {"cer": 0.0, "wer": 0.0}


@needs_espeak
def test_train_transcribe_and_eval_from_the_command_line(tmp_path, capsys, charlm_run):
    from rnnkit import cli
    from rnnkit.data import speech as corpus

    corpus.generate(tmp_path / "data", hours=0.005, seed=2, kind="digits")
    run = tmp_path / "run"
    flags = "--hidden 16 --layers 1 --no-bidirectional --steps 4 --eval-every 2 --batch-size 4"
    code = cli.main(["train", "speech", "--data", str(tmp_path / "data"), "--out", str(run),
                     "--device", "cpu", "--beam", "2", *flags.split()])  # fmt: skip
    assert code == 0
    report = json.loads((run / "test.json").read_text())
    assert {"greedy_wer", "greedy_cer", "beam_wer", "beam_cer"} <= set(report)
    wav = sorted((tmp_path / "data" / "wav").glob("test-*.wav"))[0]
    capsys.readouterr()
    assert cli.main(["transcribe", str(run), str(wav), "--beam", "1"]) == 0
    offline = capsys.readouterr().out
    assert cli.main(["transcribe", str(run), str(wav), "--stream", "--chunk-ms", "37"]) == 0
    assert capsys.readouterr().out == offline  # greedy both ways, text then a newline
    fused = ["--beam", "3", "--lm", str(charlm_run), "--lm-weight", "0.3"]
    assert cli.main(["transcribe", str(run), str(wav), str(wav), *fused]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"{wav}\t")
    assert cli.main(["eval", str(run), "--data", str(tmp_path / "data" / "test.csv")]) == 0
    assert "greedy_wer" in capsys.readouterr().out
    assert cli.main(["transcribe", str(run), str(tmp_path / "missing.wav")]) == 2


def test_one_manifest_is_split_into_train_and_val_by_the_seed(tmp_path):
    rows = ["path,transcript"]
    for i in range(10):
        audio.write_wav(tmp_path / f"{i}.wav", tones(0.3, seed=i))
        rows.append(f"{i}.wav,utterance {i}")
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    config = speech.Config(data=str(tmp_path / "all.csv"), val_fraction=0.2, seed=5)
    parts = speech.read_parts(config, audio.LogMel(n_mels=20))
    assert set(parts) == {"train", "val"}  # no test part: the report is skipped
    train, val = parts["train"][1], parts["val"][1]
    assert len(train) == 8 and len(val) == 2
    assert sorted(train + val) == sorted(f"utterance {i}" for i in range(10))
    assert speech.read_parts(config, audio.LogMel(n_mels=20))["val"][1] == val  # same seed
    assert all(f.shape[1] == 20 for f in parts["train"][0])


@pytest.mark.parametrize("command", [["train", "speech"], ["transcribe"]])
def test_help_renders(command, capsys):
    from rnnkit import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main([*command, "--help"])
    assert stopped.value.code == 0
    assert ("--stack" if command[0] == "train" else "--stream") in capsys.readouterr().out
