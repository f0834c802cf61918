"""The one place that lists the kernels a layer can run and chooses among them, by timing
them on the machine at hand.

A layer's ``kernel="auto"`` asks :func:`kernel_for`. The candidates (:func:`candidates`) are
``"fused"`` (:func:`rnnkit.kernels.fused_scan`: the gate math in C, and the loops over
time in C where the machine allows) and ``"torch"`` (:mod:`rnnkit.kernels.torch_fused`:
torch's own kernel, oneDNN's on the CPU), the latter only for the cells torch computes and,
in bf16, only where the CPU has native bfloat16 (elsewhere oneDNN builds no bfloat16 LSTM).
Which is faster depends on the CPU: on an Intel CPU with AMX the fused LSTM won from hidden
256, on an AMD EPYC it trained at about half torch's speed (issue #22). So, as cuDNN's
benchmark mode and oneDNN's run-time dispatch do, the first time a case is met its
candidates are timed briefly (:func:`measure`) and the faster is kept: in memory, and in a
JSON file in the rnnkit cache directory (:func:`rnnkit.kernels.compiled.cache_dir`) whose
name hashes the CPU's model, what :mod:`rnnkit.kernels.hardware` answers, and the torch and
rnnkit versions, so a new machine or version starts a new file.

A case is what changes the ranking: the cell (nonlinearity and peephole included), bf16 or
not, training (a graph recorded) or inference, lengths or not, the batch, input and hidden
sizes rounded up to powers of two, layers, directions, torch's threads, device and dtype.

``RNNKIT_AUTOTUNE=0`` turns the timing off: :func:`auto_kernel`, a rule written
from one machine's timings, decides, deterministically (the tests run so). A kernel the
user names (``"loop"``, ``"bptt"``, ``"fused"``, ``"torch"``) always runs, after a check that
this machine can run it.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.kernels import torch_fused
from rnnkit.kernels.common import tiles_run
from rnnkit.kernels.compiled import cache_dir, library
from rnnkit.kernels.hardware import amx_tiles, cpu_model, generic, mkl_products, native_bf16

STEPS = 16  # length of the timed sequences: the ranking shows at a few steps already
BUDGET = 0.6  # seconds of timed rounds per case, after one warm-up round
# timed rounds at most, and at least whatever the budget (one stalled first round left one
# sample: "fused 2480 ms, torch 313 ms" for a GRU step of a few ms on a loaded EPYC). The
# fastest round is kept, not the median: on a shared machine the noise only ever adds time,
# so the minimum is the steadiest estimate, as Python's timeit advises; the median of five
# still followed the load (a GRU case flipped between runs on a loaded EPYC).
ROUNDS, MIN_ROUNDS = 5, 3
# multiply-adds of one timed call (forward and backward) at most: larger layers are timed
# on sequences cut shorter, down to 4 steps (at 50 G multiply-adds/s, a call of 80 ms)
WORK = 4e9


def enabled() -> bool:
    """Whether ``kernel="auto"`` times its candidates (``RNNKIT_AUTOTUNE``, default on)."""
    return os.environ.get("RNNKIT_AUTOTUNE", "1").strip().lower() not in ("0", "off", "false")


def cell_kind(cell) -> str:
    if isinstance(cell, LSTMCell):
        return "peephole" if cell.peephole else "lstm"
    if isinstance(cell, GRUCell):
        return "gru"
    return f"rnn_{cell.nonlinearity}"


def candidates(cell, bf16: bool) -> tuple[str, ...]:
    """The kernels that can run ``cell`` here. Off the CPU the fused path has no C and is
    never faster than torch's kernels (cuDNN's on CUDA), so it is a candidate only where
    torch has none."""
    device = cell.weight_hh.device
    has_torch = torch_fused.supports(cell) and (not bf16 or native_bf16(device))
    if device.type != "cpu":
        return ("torch",) if torch_fused.supports(cell) else ("fused",)
    return ("fused", "torch") if has_torch else ("fused",)


def check_explicit(layer) -> str:
    """The kernel the user named, refused with the cause and the fix where this machine
    cannot run it: torch's bfloat16 LSTM needs native bfloat16 (oneDNN builds none on an
    AVX2 CPU and fails deep inside with "could not create a primitive descriptor")."""
    cell = layer.cells[0]
    bf16_lstm = layer.precision == "bf16" and isinstance(cell, LSTMCell)
    on_cpu = cell.weight_hh.device.type == "cpu"
    if layer.kernel == "torch" and bf16_lstm and on_cpu and not native_bf16("cpu"):
        raise ValueError(
            "kernel='torch' with precision='bf16' needs a CPU with native bfloat16 (AMX or "
            "AVX512-BF16) for torch's LSTM kernel, and this one has none (or "
            "RNNKIT_HARDWARE=generic); use kernel='fused' or 'auto', or precision='fp32'"
        )
    return layer.kernel


def kernel_for(layer, lengths: bool, batch: int, grad: bool) -> str:
    """The kernel ``layer`` runs for a call of ``batch`` sequences; ``grad``: the call records
    a graph for backward (training)."""
    return decision(layer, lengths, batch, grad)["kernel"]


def decision(layer, lengths: bool, batch: int, grad: bool) -> dict:
    """:func:`kernel_for`'s choice and why: ``{"kernel", "by", "seconds"}``, ``by`` one of
    "named" (not ``kernel="auto"``), "only candidate", "rule" (tuning off) and "timed", and
    ``seconds`` each candidate's time where timed (``rnnkit bench`` prints them)."""
    if layer.kernel != "auto":
        return {"kernel": check_explicit(layer), "by": "named", "seconds": {}}
    bf16 = layer.precision == "bf16"
    options = candidates(layer.cells[0], bf16)
    if len(options) == 1:
        return {"kernel": options[0], "by": "only candidate", "seconds": {}}
    if not enabled() or torch.compiler.is_compiling():
        kernel = auto_kernel(layer.cells[0], lengths, bf16, batch, grad)
        return {"kernel": kernel, "by": "rule", "seconds": {}}
    return {**TUNER.choose(layer, lengths, batch, grad, options), "by": "timed"}


