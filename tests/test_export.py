"""Exported models against rnnkit: ONNX run in onnxruntime and TorchScript, the whole
sequence and one step, on random padded batches of several sizes and lengths."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit import export
from rnnkit.cli import main
from rnnkit.data import Vocab
from rnnkit.data.pairs import SOS, SPECIALS, TokenVocab
from rnnkit.models.seq2seq import Seq2Seq
from rnnkit.models.vision import Captioner, VGGEncoder
from rnnkit.tasks import charlm, classify, forecast, seqclass, tag, translate
from rnnkit.training import config as configuration
from rnnkit.training.checkpoint import MODEL_FILE, save_tensors

ort = pytest.importorskip("onnxruntime")

# (B, T, lengths): one step alone and two padded batches; the exports traced (2, 3).
BATCHES = [(1, 1, [1]), (3, 6, [6, 1, 4]), (4, 9, [2, 9, 9, 5])]
TOLERANCE = 1e-5


def randomised(model):
    """The model in eval mode with noise on every weight, so that the peepholes and biases
    (zero at initialisation) take part."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model.eval()


def build(name: str):
    """(task, model) of each case: every cell, several layers, both directions, poolings."""
    torch.manual_seed(0)
    if name.startswith("charlm"):
        cell = name.split("-")[1]
        config = charlm.Config(cell=cell, hidden=6, layers=2, embedding=5)
        config.one_hot = name.endswith("one-hot")
        return "charlm", charlm.CharLM(11, config)
    if name == "tag-gru-bidirectional":
        config = tag.Config(cell="gru", hidden=5, layers=2, bidirectional=True)
        return "tag", tag.Tagger(3, 4, config)
    if name == "classify-rnn-bidirectional-last":
        config = classify.Config(cell="rnn", embedding=4, hidden=5, pooling="last")
        return "classify", classify.TextClassifier(13, 3, config)
    if name == "seqclass-lstm-max":
        config = seqclass.Config(
            cell="lstm", hidden=5, layers=2, bidirectional=False, pooling="max"
        )
        return "seqclass", seqclass.SequenceClassifier(2, 3, config)
    config = forecast.Config(cell="peephole", hidden=5, horizon=3)
    return "forecast", forecast.Forecaster(2, 1, config)


CHARLM = [f"charlm-{cell}" for cell in ("lstm", "gru", "rnn", "peephole")]
OTHERS = ["tag-gru-bidirectional", "classify-rnn-bidirectional-last", "seqclass-lstm-max"]
CASES = [*CHARLM, "charlm-lstm-one-hot", *OTHERS, "forecast-peephole"]
STEPPING = [*CHARLM, "forecast-peephole"]


@pytest.fixture(scope="module")
def cases():
    made = {}
    for name in CASES:
        task, model = build(name)
        made[name] = randomised(model), export.parts_of(task, model)
    return made


@pytest.fixture(scope="module")
def exported(cases, tmp_path_factory):
    """Each (case, format, step) exported once: (path, sidecar)."""
    done = {}

    def get(name, fmt, step=False):
        if (name, fmt, step) not in done:
            suffix = ".onnx" if fmt == "onnx" else ".pt"
            path = tmp_path_factory.mktemp(name) / (("step" if step else "model") + suffix)
            done[name, fmt, step] = path, export.export_model(cases[name][1], fmt, step, path)
        return done[name, fmt, step]

    return get


def batch(parts, B: int, T: int, lengths: list[int], seed: int = 1):
    """A batch-first padded batch; the padding is random too, so it has to be ignored."""
    generator = torch.Generator().manual_seed(seed)
    if parts.embed is not None or parts.one_hot:
        vocab = parts.one_hot or parts.embed.num_embeddings
        x = torch.randint(0, vocab, (B, T), generator=generator)
    else:
        x = torch.randn(B, T, parts.rnn.input_size, generator=generator)
    return x, torch.tensor(lengths)


