"""``rnnkit bench [--quick] [--tune] [--json PATH]``: rnnkit against torch.nn on this machine.

``--tune`` instead times ``kernel="auto"``'s candidates for the bench's cases (training and
inference in float32, training in bf16) and prints their times and the choice, which it
writes to the autotuner's cache, so later runs start with the choices made.

One process; every case runs side by side with its peer (alternating, so a change in the
machine's load hits both alike) and reports the median of the repeats. Printed as
Markdown tables, and with ``--json`` written with every ratio (>1: rnnkit is faster,
except memory, where it is rnnkit's peak over torch's):

- training: tokens/s of forward and backward of each rnnkit layer against torch.nn's
  same-size layer (the peephole LSTM against torch.nn.LSTM and against the Python loop
  over its cell, ``kernel="loop"``), with GFLOP/s of the matrix products: 3 x 2BTGH(I+H)
  for forward, input gradient and weight gradient, element-wise work not counted;
- bf16: ``precision="bf16"`` training against rnnkit's float32, where layers accept it;
- inference: tokens/s of the forward pass under ``torch.no_grad`` against torch.nn;
- streaming: microseconds per step at batch 1 of :class:`rnnkit.Stream`, fed a token
  (embedding table) or a vector, against torch.nn's cell stepped from Python under
  ``no_grad``, whose time is the better of torch's default threads and one thread;
- length: training time per token from short to long sequences (flat = linear cost), of
  rnnkit's LSTM and peephole LSTM, and of torch.nn.LSTM for reference (not a target's);
- kernel: each rnnkit case of the speed sections names the kernel ``kernel="auto"`` ran
  (:mod:`rnnkit.kernels.autotune`) and why: the time of every candidate the autotuner timed
  on this machine, or "rule", "only candidate"; the run starts with the CPU's model and the
  features that decide it (AMX, AVX512-BF16, AVX-512, AVX2, NEON);
- memory: peak resident memory added by one training step (Linux's VmHWM after resetting
  it through /proc/self/clear_refs, minus VmRSS before; large blocks are returned to the
  system at free so that each case starts from the same baseline). It counts everything
  the step touches: activations, gradients and temporaries.

The timing of cases side by side is :mod:`rnnkit.tools.timing`'s; the targets the numbers are
held against, and the tables, are :mod:`rnnkit.tools.bench_report`'s.

Shape letters: B batch, T length, H hidden size (= input size), G gate blocks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import rnnkit
from rnnkit.kernels import autotune, hardware
from rnnkit.tools import peak_memory
from rnnkit.tools.bench_report import COLUMNS, TORCH_LSTM, candidates, table, targets
from rnnkit.tools.timing import one_thread, repeated, side_by_side, times
from rnnkit.training import heap

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "peephole")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "peephole": 4}
TORCH_CELLS = {"rnn_tanh": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures."""

    sizes: tuple = ((32, 100, 128), (64, 128, 256), (64, 128, 512))  # (B, T, H) of training
    repeats: int = 5  # timings per case; the median is reported
    stream_hidden: tuple = (64, 256, 512)  # hidden sizes of the streaming rows
    stream_cells: tuple = ("lstm", "gru", "rnn_tanh", "peephole")  # cells streamed
    stream_seconds: float = 0.05  # length of one timing of a streaming case
    lengths: tuple = (32, 64, 128, 256, 512, 1024)  # sequence lengths of the length sweep
    # timings per length: its ratio is the largest of six medians over the smallest, which
    # noise widens (with five repeats, seven runs within an hour gave 1.07x to 1.28x; with
    # nine, eleven full runs in a day gave 1.15x to 1.32x, while the peephole LSTM's length
    # 32 against 1024 alone, paired round by round over 10 to 20 rounds, gave 1.11x to 1.16x)
    length_repeats: int = 15
    length_size: tuple = (32, 256)  # (B, H) of the length sweep
    memory_size: tuple = (64, 128, 256)  # (B, T, H) of the memory rows


FULL = Plan()
QUICK = Plan(
    sizes=((32, 100, 128),),
    repeats=3,
    length_repeats=3,
    stream_hidden=(64, 256),
    stream_seconds=0.01,
    lengths=(32, 128, 512),
    length_size=(16, 128),
    memory_size=(32, 100, 128),
)


