"""The fused LSTM path (gate math in C) against its slow twins, its fallback, and bf16.

- fused_scan equals rnnkit.scan.scan: outputs, final states and every gradient, in float32
  (1e-5), with and without masks, bias, peepholes, in both directions; float64 runs the
  Python BPTT (the C code is float32 only), and equals scan to 1e-10;
- a miscounted argument of a C entry point is an error that names it;
- a step large enough to be split over OpenMP threads, and plain torch.mm in place of the
  packed-weight per-step products (their slow twin), give the same answers;
- with no compiler, the Python BPTT runs instead and gives the same answers; the portable
  flag set builds and gives them too;
- precision="bf16" keeps float32 parameters and stays close to float32. Tolerance: relative
  error (Frobenius norm of the difference over the float32 norm) below 3e-2 for outputs,
  states and gradients. bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3);
  a product summed over a few dozen terms and a few steps of recurrence grows that to about
  1e-2 on these sizes, so 3e-2 leaves margin while catching a wrong gate or sign (errors of
  order 1).

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import rnnkit
from rnnkit.cells import LSTMCell
from rnnkit.kernels import common, compiled, fused_scan, hardware, lstm_fused, products, torch_fused
from rnnkit.kernels.lstm_fused import LSTMFused, applies
from rnnkit.scan import scan

T, B, I, H = 5, 4, 3, 6
LENGTHS = [T, 1, 3, 4]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
BF16_RELATIVE = 3e-2


def make_cell(peephole: bool, bias: bool = True, dtype=torch.float64) -> LSTMCell:
    """A seeded cell with every parameter random and non-zero, peepholes included."""
    torch.manual_seed(0)
    cell = LSTMCell(I, H, bias=bias, peephole=peephole)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.7)
    return cell.to(dtype)


def make_inputs(dtype, masked: bool):
    torch.manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    mask = torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None, :] if masked else None  # (T, B)
    return x, (h0, c0), mask


def run(scan_fn, cell, x, state, mask, reverse):
    """Outputs, final states and the gradients of a loss touching all of them."""
    output, (h, c) = scan_fn(cell, x, state, mask, reverse)
    weights = torch.linspace(-1, 1, output.numel(), dtype=x.dtype).view_as(output)
    loss = (output * weights).sum() + 0.3 * h.sum() + 0.7 * c.pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *state, *cell.parameters()])
    return [output, h, c, *grads]


def assert_all_close(ours, theirs, tol):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        torch.testing.assert_close(a, b, atol=tol, rtol=0)


@pytest.mark.skipif(
    shutil.which(compiled.compiler()) is None, reason="no C compiler: the fallback runs instead"
)
def test_the_c_path_is_built_here():
    """The other tests compare the C path only if it runs: with a compiler, it must build."""
    assert compiled.library() is not None
    assert applies(torch.zeros(1)) and not applies(torch.zeros(1, dtype=torch.float64))
    assert applies(torch.zeros(1), low_precision=True)
    assert not applies(torch.zeros(1, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("peephole", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_equals_scan(dtype, peephole, bias, masked, reverse):
    cell = make_cell(peephole, bias, dtype)
    x, state, mask = make_inputs(dtype, masked)
    ours = run(fused_scan, cell, x, state, mask, reverse)
    theirs = run(scan, cell, x, state, mask, reverse)
    assert_all_close(ours, theirs, TOLERANCE[dtype])


def test_fused_equals_scan_on_a_step_split_over_threads():
    """B x H at the C code's threshold (8192 units), so a step is shared by OpenMP threads."""
    torch.manual_seed(0)
    cell = LSTMCell(I, 128, peephole=True)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(3, 64, I, requires_grad=True)
    state = tuple(torch.randn(64, 128, requires_grad=True) for _ in "hc")
    mask = torch.arange(3)[:, None] < torch.randint(1, 4, (64,))[None, :]  # (T, B)
    ours = run(fused_scan, cell, x, state, mask, True)
    theirs = run(scan, cell, x, state, mask, True)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


needs_mkl = pytest.mark.skipif(
    not hardware.mkl_products(),
    reason="MKL's packed GEMM is not reachable from C here, or RNNKIT_HARDWARE=generic",
)