@torch.no_grad()
def rnnkit_outputs(model, parts, x, lengths) -> list[np.ndarray]:
    """What rnnkit computes for the batch, in the exported outputs' order."""
    xt = x.transpose(0, 1)  # (T, B, ...) as the tasks read it
    if parts.task in ("classify", "seqclass", "tag"):  # their forward takes lengths
        y = model(xt, lengths)
        return [(y if parts.pooling else y.transpose(0, 1)).numpy()]
    inputs = F.one_hot(xt, parts.one_hot).float() if parts.one_hot else xt
    inputs = parts.embed(inputs) if parts.embed is not None else inputs
    output, state = parts.rnn(inputs, None, lengths)
    state = state if isinstance(state, tuple) else (state,)
    return [parts.head(output).transpose(0, 1).numpy(), *(s.numpy() for s in state)]


def run(path, fmt, inputs) -> list[np.ndarray]:
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: np.asarray(v) for n, v in zip(names, inputs, strict=True)})
    outputs = torch.jit.load(str(path))(*(torch.as_tensor(np.asarray(v)) for v in inputs))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [o.numpy() for o in outputs]


def assert_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=TOLERANCE)


# --- the whole-sequence model ------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_torchscript_sequence_model_equals_rnnkit(cases, exported, name):
    model, parts = cases[name]
    path, _ = exported(name, "torchscript")
    for B, T, lengths in BATCHES:
        x, lengths = batch(parts, B, T, lengths)
        assert_close(
            run(path, "torchscript", [x, lengths]), rnnkit_outputs(model, parts, x, lengths)
        )


# Each ONNX export takes seconds: the three cover each ONNX operator (LSTM with peepholes,
# GRU, RNN), stacked and bidirectional layers, embeddings, features, and pooling.
@pytest.mark.parametrize(
    "name", ["charlm-peephole", "tag-gru-bidirectional", "classify-rnn-bidirectional-last"]
)
def test_onnx_sequence_model_equals_rnnkit_in_onnxruntime(cases, exported, name):
    model, parts = cases[name]
    path, _ = exported(name, "onnx")
    for B, T, lengths in BATCHES:
        x, lengths = batch(parts, B, T, lengths)
        assert_close(run(path, "onnx", [x, lengths]), rnnkit_outputs(model, parts, x, lengths))


@pytest.mark.parametrize("name", CASES)
def test_the_operator_stack_in_torch_equals_rnnkit(cases, name):
    """The torch body of the ONNX operators, weights in ONNX's gate order and back."""
    model, parts = cases[name]
    stacked = export.SequenceModel(parts, export.OperatorStack(parts.rnn)).eval()
    x, lengths = batch(parts, *BATCHES[1])
    with torch.no_grad():
        got = stacked(x, lengths)
    got = [t.numpy() for t in (got if isinstance(got, tuple) else (got,))]
    assert_close(got, rnnkit_outputs(model, parts, x, lengths))


def test_charlm_forward_without_lengths_is_what_is_exported(cases):
    """The reference above reads the layer with lengths; on full lengths it is the task's own
    forward, so the exports compute charlm's model."""
    model, parts = cases["charlm-peephole"]
    x, lengths = batch(parts, 3, 5, [5, 5, 5])
    with torch.no_grad():
        logits, (h, c) = model(x.T)
    want = [logits.transpose(0, 1).numpy(), h.numpy(), c.numpy()]
    assert_close(rnnkit_outputs(model, parts, x, lengths), want)


def test_time_is_a_loop_not_unrolled(exported):
    import onnx

    path, sidecar = exported("charlm-peephole", "onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("LSTM") == 2  # one operator per layer, for any T
    assert {node.domain for node in graph.node} <= {""} and not model.functions  # no rnnkit op
    x = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in x] == sidecar["inputs"][0]["shape"] == ["B", "T"]
    path, _ = exported("charlm-peephole", "torchscript")
    assert "prim::Loop" in str(torch.jit.load(str(path)).inlined_graph)


