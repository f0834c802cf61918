"""The fused GRU and Elman RNN paths (gate math in C) against their slow twins, their
fallback, and bf16; one set of tests for the three kinds: the GRU, the RNN with tanh and
the RNN with relu (``rnnkit.kernels.gru_fused`` and ``rnnkit.kernels.rnn_fused``).

- fused_scan equals rnnkit.scan.scan: outputs, final states and every gradient (inputs,
  weights, biases, h0), in float32 (1e-5, plus 1e-6 relative: relu's unbounded values
  reach tens), with and without masks and bias, in both directions; float64 runs the Python
  BPTT (the C code is float32 only) and equals scan to 1e-10;
- stacked and bidirectional layers with lengths equal the Python loop;
- a step large enough to be split over OpenMP threads, and plain torch.mm in place of the
  packed-weight per-step products (MKL; in bf16 AMX tiles or oneDNN), give the same answers;
- in bf16 on AMX tiles, the loops over time in C equal the Python loops, and the tile
  product equals a bfloat16 matmul;
- with no compiler, the Python BPTT runs instead and gives the same answers;
- precision="bf16" keeps float32 parameters, stays within 3e-2 relative error of float32
  (the bound of tests/test_fused.py, which says why) and is not bit-identical to it.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import dataclasses
import shutil
from types import ModuleType

import pytest
import torch

import rnnkit
from rnnkit.cells import GRUCell, RNNCell
from rnnkit.kernels import common, compiled, fused_scan, gru_fused, hardware, lstm_fused, rnn_fused
from rnnkit.kernels.lstm_fused import applies
from rnnkit.scan import scan

T, B, I, H = 5, 4, 3, 6
LENGTHS = [T, 1, 3, 4]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
RELATIVE = {torch.float64: 0.0, torch.float32: 1e-6}
BF16_RELATIVE = 3e-2


@dataclasses.dataclass(frozen=True)
class Kind:
    """One cell the fused GRU/RNN code runs, and how the tests build and call it."""

    name: str
    module: ModuleType  # the kernel module, with its LOOPS_IN_C switch
    symbol: str  # a function the C library must export
    spread: float  # std of the random parameters: order-one states over T steps
    nonlinearity: str | None = None  # the RNN's; None for the GRU

    def cell(self, hidden: int = H, bias: bool = True, spread: float | None = None):
        torch.manual_seed(0)
        if self.nonlinearity is None:
            cell = GRUCell(I, hidden, bias=bias)
        else:
            cell = RNNCell(I, hidden, bias=bias, nonlinearity=self.nonlinearity)
        with torch.no_grad():
            for p in cell.parameters():
                p.normal_(0.0, self.spread if spread is None else spread)
        return cell

    def layer(self, hidden: int = H, **options):
        if self.nonlinearity is None:
            return rnnkit.GRU(I, hidden, **options)
        return rnnkit.RNN(I, hidden, nonlinearity=self.nonlinearity, **options)


KINDS = {
    "gru": Kind("gru", gru_fused, "gru_forward", 0.7),
    "rnn_tanh": Kind("rnn_tanh", rnn_fused, "rnn_forward", 0.4, "tanh"),
    "rnn_relu": Kind("rnn_relu", rnn_fused, "rnn_forward", 0.4, "relu"),
}


@pytest.fixture(params=list(KINDS))
def kind(request) -> Kind:
    return KINDS[request.param]


def make_inputs(dtype, masked: bool, batch: int = B, steps: int = T):
    torch.manual_seed(1)
    x = torch.randn(steps, batch, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(batch, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor(LENGTHS) if batch == B else torch.randint(1, steps + 1, (batch,))
    mask = torch.arange(steps)[:, None] < lengths[None, :] if masked else None  # (T, B)
    return x, h0, mask


def run(scan_fn, cell, x, h0, mask, reverse):
    """Outputs, final state and the gradients of a loss touching both."""
    output, h = scan_fn(cell, x, h0, mask, reverse)
    weights = torch.linspace(-1, 1, output.numel(), dtype=x.dtype).view_as(output)
    loss = (output * weights).sum() + 0.7 * h.pow(2).sum()
    grads = torch.autograd.grad(loss, [x, h0, *cell.parameters()])
    return [output, h, *grads]


def assert_all_close(ours, theirs, tol):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        torch.testing.assert_close(a, b, atol=tol, rtol=RELATIVE[a.dtype])


def relative_error(ours, theirs) -> float:
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


@pytest.mark.skipif(
    shutil.which(compiled.compiler()) is None, reason="no C compiler: the fallback runs instead"
)
def test_the_c_path_is_built_here(kind):
    """The other tests compare the C path only if it runs: with a compiler, it must build."""
    assert compiled.library() is not None
    assert hasattr(compiled.library(), kind.symbol)
    assert applies(torch.zeros(1)) and not applies(torch.zeros(1, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_equals_scan(kind, dtype, bias, masked, reverse):
    cell = kind.cell(bias=bias).to(dtype)
    x, h0, mask = make_inputs(dtype, masked)
    ours = run(fused_scan, cell, x, h0, mask, reverse)
    theirs = run(scan, cell, x, h0, mask, reverse)
    assert_all_close(ours, theirs, TOLERANCE[dtype])


def test_fused_equals_scan_on_a_step_split_over_threads(kind):
    """B x H at the C code's threshold (8192 units), so a step is shared by OpenMP threads."""
    cell = kind.cell(128, spread=kind.spread / 2.5).float()
    torch.manual_seed(0)
    x = torch.randn(3, 64, I, requires_grad=True)
    h0 = torch.randn(64, 128, requires_grad=True)
    mask = torch.arange(3)[:, None] < torch.randint(1, 4, (64,))[None, :]  # (T, B)
    ours = run(fused_scan, cell, x, h0, mask, True)
    theirs = run(scan, cell, x, h0, mask, True)
    assert_all_close(ours, theirs, 1e-4)  # float32 weight gradients of tens, summed over 64 rows