def auto_kernel(cell, lengths: bool, bf16: bool, batch: int, grad: bool = True) -> str:
    """The kernel a layer's ``kernel="auto"`` runs where the autotuner does not time them
    (``RNNKIT_AUTOTUNE=0``, or while torch.compile traces): ``"fused"`` or ``"torch"``;
    ``grad`` says whether the call records a graph for backward (False: inference).

    Written from timings on an Intel CPU with AMX tiles (on an AMD EPYC the plain LSTM's
    fused training ran at about half torch's speed, issue #22), with
    ``benchmarks/train_speed.py`` (training steps at (B, T, H) = (32, 100, 128),
    (64, 128, 256), (64, 128, 512), one thread on CPU time and two on wall time,
    2026-11-26, docs/benchmarks.md); other CPUs may rank them
    otherwise:
    - the peephole LSTM has no torch kernel;
    - with lengths, torch's packed path is several times slower than its dense one, and
      the fused path is 3-8x faster than it for every cell;
    - the GRU and the Elman RNN: the fused path is faster than torch's kernel at every size,
      in float32 (1.15-1.3x on one thread, 1.2-1.6x on two) and in bf16, where torch has no
      bfloat16 kernel for them and autocast casts op by op (1.4-4x);
    - the plain LSTM in float32: fused from hidden 256 (1.2x of torch's kernel on one
      thread, 1.3-1.4x on two); below, torch's kernel (fused 0.98x on one thread, 0.8x on
      two);
    - the plain LSTM in bf16: fused where its products run on AMX tiles with the loops in C
      (0.94-1.13x of torch's oneDNN kernel on one thread, 1.2-1.4x on two, where the tiles
      split the batch over the threads); elsewhere torch's oneDNN kernel, far faster than
      the fused path's per-step oneDNN calls from Python, but only where the CPU has native
      bfloat16 (:func:`rnnkit.kernels.hardware.native_bf16`): without it oneDNN builds no
      bfloat16 LSTM (an AVX2 CPU refuses), and the fused path runs;
    - inference in float32 (``rnnkit bench``'s inference steps, three runs, 2026-11-27, with
      the loops over time in C): the plain LSTM runs torch's kernel at every size (the fused
      forward 0.79-0.88x of it at hidden 128, 0.88-0.97x at 256, 0.93-1.03x at 512: it writes
      the states and activations that backward would read); the GRU and the RNN stay fused
      (1.29-1.52x and 1.25-1.49x).
    The fused path runs in C on the CPU only: elsewhere (CUDA) torch's kernels keep every
    case they can run.
    """
    if isinstance(cell, LSTMCell) and cell.peephole:
        return "fused"
    if cell.weight_hh.device.type != "cpu":
        return "torch"
    if lengths or isinstance(cell, GRUCell | RNNCell):
        return "fused"
    if bf16:
        on_tiles = tiles_run(batch, 4 * cell.hidden_size, cell.hidden_size)
        return "torch" if native_bf16("cpu") and not on_tiles else "fused"
    return "fused" if grad and cell.hidden_size >= 256 else "torch"


