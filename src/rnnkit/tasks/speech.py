"""Speech recognition with CTC: audio in, characters out, no frame alignments needed.

Log-mel frames (:mod:`rnnkit.data.audio`), normalised by the training part's mean and
deviation -> ``stack`` neighbouring frames concatenated every ``stride`` frames (fewer,
wider steps: Sak et al. 2015, "Fast and Accurate Recurrent Neural Network Acoustic Models
for Speech Recognition", section 2.2) -> stacked uni- or bidirectional recurrent layers ->
linear -> log-softmax over the characters and the CTC blank (index 0). Trained with torch's
CTC loss (Graves et al. 2006) by the shared trainer; decoded by best path or prefix beam
search, optionally with a character language model (:mod:`rnnkit.models.ctc`). Reading the
corpus into features, their normalisation and the batches are
:mod:`rnnkit.tasks.speech_features`'s.

A unidirectional model also transcribes a stream: each chunk of samples becomes log-mel
frames (:class:`rnnkit.data.audio.LogMelStream`), stacked steps, one step each of
:class:`rnnkit.Stream`, and labels of best-path decoding carried across chunks; the text
equals the offline transcript of the whole file.

Shape letters: T frames (input steps after stacking), B batch, F features per frame,
H hidden size, D directions, V labels (characters and the blank).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data import audio
from rnnkit.data.files import read_json, write_json
from rnnkit.data.parts import part
from rnnkit.models import ctc
from rnnkit.models.loss import Loss
from rnnkit.tasks import charlm, default_run_dir, run_config
from rnnkit.tasks.speech_features import (
    Features,
    bucketed_batch,
    load_part,
    pad,
    read_parts,
    say,
    spec_augment,
)
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "speech"
BLANK = ""  # the CTC blank's entry in the label list; it is never written


@dataclass
class Config(TrainConfig):
    """``rnnkit train speech``; the defaults train on synthesised digit strings."""

    data: str = "digits"  # digits (synthesised, cached), a directory of train/val/test.csv, a CSV
    hours: float = 1.5  # digits: hours to synthesise (train 0.8 of them, val and test 0.1)
    val_fraction: float = 0.1  # one manifest: the share held out for validation
    n_mels: int = 40  # log-mel bands per 10 ms frame
    stack: int = 3  # frames concatenated into one input step
    stride: int = 3  # frames between the starts of neighbouring input steps
    cell: Literal["lstm", "gru", "rnn", "peephole"] = "gru"  # recurrent cell
    hidden: int = 192  # hidden units per layer and direction
    layers: int = 3  # stacked recurrent layers
    bidirectional: bool = True  # read both ways (False: the model can transcribe a stream)
    dropout: float = 0.1  # dropout between layers and before the output layer
    batch_size: int = 32  # utterances per training step
    lr: float = 2e-3  # peak learning rate
    warmup: int = 100  # steps of linear warm-up from 0 to lr
    minutes: float = 15.0  # stop after this much training time (0: no limit)
    eval_every: int = 250  # evaluate on validation every this many steps
    val_utterances: int = 300  # validation utterances scored at each evaluation (0: all)
    freq_masks: int = 0  # SpecAugment: bands of frequencies masked per training utterance
    freq_mask: int = 8  # SpecAugment: the widest band masked, in log-mel bands
    time_masks: int = 0  # SpecAugment: spans of time masked per training utterance
    time_mask: int = 20  # SpecAugment: the longest span masked, in frames (at most a fifth)
    beam: int = 8  # beam width of prefix beam search in the test report and transcribe
    lm: str = ""  # a charlm run directory for shallow fusion in beam search (empty: none)
    lm_weight: float = 0.5  # weight of the language model's log-probability
    length_bonus: float = 1.0  # added per character in beam search with a language model
    threads: int = 0  # CPU threads for torch (0: torch's default; 1 is fastest on a busy machine)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: CTC wants float32 scores


# --- labels and parts (reading, normalising, batching: speech_features.py) ---


def encode(text: str, labels: list[str]) -> torch.Tensor:
    """Label indices of a transcript; characters never seen in training are left out."""
    index = {c: i for i, c in enumerate(labels) if c != BLANK}
    return torch.tensor([index[c] for c in text if c in index], dtype=torch.long)


def prepare(config: Config):
    """The features, the label list (blank first, then the training characters), and each
    part as (normalised (T_i, F) tensors, transcripts)."""
    logmel = audio.LogMel(n_mels=config.n_mels)
    raw = read_parts(config, logmel)
    features = Features(logmel, *audio.feature_stats(raw["train"][0]))  # training part only
    labels = [BLANK] + sorted(set("".join(raw["train"][1])))
    parts = {
        part: ([torch.from_numpy(audio.normalise(f, features.mean, features.std)) for f in fs], ts)
        for part, (fs, ts) in raw.items()
    }
    return features, labels, parts


# --- model ---


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, stack: int, stride: int):
    """(T, B, F) frames -> (T', B, stack*F) steps: step t holds frames t*stride .. t*stride +
    stack - 1 side by side. A sequence shorter than ``stack`` is padded with zeros to one
    step; a sequence of n frames gives 1 + (n - stack) // stride steps."""
    if x.shape[0] < stack:
        x = F.pad(x, (0, 0, 0, 0, 0, stack - x.shape[0]))  # (stack, B, F)
    steps = x.unfold(0, stack, stride)  # (T', B, F, stack)
    steps = steps.permute(0, 1, 3, 2).flatten(2)  # (T', B, stack*F)
    return steps, 1 + (lengths.clamp(min=stack) - stack) // stride


class SpeechRecognizer(nn.Module):
    """Stacked frames -> recurrent layers -> dropout -> linear; returns log-probabilities."""

    def __init__(self, features: int, labels: int, config: Config):
        super().__init__()
        if config.stack < 1 or config.stride < 1:
            raise ValueError(f"stack and stride must be >= 1, got {config.stack}, {config.stride}")
        self.stack, self.stride = config.stack, config.stride
        directions = 2 if config.bidirectional else 1
        self.rnn = rnnkit.layers.make_layer(
            config.cell, features * config.stack, config.hidden, num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(directions * config.hidden, labels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """(T, B, F) frames and (B,) lengths -> (T', B, V) log-probabilities, (B,) lengths."""
        steps, lengths = stack_frames(x, lengths, self.stack, self.stride)
        output, _ = self.rnn(steps, lengths=lengths)  # (T', B, D*H)
        return torch.log_softmax(self.head(self.drop(output)).float(), -1), lengths

    def loss(self, batch, carry=None) -> Loss:
        """CTC loss per target character of each utterance, summed over the utterances of a
        batch (frames, lengths, targets end to end, target lengths); tokens are the steps."""
        x, lengths, targets, target_lengths = (t.to(self.head.weight.device) for t in batch)
        log_probs, steps = self(x, lengths)  # (T', B, V)
        loss = F.ctc_loss(
            log_probs, targets, steps, target_lengths, blank=0, reduction="none",
            zero_infinity=True,
        )  # fmt: skip
        per_char = loss / target_lengths.clamp(min=1)  # (B,)
        return Loss(per_char.sum(), len(per_char), int(steps.sum()))


def utterances(series: list[torch.Tensor], targets: list[torch.Tensor]):
    """A batch: frames (T, B, F) padded, (B,) lengths, the targets end to end, their lengths."""
    x, lengths = pad(series)
    return x, lengths, torch.cat(targets), torch.tensor([len(t) for t in targets])


def batch_loss(model: SpeechRecognizer, series, targets, reduction: str = "mean"):
    """CTC loss of a batch, per target character ("mean": averaged over utterances as
    torch does; "sum": summed over them), and the network's steps."""
    loss = model.loss(utterances(series, targets))
    return (loss.total / loss.weight if reduction == "mean" else loss.total), loss.tokens


@torch.no_grad()
def log_probs_of(model: SpeechRecognizer, series: list[torch.Tensor], batch_size: int = 64):
    """Each utterance's (T'_i, V) log-probabilities, on the CPU."""
    device, out = model.head.weight.device, []
    for start in range(0, len(series), batch_size):
        x, lengths = pad(series[start : start + batch_size])
        log_probs, steps = model(x.to(device), lengths.to(device))
        out += [log_probs[: int(n), b].cpu() for b, n in enumerate(steps)]
    return out


def decode(log_probs, labels: list[str], beam: int = 1, lm=None, **options) -> str:
    """Text of one utterance: best path (``beam`` 1) or prefix beam search."""
    if beam <= 1 and lm is None:
        ids = ctc.greedy(log_probs)
    else:
        ids = ctc.beam_decode(log_probs, beam=max(beam, 1), lm=lm, **options)
    return "".join(labels[i] for i in ids)


def transcript_scores(
    model, series, texts, labels, beam=1, lm=None, prefix="", world=ALONE, **options
):
    """Character and word error rates of decoding ``series`` against ``texts``; under
    torchrun each process decodes its share of the utterances."""

    def decoded(some: list) -> list[str]:
        return [decode(lp, labels, beam, lm, **options) for lp in log_probs_of(model, some)]

    found = world.map(decoded, series)
    return {f"{prefix}{k}": v for k, v in ctc.error_rates(texts, found).items()}, found


# --- training ---


def build_task(config: Config, labels: list[str], parts) -> Task:
    torch.manual_seed(config.seed)
    train_x, train_texts = parts["train"]
    val_x, val_texts = parts["val"]
    n_val = config.val_utterances or len(val_x)
    val_x, val_texts = val_x[:n_val], val_texts[:n_val]
    train_y = [encode(t, labels) for t in train_texts]
    val_y = [encode(t, labels) for t in val_texts]
    model = SpeechRecognizer(train_x[0].shape[1], len(labels), config)
    lengths = [len(s) for s in train_x]

    def batch(step, rank, size):
        rows = part(bucketed_batch(step, lengths, config.batch_size, config.seed), rank, size)
        heard = spec_augment([train_x[i] for i in rows], config, [config.seed, step, rank])
        return utterances(heard, [train_y[i] for i in rows])

    def evaluate(m, world):
        total = sum(
            batch_loss(m, val_x[i : i + 64], val_y[i : i + 64], "sum")[0].item()
            for i in world.share(range(0, len(val_x), 64))
        )
        scores, _ = transcript_scores(m, val_x, val_texts, labels, prefix="val_", world=world)
        return {"val_loss": world.sum(total)[0] / len(val_x), **scores}

    per_epoch = math.ceil(len(train_x) / config.batch_size)
    return Task(model, batch, evaluate, per_epoch, "frames", "CTC loss (nats per character)")


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or with ``resume``, continue) the run in ``config.out``; score its test part."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out = str(run_dir)
    features, labels, parts = prepare(config)
    if resume:
        labels = read_json(run_dir / "labels.json", list)
    hours = sum(len(s) for s in parts["train"][0]) * features.logmel.hop_ms / 3.6e6  # frames
    say(f"{len(parts['train'][0])} training utterances ({hours:.2f} h), {len(labels) - 1} chars")
    trainer = Trainer(config, build_task(config, labels, parts), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        configuration.save(config, run_dir / "config.json", task=NAME)
        write_json(run_dir / "labels.json", labels, ensure_ascii=False)
        features.save(run_dir / "features.json")
    trainer.fit()
    tested = trainer.world.rank == 0 and "test" in parts  # one process tests
    if tested and (run_dir / MODEL_FILE).exists() and not trainer.interrupted:
        _, _, _, model = load_run(run_dir, "cpu")
        result = test_report(model, *parts["test"], labels, config)
        write_json(run_dir / "test.json", result, indent=2)
        trainer.progress.line(format_eval(result))
    return trainer


def lm_scorer(lm_run: Path, labels: list[str]) -> ctc.CharLMScorer:
    """The shallow-fusion scorer of a trained ``charlm`` run, for the CTC labels ``labels``."""
    _, vocab, model = charlm.load_run(lm_run, "cpu")
    return ctc.CharLMScorer(model.float(), vocab, labels)


def test_report(model, series, texts, labels, config: Config) -> dict:
    """Error rates of best path, beam search, and (with ``config.lm``) beam search with the
    language model, on the given utterances."""
    result = {"utterances": len(series)}
    greedy, _ = transcript_scores(model, series, texts, labels, prefix="greedy_")
    beam, _ = transcript_scores(model, series, texts, labels, config.beam, prefix="beam_")
    result.update(greedy, **beam)
    if config.lm:
        lm = lm_scorer(Path(config.lm), labels)
        options = {"lm_weight": config.lm_weight, "length_bonus": config.length_bonus}
        fused, _ = transcript_scores(
            model, series, texts, labels, config.beam, lm, prefix="beam_lm_", **options
        )
        result.update(fused)
    return result


def format_eval(result: dict) -> str:
    return " | ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "cpu"):
    """The config, label list, features and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    labels = read_json(run_dir / "labels.json", list)
    features = Features.load(run_dir / "features.json")
    model = SpeechRecognizer(len(features.mean), len(labels), config)
    load_model(model, run_dir / MODEL_FILE)
    return config, labels, features, model.to(pick_device(device)).eval()


def evaluate(run_dir: Path, data: str, device: str = "cpu") -> dict:
    """Error rates of a run on a manifest (CSV of path,transcript)."""
    config, labels, features, model = load_run(run_dir, device)
    raw, texts = load_part(Path(data), features.logmel, data)
    series = [torch.from_numpy(audio.normalise(f, features.mean, features.std)) for f in raw]
    return test_report(model, series, texts, labels, config)


def transcribe(
    run_dir: Path, files: list[str], stream: bool = False, beam: int = 0, lm: str = "",
    lm_weight: float | None = None, chunk_ms: float = 100.0, device: str = "cpu", out=None,
) -> list[str]:  # fmt: skip
    """Print the transcript of each WAV file (``stream``: as its audio is read, chunk by
    chunk); return them. ``beam`` 0 and ``lm`` empty take the run's settings."""
    out = out or sys.stdout
    config, labels, features, model = load_run(run_dir, device)
    if stream:
        return [stream_file(model, features, labels, f, chunk_ms, out) for f in files]
    beam = beam or config.beam
    scorer = lm_scorer(Path(lm or config.lm), labels) if lm or config.lm else None
    options = {"lm_weight": config.lm_weight if lm_weight is None else lm_weight}
    options = {**options, "length_bonus": config.length_bonus} if scorer else {}
    texts = []
    for path in files:
        wave = audio.read_wav(path, features.logmel.sample_rate)
        frames = torch.from_numpy(features(wave))
        if len(frames) == 0:
            raise audio.AudioError(f"{path}: shorter than one frame")
        text = decode(log_probs_of(model, [frames])[0], labels, beam, scorer, **options)
        out.write(f"{path}\t{text}\n" if len(files) > 1 else text + "\n")
        texts.append(text)
    return texts


def stream_file(model, features: Features, labels, path, chunk_ms: float, out) -> str:
    """Read a WAV file chunk by chunk and print its transcript as it grows."""
    wave = audio.read_wav(path, features.logmel.sample_rate)
    chunk = max(1, round(features.logmel.sample_rate * chunk_ms / 1000))
    recognizer, pieces = StreamingRecognizer(model, features, labels), []
    for start in range(0, len(wave), chunk):
        piece = recognizer.push(wave[start : start + chunk])
        out.write(piece)
        out.flush()
        pieces.append(piece)
    out.write("\n")
    return "".join(pieces)


class StreamingRecognizer:
    """Best-path transcription of audio pushed in chunks: log-mel frames as they complete,
    normalised with the training statistics, stacked into steps, one :class:`rnnkit.Stream`
    step each, and labels carried across chunks by :class:`rnnkit.models.ctc.GreedyStream`."""

    def __init__(self, model: SpeechRecognizer, features: Features, labels: list[str]):
        if model.rnn.bidirectional:
            raise ValueError(
                "--stream needs a unidirectional model (train with --no-bidirectional): a "
                "reverse direction reads from the end of the audio, which a stream has not got"
            )
        self.features, self.labels, self.model = features, labels, model
        self.frames = audio.LogMelStream(features.logmel)
        self.stream = rnnkit.Stream(model.rnn, head=model.head)
        self.decoder = ctc.GreedyStream()
        self.pending = np.zeros((0, len(features.mean)), np.float32)  # frames not yet stepped

    def push(self, samples: np.ndarray) -> str:
        """The text that ``samples`` add to the transcript."""
        new = audio.normalise(self.frames.push(samples), self.features.mean, self.features.std)
        self.pending = np.concatenate([self.pending, new])  # (frames, F)
        stack, stride, ids = self.model.stack, self.model.stride, []
        while len(self.pending) >= stack:
            step = torch.from_numpy(self.pending[:stack].reshape(-1))  # (stack*F,)
            ids += self.decoder.push(self.stream.step(step))  # (1, V) scores
            self.pending = self.pending[stride:]
        return "".join(self.labels[i] for i in ids)
