"""Fixtures shared by several test files: a trained run for the commands that read one, and
torch on one thread."""

import pytest
import torch

from rnnkit.tasks import charlm


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


@pytest.fixture
def one_thread():
    """One torch thread: the machines these run on are shared, and small models gain little."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