def test_torchscript_runs_where_rnnkit_is_not_installed(exported):
    path, _ = exported("charlm-gru", "torchscript")
    script = (
        "import sys, torch; sys.modules['rnnkit'] = None; "  # any import of rnnkit fails
        f"m = torch.jit.load({str(path)!r}); "
        "print(tuple(m(torch.tensor([[1, 2, 3]]), torch.tensor([3]))[0].shape))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 3, 11)"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_names_and_shapes_are_the_sidecars(cases, exported, fmt):
    _, parts = cases["charlm-peephole"]
    path, sidecar = exported("charlm-peephole", fmt)
    assert [s["name"] for s in sidecar["inputs"]] == ["x", "lengths"]
    assert [s["name"] for s in sidecar["outputs"]] == ["logits", "h_n", "c_n"]
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["x", "lengths"]
        assert [o.name for o in session.get_outputs()] == ["logits", "h_n", "c_n"]
    x, lengths = batch(parts, 3, 6, [6, 1, 4])
    for spec, output in zip(sidecar["outputs"], run(path, fmt, [x, lengths]), strict=True):
        assert list(output.shape) == [{"B": 3, "T": 6}.get(s, s) for s in spec["shape"]]


# --- the one-step model ------------------------------------------------------------------


def stepped(path, fmt, parts, x, state) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the step model over x (B, T, ...) from ``state``; the outputs (B, T, O) and the
    state after each step."""
    outputs, states = [], []
    for t in range(x.shape[1]):
        y, *state = run(path, fmt, [x[:, t], *state])
        outputs.append(y), states.append(state)
    return np.stack(outputs, 1), states


# The step models are the cells traced, without a loop: every cell in TorchScript, and the
# peephole LSTM (the one ONNX export that takes seconds) in onnxruntime.
@pytest.mark.parametrize(
    ("name", "fmt"), [(name, "torchscript") for name in STEPPING] + [("charlm-peephole", "onnx")]
)
def test_step_model_run_t_times_equals_the_whole_sequence(cases, exported, name, fmt):
    model, parts = cases[name]
    path, sidecar = exported(name, fmt, step=True)
    x, lengths = batch(parts, 3, 6, [6, 1, 4])
    want = rnnkit_outputs(model, parts, x, lengths)
    zeros = [np.zeros([3 if s == "B" else s for s in spec["shape"]], np.float32)
             for spec in sidecar["inputs"][1:]]  # fmt: skip
    outputs, states = stepped(path, fmt, parts, x, zeros)
    for b, length in enumerate(lengths.tolist()):
        np.testing.assert_allclose(outputs[b, :length], want[0][b, :length], atol=TOLERANCE)
        for got, final in zip(states[length - 1], want[1:], strict=True):
            np.testing.assert_allclose(got[:, b], final[:, b], atol=TOLERANCE)


def test_onnx_prime_with_the_sequence_model_then_stream(cases, exported):
    """The streaming use: the whole-sequence model reads a prompt, its final state starts
    the step model, and together they give the outputs of one pass over everything."""
    model, parts = cases["charlm-peephole"]
    whole, _ = exported("charlm-peephole", "onnx")
    step, _ = exported("charlm-peephole", "onnx", step=True)
    x, lengths = batch(parts, 2, 7, [7, 7])
    _, *state = run(whole, "onnx", [x[:, :4], torch.tensor([4, 4])])
    outputs, _ = stepped(step, "onnx", parts, x[:, 4:], state)
    want = rnnkit_outputs(model, parts, x, lengths)[0]
    np.testing.assert_allclose(outputs, want[:, 4:], atol=TOLERANCE)


# --- the command -------------------------------------------------------------------------


@pytest.fixture
def charlm_run(tmp_path):
    """A charlm run as the trainer leaves one (config, vocabulary, best weights), untrained:
    two LSTM layers of 8 units. Training would add only time to what export reads."""
    run_dir = tmp_path / "charlm-run"
    run_dir.mkdir()
    # fp32: with "auto" a CPU with bfloat16 units runs the run's model in bf16 (1e-4 off the
    # float32 export; docs/export.md says bf16 runs are exported in float32).
    config = charlm.Config(
        cell="lstm", hidden=8, layers=2, window=8, precision="fp32", out=str(run_dir)
    )
    configuration.save(config, run_dir / "config.json", task="charlm")
    vocab = Vocab.build("hello, world")
    vocab.save(run_dir / "vocab.json")
    model = randomised(charlm.CharLM(len(vocab), config))
    save_tensors(run_dir / MODEL_FILE, {f"model.{k}": v for k, v in model.state_dict().items()}, {})
    return run_dir


def test_rnnkit_export_writes_the_run_model_and_its_sidecar(charlm_run, capsys):
    assert main(["export", str(charlm_run), "--format", "torchscript", "--step"]) == 0
    out = charlm_run / "export"
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "model.pt",
        "step.json",
        "step.pt",
    ]
    assert "wrote" in capsys.readouterr().out
    sidecar = json.loads((out / "model.json").read_text())
    vocab = json.loads((charlm_run / "vocab.json").read_text())
    assert sidecar["vocab.json"] == vocab and sidecar["task"] == "charlm"
    assert sidecar["config.json"]["window"] == 8  # the run's settings travel with the model
    assert (sidecar["cell"], sidecar["layers"], sidecar["hidden"]) == ("lstm", 2, 8)
    _, _, model = charlm.load_run(charlm_run, "cpu")
    parts = export.parts_of("charlm", model)
    x, lengths = batch(parts, 3, 6, [6, 1, 4])
    assert_close(
        run(out / "model.pt", "torchscript", [x, lengths]), rnnkit_outputs(model, parts, x, lengths)
    )


def fake_run(tmp_path, task):
    run_dir = tmp_path / task
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"task": task}))
    return run_dir


def test_encoder_decoders_are_refused_with_the_reason(tmp_path, capsys):
    run_dir = fake_run(tmp_path, "translate")
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    assert "encoder and a decoder" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_a_classify_run_with_naive_bayes_inputs_is_refused(tmp_path, capsys):
    run_dir = fake_run(tmp_path, "classify")
    (run_dir / "config.json").write_text(json.dumps({"task": "classify", "nb_features": True}))
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    assert "Naive-Bayes ratios" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_a_task_export_does_not_know_is_refused_by_name(tmp_path, capsys):
    run_dir = fake_run(tmp_path, "speech")
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 2
    assert "a speech run cannot be exported yet" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


@pytest.mark.parametrize("name", ["classify-rnn-bidirectional-last", "tag-gru-bidirectional"])
def test_no_step_model_for_pooling_or_bidirectional_stacks(cases, tmp_path, name):
    with pytest.raises(ValueError, match="without --step"):
        export.export_model(cases[name][1], "torchscript", True, tmp_path / "step.pt")
    assert not (tmp_path / "step.pt").exists()


def test_torchscript_into_the_run_directory_itself_is_refused(charlm_run, capsys):
    """A .pt file is a pickle: written into the run directory it would make the run refused."""
    before = sorted(p.name for p in charlm_run.iterdir())
    argv = ["export", str(charlm_run), "--format", "torchscript", "--out", str(charlm_run)]
    assert main(argv) == 2
    assert "would make rnnkit refuse the run" in capsys.readouterr().err
    assert sorted(p.name for p in charlm_run.iterdir()) == before


def test_a_failed_export_leaves_the_run_directory_as_it_was(charlm_run, monkeypatch, capsys):
    out = charlm_run / "export-failing"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier export")
    original = export.export_model

    def failing(parts, fmt, step, path):
        if step:
            raise ValueError("the step model failed")
        return original(parts, fmt, step, path)

    monkeypatch.setattr(export, "export_model", failing)
    before = sorted(p.name for p in charlm_run.iterdir())
    assert (
        main(["export", str(charlm_run), "--format", "torchscript", "--step", "--out", str(out)])
        == 2
    )
    assert "the step model failed" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    assert (out / "model.pt").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in charlm_run.iterdir()) == before  # no temporary left


def test_without_onnx_the_message_names_the_extra(charlm_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    out = charlm_run / "export-no-onnx"
    assert main(["export", str(charlm_run), "--format", "onnx", "--out", str(out)]) == 2
    assert "pip install 'rnnkit[export]'" in capsys.readouterr().err
    assert not out.exists()


# --- encoder-decoders: the encoder side and one decoder step -----------------------------


def seq2seq_case(name: str):
    """(task, model, encoder inputs) of each encoder-decoder case: every attention, bridges
    that copy and that project, the peephole cell, caption from features and from a CNN."""
    torch.manual_seed(0)
    sizes = dict(hidden=6, embedding=5)
    if name == "translate-bidirectional-lstm-to-gru-luong":
        model = Seq2Seq(9, 10, encoder_cell="lstm", decoder_cell="gru", encoder_layers=2, **sizes)
    elif name == "translate-gru-bahdanau-two-layers":
        layers = dict(encoder_layers=2, decoder_layers=2, bidirectional=False)
        model = Seq2Seq(9, 10, encoder_cell="gru", decoder_cell="gru", attention="bahdanau",
                        **layers, **sizes)  # fmt: skip
    elif name == "translate-peephole-no-attention":
        model = Seq2Seq(9, 10, encoder_cell="peephole", decoder_cell="peephole",
                        bidirectional=False, attention="none", **sizes)  # fmt: skip
    elif name == "caption-features-lstm-image-fed":
        model = Captioner(10, None, feature_size=7, layers=2, feed_image=True, **sizes)
        return "caption", randomised(model), [torch.randn(3, 7)]
    else:
        cnn = VGGEncoder(image_size=16, blocks=2, width=4, convs=1, features=7)
        model = Captioner(10, cnn, feature_size=7, cell="gru", attention="bahdanau", **sizes)
        return "caption", randomised(model), [torch.rand(3, 3, 16, 16)]
    source = torch.randint(4, 9, (3, 7))
    return "translate", randomised(model), [source, torch.tensor([7, 2, 5])]


SEQ2SEQ = [
    "translate-bidirectional-lstm-to-gru-luong",
    "translate-gru-bahdanau-two-layers",
    "translate-peephole-no-attention",
    "caption-features-lstm-image-fed",
    "caption-cnn-gru-bahdanau",
]


# One ONNX case, two exports: the bidirectional LSTM encoder over padded sources, the GRU
# decoder step with attention over a source length it was not exported with.
@pytest.mark.parametrize(
    ("name", "fmt"),
    [(name, "torchscript") for name in SEQ2SEQ]
    + [("translate-bidirectional-lstm-to-gru-luong", "onnx")],
)
def test_encoder_and_decoder_step_equal_start_and_step(tmp_path, name, fmt):
    task, model, inputs = seq2seq_case(name)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    encoder, step = tmp_path / f"encoder{suffix}", tmp_path / f"step{suffix}"
    _, sidecar = export.export_seq2seq(task, model, fmt, encoder, step)
    parts = sum(spec["name"] in ("h", "c") for spec in sidecar["outputs"])
    attention = sidecar["outputs"][-1]["name"] == "weights"
    targets = torch.randint(4, 10, (3, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        state = model.start(*inputs) if task == "translate" else model.start(*model.encode(*inputs))
    state_in = run(encoder, fmt, inputs)
    assert_close(state_in[:parts], [h.numpy() for h in state.hidden])
    tokens = torch.full((3,), SOS)
    for t in range(4):  # the known tokens fed back, as teacher forcing does
        with torch.no_grad():
            logits, state, weights = model.decoder.step(tokens, state)
        logits_out, *rest = run(step, fmt, [tokens, *state_in])
        want = [logits.numpy(), *(h.numpy() for h in state.hidden)]
        assert_close([logits_out, *rest[:parts]], want)
        if attention:
            np.testing.assert_allclose(rest[parts], weights.numpy(), atol=TOLERANCE)
        state_in = rest[:parts] + state_in[parts:]
        tokens = targets[:, t]


def fake_translate_run(tmp_path) -> Path:
    """A translate run as the trainer leaves one (config, vocabularies, weights), untrained."""
    run_dir = tmp_path / "translate-run"
    run_dir.mkdir()
    config = translate.Config(hidden=6, embedding=5, out=str(run_dir))
    configuration.save(config, run_dir / "config.json", task="translate")
    TokenVocab([*SPECIALS, "uno", "dos"]).save(run_dir / "source_vocab.json")
    TokenVocab([*SPECIALS, "one", "two", "three"]).save(run_dir / "target_vocab.json")
    model = translate.build_model(config, 6, 7)
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_tensors(run_dir / MODEL_FILE, weights, {})
    return run_dir


def test_rnnkit_export_step_of_a_translate_run(tmp_path, capsys):
    run_dir = fake_translate_run(tmp_path)
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 2
    assert "export --step writes the encoder and one decoder step" in capsys.readouterr().err
    assert not (run_dir / "export").exists()
    assert main(["export", str(run_dir), "--format", "torchscript", "--step"]) == 0
    out = run_dir / "export"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["encoder.json", "encoder.pt", "step.json", "step.pt"]
    sidecar = json.loads((out / "step.json").read_text())
    assert sidecar["target_vocab.json"]["tokens"][4:] == ["one", "two", "three"]
    assert [s["name"] for s in sidecar["inputs"]] == ["tokens", "h_prev", "c_prev", "memory",
                                                      "keys", "mask"]  # fmt: skip