@pytest.mark.parametrize("packed", [True, False])
def test_plain_matmuls_give_the_same_answers(kind, monkeypatch, packed):
    """The packed-weight per-step products (MKL) against plain torch.mm."""
    monkeypatch.setattr(lstm_fused, "PACKED", packed)
    cell = kind.cell().float()
    x, h0, mask = make_inputs(torch.float32, masked=True)
    ours = run(fused_scan, cell, x, h0, mask, False)
    theirs = run(scan, cell, x, h0, mask, False)
    assert_all_close(ours, theirs, TOLERANCE[torch.float32])


def layer_results(layer, x, h0, lengths):
    """Output, final state and every gradient of a stacked layer."""
    output, h = layer(x, h0, lengths=lengths)
    loss = output.pow(2).sum() + (h * torch.linspace(-1, 1, h.numel()).view_as(h)).sum()
    grads = torch.autograd.grad(loss, [x, h0, *layer.parameters()])
    return [output, h, *grads]


@pytest.mark.parametrize("batch_first", [False, True])
def test_stacked_bidirectional_layer_with_lengths_equals_the_loop(kind, batch_first):
    torch.manual_seed(3)
    options = {"num_layers": 2, "bidirectional": True, "batch_first": batch_first}
    fused = kind.layer(kernel="fused", **options).double()
    loop = kind.layer(kernel="loop", **options).double()
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    x = x.double().requires_grad_()
    h0 = torch.randn(4, B, H, dtype=torch.float64, requires_grad=True)
    ours = layer_results(fused, x, h0, LENGTHS)
    theirs = layer_results(loop, x, h0, LENGTHS)
    assert_all_close(ours, theirs, TOLERANCE[torch.float64])


