"""The long-range memory tasks: the answer really sits N steps back, and a cell can learn it."""

import json

import torch

from rnnkit.tools import memory


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_copy_task_asks_back_the_first_symbols_after_n_blanks():
    batch = memory.copy_task(7, 3, generator())
    tokens = batch.inputs.argmax(2)  # (T, B)
    assert batch.inputs.shape == (2 * 5 + 7 + 1, 3, 10)
    assert torch.all(tokens[5:12] == 0) and torch.all(tokens[12] == 9)
    assert torch.equal(batch.targets[-5:], tokens[:5])
    assert batch.scored.sum() == 5 * 3 and torch.all(batch.scored[-5:])


def test_adding_task_sums_the_two_marked_values_about_n_apart():
    batch = memory.adding_task(50, 256, generator())
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert torch.all(markers.sum(0) == 2)
    torch.testing.assert_close((values * markers).sum(0), batch.targets)
    first = markers.argmax(0)
    last = 50 - markers.flip(0).argmax(0)
    assert torch.all(first <= 1) and torch.all(last >= 48) and torch.all(last - first >= 47)


def test_subject_task_answer_is_the_first_token():
    batch = memory.subject_task(20, 16, generator())
    tokens = batch.inputs.argmax(2)
    assert tokens.shape == (22, 16)
    assert torch.equal(batch.targets[-1], tokens[0]) and torch.all(tokens[0] < 4)
    assert torch.all((tokens[1:-1] >= 4) & (tokens[1:-1] < 12)) and torch.all(tokens[-1] == 12)


def test_an_lstm_learns_to_remember_a_subject_a_few_steps_back():
    accuracy = memory.train_and_score("subject", "lstm", 3, steps=120, hidden=16, lr=1e-2)
    assert accuracy > 0.9  # chance is 0.25


def test_accuracy_is_scored_on_the_scored_steps_only():
    model = memory.Probe("gru", 10, 9, 8)
    batch = memory.copy_task(4, 8, generator())
    _, accuracy = memory.loss_and_accuracy("copy", model, batch)
    logits = model(batch.inputs)[-5:]
    want = (logits.argmax(2) == batch.targets[-5:]).float().mean().item()
    assert accuracy == want


def test_command_writes_plot_and_json(tmp_path, capsys):
    out, js = tmp_path / "m.png", tmp_path / "m.json"
    code = memory.main(
        [
            "--cells",
            "rnn",
            "--tasks",
            "subject,adding",
            "--distances",
            "2",
            "--steps",
            "3",
            "--hidden",
            "4",
            "--out",
            str(out),
            "--json",
            str(js),
        ]
    )
    assert code == 0 and out.read_bytes()[:4] == b"\x89PNG"
    results = json.loads(js.read_text())["results"]
    assert set(results) == {"subject", "adding"} and 0 <= results["adding"]["rnn"]["2"] <= 1
    assert "subject" in capsys.readouterr().out
