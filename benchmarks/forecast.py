"""Forecasting and tagging bars: each run beside its baselines on the same test windows.

The issue's bar: on Mauna Loa CO2 and on the yearly sunspots, the model's MASE on the test
split is below the seasonal naive forecast's. Each case trains a forecast run for a fixed
number of minutes and reads its ``test_metrics.json``; the table gives MASE and sMAPE of
the model (the mean over ``--seeds`` seeds, with their range), exponential smoothing, their
mean, naive and seasonal naive, the forecaster the run kept on validation and its test MASE,
and whether the bar is met by the model's mean. Beside the built-in series, real series that
installed packages ship (statsmodels' electrical equipment orders, El Nino sea temperatures,
Nile flow and US macro data; vega_datasets' US employment) are written as CSVs under
``--out``; the last line gives the geometric mean of each forecaster's MASE relative to
exponential smoothing. The tagging cases train on the generated regimes, with a
bidirectional and a forward-only tagger, and report per-step test accuracy beside the
majority class.

    python benchmarks/forecast.py --seeds 3          # every case, tables printed as markdown
    python benchmarks/forecast.py --only co2 --minutes 1
    python benchmarks/forecast.py --quick            # a few seconds per case, for a smoke test

Runs go to ``runs/bench-forecast/<case>-seed<N>``; the tables are printed for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
from datetime import datetime
from pathlib import Path

import torch
import vega_datasets
from statsmodels import datasets

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
# case -> (real series written by real_series(), settings of forecast.Config)
REAL = {
    "elec-equip": ("elec_equip", dict(input_window=36, horizon=12, period=12, hidden=32)),
    "elnino": ("elnino", dict(input_window=36, horizon=12, period=12, hidden=32)),
    "nile": ("nile", dict(input_window=10, horizon=5, hidden=16)),
    "gdp-quarterly": ("realgdp", dict(input_window=16, horizon=4, period=4, hidden=16)),
    "unemployment-quarterly": ("unemp", dict(input_window=16, horizon=4, period=4, hidden=16)),
    "us-employment-leisure": ("leisure", dict(input_window=12, horizon=6, hidden=16)),
}
STATSMODELS = Path(datasets.__file__).parent
VEGA = Path(vega_datasets.__file__).parent / "_data"


def write_series(path: Path, dates: list[str], values: list[float]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "value"])
        writer.writerows(zip(dates, values, strict=True))
    return str(path)


def real_series(folder: Path) -> dict:
    """name -> CSV path of each real series, in date order, one value column."""
    folder.mkdir(parents=True, exist_ok=True)
    read = lambda p: list(csv.DictReader(p.open()))  # noqa: E731
    rows = read(STATSMODELS / "elec_equip" / "elec_equip.csv")
    elec = [datetime.strptime(r["DATE"], "%b-%d-%Y").strftime("%Y-%m-%d") for r in rows]
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    nino = read(STATSMODELS / "elnino" / "elnino.csv")
    macro = read(STATSMODELS / "macrodata" / "macrodata.csv")
    quarters = [f"{int(float(r['year']))}-{3 * int(float(r['quarter'])) - 2:02d}-01" for r in macro]
    nile = read(STATSMODELS / "nile" / "nile.csv")
    jobs = read(VEGA / "us-employment.csv")
    series = {
        "elec_equip": (elec, [float(list(r.values())[1]) for r in rows]),
        "elnino": (
            [f"{int(float(r['YEAR']))}-{i + 1:02d}-01" for r in nino for i in range(12)],
            [float(r[m]) for r in nino for m in months],
        ),
        "nile": ([r["year"] for r in nile], [float(r["volume"]) for r in nile]),
        "realgdp": (quarters, [float(r["realgdp"]) for r in macro]),
        "unemp": (quarters, [float(r["unemp"]) for r in macro]),
        "leisure": (
            [r["month"] for r in jobs],
            [float(r["leisure_and_hospitality"]) for r in jobs],
        ),
    }
    return {name: write_series(folder / f"{name}.csv", *v) for name, v in series.items()}


def run_forecast(name: str, settings: dict, minutes: float, root: Path, seed: int) -> dict:
    out = root / f"{name}-seed{seed}"
    config = forecast.Config(**settings, minutes=minutes, device="cpu", seed=seed, out=str(out))
    trainer = forecast.train(config, progress=Progress(io.StringIO()))
    result = json.loads((out / "test_metrics.json").read_text())
    return {**result, "steps": trainer.step}


def forecast_table(rows: dict, cells: dict) -> str:
    """One line per case; with several seeds, the model's MASE is their mean (and range)."""
    lines = [
        "| case | cell | horizon | test windows | MASE model (seeds) | MASE ETS | MASE mean of "
        "both | MASE naive | MASE seasonal naive (period) | kept on validation: MASE | "
        "sMAPE % model / ETS / seasonal naive | ETS form | steps | bar |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        r, mases = runs[0], [run["model"]["mase"] for run in runs]
        mean = sum(mases) / len(mases)
        spread = f" ({min(mases):.3f}-{max(mases):.3f}, {len(mases)})" if len(mases) > 1 else ""
        smape = sum(run["model"]["smape"] for run in runs) / len(runs)
        season = r["seasonal_naive"]
        has_bar = name.split("-")[0] in BARS
        met = ("met" if mean < season["mase"] else "**not met**") if has_bar else "-"
        lines.append(
            f"| {name} | {cells[name]} | {r['horizon']} | {r['windows']} | {mean:.3f}{spread} | "
            f"{r['ets']['mase']:.3f} | {r['ensemble']['mase']:.3f} | "
            f"{r['naive']['mase']:.3f} | {season['mase']:.3f} ({r['period']}) | "
            f"{r['choice']['kept']}: {r['kept']['mase']:.3f} | {smape:.2f} / "
            f"{r['ets']['smape']:.2f} / {season['smape']:.2f} | {'; '.join(r['choice']['ets'])} "
            f"| {r['steps']} | {met} |"
        )
    return "\n".join([*lines, "", relative_to_ets(rows)])


def relative_to_ets(rows: dict) -> str:
    """Geometric mean over the cases of each forecaster's MASE divided by ETS's (first seed)."""
    names = ("model", "ensemble", "kept", "naive", "seasonal_naive")
    ratios = {
        n: [math.log(r[0][n]["mase"] / r[0]["ets"]["mase"]) for r in rows.values()] for n in names
    }
    means = ", ".join(f"{n} {math.exp(sum(v) / len(v)):.3f}" for n, v in ratios.items())
    return f"geometric mean of MASE relative to ETS over {len(rows)} cases: {means}"


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
    paths = real_series(root / "data")
    cases = {
        **FORECASTS,
        **{name: dict(data=paths[key], **settings) for name, (key, settings) in REAL.items()},
    }
    rows = {
        name: [
            run_forecast(name, settings, minutes, root, seed) for seed in range(1, args.seeds + 1)
        ]
        for name, settings in cases.items()
        if args.only in name
    }
    cells = {name: cases[name].get("cell", forecast.Config.cell) for name in rows}
    if rows:
        print(forecast_table(rows, cells))
    if args.only in "tag-regimes-bidirectional-forward":
        print(run_tag(minutes, root))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