def test_fallback_without_a_compiler(kind, monkeypatch, tmp_path):
    """No compiler: one warning, the Python BPTT runs, and the answers are the same."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "_cache", {})
    with pytest.warns(RuntimeWarning, match="falls back to the Python BPTT"):
        assert compiled.library() is None
    cell = kind.cell().double()
    x, h0, mask = make_inputs(torch.float64, masked=True)
    ours = run(fused_scan, cell, x, h0, mask, True)
    theirs = run(scan, cell, x, h0, mask, True)
    assert_all_close(ours, theirs, TOLERANCE[torch.float64])
    layer = kind.layer(kernel="fused", precision="bf16")
    assert layer(x.detach().float(), lengths=LENGTHS)[0].dtype == torch.float32


# -- mixed precision and dispatch ------------------------------------------------------------


def bf16_pair(kind: Kind, hidden: int, **options):
    """A float32 layer and a bf16 fused one with the same weights."""
    torch.manual_seed(2)
    exact = kind.layer(hidden, kernel="fused", **options)
    mixed = kind.layer(hidden, kernel="fused", precision="bf16", **options)
    mixed.load_state_dict(exact.state_dict())
    return exact, mixed


@pytest.mark.parametrize("with_lengths", [True, False])
def test_bf16_is_close_to_float32_but_not_equal(kind, with_lengths):
    exact, mixed = bf16_pair(kind, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.randn(4, B, H, requires_grad=True)
    lengths = LENGTHS if with_lengths else None
    results = [layer_results(layer, x, h0, lengths) for layer in (mixed, exact)]
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape
        assert relative_error(ours, theirs) < BF16_RELATIVE
    assert relative_error(results[0][0], results[1][0]) > 1e-5  # bfloat16 did round
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


@pytest.mark.parametrize("batch,hidden", [(64, 128), (16, 32)])
def test_bf16_per_step_products_tiles_packed_plain_and_float32(kind, monkeypatch, batch, hidden):
    """The per-step products of mixed precision: on AMX tiles where the CPU has them (whole
    tiles, any size), else in bfloat16 from B x H = 8192 (through oneDNN where the CPU has
    native bfloat16) and MKL in float32 below; each against plain torch.mm, their slow twin,
    and all near float32."""
    exact, mixed = bf16_pair(kind, hidden, bidirectional=True)
    x = torch.randn(3, batch, I, requires_grad=True)
    h0 = torch.randn(2, batch, hidden, requires_grad=True)
    lengths = torch.randint(1, 4, (batch,))
    results = []
    for layer, tiles, packed in ((mixed, 1, 1), (mixed, 0, 1), (mixed, 0, 0), (exact, 1, 1)):
        monkeypatch.setattr(common, "TILES", bool(tiles))
        monkeypatch.setattr(lstm_fused, "PACKED", bool(packed))
        results.append(layer_results(layer, x, h0, lengths))
    # Sums of the same bfloat16 terms, in float32 or rounded to bfloat16 (oneDNN's), agree
    # to 1e-2; relu's values reach tens,
    # where a bfloat16 step is an eighth or more, and its gradients to 2e-2.
    bound = 2e-2 if kind.nonlinearity == "relu" else 1e-2
    for tiles, packed, plain, float32 in zip(*results, strict=True):
        assert relative_error(tiles, plain) < bound
        assert relative_error(packed, plain) < bound
        assert relative_error(tiles, float32) < BF16_RELATIVE
    assert relative_error(results[0][0], results[3][0]) > 1e-5


def test_auto_runs_the_fused_kernel_on_the_cpu(kind):
    """rnnkit.kernels.auto_kernel: fused in float32 and bf16, with and without lengths, at
    any batch; torch's kernel keeps the other devices."""
    assert kind.layer(precision="bf16")._kernel_name(None, B) == "fused"
    assert kind.layer()._kernel_name(torch.tensor(LENGTHS), B) == "fused"
    assert kind.layer()._kernel_name(None, B) == "fused"
    assert kind.layer().to("meta")._kernel_name(None, B) == "torch"
    assert kind.layer(kernel="fused", precision="bf16").precision == "bf16"


@pytest.mark.parametrize("batch,n,k", [(16, 32, 32), (32, 384, 128), (64, 128, 384)])
@pytest.mark.parametrize("transposed", [False, True])
def test_tile_product_equals_a_bfloat16_matmul(batch, n, k, transposed):
    """The AMX tile product (csrc/rnn_gates.c, shared by the GRU) against torch, for a weight
    as stored and transposed (the backward's W_hh), with float32 sums of bfloat16 terms."""
    torch.manual_seed(4)
    weight = torch.randn(k, n).t() if transposed else torch.randn(n, k)  # (N, K)
    product = common.tile_product(weight, batch, True)
    if product is None:
        pytest.skip("no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: no tile product")
    row = torch.randn(batch, k).bfloat16()
    result = product(row)
    assert result.shape == (batch, n) and result.dtype == torch.float32
    expected = row.double() @ weight.bfloat16().double().t()
    torch.testing.assert_close(result.double(), expected, atol=1e-4, rtol=1e-5)


