"""Export of a trained run for other runtimes: ONNX or TorchScript, whole sequence or one step.

    rnnkit export RUN --format onnx|torchscript [--step] [--out DIR]

The whole-sequence model reads a padded batch, batch first, with its lengths, and computes
what the run's model computes with ``lengths`` (the masking rules of :mod:`rnnkit.scan`):
``(x (B, T) ids or (B, T, F) features, lengths (B,))`` -> the task's outputs. Batch and time
are dynamic axes. The one-step model (``--step``, unidirectional stacks with an output per
step) takes and returns the state: ``(x_t, h_prev[, c_prev]) -> (y_t, h[, c])``, the state
stacked layer by layer (L, B, H) as the layers keep it. A JSON sidecar beside each model
names its inputs and outputs, their shapes, and carries the run's config, vocabulary,
classes and scaler.

translate and caption runs write their output by search in Python around an encoder and a
decoder, so they have no whole-sequence model; with ``--step`` they export the encoder side,
``start``, and one decoder step, ``(tokens, state, memory) -> (logits, state, attention)``,
and the search is the caller's.

The package, in the order a reader meets it:
- :mod:`~rnnkit.export.layers`: each recurrent layer's loop over time, as ONNX's own operators
  or as a loop for ``torch.jit.script``, T left dynamic (never unrolled);
- :mod:`~rnnkit.export.models`: the parts of a task's model, the whole-sequence and one-step
  models built from them, and their signatures;
- :mod:`~rnnkit.export.seq2seq`: the encoder side and the decoder step of translate and caption;
- :mod:`~rnnkit.export.write`: one model written to a file, with its sidecar's description;
- here: a run read from its directory and every file written into place (:func:`export_run`).

Shape letters: B batch, T time, F features, I input size, H hidden size, L layers,
D directions, G gate blocks, V vocabulary, K classes, O outputs per step.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from torch import nn

from rnnkit.data.files import read_json
from rnnkit.export.layers import (
    ONNX_ORDER,
    CellStep,
    OperatorStack,
    TimeLoop,
    kind_of,
    recurrent_layer,
    reorder,
    unorder,
)
from rnnkit.export.models import (
    Inputs,
    Parts,
    SequenceModel,
    StepModel,
    check_step,
    example,
    parts_of,
    refusal,
    signature,
)
from rnnkit.export.seq2seq import (
    DecoderStep,
    LayerCall,
    Start,
    export_seq2seq,
    seq2seq_inputs,
    seq2seq_models,
)
from rnnkit.export.write import (
    FORMATS,
    OPSET,
    export_model,
    quiet,
    write_onnx,
    write_torchscript,
)

__all__ = [
    "FORMATS",
    "ONNX_ORDER",
    "OPSET",
    "RUN_FILES",
    "SEQ2SEQ",
    "CellStep",
    "DecoderStep",
    "Inputs",
    "LayerCall",
    "OperatorStack",
    "Parts",
    "SequenceModel",
    "Start",
    "StepModel",
    "TimeLoop",
    "check_step",
    "example",
    "export_model",
    "export_run",
    "export_seq2seq",
    "kind_of",
    "load_run",
    "parts_of",
    "quiet",
    "recurrent_layer",
    "refusal",
    "reorder",
    "seq2seq_inputs",
    "seq2seq_models",
    "signature",
    "unorder",
    "write_onnx",
    "write_torchscript",
]

# What each task keeps beside its weights, copied into the sidecar for the other runtime;
# config.json holds the settings the caller needs too (tokens, max_tokens, beam, horizon).
RUN_FILES = {
    "charlm": ("config.json", "vocab.json"),
    "classify": ("config.json", "vocab.json", "classes.json"),
    "seqclass": ("config.json", "classes.json", "scaler.json"),
    "tag": ("config.json", "labels.json"),
    "forecast": ("config.json", "series.json"),
    "translate": ("config.json", "source_vocab.json", "target_vocab.json"),
    "caption": ("config.json", "vocab.json"),
}
SEQ2SEQ = ("translate", "caption")  # exported as the encoder side and one decoder step


def load_run(run_dir: Path, module) -> tuple[nn.Module, dict]:
    """A run's model (on the CPU, float32, eval) and its files for the sidecar (vocabularies,
    classes, scaler)."""
    *_, model = module.load_run(run_dir, "cpu")
    files = {name: read_json(run_dir / name, object) for name in RUN_FILES[module.NAME]}
    if module.NAME == "caption" and model.encoder is not None:
        from rnnkit.models.vision import MEAN, SPREAD

        # Images as rnnkit.models.vision.to_tensor reads them: RGB resized to a square (as
        # rnnkit.data.images.load_image), (B, 3, side, side), (pixel / 255 - mean) / spread.
        files["pixels"] = {"side": model.encoder.image_size, "mean": MEAN, "spread": SPREAD}
    return model.float().eval(), files


# export_run calls export_model by this package's name (in write_models): tests/test_export.py
# replaces rnnkit.export.export_model to make one export fail.
def export_run(run_dir, fmt: str = "onnx", step: bool = False, out=None) -> list[Path]:
    """Write a run's whole-sequence model (and with ``step`` its one-step model), each with
    a JSON sidecar, into ``out`` (default RUN/export); return the paths written. A translate
    or caption run, with ``step``, writes its encoder side and its decoder step instead.

    Everything is written into a temporary directory first and moved into place only when
    every export has succeeded, so an error leaves the run directory as it was.
    """
    from rnnkit.tasks import task_of_run

    run_dir = Path(run_dir)
    module = task_of_run(run_dir)
    task = module.NAME
    check_exportable(run_dir, task, fmt, step)
    model, files = load_run(run_dir, module)
    names, parts = planned(task, model, step)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    out = export_dir(run_dir, out, suffix)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        paths = [Path(tmp) / f"{name}{suffix}" for name in names]
        sidecars = write_models(task, model, parts, fmt, names, paths)
        for name, sidecar in zip(names, sidecars, strict=True):
            sidecar.update(task=task, run=str(run_dir), **files)
            text = json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n"
            (Path(tmp) / f"{name}.json").write_text(text)
        written = [f"{name}{end}" for name in names for end in (suffix, ".json")]
        out.mkdir(exist_ok=True)
        for name in written:
            shutil.move(Path(tmp) / name, out / name)
    return [out / name for name in written]


def check_exportable(run_dir: Path, task: str, fmt: str, step: bool) -> None:
    """Refuse, before the model is read, what cannot be exported: an unknown format or task,
    a translate or caption run without ``step``, a classify run reading Naive-Bayes ratios."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if task not in RUN_FILES:
        raise ValueError(
            f"a {task} run cannot be exported yet; rnnkit export knows {sorted(RUN_FILES)}"
        )
    if task in SEQ2SEQ and not step:
        raise refusal(task)
    if task == "classify" and read_json(run_dir / "config.json").get("nb_features"):
        raise ValueError(
            f"{run_dir}: this classify run reads Naive-Bayes ratios beside its embedding "
            "(nb_features), which the exported graph has no input for yet; train with "
            "--no-nb-features to export"
        )


def planned(task: str, model: nn.Module, step: bool) -> tuple[tuple[str, ...], Parts | None]:
    """The names of the models to write and, but for translate and caption, the parts of the
    model they are built from (checked for a one-step model with ``step``)."""
    if task in SEQ2SEQ:
        return ("encoder", "step"), None
    parts = parts_of(task, model)
    if step:
        check_step(parts)
    return (("model", "step") if step else ("model",)), parts


def export_dir(run_dir: Path, out, suffix: str) -> Path:
    """``out``, or RUN/export; its parent made. Never the run directory for a TorchScript file."""
    out = Path(out) if out else run_dir / "export"
    if suffix == ".pt" and out.resolve() == run_dir.resolve():
        raise ValueError(
            f"{out}: a TorchScript file (.pt, a pickle) in the run directory would make rnnkit "
            "refuse the run; write it elsewhere (the default is RUN/export)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_models(task: str, model, parts, fmt: str, names, paths) -> list[dict]:
    """Each named model written to its path; return their sidecars' descriptions."""
    if task in SEQ2SEQ:
        return export_seq2seq(task, model, fmt, *paths)
    return [
        export_model(parts, fmt, name == "step", path)
        for name, path in zip(names, paths, strict=True)
    ]
