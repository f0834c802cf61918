"""The package's levels (README, Layout): what ``import rnnkit`` loads, the import contracts
of pyproject.toml, and the sizes a reader can finish (STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "rnnkit"
ABOVE_THE_LIBRARY = ("data", "models", "training", "tasks", "tools", "export", "cli")
HEAVY = ("matplotlib", "sklearn", "scipy", "PIL")


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_import_rnnkit_loads_the_library_alone():
    loaded = modules_after("import rnnkit")
    assert "rnnkit.layers" in loaded and "rnnkit.kernels" in loaded  # the check sees rnnkit's own
    upper = sorted(
        m for m in loaded if m.startswith("rnnkit.") and m.split(".")[1] in ABOVE_THE_LIBRARY
    )
    assert upper == [], f"import rnnkit loads {upper}"
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"import rnnkit loads {heavy}"


def test_a_task_does_load_what_the_library_leaves_out():
    """The check above can fail: importing a task brings in the trainer, and the speech task
    scipy (its WAV reader)."""
    loaded = modules_after("import rnnkit.tasks.speech")
    assert {"rnnkit.training.trainer", "rnnkit.data.audio", "scipy"} <= loaded


def test_each_level_imports_only_the_levels_below_it():
    """The contracts of pyproject.toml's [tool.importlinter], as ``make lint`` checks them."""
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip("import-linter is not installed (the dev extras install it)")
    result = subprocess.run(
        [str(linter), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1


def test_files_and_functions_are_a_size_a_reader_can_finish():
    """STYLE.md: files under about 400 lines, functions of 10 to 15 (none of 50 or more)."""
    sources = sorted(SOURCE.rglob("*.py"))
    assert len(sources) > 50  # the walk found the package
    long_files = [(p.name, n) for p in sources if (n := len(p.read_text().splitlines())) > 400]
    assert long_files == []
    long_functions = [(p.name, f, n) for p in sources for f, n in functions(p) if n >= 50]
    assert long_functions == []