@pytest.mark.skipif(
    sys.platform != "linux" or not torch.backends.mkl.is_available() or compiled.library() is None,
    reason="torch without MKL, or not Linux's libtorch_cpu.so",
)
def test_mkl_reaches_the_c_loops_here():
    """The tests below compare the float32 loops in C only if they run: here they must,
    unless RNNKIT_HARDWARE=generic switches them off."""
    assert hardware.mkl_products() is not hardware.generic()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_the_onednn_projection_equals_torchs_linear_and_the_layer_runs_on_it(monkeypatch):
    """kernels/products.py's candidate backend for the input projection, and the fused
    paths on it, against torch's linear and scan."""
    torch.manual_seed(3)
    a, weight, bias = torch.randn(40, I), torch.randn(4 * H, I), torch.randn(4 * H)
    expected = torch.nn.functional.linear(a, weight, bias)
    torch.testing.assert_close(products.onednn_linear(a, weight, bias), expected)
    monkeypatch.setattr(products, "backend", lambda a, weight: "onednn")
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked=True)
    ours = run(fused_scan, cell, x, state, mask, False)
    theirs = run(scan, cell, x, state, mask, False)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


@needs_mkl
@pytest.mark.parametrize("steps", [T, T - 1])  # the final state in either of the two rows
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_inference_records_no_function_and_equals_scan(monkeypatch, steps, masked, reverse):
    """Under no_grad the LSTM runs lstm_fused.inference (states in two rows, nothing kept
    for a backward), not the autograd Function, and computes what scan computes."""
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked)
    x, mask = x[:steps], None if mask is None else mask[:steps]
    monkeypatch.setattr(LSTMFused, "apply", None)  # a call would fail
    with torch.no_grad():
        output, (h, c) = fused_scan(cell, x, state, mask, reverse)
        expected, (h_expected, c_expected) = scan(cell, x, state, mask, reverse)
    for ours, theirs in ((output, expected), (h, h_expected), (c, c_expected)):
        torch.testing.assert_close(ours, theirs, atol=TOLERANCE[torch.float32], rtol=0)


@needs_mkl
@pytest.mark.parametrize("peephole", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_mkl_loops_in_c_equal_the_python_loops(monkeypatch, peephole, bias, masked, reverse):
    """float32: the loops over time in C with MKL's products (csrc/mkl_loops.c) against the
    Python loops with torch's packed products, their twin: outputs, states, every gradient."""
    cell = make_cell(peephole, bias, torch.float32)
    x, state, mask = make_inputs(torch.float32, masked)
    results = []
    for in_c in (True, False):
        monkeypatch.setattr(lstm_fused, "LOOPS_IN_C", in_c)
        results.append(run(fused_scan, cell, x, state, mask, reverse))
    assert_all_close(*results, 1e-6)


@needs_mkl
def test_mkl_loops_on_a_step_split_over_threads(monkeypatch):
    """B x H = 8192, where the C gate math shares a step between the OpenMP threads."""
    torch.manual_seed(0)
    cell = LSTMCell(I, 128, peephole=True)
    x = torch.randn(3, 64, I, requires_grad=True)  # (T, B, I)
    state = tuple(torch.randn(64, 128, requires_grad=True) for _ in "hc")
    mask = torch.arange(3)[:, None] < torch.randint(1, 4, (64,))[None, :]  # (T, B)
    results = []
    for in_c in (True, False):
        monkeypatch.setattr(lstm_fused, "LOOPS_IN_C", in_c)
        results.append(run(fused_scan, cell, x, state, mask, True))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@needs_mkl
def test_the_float32_loops_run_in_c(monkeypatch):
    """With MKL reachable, neither Python loop runs in float32; without it, both do."""
    called = []
    monkeypatch.setattr(lstm_fused, "_forward_steps", lambda *a: called.append("forward"))
    monkeypatch.setattr(lstm_fused, "_backward_steps", lambda *a: called.append("backward"))
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked=True)
    run(fused_scan, cell, x, state, mask, False)
    assert called == []
    monkeypatch.setattr(hardware, "MKL_FUNCTIONS", ("no_such_function",) * 3)
    monkeypatch.setattr(hardware, "_mkl_ready", {})
    assert not hardware.mkl_products()
    run(fused_scan, cell, x, state, mask, False)  # (the spies leave the buffers unfilled)
    assert called == ["forward", "backward"]


