"""Character-level language model: the lectures' flagship example, end to end.

Embedding (or one-hot, as the lecture draws it) -> stacked recurrent layers -> linear ->
softmax over the next character. Trained on char-rnn style streams with the state carried
from window to window (:mod:`rnnkit.data.streams`) by the shared trainer
(:mod:`rnnkit.training.trainer`); sampled one character at a time, each new character
costing one step of the network from the carried state.

Shape letters: T time (window), B batch (streams), E input size, H hidden size, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data import Streams, Vocab, Window, eval_windows, load_corpus
from rnnkit.kernels.dropout import Dropout
from rnnkit.models.loss import Loss
from rnnkit.scan import map_state
from rnnkit.tasks import charlm_rule, default_run_dir, run_config
from rnnkit.training import config as configuration
from rnnkit.training import distributed
from rnnkit.training.checkpoint import LAST_FILE, load_tensors
from rnnkit.training.distributed import ALONE
from rnnkit.training.progress import Progress
from rnnkit.training.trainer import (
    MODEL_FILE,
    Task,
    TrainConfig,
    Trainer,
    autocast,
    load_model,
    pick_device,
    use_bf16,
)

NAME = "charlm"


@dataclass
class Config(TrainConfig):
    """``rnnkit train charlm``; the defaults are what ``make demo`` trains, chosen by the
    races of ``benchmarks/charlm_race.py`` (docs/benchmarks.md). What is left unset is
    picked from the corpus and the budget by :mod:`rnnkit.tasks.charlm_rule`."""

    data: str = "stdlib"  # stdlib, shakespeare, hello, sword:MODULE, or a file, directory or glob
    cell: Literal["lstm", "gru", "rnn", "peephole"] = "gru"  # recurrent cell
    hidden: int = 384  # hidden units per layer
    layers: int = 1  # stacked recurrent layers
    dropout: float | None = None  # on embedding, between layers, before head (unset: by passes)
    embedding: int = 0  # input embedding size (0: same as hidden; --tie uses hidden)
    one_hot: bool | None = None  # one-hot input, as the lecture draws it (unset: an embedding)
    tie: bool = False  # share the embedding and output weights (needs embedding = hidden)
    window: int | None = None  # characters per truncated-BPTT window (unset: 64, less if short)
    batch_size: int | None = None  # contiguous streams read side by side (unset: by passes)
    val_fraction: float = 0.1  # the last part of the corpus, by position, for validation
    val_chars: int = 200_000  # validation characters scored at each evaluation (0: all)
    lr: float = 8e-3  # peak learning rate
    warmup: int = 30  # steps of linear warm-up from 0 to lr
    weight_decay: float = 0.1  # AdamW's decoupled weight decay: pulls every weight towards 0
    minutes: float = 3.0  # stop after this much training time (0: no limit)
    eval_every: int = 250  # evaluate on validation every this many steps
    stop_after: int = 2  # stop when validation has not improved for this many evaluations


class CharLM(nn.Module):
    """Embedding or one-hot -> recurrent layers -> dropout -> linear; returns logits."""

    def __init__(self, vocab_size: int, config: Config, bf16: bool = False):
        super().__init__()
        if config.tie and config.one_hot:
            raise ValueError("--tie needs a learned embedding, not --one-hot")
        self.vocab_size, self.one_hot = vocab_size, takes_one_hot(config, vocab_size)
        size = config.hidden if config.tie else config.embedding or config.hidden
        size = vocab_size if self.one_hot else size
        self.embed = None if self.one_hot else nn.Embedding(vocab_size, size)
        self.rnn = make_layers(config, size, "bf16" if bf16 else "fp32")
        self.drop = Dropout(dropout_for(config))  # a hashed mask: torch's costs a third of a step
        self.head = nn.Linear(config.hidden, vocab_size)
        if config.tie:
            self.head.weight = self.embed.weight  # Press & Wolf 2017, "Using the Output Embedding"

    def forward(self, x: torch.Tensor, state=None):
        """x (T, B) character indices -> logits (T, B, V) and the final state."""
        if self.one_hot:  # not dropped: a dropped one-hot input would be a lost character
            inputs = F.one_hot(x, self.vocab_size).float()  # (T, B, V)
        else:
            inputs = self.drop(self.embed(x))  # (T, B, E)
        if state is not None:  # under bf16 autocast the layer returns a bf16 state
            state = map_state(lambda s: s.to(inputs.dtype), state)
        output, state = self.rnn(inputs, state)  # (T, B, H)
        return self.head(self.drop(output)), state  # (T, B, V)

    def loss(self, window: Window, state=None) -> Loss:
        """Next-character cross-entropy of one window, summed, from the carried state."""
        device = self.head.weight.device
        state = None if window.fresh else state
        logits, state = self(window.inputs.to(device), state)  # (T, B, V)
        targets = window.targets.to(device)
        total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        return Loss(total, targets.numel(), targets.numel(), state)


def takes_one_hot(config: Config, vocab_size: int) -> bool:
    """``--one-hot`` as given; unset, a learned embedding.

    Measured (docs/benchmarks.md, charlm on a grid of corpora): at batch 32 and 60 s of one
    thread an embedding of 384 was ahead of one-hot input on every corpus of the grid, by
    0.05 (0.94 MB of plays) to 0.25 nats per character (0.29 MB), though it takes a third
    fewer steps in the time; on the Spanish Bible one-hot input had lost to the plain script.
    (Earlier, at batch 128 and ten minutes on the complete works, one-hot had been ahead.)
    """
    return bool(config.one_hot)


def input_of_saved_run(config: Config, tensors: dict) -> Config:
    """A run saved before the input was written into its config (``one_hot`` null) took
    one-hot input when it had no embedding: read which from its weights."""
    if config.one_hot is None:
        config.one_hot = "model.embed.weight" not in tensors
    return config


def dropout_for(config: Config) -> float:
    """``--dropout``, or none in a model built before :func:`prepare` has picked it."""
    return config.dropout or 0.0


def make_layers(config: Config, input_size: int, precision: str):
    """The recurrent stack; ``precision="bf16"`` runs its matrix products in bfloat16 (the
    layer's own switch: an enclosing autocast does not reach torch's fused kernel)."""
    dropout = dropout_for(config) if config.layers > 1 else 0.0
    return rnnkit.layers.make_layer(
        config.cell,
        input_size,
        config.hidden,
        num_layers=config.layers,
        dropout=dropout,
        precision=precision,
    )


@torch.no_grad()
def score(model: CharLM, ids: torch.Tensor, batch_size: int, window: int, world=ALONE) -> float:
    """Mean loss in nats per character over ``ids``, the state carried across windows; under
    torchrun each process scores its share of the streams."""
    device, state, total, count = model.head.weight.device, None, 0.0, 0
    for x, y in eval_windows(ids, batch_size, window):
        x, y = x[:, world.rank :: world.size], y[:, world.rank :: world.size]  # (T, B/size)
        if not x.numel():
            continue
        logits, state = model(x.to(device), state)
        y = y.to(device)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    total, count = world.sum(total, count)
    return total / count


def metrics(loss: float, prefix: str = "val_") -> dict:
    return {f"{prefix}loss": loss, f"{prefix}bpc": loss / math.log(2)}


# --- training ---


def prepare(config: Config, vocab: Vocab | None = None, say=lambda line: None, world=ALONE):
    """The corpus split by position, the vocabulary of its training part, and the streams;
    the batch, window and dropout left unset are picked (:mod:`rnnkit.tasks.charlm_rule`),
    written into ``config`` (so config.json records them) and said in one line."""
    corpus = load_corpus(config.data)
    cut = int(round(len(corpus.text) * (1.0 - config.val_fraction)))
    train_text, val_text = corpus.text[:cut], corpus.text[cut:]
    vocab = vocab or Vocab.build(train_text)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    if len(val_ids) < 2:
        raise rnnkit.data.CorpusError(f"{corpus.name}: validation part has under 2 characters")
    choice = charlm_rule.choose(
        config, len(train_ids), corpus.name, rate_probe(config, vocab, world)
    )
    config.batch_size, config.window, config.dropout = (
        choice.batch_size,
        choice.window,
        choice.dropout,
    )
    config.one_hot = bool(config.one_hot)  # written down, so the saved run says which
    say(charlm_rule.describe(config, choice, len(train_ids)))
    return vocab, Streams(train_ids, config.batch_size, config.window, corpus.name), val_ids


def rate_probe(config: Config, vocab: Vocab, world=ALONE):
    """``rate(batch, window)``: characters a second of this run's model on this machine (the
    mean over the processes of a torchrun group, so that all of them choose alike)."""

    def rate(batch: int, window: int) -> float:
        device = pick_device(config.device)
        bf16 = use_bf16(config.precision, device)
        model = CharLM(len(vocab), dataclasses.replace(config, dropout=0.0), bf16).to(device)
        (total,) = world.sum(charlm_rule.measured_rate(model, batch, window, bf16, device))
        return total / world.size

    return rate


def build_task(config: Config, vocab: Vocab, streams: Streams, val_ids: torch.Tensor) -> Task:
    torch.manual_seed(config.seed)
    model = CharLM(len(vocab), config, use_bf16(config.precision, pick_device(config.device)))
    scored = val_ids[: config.val_chars] if config.val_chars else val_ids

    def batch(step: int, rank: int, size: int) -> Window:
        return streams[step].shard(rank, size)  # its own block of the streams

    def evaluate(m, world):
        return metrics(score(m, scored, config.batch_size, config.window, world))

    return Task(
        model, batch, evaluate, len(streams),
        unit="characters", loss_label="loss (nats per character)",
    )  # fmt: skip


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or with ``resume``, continue) the run in ``config.out``; return the trainer."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out, progress = str(run_dir), progress or Progress()
    vocab = Vocab.load(run_dir / "vocab.json") if resume else None
    if resume and (run_dir / LAST_FILE).exists():
        input_of_saved_run(config, load_tensors(run_dir / LAST_FILE)[0])
    world, _ = distributed.join(pick_device(config.device))
    say = progress.line if world.rank == 0 else lambda line: None
    vocab, streams, val_ids = prepare(config, vocab, say, world)
    trainer = Trainer(config, build_task(config, vocab, streams, val_ids), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        vocab.save(run_dir / "vocab.json")
    trainer.fit()
    return trainer


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "auto"):
    """The config, vocabulary and best model of a run directory."""
    run_dir = Path(run_dir)
    tensors, _ = load_tensors(run_dir / MODEL_FILE)
    config = input_of_saved_run(run_config(run_dir, Config), tensors)
    vocab = Vocab.load(run_dir / "vocab.json")
    device = pick_device(device)
    model = CharLM(len(vocab), config, use_bf16(config.precision, device))
    load_model(model, run_dir / MODEL_FILE)
    return config, vocab, model.to(device).eval()


def pick_next(logits: torch.Tensor, temperature: float, top_k: int, generator) -> int:
    """Sample one index from (V,) logits; temperature 0 takes the most likely."""
    logits = logits.float().clone()
    logits[0] = -math.inf  # never produce the unknown symbol
    if temperature <= 0:
        return int(logits.argmax())
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = -math.inf
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def generate(
    model: CharLM,
    vocab: Vocab,
    prime: str,
    length: int,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 1,
    bf16: bool = False,
    streaming: bool = True,
) -> Iterator[str]:
    """Yield ``length`` characters after ``prime``; each costs one step from the carried state.

    The prime runs through the model in one call; then each character is one step of
    :class:`rnnkit.Stream` (one call of compiled code for the whole stack), or, with
    ``streaming=False``, one call of the model on a sequence of length 1 (the reference).
    """
    generator = torch.Generator().manual_seed(seed)
    device = model.head.weight.device
    ids = vocab.encode(prime or "\n").to(device).view(-1, 1)  # (T, 1)
    with autocast(device, bf16):
        logits, state = model(ids)  # the prime in one call: (T, 1, V)
    step = next_step_of_stream(model, state) if streaming else None
    last = logits[-1, 0]  # (V,)
    for _ in range(length):
        index = pick_next(last, temperature, top_k, generator)
        yield vocab.symbols[index]
        if step is not None:
            last = step(index)[0]
        else:
            with autocast(device, bf16):
                logits, state = model(torch.tensor([[index]], device=device), state)
            last = logits[-1, 0]


def next_step_of_stream(model: CharLM, state):
    """A one-token step function over :class:`rnnkit.Stream`, started from ``state``."""
    device = model.head.weight.device
    one_hot = torch.eye(model.vocab_size, device=device)  # the lecture's one-hot input
    embedding = model.embed.weight if model.embed is not None else one_hot
    stream = rnnkit.Stream(model.rnn, embedding=embedding, head=model.head)
    stream.state = map_state(lambda s: s.float(), state)
    return stream.step


def sample(
    run_dir: Path,
    prime: str = "",
    length: int = 500,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 1,
    device: str = "auto",
    out=None,
) -> str:
    """Print a sample from a run as it is generated; return it."""
    out = out or sys.stdout
    config, vocab, model = load_run(run_dir, device)
    unseen = vocab.unseen(prime)
    if unseen:
        print(
            f"note: prime characters not in the vocabulary are read as the unknown symbol: "
            f"{''.join(unseen)!r}",
            file=sys.stderr,
        )
    bf16 = use_bf16(config.precision, model.head.weight.device)
    out.write(prime)
    pieces = []
    for char in generate(model, vocab, prime, length, temperature, top_k, seed, bf16):
        out.write(char)
        out.flush()
        pieces.append(char)
    out.write("\n")
    return prime + "".join(pieces)


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss in nats per character, bits per character and perplexity of a run on ``data``."""
    config, vocab, model = load_run(run_dir, device)
    corpus = load_corpus(data)
    text = corpus.text
    if len(text) < 2:  # one character has no next one to predict
        raise rnnkit.data.CorpusError(f"{corpus.name}: {len(text)} character, at least 2 needed")
    ids = vocab.encode(text)
    bf16 = use_bf16(config.precision, model.head.weight.device)
    with autocast(model.head.weight.device, bf16):
        loss = score(model, ids, config.batch_size, config.window)
    unknown = sum(text.count(c) for c in vocab.unseen(text))
    return {
        "loss": loss,
        "bpc": loss / math.log(2),
        "perplexity": math.exp(loss),
        "characters": len(ids),
        "unknown": unknown,
    }
