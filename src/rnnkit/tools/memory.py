"""Long-range memory, measured: tasks whose answer depends on an input N steps back.

``rnnkit bench memory`` trains every cell for the same number of steps on each task at each
distance N and plots accuracy against N. The tasks are generated, so they are endless and
never repeat; each is scored on fresh sequences:

- **copy** (Hochreiter and Schmidhuber 1997, experiment 2, in the form of Arjovsky et al.
  2016): 5 symbols, N blanks, a go marker, then the 5 symbols must be written back;
  accuracy is per recalled symbol (chance 1/8);
- **adding** (Hochreiter and Schmidhuber 1997, experiment 4): N+1 pairs (value, marker);
  two steps are marked, the first at step 0 or 1 and the second at most 2 steps before
  the end, so the two are about N steps apart; the target is the sum of the two marked
  values; a sequence counts as right when the error is below 0.04, the paper's criterion
  (chance, always answering 1, about 11%);
- **subject**: "the dog that my family had when I was a child had a fluffy ___": a
  subject token (one of 4) comes first, then N distracting tokens, then a query; the
  answer is the subject (chance 1/4).

Shape letters: B batch, T time, V symbols.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import rnnkit

COPY_SYMBOLS, COPY_LENGTH, SUBJECTS, DISTRACTORS = 8, 5, 4, 8
ADDING_TOLERANCE = 0.04


@dataclass
class Batch:
    inputs: Tensor  # (T, B, F) float inputs
    targets: Tensor  # (T, B) long class targets, or (B,) float for regression
    scored: Tensor  # (T, B) bool: the steps whose output is scored


def copy_task(n: int, batch: int, generator) -> Batch:
    """Symbols 1..8, blank 0, go marker 9 (one-hot, 10 channels)."""
    symbols = torch.randint(1, COPY_SYMBOLS + 1, (COPY_LENGTH, batch), generator=generator)
    T = 2 * COPY_LENGTH + n + 1
    tokens = torch.zeros(T, batch, dtype=torch.long)
    tokens[:COPY_LENGTH] = symbols
    tokens[COPY_LENGTH + n] = COPY_SYMBOLS + 1  # go
    targets = torch.zeros(T, batch, dtype=torch.long)
    targets[-COPY_LENGTH:] = symbols
    scored = torch.zeros(T, batch, dtype=torch.bool)
    scored[-COPY_LENGTH:] = True
    return Batch(nn.functional.one_hot(tokens, COPY_SYMBOLS + 2).float(), targets, scored)


def adding_task(n: int, batch: int, generator) -> Batch:
    T = n + 1
    values = torch.rand(T, batch, generator=generator)
    first = torch.randint(0, min(2, T), (batch,), generator=generator)
    second = T - 1 - torch.randint(0, min(3, T - 1), (batch,), generator=generator)
    markers = torch.zeros(T, batch)
    columns = torch.arange(batch)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    targets = values[first, columns] + values[second, columns]
    scored = torch.zeros(T, batch, dtype=torch.bool)
    scored[-1] = True
    return Batch(torch.stack([values, markers], dim=2), targets, scored)


def subject_task(n: int, batch: int, generator) -> Batch:
    """Tokens: subjects 0..3, distractors 4..11, query 12 (one-hot, 13 channels)."""
    subject = torch.randint(0, SUBJECTS, (batch,), generator=generator)
    noise = torch.randint(SUBJECTS, SUBJECTS + DISTRACTORS, (n, batch), generator=generator)
    query = torch.full((1, batch), SUBJECTS + DISTRACTORS)
    tokens = torch.cat([subject[None], noise, query])  # (n + 2, B)
    targets = torch.zeros_like(tokens)
    targets[-1] = subject
    scored = torch.zeros(tokens.shape, dtype=torch.bool)
    scored[-1] = True
    return Batch(nn.functional.one_hot(tokens, SUBJECTS + DISTRACTORS + 1).float(), targets, scored)


TASKS = {
    "copy": (copy_task, 10, COPY_SYMBOLS + 1),
    "adding": (adding_task, 2, 1),
    "subject": (subject_task, SUBJECTS + DISTRACTORS + 1, SUBJECTS),
}


class Probe(nn.Module):
    """Recurrent layer -> linear read-out at every step."""

    def __init__(self, cell: str, inputs: int, outputs: int, hidden: int):
        super().__init__()
        self.rnn = rnnkit.layers.make_layer(cell, inputs, hidden)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0])  # (T, B, outputs)


def loss_and_accuracy(task: str, model: Probe, batch: Batch) -> tuple[Tensor, float]:
    out = model(batch.inputs)
    if task == "adding":
        prediction = out[-1, :, 0]  # (B,)
        loss = nn.functional.mse_loss(prediction, batch.targets)
        right = (prediction - batch.targets).abs() < ADDING_TOLERANCE
        return loss, right.float().mean().item()
    logits, targets = out[batch.scored], batch.targets[batch.scored]  # (K, V), (K,)
    loss = nn.functional.cross_entropy(logits, targets)
    return loss, (logits.argmax(1) == targets).float().mean().item()


def train_and_score(
    task: str,
    cell: str,
    n: int,
    steps: int,
    hidden: int = 64,
    seed: int = 0,
    batch: int = 64,
    lr: float = 3e-3,
    clip: float = 1.0,
) -> float:
    """Train a fresh probe for ``steps`` steps at distance ``n``; accuracy on 1024 new sequences."""
    make, inputs, outputs = TASKS[task]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Probe(cell, inputs, outputs, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = loss_and_accuracy(task, model, make(n, batch, generator))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)  # the lectures' remedy for explosion
        optimizer.step()
    with torch.no_grad():
        test = make(n, 1024, torch.Generator().manual_seed(10_000 + seed))
        return loss_and_accuracy(task, model, test)[1]


def chance(task: str) -> float:
    return {"copy": 1 / COPY_SYMBOLS, "subject": 1 / SUBJECTS, "adding": None}[task]


def plot(results: dict, path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (task, by_cell) in zip(axes[0], results.items(), strict=True):
        for cell, points in by_cell.items():
            ax.plot([int(n) for n in points], list(points.values()), "o-", label=cell)
        if chance(task) is not None:
            ax.axhline(chance(task), color="grey", linestyle=":", label="chance")
        ax.set(
            title=task,
            xlabel="distance N (steps back)",
            ylabel="accuracy",
            ylim=(0, 1.02),
            xscale="log",
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Long-range memory: accuracy against distance, {steps} training steps each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict) -> str:
    lines = []
    for task, by_cell in results.items():
        distances = list(next(iter(by_cell.values())))
        lines.append(f"{task:10s}" + "".join(f"{f'N={n}':>7}" for n in distances))
        for cell, points in by_cell.items():
            lines.append(f"  {cell:8s}" + "".join(f"{points[n]:7.2f}" for n in distances))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench memory", description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru,peephole")
    parser.add_argument("--tasks", default="copy,adding,subject")
    parser.add_argument("--distances", default="5,10,20,50,100,200")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="few distances and steps: a smoke run")
    parser.add_argument("--out", default="memory.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.distances, args.steps = "5,20", 60
    cells, tasks = args.cells.split(","), args.tasks.split(",")
    bad = [c for c in cells if c not in rnnkit.layers.CELLS] + [t for t in tasks if t not in TASKS]
    if bad:
        parser.error(f"unknown cells or tasks: {bad}")
    distances = [int(n) for n in args.distances.split(",")]
    results, started = {}, time.time()
    for task in tasks:
        results[task] = {}
        for cell in cells:
            results[task][cell] = {}
            for n in distances:
                accuracy = train_and_score(task, cell, n, args.steps, args.hidden)
                results[task][cell][n] = accuracy
                print(
                    f"[{time.time() - started:6.0f}s] {task:8s} {cell:9s} N={n:<4d} "
                    f"accuracy {accuracy:.3f}",
                    flush=True,
                )
    print(table(results))
    plot(results, Path(args.out), args.steps)
    print(f"plot written to {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
