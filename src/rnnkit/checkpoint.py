"""Checkpoints: safetensors tensors plus JSON metadata, written atomically; never pickled.

Every file is written to a temporary file, flushed to disk, and renamed over the old one,
so a crash leaves either the old checkpoint or the new one, never half of one. Loading
reads tensors and JSON only, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tensors(path: Path, tensors: dict, metadata: dict) -> None:
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    atomic_write(
        path, save_safetensors(flat, metadata={k: json.dumps(v) for k, v in metadata.items()})
    )


def load_tensors(path: Path) -> tuple[dict, dict]:
    """Tensors and JSON metadata of a safetensors file; a damaged file gives a clear error."""
    raw = Path(path).read_bytes()
    try:
        tensors = load_safetensors(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
        return tensors, {k: json.loads(v) for k, v in meta.items()}
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from None


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """Split an optimiser's state into tensors (for safetensors) and JSON (the rest)."""
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["plain"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [  # JSON turned tuples such as AdamW's betas into lists
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def carry_tensors(carry) -> tuple[dict, str]:
    if carry is None:
        return {}, "none"
    if torch.is_tensor(carry):
        return {"carry.0": carry}, "tensor"
    return {f"carry.{i}": t for i, t in enumerate(carry)}, "tuple"


def restore_carry(tensors: dict, kind: str, device):
    parts = [
        tensors[f"carry.{i}"].to(device)
        for i in range(sum(k.startswith("carry.") for k in tensors))
    ]
    return None if kind == "none" else parts[0] if kind == "tensor" else tuple(parts)


def load_model(model: nn.Module, path: Path) -> dict:
    """Load weights saved by the trainer into ``model``; return the file's metadata."""
    tensors, meta = load_tensors(path)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return meta
