"""Tasks: each a module with a ``Config`` dataclass, a model, and ``train``.

``TASKS`` maps a task's command-line name to its module, imported only when used. A task
module provides ``NAME``, ``Config`` (a :class:`rnnkit.training.trainer.TrainConfig` subclass) and
``train(config, resume)``; tasks that can be sampled or scored also provide ``sample`` and
``evaluate`` (see :mod:`rnnkit.cli`).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

from rnnkit.data.files import read_json
from rnnkit.training import config as configuration
from rnnkit.training import distributed
from rnnkit.training.checkpoint import LAST_FILE, MODEL_FILE

TASKS = {
    "charlm": "rnnkit.tasks.charlm",
    "forecast": "rnnkit.tasks.forecast",
    "tag": "rnnkit.tasks.tag",
    "classify": "rnnkit.tasks.classify",
    "seqclass": "rnnkit.tasks.seqclass",
    "translate": "rnnkit.tasks.translate",
    "caption": "rnnkit.tasks.caption",
    "speech": "rnnkit.tasks.speech",
}


def load_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return importlib.import_module(TASKS[name])


def task_of_run(run_dir: Path) -> ModuleType:
    """The task module that made a run, from the ``task`` key of its config.json."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    return load_task(read_json(path).get("task", ""))


def default_run_dir(name: str) -> Path:
    """Where a run goes without ``--out``: runs/NAME-YYYYmmdd-HHMMSS."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_config(run_dir: Path, config_type):
    """The saved config of a trained run; a directory without best weights is an error."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).exists():
        raise FileNotFoundError(f"{run_dir}: no {MODEL_FILE} (has this run been evaluated yet?)")
    return configuration.load(config_type, run_dir / "config.json")


# What may change when a run is resumed: its limits and where it runs, not its model or data.
RESUMABLE = {"steps", "epochs", "minutes", "eval_every", "checkpoint_every", "device"}


def resumed_config(module: ModuleType, run: str, flags: dict):
    """The saved config of ``run`` with the command line's ``flags``, which may change only
    the limits and the device; saved back into the run."""
    config = configuration.load(module.Config, Path(run) / "config.json")
    fixed = sorted(set(flags) - RESUMABLE)
    if fixed:
        raise configuration.ConfigError(
            f"a resumed run keeps its settings; only {sorted(RESUMABLE)} may change, not {fixed}"
        )
    changed = configuration.from_dict(module.Config, {**configuration.to_dict(config), **flags})
    configuration.save(changed, Path(run) / "config.json", task=module.NAME)
    return changed


def restarted_config(module: ModuleType, flags: dict):
    """The saved config of the run in ``--out`` when ``torchrun --max-restarts`` restarted the
    group after a worker died and the run has a checkpoint to continue from; else None."""
    out = flags.get("out")
    if not (out and distributed.restarted() and (Path(out) / LAST_FILE).exists()):
        return None
    return configuration.load(module.Config, Path(out) / "config.json")
