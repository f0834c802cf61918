"""rnnkit.kernels.autotune: kernel="auto" times its candidates once per case and machine and
remembers the faster, in memory and in a cache file; a named kernel always runs.

Timings are replaced by a fake (``Timing``) wherever a test asserts which kernel wins; one
test times for real and asserts only that the choice is a candidate.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit.kernels import autotune, hardware, products

T, B, I, H = 5, 3, 4, 6


class Timing:
    """A stand-in for autotune.measure: ``seconds`` per kernel, and the cases it was asked."""

    def __init__(self, **seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, layer, kernels, batch, lengths, grad):
        self.calls.append((tuple(kernels), batch, lengths, grad))
        return {kernel: self.seconds[kernel] for kernel in kernels}


@pytest.fixture
def tuning(monkeypatch, tmp_path):
    """Tuning on, with an empty cache directory; ``tuning(timing)`` installs a fresh tuner
    with that timing and returns it."""
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "1")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("RNNKIT_HARDWARE", raising=False)

    def install(timing=None):
        tuner = autotune.Tuner(timing)
        monkeypatch.setattr(autotune, "TUNER", tuner)
        return tuner

    return install


def cache_files(tmp_path):
    return sorted(tmp_path.glob("autotune-*.json"))


def test_a_real_timing_chooses_a_candidate_and_leaves_the_model_alone(tuning, tmp_path):
    tuning()
    layer = rnnkit.LSTM(I, H)
    before = [p.detach().clone() for p in layer.parameters()]
    rng = torch.get_rng_state()
    kernel = layer._kernel_name(None, B, grad=True)
    assert kernel in autotune.candidates(layer.cells[0], False) == ("fused", "torch")
    assert all(p.grad is None for p in layer.parameters())
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before, strict=True))
    assert torch.equal(torch.get_rng_state(), rng)
    (path,) = cache_files(tmp_path)
    choices = json.loads(path.read_text())["choices"]
    (entry,) = [v for k, v in choices.items() if not k.startswith("linear ")]  # products.py's
    assert entry["kernel"] == kernel and set(entry["seconds"]) == {"fused", "torch"}
    assert all(s > 0 for s in entry["seconds"].values())


@pytest.mark.parametrize("fast,slow", [("torch", "fused"), ("fused", "torch")])
def test_the_faster_candidate_is_chosen_each_way_round(tuning, fast, slow):
    tuning(Timing(**{fast: 1.0, slow: 2.0}))
    assert rnnkit.LSTM(I, H)._kernel_name(None, B) == fast
    assert rnnkit.GRU(I, H)._kernel_name(None, B, grad=False) == fast


def test_a_case_is_timed_once_and_its_neighbours_in_the_bucket_share_it(tuning):
    timing = Timing(torch=1.0, fused=2.0)
    tuning(timing)
    layer = rnnkit.LSTM(I, H)
    for batch in (B, B, 4):  # 3 and 4 round up to the same power of two
        assert layer._kernel_name(None, batch) == "torch"
    assert len(timing.calls) == 1
    layer._kernel_name(None, 5)  # batch 5: bucket 8, a new case
    layer._kernel_name(None, B, grad=False)  # inference: a new case
    layer._kernel_name(torch.tensor([T] * B), B)  # lengths: a new case
    assert [call[1:] for call in timing.calls[1:]] == [(5, False, True), (B, False, False),
                                                        (B, True, True)]  # fmt: skip


def test_a_fresh_tuner_reads_the_choices_of_the_last(tuning):
    tuning(Timing(torch=2.0, fused=1.0))
    assert rnnkit.RNN(I, H)._kernel_name(None, B) == "fused"
    timing = Timing(torch=1.0, fused=2.0)  # would choose otherwise, were it asked
    tuning(timing)  # a new process: nothing in memory
    assert rnnkit.RNN(I, H)._kernel_name(None, B) == "fused"
    assert timing.calls == []


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tuning, tmp_path):
    tuning(Timing(torch=2.0, fused=1.0))
    rnnkit.GRU(I, H)._kernel_name(None, B)
    (path,) = cache_files(tmp_path)
    path.write_text('{"machine": {"cpu": ')  # cut short by a crash, say
    timing = Timing(torch=1.0, fused=2.0)
    tuning(timing)
    assert rnnkit.GRU(I, H)._kernel_name(None, B) == "torch"
    assert len(timing.calls) == 1
    assert json.loads(path.read_text())["machine"] == autotune.machine()


def test_a_peephole_lstm_has_one_candidate_and_is_not_timed(tuning):
    timing = Timing(torch=1.0, fused=2.0)
    tuning(timing)
    layer = rnnkit.LSTM(I, H, peephole=True)
    assert autotune.candidates(layer.cells[0], False) == ("fused",)
    assert layer._kernel_name(None, B) == "fused"
    assert timing.calls == []


def test_a_bf16_lstm_without_native_bf16_never_runs_torch(tuning, monkeypatch):
    monkeypatch.setattr(autotune, "native_bf16", lambda device: False)
    tuning(Timing(torch=1.0, fused=2.0))
    layer = rnnkit.LSTM(I, H, precision="bf16")
    assert autotune.candidates(layer.cells[0], True) == ("fused",)
    assert layer._kernel_name(None, B) == "fused"
    monkeypatch.setattr(autotune, "native_bf16", lambda device: True)
    assert layer._kernel_name(None, B) == "torch"


def test_generic_hardware_has_its_own_cache_file(tuning, tmp_path, monkeypatch):
    tuning(Timing(torch=1.0, fused=2.0))
    native = autotune.cache_file(autotune.machine())
    monkeypatch.setenv("RNNKIT_HARDWARE", "generic")
    assert autotune.machine()["hardware"]["generic"]
    assert autotune.cache_file(autotune.machine()) != native
    rnnkit.LSTM(I, H)._kernel_name(None, B)
    assert cache_files(tmp_path) == [autotune.cache_file(autotune.machine())]


def test_tuning_off_takes_the_rule(tuning, monkeypatch):
    timing = Timing(torch=2.0, fused=1.0)
    tuning(timing)
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "0")
    layer = rnnkit.LSTM(I, H)
    rule = rnnkit.kernels.auto_kernel(layer.cells[0], False, False, B, True)
    assert layer._kernel_name(None, B) == rule == "torch"
    assert timing.calls == []


@pytest.mark.parametrize("kernel", ["loop", "bptt", "fused", "torch"])
def test_a_named_kernel_is_never_overridden(tuning, kernel):
    timing = Timing(torch=1.0, fused=1.0)
    tuning(timing)
    layer = rnnkit.GRU(I, H, kernel=kernel)
    assert layer._kernel_name(None, B) == kernel
    assert layer._kernel_name(torch.tensor([T] * B), B, grad=False) == kernel
    assert timing.calls == []


def test_the_case_key_names_what_changes_the_ranking():
    layer = rnnkit.RNN(I, 100, num_layers=2, bidirectional=True, nonlinearity="relu")
    key = autotune.case_key(layer, True, 33, False)
    threads = torch.get_num_threads()
    assert key == f"rnn_relu fp32 infer lengths B64 I4 H128 L2 D2 threads{threads} cpu float32"
    assert [autotune.bucket(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]


def test_torchs_bf16_lstm_without_native_bf16_is_refused_at_call(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    monkeypatch.setattr(autotune, "native_bf16", lambda device: False)
    layer = rnnkit.LSTM(I, H, kernel="torch", precision="bf16")
    with pytest.raises(ValueError, match="native bfloat16.*kernel='fused' or 'auto'"):
        layer(torch.randn(T, B, I))
    rnnkit.GRU(I, H, kernel="torch", precision="bf16")(torch.randn(T, B, I))  # autocast runs it


def test_large_layers_are_timed_on_shorter_sequences():
    assert autotune._steps(rnnkit.LSTM(I, H), B, grad=True) == autotune.STEPS
    big = rnnkit.LSTM(1024, 1024, num_layers=2)
    assert autotune._steps(big, 128, grad=True) == 4
    assert autotune._steps(big, 16, grad=False) > autotune._steps(big, 16, grad=True)


def test_measure_runs_lengths_batch_first_and_inference():
    layer = rnnkit.GRU(I, H, batch_first=True, num_layers=2, bidirectional=True).eval()
    with torch.no_grad():
        seconds = autotune.measure(layer, ("fused", "torch"), B, True, False)
    assert set(seconds) == {"fused", "torch"} and all(s > 0 for s in seconds.values())
    assert all(p.grad is None for p in layer.parameters())


def test_a_stalled_first_round_is_timed_again(monkeypatch):
    """A first round past the whole budget (the machine busy elsewhere) still leaves
    MIN_ROUNDS samples per kernel, and the fastest is kept."""
    samples = iter([5.0, 6.0] + [0.002, 0.001] * autotune.MIN_ROUNDS)  # fused, torch in turn
    monkeypatch.setattr(autotune, "_seconds", lambda run: next(samples))
    seconds = autotune.measure(rnnkit.GRU(I, H), ("fused", "torch"), B, False, True)
    assert seconds == {"fused": 0.002, "torch": 0.001}


def test_the_projection_backend_is_timed_once_per_shape_and_off_without_tuning(tuning, monkeypatch):
    """kernels/products.py: oneDNN's product where it was timed faster for this shape, each
    shape timed once; torch's linear with tuning off or under RNNKIT_HARDWARE=generic."""
    tuning()
    timed = []
    fake = lambda *shape: timed.append(shape) or {"torch": 2e-3, "onednn": 1e-3}  # noqa: E731
    monkeypatch.setattr(products, "_timed", fake)
    a, weight = torch.randn(100, I), torch.randn(4 * H, I)
    assert products.backend(a, weight) == "onednn"
    assert products.backend(torch.randn(120, I), weight) == "onednn"  # the same bucket: 128
    assert timed == [(128, I, 4 * H)]
    assert products.backend(a.double(), weight.double()) == "torch"
    monkeypatch.setenv("RNNKIT_HARDWARE", "generic")
    assert products.backend(a, weight) == "torch"
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "0")
    monkeypatch.delenv("RNNKIT_HARDWARE")
    assert products.backend(a, weight) == "torch"