# --- models and steps ------------------------------------------------------------------------


def make_layer(cell: str, hidden: int, **options):
    torch.manual_seed(0)
    if cell.startswith("rnn"):
        return rnnkit.RNN(hidden, hidden, nonlinearity=cell.removeprefix("rnn_"), **options)
    return rnnkit.layers.make_layer(cell, hidden, hidden, **options)


def torch_peer(cell: str, layer) -> nn.Module:
    """torch.nn's same-size layer: a copy of ``layer``, or a fresh LSTM for the peephole."""
    return nn.LSTM(layer.input_size, layer.hidden_size) if cell == "peephole" else layer.to_torch()


def training_step(module, x):
    grad = torch.randn(x.shape[0], x.shape[1], module.hidden_size)  # (T, B, H)

    def run():
        for p in module.parameters():
            p.grad = None
        output, _ = module(x)
        output.backward(grad.to(output.dtype))

    return run


def inference_step(module, x):
    def run():
        with torch.no_grad():
            module(x)

    return run


# --- the sections ----------------------------------------------------------------------------


def speed_rows(plan: Plan, steps_of, passes: int = 3) -> tuple[list[dict], str]:
    """For every size and cell, time ``steps_of(cell, hidden, x)``: (our layer, {name: step},
    ours first).

    ``passes`` is 3 for training (forward, input and weight gradients), 1 for inference.
    A case that cannot run becomes a note.
    """
    rows, notes = [], []
    for batch, length, hidden in plan.sizes:
        x = torch.randn(length, batch, hidden)  # (T, B, H)
        for cell in CELLS:
            try:
                layer, steps = steps_of(cell, hidden, x)
                seconds = side_by_side(steps, plan.repeats)
                chosen = autotune.decision(layer, False, batch, passes == 3)  # as auto chose
            except Exception as error:  # one failing case must not end the run
                notes.append(f"{cell} H={hidden}: {type(error).__name__}: {error}")
                continue
            ours, *peers = seconds
            flop = passes * 2 * batch * length * GATES[cell] * hidden * 2 * hidden  # I = H
            for peer in peers:
                rows.append(dict(cell=cell, batch=batch, length=length, hidden=hidden, peer=peer))
                rows[-1].update(candidates(chosen))
                rows[-1].update(
                    tokens_per_s=batch * length / seconds[ours],
                    peer_tokens_per_s=batch * length / seconds[peer],
                    ratio=seconds[peer] / seconds[ours],
                    gflops=flop / seconds[ours] / 1e9,
                    peer_gflops=flop / seconds[peer] / 1e9,
                )
    return rows, "; ".join(notes)


def training_steps(cell: str, hidden: int, x) -> tuple:
    ours = make_layer(cell, hidden)
    steps = {"rnnkit": training_step(ours, x), "torch.nn": training_step(torch_peer(cell, ours), x)}
    if cell == "peephole":
        steps["python loop"] = training_step(make_layer(cell, hidden, kernel="loop"), x)
    return ours, steps


def bf16_steps(cell: str, hidden: int, x) -> tuple:
    low = make_layer(cell, hidden, precision="bf16")
    return low, {
        "bf16": training_step(low, x),
        "rnnkit fp32": training_step(make_layer(cell, hidden), x),
    }


def inference_steps(cell: str, hidden: int, x) -> tuple:
    ours = make_layer(cell, hidden).eval()
    return ours, {
        "rnnkit": inference_step(ours, x),
        "torch.nn": inference_step(torch_peer(cell, ours), x),
    }


def bf16_rows(plan: Plan) -> tuple[list[dict], str]:
    """rnnkit bf16 against rnnkit float32 training; a note instead where it cannot run."""
    try:
        make_layer("lstm", 8, precision="bf16")
    except (TypeError, ValueError) as error:
        return [], f"skipped: layers do not accept precision='bf16' ({error})"
    return speed_rows(plan, bf16_steps)


def streaming_rows(plan: Plan) -> tuple[list[dict], str]:
    rows = [_streaming_row(c, h, plan) for h in plan.stream_hidden for c in plan.stream_cells]
    compiled = all(row["compiled"] for row in rows)
    return rows, "" if compiled else "the C step could not be built: torch path timed"


