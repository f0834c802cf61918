"""Forecasting and tagging bars: each run beside its baselines on the same test windows.

The issue's bar: on Mauna Loa CO2 and on the yearly sunspots, the model's MASE on the test
split is below the seasonal naive forecast's. Each case trains a forecast run for a fixed
number of minutes and reads its ``test_metrics.json``; the table gives MASE and sMAPE of
the model (the mean over ``--seeds`` seeds, with their range), naive and seasonal naive, and
whether the bar is met by that mean. The tagging cases train on the generated regimes, with a
bidirectional and a forward-only tagger, and report per-step test accuracy beside the
majority class.

    python benchmarks/forecast.py --seeds 3          # every case, tables printed as markdown
    python benchmarks/forecast.py --only co2 --minutes 1
    python benchmarks/forecast.py --quick            # a few seconds per case, for a smoke test

Runs go to ``runs/bench-forecast/<case>-seed<N>``; the tables are printed for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import torch

from rnnkit.tasks import forecast, tag
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

# case -> settings of forecast.Config (minutes are set from the command line)
FORECASTS = {
    "co2-direct": dict(data="co2", input_window=104, horizon=13, strategy="direct"),
    "co2-direct-lstm": dict(data="co2", input_window=104, horizon=13, cell="lstm"),
    "co2-recursive": dict(data="co2", input_window=104, horizon=13, strategy="recursive"),
    "sunspots-direct": dict(data="sunspots", input_window=33, horizon=5, hidden=32),
    "sunspots-direct-lstm": dict(
        data="sunspots", input_window=33, horizon=5, hidden=32, cell="lstm"
    ),
    "sunspots-recursive": dict(
        data="sunspots", input_window=33, horizon=5, hidden=32, strategy="recursive"
    ),
    "stocks-AAPL-direct": dict(data="stocks:AAPL", input_window=24, horizon=6, hidden=32),
}
BARS = ("co2", "sunspots")  # series whose model must beat seasonal naive on MASE


def run_forecast(name: str, settings: dict, minutes: float, root: Path, seed: int) -> dict:
    out = root / f"{name}-seed{seed}"
    config = forecast.Config(**settings, minutes=minutes, device="cpu", seed=seed, out=str(out))
    trainer = forecast.train(config, progress=Progress(io.StringIO()))
    result = json.loads((out / "test_metrics.json").read_text())
    return {**result, "steps": trainer.step}


def forecast_table(rows: dict) -> str:
    """One line per case; with several seeds, the model's MASE is their mean (and range)."""
    lines = [
        "| case | cell | horizon | test windows | MASE model (seeds) | MASE naive | MASE seasonal "
        "naive (period) | sMAPE % model / seasonal naive | steps | bar |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        r, mases = runs[0], [run["model"]["mase"] for run in runs]
        mean = sum(mases) / len(mases)
        spread = f" ({min(mases):.3f}-{max(mases):.3f}, {len(mases)})" if len(mases) > 1 else ""
        smape = sum(run["model"]["smape"] for run in runs) / len(runs)
        season = r["seasonal_naive"]
        has_bar = name.split("-")[0] in BARS
        cell = FORECASTS[name].get("cell", forecast.Config.cell)
        met = ("met" if mean < season["mase"] else "**not met**") if has_bar else "-"
        lines.append(
            f"| {name} | {cell} | {r['horizon']} | {r['windows']} | {mean:.3f}{spread} | "
            f"{r['naive']['mase']:.3f} | {season['mase']:.3f} ({r['period']}) | "
            f"{smape:.2f} / {season['smape']:.2f} | {r['steps']} | {met} |"
        )
    return "\n".join(lines)


@torch.no_grad()
def after_switch_accuracy(run: Path, steps: int = 5) -> float:
    """Per-step test accuracy over the first ``steps`` steps of each new regime."""
    config, _, _, model = tag.load_run(run, "cpu")
    right = total = 0
    for x, y in tag.prepare(config).test:
        predicted = model(x[:, None], torch.tensor([len(y)]))[:, 0].argmax(-1)  # (T,)
        near = torch.zeros(len(y), dtype=torch.bool)
        for switch in (torch.nonzero(y[1:] != y[:-1]).flatten() + 1).tolist():
            near[switch : switch + steps] = True
        right += int((predicted == y)[near].sum())
        total += int(near.sum())
    return right / total


def run_tag(minutes: float, root: Path) -> str:
    """The tagger both ways round: a tag may depend on steps after it, which only the
    bidirectional tagger reads."""
    lines = [
        "| data | tagger | test steps | per-step accuracy | in the first 5 steps of a regime "
        "| majority class | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for bidirectional in (True, False):
        out = root / f"tag-regimes-{'bi' if bidirectional else 'forward'}"
        config = tag.Config(
            minutes=minutes, bidirectional=bidirectional, device="cpu", seed=1, out=str(out)
        )
        trainer = tag.train(config, progress=Progress(io.StringIO()))
        r = json.loads((out / "test_metrics.json").read_text())
        kind = "bidirectional" if bidirectional else "forward-only"
        lines.append(
            f"| regimes ({config.sequences} generated sequences) | {kind} {config.cell} "
            f"{config.hidden} | {r['steps']} | {r['accuracy']:.4f} | "
            f"{after_switch_accuracy(out):.4f} | {r['majority_accuracy']:.4f} | {trainer.step} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time per case")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--quick", action="store_true", help="0.1 minutes per case")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per forecast case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    parser.add_argument("--out", default="runs/bench-forecast", help="where the runs go")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    minutes = 0.1 if args.quick else args.minutes
    root = Path(args.out)
    print(f"load average at start: {os.getloadavg()[0]:.1f}; {minutes} min per case")
    rows = {
        name: [
            run_forecast(name, settings, minutes, root, seed) for seed in range(1, args.seeds + 1)
        ]
        for name, settings in FORECASTS.items()
        if args.only in name
    }
    if rows:
        print(forecast_table(rows))
    if args.only in "tag-regimes-bidirectional-forward":
        print(run_tag(minutes, root))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