@pytest.mark.parametrize("packed", [True, False])
def test_plain_matmuls_give_the_same_answers(monkeypatch, packed):
    """The packed-weight per-step products (MKL, oneDNN) against plain torch.mm."""
    monkeypatch.setattr(lstm_fused, "PACKED", packed)
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked=True)
    ours = run(fused_scan, cell, x, state, mask, False)
    theirs = run(scan, cell, x, state, mask, False)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


@pytest.mark.skipif(compiled.library() is None or not shutil.which("nm"), reason="no library")
def test_every_function_the_library_exports_is_declared_in_rnnkit_h():
    """csrc/rnnkit.h is the table of entry points: every function the library exports (the
    sources' functions that are not static) is there, and nothing else."""
    listing = ["nm", "-D", "--defined-only", str(compiled.library().path)]
    symbols = subprocess.run(listing, capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert exported == set(compiled.entry_points())


@pytest.mark.skipif(compiled.library() is None, reason="no C compiler")
def test_a_miscounted_argument_is_an_error_that_names_it():
    lib = compiled.library()
    with pytest.raises(TypeError, match="missing the argument 'batch'"):
        lib.bf16_tile_threads()
    with pytest.raises(TypeError, match="takes no argument rows"):
        lib.bf16_tile_threads(batch=16, rows=16)
    assert compiled.entry_points()["bf16_tile_threads"][1][0][0] == "batch"


def test_fallback_without_a_compiler(monkeypatch, tmp_path):
    """No compiler: one warning, the Python BPTT runs, and the answers are the same."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "_cache", {})
    with pytest.warns(RuntimeWarning, match="falls back to the Python BPTT"):
        assert compiled.library() is None
    assert not applies(torch.zeros(1, dtype=torch.float64))
    cell = make_cell(peephole=True)
    x, state, mask = make_inputs(torch.float64, masked=True)
    ours = run(fused_scan, cell, x, state, mask, True)
    theirs = run(scan, cell, x, state, mask, True)
    assert_all_close(ours, theirs, TOLERANCE[torch.float64])
    layer = rnnkit.LSTM(I, H, peephole=True, kernel="fused").double()
    reference = rnnkit.LSTM(I, H, peephole=True, kernel="loop").double()
    reference.load_state_dict(layer.state_dict())
    for a, b in zip(layer(x, lengths=LENGTHS), reference(x, lengths=LENGTHS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_portable_flags_build_and_agree(monkeypatch, tmp_path):
    """The second flag set (no -march=native, no vector maths) is a working build too."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(compiled, "FLAG_SETS", compiled.FLAG_SETS[1:])
    monkeypatch.setattr(compiled, "_cache", {})
    assert compiled.library() is not None
    assert len(list(tmp_path.glob("rnnkit-*.so"))) == 1
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked=True)
    ours = run(fused_scan, cell, x, state, mask, False)
    theirs = run(scan, cell, x, state, mask, False)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


def test_a_build_without_tiles_declares_every_entry_point_and_agrees(monkeypatch, tmp_path):
    """Built where the tile code cannot be (not x86-64, or a compiler without AMX; here
    -DRNNKIT_NO_TILES), the library declares every entry point, reports no tiles, and the
    fused paths run on it."""
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    compile_flags, link_flags = compiled.FLAG_SETS[1]
    no_tiles = ([*compile_flags, "-DRNNKIT_NO_TILES"], link_flags)
    monkeypatch.setattr(compiled, "FLAG_SETS", (no_tiles,))
    monkeypatch.setattr(compiled, "_cache", {})
    lib = compiled.library()
    assert lib is not None and lib.bf16_tiles_ready() == 0
    assert not common.tiles_run(32, 128, 128)
    cell = make_cell(peephole=True, dtype=torch.float32)
    x, state, mask = make_inputs(torch.float32, masked=True)
    ours = run(fused_scan, cell, x, state, mask, False)
    theirs = run(scan, cell, x, state, mask, False)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


