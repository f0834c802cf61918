"""What every test file shares: hypothesis's settings, a trained run for the commands that
read one, and torch on one thread."""

import contextlib
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from rnnkit.tasks import charlm

# kernel="auto" times its candidates on the machine (rnnkit.kernels.autotune), and timings
# are not deterministic: a test would run another kernel from one run to the next. So the
# tests take the fixed rule unless they say otherwise (tests/test_autotune.py turns it on).
os.environ.setdefault("RNNKIT_AUTOTUNE", "0")

# Property tests deterministic and offline: derandomised (the same examples every run), no
# example database, no deadline (the machines are shared). A test that wants more or fewer
# examples says so with @settings(max_examples=N), which keeps the rest of this profile. The
# function-scoped-fixture check is off because the tests that take tmp_path write their
# files anew in every example.
settings.register_profile(
    "rnnkit",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("rnnkit")


@pytest.fixture(scope="session")
def charlm_run(tmp_path_factory):
    """A real, tiny run: a two-layer LSTM of 8 units trained a few steps on the hello corpus."""
    out = tmp_path_factory.mktemp("charlm-run")
    config = charlm.Config(
        data="hello",
        cell="lstm",
        hidden=8,
        layers=2,
        window=8,
        batch_size=4,
        steps=4,
        eval_every=2,
        minutes=0,
        out=str(out),
        device="cpu",
        precision="fp32",
    )
    charlm.train(config)
    return out


@contextlib.contextmanager
def torch_threads(count: int):
    """torch on ``count`` threads inside the block, and on as many as before after it, even
    when the block fails or sets its own count (``--threads`` of a command)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One torch thread: the machines these run on are shared, and small models gain little."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_for_module():
    """``one_thread`` from the first test of a module that asks for it to the module's end:
    for module-scoped fixtures that train, and for modules that ask for it in ``pytestmark``."""
    with torch_threads(1):
        yield
