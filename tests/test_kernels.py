"""The hand-written BPTT of rnnkit.kernels against autograd: gradcheck of every Function, and
equality with its slow twin rnnkit.scan.scan (outputs, final states and every gradient).

And what rnnkit.kernels.hardware answers, with torch's CPU probes replaced: native bfloat16
from AMX or AVX512-BF16 (or a torch without the probes), the default precision and its
reason, the bf16 LSTM's kernel that follows, and RNNKIT_HARDWARE=generic switching every
hardware path off.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.kernels import GRUBPTT, LSTMBPTT, RNNBPTT, bptt_scan, common, hardware
from rnnkit.scan import scan

T, B, I, H = 4, 3, 3, 2
LENGTHS = [T, 1, 3]  # one full sequence, one of a single step, one padded at the end
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_peephole", "gru"]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_cell(kind: str, bias: bool = True, dtype=torch.float64):
    """A seeded cell with every parameter random and non-zero, peepholes and biases included."""
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        cell = RNNCell(I, H, bias=bias, nonlinearity=kind.removeprefix("rnn_"))
    elif kind.startswith("lstm"):
        cell = LSTMCell(I, H, bias=bias, peephole=kind == "lstm_peephole")
    else:
        cell = GRUCell(I, H, bias=bias)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.7)
    return cell.to(dtype)


def make_inputs(cell, masked: bool, dtype=torch.float64, lengths=LENGTHS):
    """x (T, B, I), a random initial state, and the mask of ``lengths`` (or None)."""
    torch.manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    state = (h0, torch.randn(B, H, dtype=dtype, requires_grad=True)) if cell.gates == 4 else h0
    mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :] if masked else None  # (T, B)
    return x, state, mask


def state_tensors(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def weights_of(cell) -> tuple:
    """The tensors a Function takes, in its order; biases None without bias."""
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if isinstance(cell, LSTMCell) and cell.peephole:
        weights += (cell.weight_ci, cell.weight_cf, cell.weight_co)
    return weights


def function_of(cell, mask, reverse):
    """The cell's autograd.Function as a plain function of (x, state..., weights...)."""
    if isinstance(cell, LSTMCell):

        def run(x, h0, c0, *weights):
            peepholes = weights[4:] or (None, None, None)
            return LSTMBPTT.apply(x, *weights[:4], h0, c0, *peepholes, mask, reverse)

    elif isinstance(cell, GRUCell):

        def run(x, h0, *weights):
            return GRUBPTT.apply(x, *weights, h0, mask, reverse)

    else:

        def run(x, h0, *weights):
            return RNNBPTT.apply(x, *weights, h0, mask, cell.nonlinearity, reverse)

    return run


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, bias, masked, reverse):
    cell = make_cell(kind, bias)
    x, state, mask = make_inputs(cell, masked)
    weights = tuple(
        w.detach().clone().requires_grad_() if w is not None else None for w in weights_of(cell)
    )
    inputs = (x, *state_tensors(state), *weights)
    assert torch.autograd.gradcheck(function_of(cell, mask, reverse), inputs)