def test_tile_product_splits_its_rows_over_the_threads_without_changing_a_bit():
    """bf16_tile_product_rows (csrc/rnn_gates.c) shares the rows of an all-steps product out
    in whole tiles; each row's sums are the same whichever thread computes them."""
    torch.manual_seed(5)
    weight, rows = torch.randn(96, 64), torch.randn(1024, 64).bfloat16()
    product = common.tile_product(weight, rows.shape[0], True)
    if product is None:
        pytest.skip("no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = product(rows).clone()
        torch.set_num_threads(2)
        two = product(rows).clone()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    expected = rows.double() @ weight.bfloat16().double().t()
    torch.testing.assert_close(one.double(), expected, atol=1e-4, rtol=1e-5)


def test_mixed_linear_pads_an_input_size_off_the_tiles_with_zeros():
    """An input of 85 features (a one-hot alphabet) runs on tiles padded to 96: the same
    float32 sums of bfloat16 terms as the unpadded product."""
    torch.manual_seed(6)
    a, weight = torch.randn(256, 85), torch.randn(192, 85)
    result = common.mixed_linear(a, weight, True)
    assert result.shape == (256, 192) and result.dtype == torch.float32
    expected = a.bfloat16().double() @ weight.bfloat16().double().t()
    torch.testing.assert_close(result.double(), expected, atol=1e-4, rtol=1e-5)
    assert a.shape == (256, 85) and weight.shape == (192, 85)  # the operands stay as given


def test_tile_product_takes_whole_tiles_in_mixed_precision_only():
    weight = torch.randn(128, 128)
    assert common.tile_product(weight, 8, True) is None  # B not a multiple of 16
    assert common.tile_product(torch.randn(128, 48), 16, True) is None  # K not of 32
    assert common.tile_product(weight, 16, False) is None  # float32


def test_loops_in_c_equal_the_python_loops_on_tiles(kind, monkeypatch):
    """With the products on tiles the loops over time run in C; the Python loops with the
    same tile products and the same step code are their twin, equal to rounding."""
    _, mixed = bf16_pair(kind, 32, num_layers=2, bidirectional=True)
    if common.tile_weight(mixed.cells[0].weight_hh, 16, True) is None:
        pytest.skip("no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: Python loops")
    x = torch.randn(5, 16, I, requires_grad=True)
    h0 = torch.randn(4, 16, 32, requires_grad=True)
    lengths = torch.randint(1, 6, (16,))
    results = []
    for in_c in (True, False):
        monkeypatch.setattr(kind.module, "LOOPS_IN_C", in_c)
        results.append(layer_results(mixed, x, h0, lengths))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(
    not hardware.mkl_products(),
    reason="MKL is not reachable from C here, or RNNKIT_HARDWARE=generic",
)
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [B, 64])
def test_mkl_loops_in_c_equal_the_python_loops(kind, monkeypatch, masked, reverse, bias, batch):
    """float32: the loops over time in C with MKL's products (csrc/mkl_loops.c) against the
    Python loops with torch's packed products; at B = 64, H = 128 a step's gate math is
    split over the OpenMP threads. Outputs, final state and every gradient."""
    hidden = H if batch == B else 128
    cell = kind.cell(hidden, bias)
    torch.manual_seed(1)
    x = torch.randn(T, batch, I, requires_grad=True)  # (T, B, I)
    h0 = torch.randn(batch, hidden, requires_grad=True)  # (B, H)
    lengths = torch.randint(1, T + 1, (batch,))
    mask = torch.arange(T)[:, None] < lengths[None, :] if masked else None  # (T, B)
    results, called = [], []
    monkeypatch.setattr(kind.module, "_forward_steps", spy(kind.module._forward_steps, called))
    for in_c in (True, False):
        monkeypatch.setattr(kind.module, "LOOPS_IN_C", in_c)
        results.append(run(fused_scan, cell, x, h0, mask, reverse))
    assert called == ["python loop"]  # for the twin only
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def spy(function, called: list):
    """``function``, noting each call in ``called``."""

    def noted(*args):
        called.append("python loop")
        return function(*args)

    return noted


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape", [(16, 32), (48, 64), (96, 128), (1152, 384)])
def test_tiles_packed_in_c_equal_the_torch_packing(monkeypatch, shape, transposed):
    """common.tile_weight rounds and packs float32 weights in one pass of C (a transposed
    view read in place); torch's permuted copy is its twin: the same bits."""
    if not common.tiles_run(16, 16, 32):
        pytest.skip("no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: nothing is packed")
    torch.manual_seed(0)
    n, k = shape
    weight = torch.randn(k, n).t() if transposed else torch.randn(n, k)
    ours = common.tile_weight(weight, 16, True)
    monkeypatch.setattr(common, "PACK_IN_C", False)
    theirs = common.tile_weight(weight, 16, True)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert ours.shape == theirs.shape == (n // 16, k // 32, 16, 16, 2)
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))