@pytest.mark.parametrize("with_lengths", [True, False])
def test_auto_takes_the_fused_kernel_where_documented(with_lengths):
    """rnnkit.kernels.auto_kernel in float32 on the CPU: the plain LSTM runs torch's kernel
    below hidden 256 without lengths, every other case the fused path."""
    lengths = torch.tensor(LENGTHS) if with_lengths else None
    batch = len(LENGTHS)
    assert rnnkit.LSTM(I, H, peephole=True)._kernel_name(lengths, batch) == "fused"
    expected = "fused" if with_lengths else "torch"
    assert rnnkit.LSTM(I, H)._kernel_name(lengths, batch) == expected
    assert rnnkit.LSTM(I, 256)._kernel_name(lengths, batch) == "fused"
    assert rnnkit.GRU(I, H)._kernel_name(lengths, batch) == "fused"
    assert rnnkit.RNN(I, H)._kernel_name(lengths, batch) == "fused"


def test_auto_runs_torch_for_float32_lstm_inference(monkeypatch):
    """Without a graph to record (torch.no_grad, or nothing needing grad) the plain LSTM runs
    torch's kernel, faster in inference; training keeps the fused path, and both compute the
    same outputs. The peephole LSTM, the GRU and lengths stay fused."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    real = torch_fused.fused_stack
    monkeypatch.setattr(torch_fused, "fused_stack", counted)
    torch.manual_seed(0)
    layer, x = rnnkit.LSTM(I, 256), torch.randn(T, B, I)  # (T, B, I)
    trained, _ = layer(x)
    assert calls == []
    with torch.no_grad():
        inferred, _ = layer(x)
    assert calls == [1]
    layer.requires_grad_(False)  # no tensor needs grad: no graph either
    layer(x)
    assert calls == [1, 1]
    assert_all_close(inferred, trained.detach(), TOLERANCE[torch.float32])
    assert layer._kernel_name(None, B, grad=False) == "torch"
    assert layer._kernel_name(torch.tensor(LENGTHS), len(LENGTHS), grad=False) == "fused"
    assert rnnkit.LSTM(I, H, peephole=True)._kernel_name(None, B, grad=False) == "fused"
    assert rnnkit.GRU(I, H)._kernel_name(None, B, grad=False) == "fused"


# -- mixed precision -------------------------------------------------------------------------


def relative_error(ours, theirs) -> float:
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


BF16_CASES = [
    ("peephole", {"peephole": True}, rnnkit.LSTM),
    ("lstm", {}, rnnkit.LSTM),
    ("gru", {}, rnnkit.GRU),
    ("rnn", {}, rnnkit.RNN),
]


@pytest.mark.parametrize("name,options,cls", BF16_CASES, ids=[c[0] for c in BF16_CASES])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_bf16_is_close_to_float32_and_keeps_float32_parameters(name, options, cls, with_lengths):
    torch.manual_seed(2)
    exact = cls(I, H, num_layers=2, bidirectional=True, **options)
    mixed = cls(I, H, num_layers=2, bidirectional=True, precision="bf16", **options)
    mixed.load_state_dict(exact.state_dict())
    x = torch.randn(T, B, I)
    lengths = torch.tensor(LENGTHS) if with_lengths else None
    results = []
    for layer in (mixed, exact):
        output, state = layer(x, lengths=lengths)
        state = state if isinstance(state, tuple) else (state,)
        loss = output.pow(2).sum() + sum(s.sum() for s in state)
        loss.backward()
        results.append([output, *state, *(p.grad for p in layer.parameters())])
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape
        assert relative_error(ours, theirs) < BF16_RELATIVE
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


def test_bf16_actually_rounds():
    """bf16 must change the numbers a little: a silent float32 run would pass the test above."""
    torch.manual_seed(2)
    exact = rnnkit.LSTM(I, H, peephole=True)
    mixed = rnnkit.LSTM(I, H, peephole=True, precision="bf16")
    mixed.load_state_dict(exact.state_dict())
    x = torch.randn(T, B, I)
    assert relative_error(mixed(x)[0], exact(x)[0]) > 1e-5


def test_enclosing_autocast_runs_the_fused_kernel_in_bf16():
    """Under the trainer's bf16 autocast the fused path returns float32, close to float32."""
    torch.manual_seed(2)
    layer = rnnkit.LSTM(I, H, peephole=True)
    x = torch.randn(T, B, I)
    exact, _ = layer(x, lengths=LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, (h, c) = layer(x, lengths=LENGTHS)
    assert mixed.dtype == h.dtype == c.dtype == torch.float32
    assert 1e-5 < relative_error(mixed, exact) < BF16_RELATIVE


@pytest.mark.parametrize(
    "kwargs,call,error,message",
    [
        ({"precision": "fp16"}, None, ValueError, "precision must be one of"),
        ({"precision": "bf16", "kernel": "loop"}, None, ValueError, "float reference"),
        ({"precision": "bf16"}, lambda m: m(torch.randn(T, B, I).double()), TypeError, "float32"),
    ],
)
def test_precision_checks(kwargs, call, error, message):
    with pytest.raises(error, match=message):
        layer = rnnkit.LSTM(I, H, **kwargs)
        call(layer)


def test_bf16_per_step_products_packed_plain_and_float32(monkeypatch):
    """At B x H = 8192 the per-step products run in bfloat16 (below, in float32): oneDNN's
    packed product (where the CPU has native bfloat16) against torch.mm of the rounded
    operands, its slow twin, and both near float32."""
    torch.manual_seed(2)
    batch, hidden = 64, 128
    assert lstm_fused.bf16_steps(batch, hidden, True)
    assert not lstm_fused.bf16_steps(batch, hidden - 1, True)
    exact = rnnkit.LSTM(I, hidden, peephole=True, bidirectional=True)
    mixed = rnnkit.LSTM(I, hidden, peephole=True, bidirectional=True, precision="bf16")
    mixed.load_state_dict(exact.state_dict())
    x = torch.randn(3, batch, I, requires_grad=True)
    lengths = torch.randint(1, 4, (batch,))
    results = []
    for layer, packed in ((mixed, True), (mixed, False), (exact, True)):
        monkeypatch.setattr(lstm_fused, "PACKED", packed)
        output, (h, c) = layer(x, lengths=lengths)
        (dx,) = torch.autograd.grad(output.pow(2).sum() + h.sum() + c.sum(), [x])
        results.append((output, h, c, dx))
    for packed, plain, float32 in zip(*results, strict=True):
        assert relative_error(packed, plain) < 1e-2
        assert relative_error(packed, float32) < BF16_RELATIVE


def subnormal_count(tensor) -> int:
    tiny = torch.finfo(tensor.dtype).tiny  # the smallest normal float
    return int(((tensor != 0) & (tensor.abs() < tiny)).sum())


@pytest.mark.skipif(compiled.library() is None, reason="no C library: nothing to flush")
@pytest.mark.parametrize("cell_name", ["peephole", "gru", "rnn"])
def test_fused_paths_flush_denormals_and_give_the_setting_back(one_thread, cell_name):
    """A loss scaled to 1e-37 drives some gradients below float32's smallest normal number
    (1.2e-38): autograd over the loop keeps them as denormals (slow to compute with), the
    fused paths flush them to zero, and afterwards this thread computes denormals again.

    On one thread: the flush is the calling thread's, and MKL may share even a (24, 24) @
    (24, 8) product with a worker thread that keeps denormals (it does on an AMD EPYC)."""
    torch.manual_seed(0)
    layer = rnnkit.layers.make_layer(cell_name, 3, 8, kernel="fused")
    loop = rnnkit.layers.make_layer(cell_name, 3, 8, kernel="loop")
    loop.load_state_dict(layer.state_dict())
    x = torch.randn(6, 4, 3)
    grads = []
    for model in (layer, loop):
        output, _ = model(x)
        (output.sum() * 1e-37).backward()
        grads.append([p.grad for p in model.parameters()])
    assert sum(subnormal_count(g) for g in grads[1]) > 0  # the case does reach denormals
    assert sum(subnormal_count(g) for g in grads[0]) == 0
    assert sum(int((g != 0).sum()) for g in grads[0]) > 0  # the normal part is kept
    assert subnormal_count(torch.tensor([1e-38]) * 0.5) == 1  # the caller's setting is back