def bucket(n: int) -> int:
    """``n`` rounded up to a power of two."""
    return 1 << max(n - 1, 0).bit_length()


def case_key(layer, lengths: bool, batch: int, grad: bool) -> str:
    cell = layer.cells[0]
    parts = [
        cell_kind(cell), layer.precision, "train" if grad else "infer",
        "lengths" if lengths else "dense", f"B{bucket(batch)}", f"I{bucket(layer.input_size)}",
        f"H{bucket(layer.hidden_size)}", f"L{layer.num_layers}", f"D{layer.num_directions}",
        f"threads{torch.get_num_threads()}", cell.weight_hh.device.type,
        str(cell.weight_hh.dtype).removeprefix("torch."),
    ]  # fmt: skip
    return " ".join(parts)


def machine() -> dict:
    """What the choices depend on besides the case: a change here starts a new cache file.
    Asked once per hardware mode (``RNNKIT_HARDWARE``), not at every call."""
    return _machine(generic())


@functools.cache
def _machine(generic_mode: bool) -> dict:
    try:
        version = importlib.metadata.version("rnnkit")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    hardware = {
        "generic": generic_mode,
        "native_bf16": native_bf16("cpu"),
        "amx_tiles": amx_tiles(),
        "mkl_products": mkl_products(),
        "compiled": library() is not None,
    }
    return {"cpu": cpu_model(), "hardware": hardware, "torch": torch.__version__, "rnnkit": version}


def cache_file(identity: dict) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"autotune-{digest}.json"


_places: dict = {}  # (hardware mode, cache variables) -> (machine, its cache file)


def place() -> tuple[dict, Path]:
    """This machine's identity and cache file, worked out once per hardware mode and cache
    directory (each call of a layer asks)."""
    where = (generic(), *(os.environ.get(name) for name in ("RNNKIT_CACHE", "XDG_CACHE_HOME")))
    if where not in _places:
        identity = machine()
        _places[where] = identity, cache_file(identity)
    return _places[where]


