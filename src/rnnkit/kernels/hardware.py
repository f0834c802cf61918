"""What this machine offers the fast paths, answered in one place.

Every route that depends on the hardware asks here: the products on AMX tiles
(:func:`amx_tiles`, behind :func:`rnnkit.kernels.common.tiles_run`), MKL's packed products
in the C loops over time (:func:`mkl_products`), and native bfloat16 (:func:`native_bf16`:
torch's bfloat16 LSTM kernel, oneDNN's packed bfloat16 product, and
:func:`default_precision`, the choice for a trainer's ``precision="auto"``).

``RNNKIT_HARDWARE=generic`` answers no to all of them at run time, so the portable twins
run, and are tested, on a machine that has the hardware (``.ci/run`` runs the kernel tests
so). Unset, or ``native``, asks the machine.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path

import torch

from rnnkit.kernels.compiled import library

MODES = ("native", "generic")
# The CPU features that decide which paths are fast, as the kernel spells them in
# /proc/cpuinfo's flags (x86-64) or Features (ARM64, where NEON is "asimd").
FEATURES = {
    "AMX": ("amx_tile",),
    "AVX512-BF16": ("avx512_bf16",),
    "AVX-512": ("avx512f",),
    "AVX2": ("avx2",),
    "NEON": ("asimd", "neon"),
}


def generic() -> bool:
    """Whether ``RNNKIT_HARDWARE=generic`` switches every hardware-specific path off; read at
    each call, so a test can set it."""
    mode = os.environ.get("RNNKIT_HARDWARE") or "native"
    if mode not in MODES:
        raise ValueError(f"RNNKIT_HARDWARE must be one of {MODES} (unset: native), got {mode!r}")
    return mode == "generic"


@functools.cache
def _cpu_has(probe: str) -> bool:
    """torch.cpu's private probe of that name (``_is_amx_tile_supported``...): False where
    this torch has none."""
    return bool(getattr(torch.cpu, probe, lambda: False)())


def _bf16_feature(device: torch.device) -> str | None:
    """What gives ``device`` native bfloat16 arithmetic, or None. On the CPU: AMX tiles
    (every CPU with them has AMX-BF16) or AVX512-BF16, as torch probes them."""
    if generic():
        return None
    if device.type == "cuda":
        return "native bfloat16" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    if _cpu_has("_is_amx_tile_supported"):
        return "AMX-BF16 tiles"
    return "AVX512-BF16" if _cpu_has("_is_avx512_bf16_supported") else None


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively. Elsewhere bfloat16 is emulated, and
    oneDNN's bfloat16 kernels are slow or missing (it builds no bfloat16 LSTM on an AVX2 CPU)."""
    return _bf16_feature(torch.device(device)) is not None


def default_precision(device: torch.device | str) -> tuple[str, str]:
    """(``"bf16"`` or ``"fp32"``, one line for the user saying why) for training on ``device``:
    bf16 where it is native (2-3x faster there), fp32 where it would be emulated."""
    device = torch.device(device)
    feature = _bf16_feature(device)
    where = {"cpu": "CPU", "cuda": "GPU"}.get(device.type, f"{device.type} device")
    if feature is not None:
        return "bf16", f"bf16: this {where} has {feature}"
    if generic():
        return "fp32", "fp32: RNNKIT_HARDWARE=generic switches native bfloat16 off"
    missing = " (no AVX512-BF16 or AMX)" if device.type == "cpu" else ""
    return "fp32", f"fp32: no native bfloat16 on this {where}{missing}"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _field(lines: list[str], *names: str) -> str | None:
    """The value of the first line of ``lines`` whose key is one of ``names``."""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in names:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    name = _field(_cpuinfo(), "model name", "Model name", "Hardware")
    return name or platform.processor() or platform.machine() or "unknown CPU"


def cpu_features() -> dict[str, bool]:
    """Which of :data:`FEATURES` the CPU has, by /proc/cpuinfo's flags where it exists; else
    NEON on an ARM64 platform and nothing else (there is no flag list to read)."""
    lines = _cpuinfo()
    flags = _field(lines, "flags", "Features")
    if flags is None:
        arm = platform.machine().lower() in ("arm64", "aarch64")
        return {name: name == "NEON" and arm for name in FEATURES}
    present = set(flags.split())
    return {name: any(f in present for f in spelled) for name, spelled in FEATURES.items()}


_tiles_ready: dict = {}  # library -> its answer, asked once


def amx_tiles() -> bool:
    """Whether the C library's bfloat16 products run on AMX tiles here: the library built
    with the tile code, a CPU with AMX-BF16, and the kernel's leave to use the tile
    registers (``bf16_tiles_ready`` in csrc/tiles.c)."""
    lib = None if generic() else library()
    if lib is None:
        return False
    if lib not in _tiles_ready:
        _tiles_ready[lib] = bool(lib.bf16_tiles_ready())
    return _tiles_ready[lib]


# MKL's packed GEMM, called from the C loops over time in float32 (csrc/mkl_loops.c).
MKL_FUNCTIONS = ("cblas_sgemm_pack_get_size", "cblas_sgemm_pack", "cblas_sgemm_compute")
_mkl_ready: dict = {}  # library -> its answer, asked at every fused call


def mkl_products() -> bool:
    """Whether the float32 loops over time can run in C with MKL's per-step products: the C
    library built, and torch's CPU library carrying MKL and exporting its packed GEMM, whose
    addresses are handed to C once."""
    lib = None if generic() else library()
    if lib is None or not torch.backends.mkl.is_available():
        return False
    if lib not in _mkl_ready:
        _mkl_ready[lib] = _hand_mkl_to(lib)
    return _mkl_ready[lib]


def _hand_mkl_to(lib) -> bool:
    """Give the C library the addresses of MKL's packed GEMM in torch's CPU library; False
    where they cannot be found (another platform's file name, or no such symbols)."""
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        functions = [ctypes.cast(torch_cpu[name], ctypes.c_void_p) for name in MKL_FUNCTIONS]
    except (OSError, AttributeError):
        return False
    size, pack, compute = (f.value for f in functions)
    lib.mkl_products_use(size_function=size, pack_function=pack, compute_function=compute)
    return True