def _streaming_row(cell: str, hidden: int, plan: Plan) -> dict:
    layer = make_layer(cell, hidden).eval()
    by_token = rnnkit.Stream(layer, embedding=nn.Embedding(256, hidden))
    by_vector = rnnkit.Stream(layer)
    peer = TORCH_CELLS["lstm" if cell == "peephole" else cell](hidden, hidden)
    x = torch.randn(1, hidden)  # (1, H)
    h0 = torch.zeros(1, hidden)  # (1, H)
    state = [(h0, h0) if cell in ("lstm", "peephole") else h0]

    def torch_step():
        with torch.no_grad():
            out = peer(x, state[0])
        state[0] = out

    steps = {"token": lambda: by_token.step(7), "vector": lambda: by_vector.step(x)}
    steps["torch"] = torch_step
    loops = {name: repeated(step, plan.stream_seconds) for name, step in steps.items()}
    loops["torch 1 thread"] = (one_thread(loops["torch"][0]), loops["torch"][1])
    seconds = side_by_side({name: run for name, (run, _) in loops.items()}, plan.repeats)
    micro = {name: seconds[name] / loops[name][1] * 1e6 for name in loops}
    best_torch = min(micro["torch"], micro["torch 1 thread"])
    row = dict(cell=cell, hidden=hidden, compiled=by_token.compiled, token_us=micro["token"])
    row.update(vector_us=micro["vector"], torch_us=best_torch)
    row.update(torch_default_threads_us=micro["torch"], torch_one_thread_us=micro["torch 1 thread"])
    row.update(ratio_token=best_torch / micro["token"], ratio_vector=best_torch / micro["vector"])
    return row