def read_choices(path: Path, identity: dict) -> dict:
    """The choices stored at ``path`` for this machine; {} where the file is missing, not
    JSON, or not this machine's (then the cases are timed again, and the file rewritten)."""
    try:
        stored = json.loads(path.read_text())
        if stored["machine"] == identity and isinstance(stored["choices"], dict):
            return stored["choices"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def write_choices(path: Path, identity: dict, choices: dict) -> None:
    """Merge ``choices`` into the file at ``path``, atomically (a temporary file renamed over
    it: a concurrent reader sees the old file or the new, whole); silent where the cache
    cannot be written, the choices then living in memory only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**read_choices(path, identity), **choices}
        text = json.dumps({"machine": identity, "choices": merged}, indent=1, sort_keys=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            tmp.write(text + "\n")
        os.replace(tmp.name, path)
    except OSError:
        return


class Tuner:
    """Choices by case, remembered in memory and in the cache file; ``timing`` is
    :func:`measure` or, in tests, a stand-in with its signature."""

    def __init__(self, timing=None):
        self.timing = timing or measure
        self.memo: dict[Path, dict] = {}  # cache file -> {case: {"kernel", "seconds"}}

    def choose(self, layer, lengths, batch, grad, options, force: bool = False) -> dict:
        """``{"kernel": the choice, "seconds": each candidate's time}`` for this case: as
        remembered, else (or with ``force``) timed now and remembered."""
        key = case_key(layer, lengths, batch, grad)
        timing = lambda: self.timing(layer, options, batch, lengths, grad)  # noqa: E731
        return self.entry(key, options, timing, force)

    def entry(self, key: str, options, timing, force: bool = False) -> dict:
        """:meth:`choose` for any case named ``key`` (the product backends of
        :mod:`rnnkit.kernels.products` too): ``timing()`` gives each option's seconds."""
        identity, path = place()
        if path not in self.memo:
            self.memo[path] = read_choices(path, identity)
        entry = self.memo[path].get(key)
        if force or not (isinstance(entry, dict) and entry.get("kernel") in options):
            seconds = timing()
            entry = {"kernel": min(seconds, key=seconds.get), "seconds": seconds}
            self.memo[path][key] = entry
            write_choices(path, identity, {key: entry})
        return entry


def measure(layer, kernels, batch: int, lengths: bool, grad: bool) -> dict[str, float]:
    """Fewest seconds of one call of a copy of ``layer`` under each kernel, on a short random
    sequence of ``batch`` (with backward where ``grad``), timed in turn after a warm-up. The
    copies have their own parameters, and torch's random state is put back, so the user's
    model, its gradients and its random stream are as they were."""
    steps = _steps(layer, batch, grad)
    with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(grad):
        runs = _runnable({k: _call(_copy(layer, k), batch, steps, lengths, grad) for k in kernels})
        times = {kernel: [_seconds(run)] for kernel, run in runs.items()}
        first_round = sum(t[0] for t in times.values())
        rounds = max(MIN_ROUNDS, min(ROUNDS, int(BUDGET / max(first_round, 1e-9))))
        for _ in range(rounds - 1):
            for kernel, run in runs.items():
                times[kernel].append(_seconds(run))
    return {kernel: min(t) for kernel, t in times.items()}


def _runnable(runs: dict) -> dict:
    """The runs whose warm-up call (first-call costs: packing, building the C library once)
    succeeds; a kernel that fails on this case is no candidate. Raises if none runs."""
    errors = {}
    for kernel, run in runs.items():
        try:
            run()
        except Exception as error:  # noqa: BLE001 - any failure rules the kernel out
            errors[kernel] = error
    if len(errors) == len(runs):
        raise next(iter(errors.values()))
    return {kernel: run for kernel, run in runs.items() if kernel not in errors}


def _steps(layer, batch: int, grad: bool) -> int:
    """Steps of the timed sequence: :data:`STEPS`, fewer where one call would exceed
    :data:`WORK` multiply-adds (the products dominate there, and their ranking shows in few);
    backward's two products per step count with forward's one."""
    gates = layer.cells[0].weight_hh.shape[0]
    per_step = batch * gates * (layer.input_size + layer.hidden_size) * len(layer.cells)
    return max(4, min(STEPS, int(WORK / ((3 if grad else 1) * per_step))))


def _copy(layer, kernel: str):
    copied = copy.deepcopy(layer)
    for module in copied.modules():  # the user's hooks stay on the user's layer
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    for p in copied.parameters():
        p.grad = None
    copied.kernel = kernel
    return copied


def _call(layer, batch: int, steps: int, lengths: bool, grad: bool):
    weight = layer.cells[0].weight_hh
    x = torch.randn(steps, batch, layer.input_size, dtype=weight.dtype, device=weight.device)
    x.requires_grad_(grad)  # backward reaches the layer even with frozen parameters
    sizes = torch.randint(1, steps + 1, (batch,)) if lengths else None  # (B,)
    if sizes is not None:
        sizes[0] = steps

    def run():
        output, _ = layer(x.transpose(0, 1) if layer.batch_first else x, lengths=sizes)
        if grad:
            output.backward(torch.ones_like(output))
            for p in layer.parameters():
                p.grad = None

    return run


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


TUNER = Tuner()
