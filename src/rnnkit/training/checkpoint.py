"""Checkpoints and the run directory's files: safetensors plus JSON, written atomically, checked
on load, never pickled.

Every file is written to a temporary file, flushed to disk, and renamed over the old one, so
a crash (even SIGKILL, or a full disk) leaves either the old checkpoint or the new one, never
half of one. A checkpoint is one safetensors file: the tensors, and in its header the JSON
metadata and a SHA-256 of everything else in the file (header and tensor bytes), so a file
changed or truncated after it was written is refused. One file, one rename: a separate JSON
file beside it would need two renames, and a crash between them would pair a new checkpoint
with an old hash. Loading reads tensors and JSON only, so a checkpoint cannot run code; a run
directory that holds pickles (``torch.save`` files) is refused outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from rnnkit.data.files import CheckpointError, atomic_write, write_error

MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
DIGEST_KEY = "sha256"
UNSEALED = "0" * 64  # the digest's place in the header, filled in once the bytes are known
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"}
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def check_writable(directory: Path) -> None:
    """Fail now, not at the first checkpoint an hour later, if ``directory`` takes no files."""
    probe = Path(directory) / f".write-test.tmp-{os.getpid()}"  # swept up if killed here
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"{directory}: the run directory is not writable ({err.strerror}); "
            "give a writable --out"
        ) from err


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files a killed process left behind (they never replaced anything)."""
    for tmp in Path(directory).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


# --- safetensors with a digest ---


def digest(header: dict, data: memoryview) -> str:
    """SHA-256 of a safetensors header (without the digest itself) and its tensor bytes."""
    meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != DIGEST_KEY}
    canonical = {**header, "__metadata__": meta}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text + b"\0" + data).hexdigest()


def split_file(raw: bytes | bytearray, path: Path) -> tuple[dict, memoryview]:
    """The header (JSON) and tensor bytes of a safetensors file; raises if it is not one."""
    if len(raw) < 8:
        raise CheckpointError(f"{path}: truncated ({len(raw)} bytes, not even a header length)")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len > len(raw) - 8:
        raise CheckpointError(
            f"{path}: truncated or not safetensors (header of {header_len} bytes, "
            f"file of {len(raw)})"
        )
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: the safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    return header, memoryview(raw)[8 + header_len :]


def save_tensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Tensors and JSON ``metadata`` as one safetensors file, with its digest, atomically."""
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    raw = save_safetensors(flat, metadata={**meta, DIGEST_KEY: UNSEALED})
    header, data = split_file(raw, path)
    unsealed = f'"{DIGEST_KEY}":"{UNSEALED}"'.encode()
    sealed = f'"{DIGEST_KEY}":"{digest(header, data)}"'.encode()  # the same length
    head = raw[: len(raw) - len(data)].replace(unsealed, sealed, 1)  # (8 + header bytes)
    atomic_write(path, head, data)


def load_tensors(path: Path) -> tuple[dict, dict]:
    """Tensors and JSON metadata of a checkpoint, after checking its digest.

    Raises :class:`CheckpointError` for a run directory holding pickles, a pickle in place of
    the file, a truncated or damaged file, or one whose digest does not match.
    """
    path = Path(path)
    refuse_pickles(path.parent)
    raw = path.read_bytes()
    try:
        header, data = split_file(raw, path)
    except CheckpointError:
        if raw.startswith(PICKLE_MAGIC):  # checked only now: a safetensors length may match
            raise CheckpointError(
                f"{path}: this is a pickle (torch.save format), not safetensors; rnnkit "
                "never unpickles, because loading a pickle can run any code"
            ) from None
        raise
    stored = header.get("__metadata__", {}).get(DIGEST_KEY)
    if stored is None:
        raise CheckpointError(
            f"{path}: no SHA-256 in its header (written by another program or an older "
            "rnnkit), so it cannot be checked; rnnkit loads only the checkpoints it sealed"
        )
    if stored != digest(header, data):
        raise CheckpointError(
            f"{path}: SHA-256 mismatch: the file was changed or damaged after it was written"
        )
    try:
        tensors = load_safetensors(raw)
        meta = {k: json.loads(v) for k, v in header["__metadata__"].items() if k != DIGEST_KEY}
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    return tensors, meta


def refuse_pickles(directory: Path) -> None:
    found = sorted(p.name for p in Path(directory).iterdir() if p.suffix in PICKLE_SUFFIXES)
    if found:
        raise CheckpointError(
            f"{directory}: holds {', '.join(found)}; rnnkit checkpoints are safetensors and "
            "JSON and loading never unpickles (a pickle can run any code), so this run "
            "directory is refused: move those files out of it to load the run"
        )


# --- what goes into a checkpoint ---


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


# --- metrics.jsonl: appended line by line, trimmed back to a checkpoint on resume; loss.png ---


def append_line(path: Path, line: str) -> None:
    """Append one line in one write; on failure cut the file back to where it was."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "ab") as f:
            f.write(line.encode() + b"\n")
            f.flush()
    except OSError as err:
        with contextlib.suppress(OSError):  # a full disk may have taken part of the line
            os.truncate(path, size)
        raise write_error(path, err) from err


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines written after ``step``, so a resumed run does not repeat them.

    A last line without its newline is what a killed process leaves mid-write: it is dropped
    too. A damaged line anywhere else is an error naming its line number.
    """
    path = Path(path)
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")  # damage: named below
    lines = text.split("\n")[:-1]  # after the last newline: "" or a torn line, dropped
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            written_after = json.loads(line)["step"] > step
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise CheckpointError(f"{path}, line {number}: not a metrics row ({err!r})") from None
        if not written_after:
            kept.append(line)
    atomic_write(path, "".join(ln + "\n" for ln in kept).encode())


def plot_losses(run_dir: Path, unit: str = "tokens", loss_label: str = "loss") -> None:
    """Draw train and validation loss against ``unit`` seen into ``loss.png``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        points = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=key)
    ax.set(xlabel=f"{unit} seen", ylabel=loss_label)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(run_dir / "loss.png", buffer.getvalue())
