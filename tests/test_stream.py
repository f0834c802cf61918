"""rnnkit.Stream against its references: the full-sequence layer forward (with embedding and
head), and the compiled step against the torch twin that steps the cells.

Shape letters: T time, B batch, I input size, H hidden size, L layers, V vocabulary.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.kernels import step_c

T, I, H, V, O = 9, 5, 7, 11, 4
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_peephole", "gru"]
ATOL = 1e-5


def make_layer(kind: str, num_layers: int = 2, **options):
    """A seeded float32 stack with every parameter random and non-zero, peepholes included.

    Its forward runs the reference loop of rnnkit.scan, the plainest full-sequence path.
    """
    torch.manual_seed(0)
    options.setdefault("kernel", "loop")
    if kind.startswith("rnn"):
        layer = rnnkit.RNN(I, H, num_layers, nonlinearity=kind.removeprefix("rnn_"), **options)
    elif kind.startswith("lstm"):
        layer = rnnkit.LSTM(I, H, num_layers, peephole=kind == "lstm_peephole", **options)
    else:
        layer = rnnkit.GRU(I, H, num_layers, **options)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.6, 0.6)
    return layer.eval()


def reference(layer, inputs, embedding=None, head=None, state=None):
    """head(layer(embedding(inputs))) over the whole sequence: (T, B, O)."""
    with torch.no_grad():
        x = embedding(inputs) if embedding is not None else inputs  # (T, B, I)
        output, final = layer(x, state)  # (T, B, H)
        return (head(output) if head is not None else output), final


def run(stream, inputs):
    return torch.stack([stream.step(x).clone() for x in inputs])  # (T, B, O)


def tokens(batch: int = 1):
    torch.manual_seed(2)
    return torch.randint(0, V, (T, batch))  # (T, B)


@pytest.fixture(params=[None, False], ids=["compiled", "torch"])
def compiled(request):
    if request.param is None and step_c.library() is None:
        pytest.skip("no C compiler: only the torch path runs here")
    return request.param


@pytest.mark.parametrize("kind", KINDS)
def test_tokens_with_embedding_and_head_equal_the_full_sequence(kind, compiled):
    layer = make_layer(kind)
    embedding, head = nn.Embedding(V, I), nn.Linear(H, O)
    ids = tokens()
    expected, final = reference(layer, ids, embedding, head)
    stream = rnnkit.Stream(layer, embedding=embedding, head=head, compiled=compiled)
    assert stream.compiled is (compiled is None)
    got = run(stream, [int(t) for t in ids[:, 0]])
    assert got.shape == expected.shape == (T, 1, O)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    for ours, theirs in zip(_parts(stream.state), _parts(final), strict=True):
        assert ours.shape == (2, 1, H)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_vectors_without_head_equal_the_full_sequence(kind, num_layers, compiled):
    layer = make_layer(kind, num_layers)
    torch.manual_seed(3)
    x = torch.randn(T, 1, I)
    expected, _ = reference(layer, x)
    stream = rnnkit.Stream(layer, compiled=compiled)
    got = run(stream, x[:, 0, :])  # (I,) vectors
    assert got.shape == (T, 1, H)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_inputs_in_other_layouts_take_the_checked_path(compiled):
    """Non-contiguous, float64 or list inputs give the same outputs as float32 vectors."""
    layer = make_layer("gru")
    torch.manual_seed(3)
    x = torch.randn(T, 1, I)
    expected, _ = reference(layer, x)
    strided = torch.randn(T, I, 2)[:, :, 0].copy_(x[:, 0])  # a view with stride 2
    assert not strided[0].is_contiguous()
    for inputs in (strided, x[:, 0].double(), x[:, 0].tolist()):
        stream = rnnkit.Stream(layer, compiled=compiled)
        torch.testing.assert_close(run(stream, inputs), expected, atol=ATOL, rtol=0)


def test_one_hot_inputs_through_an_identity_embedding(compiled):
    layer = make_layer("lstm")
    ids = tokens() % I  # (T, 1), one symbol per input unit
    expected, _ = reference(layer, nn.functional.one_hot(ids, I).float())
    stream = rnnkit.Stream(layer, embedding=torch.eye(I), compiled=compiled)
    torch.testing.assert_close(run(stream, ids[:, 0].tolist()), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm_peephole", "gru"])
def test_a_small_batch_of_tokens_and_of_vectors(kind, compiled):
    layer, embedding, head = make_layer(kind), nn.Embedding(V, I), nn.Linear(H, O)
    ids = tokens(batch=3)
    expected, _ = reference(layer, ids, embedding, head)
    stream = rnnkit.Stream(layer, embedding, head, batch=3, compiled=compiled)
    torch.testing.assert_close(run(stream, ids), expected, atol=ATOL, rtol=0)
    x = embedding(ids).detach()  # (T, 3, I)
    expected, _ = reference(layer, x)
    stream = rnnkit.Stream(layer, batch=3, compiled=compiled)
    torch.testing.assert_close(run(stream, x), expected, atol=ATOL, rtol=0)


def test_a_vocabulary_too_large_to_tabulate_reads_the_embedding(monkeypatch, compiled):
    monkeypatch.setattr(rnnkit.stream, "TABLE_LIMIT", 0)
    layer, embedding, head = make_layer("lstm_peephole"), nn.Embedding(V, I), nn.Linear(H, O)
    ids = tokens(batch=2)
    expected, _ = reference(layer, ids, embedding, head)
    stream = rnnkit.Stream(layer, embedding, head, batch=2, compiled=compiled)
    if stream.compiled:
        assert stream._weights["table"] is None  # the C step reads embedding rows
    torch.testing.assert_close(run(stream, ids), expected, atol=ATOL, rtol=0)
    stream = rnnkit.Stream(layer, embedding, head, compiled=compiled)
    got = run(stream, ids[:, 0].tolist())
    torch.testing.assert_close(got, expected[:, :1], atol=ATOL, rtol=0)


def test_compiled_path_equals_the_torch_twin_step_by_step():
    if step_c.library() is None:
        pytest.skip("no C compiler")
    layer, embedding, head = make_layer("lstm_peephole", 3), nn.Embedding(V, I), nn.Linear(H, O)
    fast = rnnkit.Stream(layer, embedding, head)
    slow = rnnkit.Stream(layer, embedding, head, compiled=False)
    assert fast.compiled and not slow.compiled
    for t in tokens()[:, 0].tolist():
        torch.testing.assert_close(fast.step(t), slow.step(t), atol=ATOL, rtol=0)
        for ours, theirs in zip(fast.state, slow.state, strict=True):
            torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_reset_returns_to_the_initial_state(compiled):
    layer, embedding = make_layer("lstm"), nn.Embedding(V, I)
    stream = rnnkit.Stream(layer, embedding, compiled=compiled)
    ids = [int(t) for t in tokens()[:, 0]]
    first = run(stream, ids)
    assert stream.state[0].abs().sum() > 0
    stream.reset()
    assert all(part.abs().sum() == 0 for part in stream.state)
    torch.testing.assert_close(run(stream, ids), first, atol=0, rtol=0)


def test_reset_uses_a_learned_initial_state(compiled):
    layer = make_layer("gru", learn_init=True)
    with torch.no_grad():
        layer.initial_state[0].uniform_(-1, 1)
    torch.manual_seed(4)
    x = torch.randn(T, 1, I)
    expected, _ = reference(layer, x)
    stream = rnnkit.Stream(layer, compiled=compiled)
    torch.testing.assert_close(stream.state, layer.initial_state[0].detach())
    torch.testing.assert_close(run(stream, x), expected, atol=ATOL, rtol=0)


def test_state_copied_in_continues_as_the_layer_would(compiled):
    """Feed a prompt once, save the state, and sample twice from it."""
    layer, embedding, head = make_layer("lstm"), nn.Embedding(V, I), nn.Linear(H, O)
    ids = tokens()
    prompt, rest = ids[:4], ids[4:]
    _, prompt_state = reference(layer, prompt, embedding, head)
    expected, _ = reference(layer, rest, embedding, head, prompt_state)
    stream = rnnkit.Stream(layer, embedding, head, compiled=compiled)
    stream.feed(prompt[:, 0])
    saved = stream.state
    for ours, theirs in zip(saved, prompt_state, strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    first = run(stream, [int(t) for t in rest[:, 0]])
    stream.state = saved
    second = run(stream, [int(t) for t in rest[:, 0]])
    torch.testing.assert_close(first, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    # A state from elsewhere (here the layer's own) continues exactly as the layer does.
    stream.state = prompt_state
    torch.testing.assert_close(run(stream, rest[:, 0].tolist()), expected, atol=ATOL, rtol=0)


def test_the_returned_output_is_the_buffer_and_the_state_is_a_copy(compiled):
    stream = rnnkit.Stream(make_layer("rnn_tanh"), nn.Embedding(V, I), compiled=compiled)
    first = stream.step(1)
    kept = first.clone()
    state = stream.state
    second = stream.step(2)
    assert second.data_ptr() == first.data_ptr()  # no allocation per step
    assert not torch.equal(second, kept)
    assert not torch.equal(stream.state, state)


def test_build_failure_falls_back_to_the_torch_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="torch path"):
        assert step_c.library() is None
    layer, embedding = make_layer("gru"), nn.Embedding(V, I)
    stream = rnnkit.Stream(layer, embedding)
    assert not stream.compiled
    expected, _ = reference(layer, tokens(), embedding)
    torch.testing.assert_close(run(stream, tokens()[:, 0].tolist()), expected, atol=ATOL, rtol=0)
    with pytest.raises(RuntimeError, match="unavailable"):
        rnnkit.Stream(layer, compiled=True)


def test_a_fresh_cache_builds_and_then_reuses_the_library(monkeypatch, tmp_path):
    if step_c.library() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(step_c.compiled, "_cache", {})
    assert step_c.library() is not None
    built = list(tmp_path.glob("rnnkit-*.so"))  # one library for all of kernels/csrc
    assert len(built) == 1
    monkeypatch.setattr(step_c.compiled, "_cache", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # not needed any more
    assert step_c.library() is not None
    assert list(tmp_path.glob("*")) == built  # no leftover partial files


def test_float64_layers_take_the_torch_path():
    layer = make_layer("lstm").double()
    stream = rnnkit.Stream(layer)
    assert not stream.compiled
    x = torch.randn(T, 1, I, dtype=torch.float64)
    expected, _ = reference(layer, x)
    torch.testing.assert_close(run(stream, x[:, 0]), expected, atol=1e-12, rtol=0)


def test_checks_say_what_was_expected(compiled):
    with pytest.raises(ValueError, match="bidirectional"):
        rnnkit.Stream(rnnkit.LSTM(I, H, bidirectional=True))
    with pytest.raises(TypeError, match="rnnkit RNN, LSTM or GRU"):
        rnnkit.Stream(nn.LSTM(I, H))
    layer = make_layer("gru")
    with pytest.raises(ValueError, match=r"\(V, 5\)"):
        rnnkit.Stream(layer, embedding=nn.Embedding(V, I + 1))
    with pytest.raises(ValueError, match="in_features=7"):
        rnnkit.Stream(layer, head=nn.Linear(H + 1, O))
    with pytest.raises(ValueError, match="batch"):
        rnnkit.Stream(layer, batch=0)
    stream = rnnkit.Stream(layer, nn.Embedding(V, I), compiled=compiled)
    with pytest.raises(IndexError, match="outside"):
        stream.step(V)
    with pytest.raises(ValueError, match="shape"):
        stream.state = torch.zeros(1, 1, H)
    vectors = rnnkit.Stream(layer, batch=2, compiled=compiled)
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        vectors.step(torch.zeros(I))


def test_stream_is_exported():
    assert "Stream" in rnnkit.__all__


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize(
    "kind,hidden", [("lstm_peephole", 384), ("gru", 448), ("rnn_tanh", 768), ("lstm_peephole", 256)]
)
def test_large_stacks_split_over_threads_give_the_one_thread_results(kind, hidden):
    """A step that reads at least 3 x 2^17 weights in all (step.c, PARALLEL_WEIGHTS) splits
    each matrix's panels over the OpenMP threads, even where every matrix is below that
    (the last case: three of 2^18); each panel is computed alike on any thread, so the
    outputs equal the one-thread stream's exactly, and the full-sequence layer's to
    rounding."""
    if step_c.library() is None:
        pytest.skip("no C compiler")
    torch.manual_seed(6)
    options = {"kernel": "loop", "num_layers": 2}
    if kind.startswith("rnn"):
        layer = rnnkit.RNN(I, hidden, nonlinearity="tanh", **options)
    elif kind.startswith("lstm"):
        layer = rnnkit.LSTM(I, hidden, peephole=True, **options)
    else:
        layer = rnnkit.GRU(I, hidden, **options)
    layer.eval()
    x = torch.randn(5, 1, I)  # (T, 1, I)
    expected, _ = reference(layer, x)
    threads = torch.get_num_threads()
    try:
        outputs = {}
        for count in (1, 2):
            torch.set_num_threads(count)
            weights = sum(c.weight_ih.numel() + c.weight_hh.numel() for c in layer.cells)
            assert step_c.matvec_threads(weights) == count
            outputs[count] = run(rnnkit.Stream(layer), x[:, 0, :])  # (T, 1, H)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outputs[1], outputs[2])
    torch.testing.assert_close(outputs[2], expected, atol=ATOL, rtol=0)