def loss_and_grads(run, cell, x, state, mask, reverse):
    """Output, final state, and the gradients of a random linear loss w.r.t. everything."""
    output, final = run(cell, x, state, mask, reverse)
    torch.manual_seed(2)
    loss = (output * torch.randn_like(output)).sum()
    for s in state_tensors(final):
        loss = loss + (s * torch.randn_like(s)).sum()
    wrt = (x, *state_tensors(state), *cell.parameters())
    return output, state_tensors(final), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_equals_scan(kind, bias, masked, reverse, dtype):
    cell = make_cell(kind, bias, dtype)
    x, state, mask = make_inputs(cell, masked, dtype)
    out, final, grads = loss_and_grads(bptt_scan, cell, x, state, mask, reverse)
    ref_out, ref_final, ref_grads = loss_and_grads(scan, cell, x, state, mask, reverse)
    tol = TOLERANCE[dtype]
    assert out.shape == ref_out.shape == (T, B, H) and out.dtype == dtype
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    assert len(final) == len(ref_final) == len(state_tensors(state))
    for got, want in zip(final, ref_final, strict=True):
        assert got.shape == want.shape == (B, H) and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert len(grads) == len(ref_grads)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.shape == want.shape and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_padding(kind, reverse):
    """Padded outputs are exactly zero, and each sequence ends where its own steps end."""
    cell = make_cell(kind)
    x, state, mask = make_inputs(cell, masked=True)
    with torch.no_grad():
        output, final = bptt_scan(cell, x, state, mask, reverse)
    assert output.shape == (T, B, H)
    assert (output[~mask] == 0).all()
    for b, length in enumerate(LENGTHS):
        last_real = 0 if reverse else length - 1  # the last step the loop visits
        assert torch.equal(state_tensors(final)[0][b], output[last_real, b])
        alone = tuple(s[b : b + 1] for s in state_tensors(state))
        alone = alone if isinstance(state, tuple) else alone[0]
        with torch.no_grad():
            alone_out, alone_final = bptt_scan(cell, x[:length, b : b + 1], alone, None, reverse)
        torch.testing.assert_close(output[:length, b : b + 1], alone_out, rtol=1e-12, atol=1e-12)
        for got, want in zip(state_tensors(final), state_tensors(alone_final), strict=True):
            torch.testing.assert_close(got[b : b + 1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence_keeps_initial_state(kind):
    """A sequence of length 0 returns its initial state, and its gradient passes straight back."""
    cell = make_cell(kind)
    x, state, mask = make_inputs(cell, masked=True, lengths=[T, 0, 2])
    output, final = bptt_scan(cell, x, state, mask)
    for got, initial in zip(state_tensors(final), state_tensors(state), strict=True):
        assert torch.equal(got[1], initial[1])
    loss = sum(s[1].sum() for s in state_tensors(final))
    grads = torch.autograd.grad(loss, (x, *state_tensors(state)))
    assert (grads[0][:, 1] == 0).all()
    for d_initial in grads[1:]:
        assert torch.equal(d_initial[1], torch.ones(H, dtype=d_initial.dtype))
        assert (d_initial[[0, 2]] == 0).all()
    assert (output[:, 1] == 0).all()


def test_rejects_bad_inputs():
    cell = make_cell("gru")
    x, state, _ = make_inputs(cell, masked=False)
    with pytest.raises(ValueError, match="expected x of shape"):
        bptt_scan(cell, x[:, :, :2], state)
    with pytest.raises(ValueError, match="expected a state of shape"):
        bptt_scan(cell, x, state[:2])
    with pytest.raises(ValueError, match="bool mask"):
        bptt_scan(cell, x, state, torch.ones(T, B))
    with pytest.raises(TypeError, match="no BPTT"):
        bptt_scan(torch.nn.Linear(I, H), x, state)


# -- what the hardware offers ---------------------------------------------------------------

PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(*features)``: torch's probes answer yes to those of PROBES only, for this test."""
    monkeypatch.delenv("RNNKIT_HARDWARE", raising=False)

    def having(*features):
        for probe in PROBES:
            monkeypatch.setattr(torch.cpu, probe, lambda p=probe: p in features, raising=False)
        hardware._cpu_has.cache_clear()

    yield having
    hardware._cpu_has.cache_clear()  # the real probes' answers, once monkeypatch undoes


@pytest.mark.parametrize(
    "features,precision,reason",
    [
        (PROBES, "bf16", "bf16: this CPU has AMX-BF16 tiles"),
        (PROBES[1:], "bf16", "bf16: this CPU has AVX512-BF16"),
        ((), "fp32", "fp32: no native bfloat16 on this CPU (no AVX512-BF16 or AMX)"),
    ],
)
def test_native_bf16_and_the_default_precision_follow_the_cpu(cpu, features, precision, reason):
    cpu(*features)
    assert hardware.native_bf16("cpu") == (precision == "bf16")
    assert hardware.default_precision(torch.device("cpu")) == (precision, reason)
    meta = ("fp32", "fp32: no native bfloat16 on this meta device")
    assert hardware.default_precision("meta") == meta


def test_a_torch_without_the_probes_has_no_native_bf16(cpu, monkeypatch):
    cpu(*PROBES)
    for probe in PROBES:
        monkeypatch.delattr(torch.cpu, probe)
    hardware._cpu_has.cache_clear()
    assert not hardware.native_bf16("cpu")


@pytest.mark.parametrize(
    "supported,expected",
    [(True, ("bf16", "bf16: this GPU has native bfloat16")),
     (False, ("fp32", "fp32: no native bfloat16 on this GPU"))],
)  # fmt: skip
def test_the_gpu_asks_torch_cuda(cpu, monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
    assert hardware.default_precision("cuda") == expected


@pytest.mark.parametrize("native", [True, False])
def test_the_plain_bf16_lstm_runs_torchs_kernel_only_with_native_bf16(cpu, monkeypatch, native):
    """oneDNN builds no bfloat16 LSTM without native bfloat16: off the tiles the fused path
    runs then. The float32 LSTM's choice does not depend on it."""
    cpu(*(PROBES[1:] if native else ()))
    monkeypatch.setattr(common, "TILES", False)
    assert rnnkit.LSTM(3, 6, precision="bf16")._kernel_name(None, 16) == (
        "torch" if native else "fused"
    )
    assert rnnkit.LSTM(3, 6)._kernel_name(None, 16) == "torch"
    assert rnnkit.LSTM(3, 6, precision="bf16", peephole=True)._kernel_name(None, 16) == "fused"


def test_generic_switches_every_hardware_path_off(cpu, monkeypatch):
    cpu(*PROBES)
    monkeypatch.setenv("RNNKIT_HARDWARE", "generic")
    assert hardware.generic()
    assert not (hardware.native_bf16("cpu") or hardware.amx_tiles() or hardware.mkl_products())
    assert not common.tiles_run(16, 16, 32)
    assert common.tile_product(torch.zeros(32, 32), 16, True) is None
    reason = "fp32: RNNKIT_HARDWARE=generic switches native bfloat16 off"
    assert hardware.default_precision("cpu") == ("fp32", reason)
    assert rnnkit.LSTM(3, 32, precision="bf16")._kernel_name(None, 16) == "fused"
    monkeypatch.setenv("RNNKIT_HARDWARE", "native")
    assert hardware.native_bf16("cpu") and not hardware.generic()


def test_an_unknown_hardware_mode_is_refused(monkeypatch):
    monkeypatch.setenv("RNNKIT_HARDWARE", "generc")
    with pytest.raises(ValueError, match="RNNKIT_HARDWARE must be one of .* got 'generc'"):
        hardware.generic()
