"""The cost table: weights and MACs worked out by hand for small models."""

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.summary import human


class CharModel(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 10)


def test_lstm_weights_and_macs_by_hand():
    model = CharModel(rnnkit.LSTM(4, 8, num_layers=2))
    report = rnnkit.summary(model, seq_len=50)
    rows = {r.name: r for r in report.rows}
    # LSTM layer 0: 4 gates x 8 units x (4 inputs + 8 recurrent) = 384 MACs per step.
    assert rows["rnn[0]"].macs_per_step == 4 * 8 * (4 + 8)
    assert rows["rnn[0]"].params == 4 * 8 * (4 + 8) + 2 * 4 * 8
    assert rows["rnn[1]"].macs_per_step == 4 * 8 * (8 + 8)
    assert rows["embed"].params == 40 and rows["embed"].macs_per_step == 0
    assert rows["head"].macs_per_step == 80
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.macs_per_sequence == 50 * (384 + 512 + 80)


def test_bidirectional_peephole_gru_and_rnn_counts():
    peephole = rnnkit.summary(rnnkit.LSTM(3, 5, bidirectional=True, peephole=True), 1)
    assert peephole.macs_per_step == 2 * (4 * 5 * 8 + 3 * 5)
    assert rnnkit.summary(rnnkit.GRU(3, 5), 1).macs_per_step == 3 * 5 * 8
    assert rnnkit.summary(rnnkit.RNN(3, 5, num_layers=2), 1).macs_per_step == 5 * 8 + 5 * 10


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_torch_nn_layers_count_the_same_as_ours(kind):
    theirs = getattr(nn, kind)(6, 7, num_layers=2, bidirectional=True)
    ours = getattr(rnnkit, kind).from_torch(theirs)
    a, b = rnnkit.summary(theirs, 10), rnnkit.summary(ours, 10)
    assert a.params == b.params == sum(p.numel() for p in theirs.parameters())
    assert a.macs_per_sequence == b.macs_per_sequence


def test_table_prints_rows_and_the_lecture_style_total():
    text = str(rnnkit.summary(CharModel(rnnkit.GRU(4, 8)), seq_len=100))
    assert "rnn[0]" in text and "GRU" in text and "total" in text
    assert text.splitlines()[-1].startswith("weights ")
    assert "per sequence of 100 steps" in text


def test_human_numbers_as_the_lectures_print_them():
    assert human(7_000_000) == "7.00M"
    assert human(1_430_000_000) == "1.43G"
    assert human(138_000_000) == "138.0M"
    assert human(999) == "999"


def test_seq_len_is_checked():
    with pytest.raises(ValueError, match="seq_len must be a positive int, got 0"):
        rnnkit.summary(rnnkit.GRU(2, 2), 0)


def test_learned_initial_state_is_counted():
    layer = rnnkit.LSTM(2, 3, num_layers=2, learn_init=True)
    assert rnnkit.summary(layer, 1).params == sum(p.numel() for p in layer.parameters())
    assert torch.is_tensor(next(iter(layer.initial_state)))


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_training_memory_counts_saved_tensors_once_by_module():
    from rnnkit.summary import training_memory

    model, x = TwoLayers(), torch.randn(10, 4)
    memory = training_memory(model, lambda: model(x).sum(), tokens=10)
    # a saves its input x (4 floats a token); tanh saves its output (8 floats), which b then
    # saves again as its input: counted once, to the function outside the modules.
    assert memory.activations == {"a": 10 * 4 * 4, "": 10 * 8 * 4}
    assert memory.parameter_bytes == 4 * (4 * 8 + 8 + 8 * 2 + 2)
    assert "per token" in str(memory) and "AdamW" in str(memory)


def test_training_memory_of_an_lstm_grows_with_hidden_size():
    from rnnkit.summary import training_memory

    sizes = []
    for hidden in (8, 16):
        layer, x = rnnkit.LSTM(3, hidden, kernel="bptt"), torch.randn(5, 2, 3)
        sizes.append(
            sum(
                training_memory(
                    layer, lambda layer=layer, x=x: layer(x)[0].sum(), 10
                ).activations.values()
            )
        )
    assert sizes[1] > 1.8 * sizes[0]


def test_sizes_print_in_binary_units():
    from rnnkit.summary import size_human

    assert size_human(930) == "930 B" and size_human(3932) == "3.8 KiB"
    assert size_human(3 * 2**20) == "3.0 MiB"