def length_rows(plan: Plan) -> tuple[list[dict], str]:
    """Time per token at each length, of rnnkit's LSTM and peephole LSTM and, for reference,
    of torch.nn.LSTM (:data:`TORCH_LSTM`), each relative to its own cheapest length."""
    batch, hidden = plan.length_size
    rows, notes = [], []
    for cell in ("lstm", "peephole", TORCH_LSTM):
        layer = nn.LSTM(hidden, hidden) if cell == TORCH_LSTM else make_layer(cell, hidden)
        # each timing covers the same tokens: the longest length once, a shorter one as many
        # times as fit (a single short call of a few ms is at the mercy of the scheduler)
        calls = {T: max(1, max(plan.lengths) // T) for T in plan.lengths}
        steps = {
            T: times(training_step(layer, torch.randn(T, batch, hidden)), calls[T])
            for T in plan.lengths
        }
        try:
            seconds = side_by_side(steps, plan.length_repeats)
        except Exception as error:  # one failing case must not end the run
            notes.append(f"{cell}: {type(error).__name__}: {error}")
            continue
        per_token = {T: seconds[T] / (batch * T * calls[T]) for T in plan.lengths}
        best = min(per_token.values())
        kernel = None if cell == TORCH_LSTM else layer._kernel_name(None, batch)
        for T in plan.lengths:
            row = dict(cell=cell, batch=batch, hidden=hidden, length=T, kernel=kernel)
            rows.append(dict(row, us_per_token=per_token[T] * 1e6, relative=per_token[T] / best))
    return rows, "; ".join(notes)


def memory_rows(plan: Plan) -> tuple[list[dict], str]:
    if not peak_memory.supported():
        return [], "skipped: needs Linux's /proc/self/clear_refs to reset the peak RSS"
    with peak_memory.freed_memory_returned():
        return _memory_rows(plan)


def _memory_rows(plan: Plan) -> tuple[list[dict], str]:
    batch, length, hidden = plan.memory_size
    x = torch.randn(length, batch, hidden)  # (T, B, H)
    rows, notes = [], []
    for cell in CELLS:
        ours = make_layer(cell, hidden)
        steps = {
            "rnnkit": training_step(ours, x),
            "torch.nn": training_step(torch_peer(cell, ours), x),
        }
        try:
            peak = {name: peak_memory.peak_rss(step) for name, step in steps.items()}
        except Exception as error:  # one failing case must not end the run
            notes.append(f"{cell}: {type(error).__name__}: {error}")
            continue
        row = dict(cell=cell, batch=batch, length=length, hidden=hidden)
        row["kernel"] = ours._kernel_name(None, batch)
        row.update(peak_mb=peak["rnnkit"] / 2**20, torch_peak_mb=peak["torch.nn"] / 2**20)
        rows.append(dict(row, memory_ratio=peak["rnnkit"] / max(peak["torch.nn"], 1)))
    return rows, "; ".join(notes)


# --- kernel="auto"'s choices ------------------------------------------------------------------


def machine() -> tuple[dict, str]:
    """The CPU's model and the features that decide the kernels, as JSON and as one line."""
    features = hardware.cpu_features()
    tuned = "timed on this machine" if autotune.enabled() else "by rule (RNNKIT_AUTOTUNE=0)"
    described = {"cpu": hardware.cpu_model(), "cpu_features": features, "autotune": tuned}
    listed = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in features.items())
    return described, f"CPU: {described['cpu']} ({listed}); kernel='auto' {tuned}"


TUNED_CASES = (("train", "fp32"), ("infer", "fp32"), ("train", "bf16"))  # (mode, precision)


def tune_rows(plan: Plan) -> tuple[list[dict], str]:
    """Time auto's candidates for every cell at the plan's (B, H), anew, and remember the
    choices in the autotuner's cache; a row per case with each candidate's milliseconds."""
    rows = []
    for batch, _, hidden in plan.sizes:
        for cell in CELLS:
            for mode, precision in TUNED_CASES:
                layer = make_layer(cell, hidden, precision=precision).train(mode == "train")
                options = autotune.candidates(layer.cells[0], precision == "bf16")
                row = dict(cell=cell, precision=precision, mode=mode, batch=batch, hidden=hidden)
                if len(options) == 1:
                    rows.append(dict(row, kernel=options[0]))
                    continue
                tuner = autotune.TUNER
                chosen = tuner.choose(layer, False, batch, mode == "train", options, force=True)
                times = {f"{k}_ms": s * 1e3 for k, s in chosen["seconds"].items()}
                rows.append(dict(row, **times, kernel=chosen["kernel"]))
    return rows, ""


# --- the command ------------------------------------------------------------------------------


def run(plan: Plan, out=None) -> dict:
    """Every section of the benchmark; prints each table as it is done."""
    out = out or sys.stdout
    result, notes = {}, {}
    sections = {
        "training": lambda: speed_rows(plan, training_steps),  # each returns (rows, note)
        "bf16": lambda: bf16_rows(plan),
        "inference": lambda: speed_rows(plan, inference_steps, passes=1),
        "streaming": lambda: streaming_rows(plan),
        "length": lambda: length_rows(plan),
        "memory": lambda: memory_rows(plan),  # last: it changes how memory is returned
    }
    for name, section in sections.items():
        start = time.perf_counter()
        rows, notes[name] = section()
        result[name] = rows
        print(f"\n### {name} ({time.perf_counter() - start:.0f} s)\n", file=out)
        print(table(rows, COLUMNS[name]) if rows else notes[name], file=out)
        if rows and notes[name]:
            print(f"\nnote: {notes[name]}", file=out)
    result["targets"] = targets(result)
    print("\n### targets\n\n" + table(result["targets"], COLUMNS["targets"]), file=out)
    result["notes"] = {name: note for name, note in notes.items() if note}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="rnnkit bench", description="rnnkit against torch.nn on this machine"
    )
    parser.add_argument("--quick", action="store_true", help="one size, fewer repeats (~1 min)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    tune = "time kernel=auto's candidates at the bench's sizes, cache the choices, print them"
    parser.add_argument("--tune", action="store_true", help=tune + " (and nothing else)")
    args = parser.parse_args(argv)
    if args.threads:  # one thread is steadier on a machine shared with other jobs
        torch.set_num_threads(args.threads)
    heap.keep_freed_blocks()  # as the trainer does; both sides of each case run under it
    plan = QUICK if args.quick else FULL
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"rnnkit bench {' '.join(argv)}  ({started}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    described, line = machine()
    print(line)
    result = {
        "command": " ".join(["rnnkit bench", *argv]),
        "date": started,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **described,
        "plan": dataclasses.asdict(plan),
    }
    if args.tune:
        result["tune"], _ = tune_rows(plan)
        print("\n### kernel='auto' candidates\n\n" + table(result["tune"], COLUMNS["tune"]))
    else:
        result.update(run(plan))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
