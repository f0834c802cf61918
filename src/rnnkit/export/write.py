"""Writing one model to a file, ONNX or TorchScript, with the sidecar's description of it
(:func:`export_model`): the two formats' writers, :func:`quiet` for what their exporters
print, and the message that names the missing onnx packages.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from rnnkit.export.layers import OperatorStack, TimeLoop, _onnx_recurrent_layer, kind_of
from rnnkit.export.models import Parts, SequenceModel, StepModel, check_step, example, signature

FORMATS = ("onnx", "torchscript")
OPSET = 18


@contextlib.contextmanager
def quiet():
    """Silence what every export says: torch.jit's deprecation, the cells' shape checks read
    as Python booleans under tracing, and the ONNX exporter's notes on torchvision's ops.
    tests/test_export.py checks that the exported models compute what the run computes."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "# The axis name", UserWarning)
        onnx_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_log.setLevel(level)


def write_onnx(model: nn.Module, args: tuple, inputs: list, outputs: list, path: Path) -> None:
    """torch.onnx's dynamo exporter, the recurrent layers as ONNX's own operators."""
    names = {s for spec in inputs for s in spec["shape"] if isinstance(s, str)}
    dims = {name: torch.export.Dim(name) for name in sorted(names)}  # the dynamic axes
    shapes = [{i: dims[s] for i, s in enumerate(spec["shape"]) if s in dims} for spec in inputs]
    if getattr(model, "varargs", False) and len(shapes) > 1:  # forward(x, *state): one argument
        shapes = [shapes[0], tuple(shapes[1:])]
    translations = {torch.ops.rnnkit.recurrent_layer.default: _onnx_recurrent_layer}
    program = torch.onnx.export(
        model, args, dynamo=True, dynamic_shapes=tuple(shapes),
        input_names=[s["name"] for s in inputs], output_names=[s["name"] for s in outputs],
        custom_translation_table=translations, opset_version=OPSET, verbose=False,
    )  # fmt: skip
    program.save(str(path), external_data=False)


def write_torchscript(model: nn.Module, args: tuple, path: Path) -> None:
    torch.jit.trace(model, args, check_trace=False).save(str(path))


def export_model(parts: Parts, fmt: str, step: bool, path: Path) -> dict:
    """Write one model (whole sequence, or with ``step`` one step) to ``path``; return the
    sidecar's description of it."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx()
    if step:
        check_step(parts)
    parts = copy.deepcopy(parts)  # the exported weights are constants: no gradients
    for module in (parts.rnn, parts.head, parts.embed):
        if module is not None:
            module.requires_grad_(False)
    inputs, outputs = signature(parts, step)
    args = example(parts, step)
    with torch.no_grad(), quiet():
        if step:
            model = StepModel(parts).eval()
        elif fmt == "onnx":
            model = SequenceModel(parts, OperatorStack(parts.rnn)).eval()
        else:
            loop = torch.jit.script(TimeLoop(parts.rnn).eval())
            model = SequenceModel(parts, loop).eval()
        if fmt == "onnx":
            write_onnx(model, args, inputs, outputs, path)
        else:
            write_torchscript(model, args, path)
    rnn = parts.rnn
    return {
        "file": path.name,
        "format": fmt,
        "model": "step" if step else "sequence",
        "opset": OPSET if fmt == "onnx" else None,
        "inputs": inputs,
        "outputs": outputs,
        "cell": kind_of(rnn.cells[0]),
        "layers": rnn.num_layers,
        "hidden": rnn.hidden_size,
        "directions": rnn.num_directions,
        "pooling": parts.pooling or None,
        "batch_first": True,
        "torch": torch.__version__,
    }


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages ({err.name} is missing): "
            "pip install 'rnnkit[export]'"
        ) from None
