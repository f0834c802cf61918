"""What rnnkit.kernels.hardware answers, with torch's CPU probes replaced: native bfloat16
from AMX or AVX512-BF16 (or a torch without the probes), the default precision and its
reason, the bf16 LSTM's kernel that follows, RNNKIT_HARDWARE=generic switching every hardware
path off; and the CPU's model and features as /proc/cpuinfo, or the platform, gives them.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import common, hardware

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


X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R45 64-Core Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 avx512bw
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes crc32
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize(
    "cpuinfo,model,present",
    [
        (X86_CPUINFO, "AMD EPYC 9R45 64-Core Processor", {"AVX512-BF16", "AVX-512", "AVX2"}),
        (ARM_CPUINFO, None, {"NEON"}),
    ],
)
def test_cpu_model_and_features_read_proc_cpuinfo(monkeypatch, cpuinfo, model, present):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo.splitlines())
    monkeypatch.setattr(hardware.platform, "processor", lambda: "aarch64")
    assert hardware.cpu_model() == (model or "aarch64")
    features = hardware.cpu_features()
    assert set(features) == set(hardware.FEATURES)
    assert {name for name, has in features.items() if has} == present


@pytest.mark.parametrize("machine,neon", [("arm64", True), ("x86_64", False)])
def test_without_proc_cpuinfo_the_platform_answers(monkeypatch, machine, neon):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: [])
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
    monkeypatch.setattr(hardware.platform, "processor", lambda: "")
    assert hardware.cpu_model() == machine
    assert hardware.cpu_features() == {name: neon and name == "NEON" for name in hardware.FEATURES}
