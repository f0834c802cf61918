"""Seeing inside a character model: unit activations over text, tracking units, gate saturation.

``rnnkit inspect RUN --text FILE`` writes one self-contained HTML page (no network, no
external script: a Content-Security-Policy forbids every request) that shows
- the text coloured by the activation of a chosen unit, with a selector over layers,
  signals (cell state c or hidden state h) and units, as in Karpathy, Johnson and Fei-Fei
  (2015), "Visualizing and Understanding Recurrent Networks", section 4.2;
- units found automatically whose activation follows a property of the text (inside a
  quote, inside a comment, position in the line, indentation depth, bracket depth), ranked
  by the absolute Pearson correlation over the text, which is given as the evidence;
- per layer, how often each gate is saturated (below 0.1 or above 0.9): the fraction of
  steps per unit, as a scatter (the paper's figure 3) and as histograms.

Shape letters: N characters of text, H hidden units, E input size.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SATURATED_LOW, SATURATED_HIGH = 0.1, 0.9


@dataclass
class Trace:
    """What every layer did at every character of ``text``."""

    text: str
    signals: list[dict[str, np.ndarray]] = field(default_factory=list)  # per layer: name -> (N, H)
    gates: list[dict[str, np.ndarray]] = field(default_factory=list)  # per layer: gate -> (N, H)


@torch.no_grad()
def trace_model(model, vocab, text: str) -> Trace:
    """Run a character model over ``text`` one step at a time, recording states and gates."""
    rnn = model.rnn
    if rnn.bidirectional:
        raise ValueError("inspect reads left to right; this model is bidirectional")
    ids = vocab.encode(text)
    x = (
        model.embed(ids)
        if model.embed is not None
        else torch.nn.functional.one_hot(ids, model.vocab_size).float()
    )  # (N, E)
    trace = Trace(text)
    for cell in rnn.cells:
        state, steps = cell.init_state(1, dtype=x.dtype), []
        for t in range(x.shape[0]):
            h, state, gates = cell.trace(x[t : t + 1], state)
            steps.append((h, state, gates))
        hidden = torch.cat([h for h, _, _ in steps])  # (N, H)
        signals = {"hidden state h": hidden.numpy()}
        if isinstance(steps[0][1], tuple):
            cell_state = torch.tanh(torch.cat([s[1] for _, s, _ in steps]))  # as Karpathy et al.
            signals = {"tanh(cell state c)": cell_state.numpy(), **signals}
        trace.signals.append(signals)
        trace.gates.append({k: torch.cat([g[k] for _, _, g in steps]).numpy() for k in steps[0][2]})
        x = hidden
    return trace


# -- properties of the text that a unit may track ---------------------------------------


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per character: inside a quote, inside a comment, column, indentation, bracket depth."""
    quote, comment, column, indent, depth, line_start = None, False, 0, 0, 0, True
    rows = []
    for ch in text:
        if ch == "\n":
            comment, column, indent, line_start = False, 0, 0, True
        else:
            column += 1
            if line_start and ch == " ":
                indent += 1
            else:
                line_start = False
        if quote is None and not comment and ch in "([{":
            depth += 1
        elif quote is None and not comment and ch in ")]}":
            depth = max(depth - 1, 0)
        if ch in "\"'" and not comment:
            quote = ch if quote is None else (None if ch == quote else quote)
        elif ch == "#" and quote is None:
            comment = True
        rows.append((quote is not None, comment, column, indent, depth))
    values = np.array(rows, dtype=np.float64).reshape(-1, 5)
    names = [
        "inside a quote",
        "inside a comment",
        "position in the line",
        "indentation depth",
        "bracket depth",
    ]
    return {name: values[:, k] for k, name in enumerate(names)}


def correlations(activations: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of every unit (N, H) with one feature (N,); 0 where either is flat."""
    a = activations - activations.mean(0)
    f = feature - feature.mean()
    denominator = np.sqrt((a**2).sum(0) * (f**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * f[:, None]).sum(0) / denominator
    return np.nan_to_num(r)


def tracking_units(trace: Trace, top: int = 3) -> list[dict]:
    """For each text property, the units (any layer, first signal) that follow it best."""
    found = []
    for name, feature in text_features(trace.text).items():
        if feature.std() == 0:
            continue  # the text never varies in this property: nothing to find
        candidates = []
        for layer, signals in enumerate(trace.signals):
            signal = next(iter(signals))
            r = correlations(signals[signal], feature)
            candidates += [(abs(r[u]), r[u], layer, signal, int(u)) for u in range(r.size)]
        for _, r, layer, signal, unit in sorted(candidates, reverse=True)[:top]:
            found.append(
                {
                    "feature": name,
                    "layer": layer,
                    "signal": signal,
                    "unit": unit,
                    "r": round(float(r), 3),
                }
            )
    return found


def saturation(trace: Trace) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per layer and gate: the fraction of steps each unit spends below 0.1 and above 0.9."""
    return [
        {
            name: ((g < SATURATED_LOW).mean(0), (g > SATURATED_HIGH).mean(0))
            for name, g in gates.items()
        }
        for gates in trace.gates
    ]


# -- the page -----------------------------------------------------------------------------


def quantise(values: np.ndarray) -> dict:
    """(N, H) floats -> per-unit scale and int8 codes, base64, unit-major: small to embed."""
    scale = np.abs(values).max(0)
    scale[scale == 0] = 1.0
    codes = np.round(values / scale * 127).astype(np.int8).T.copy()  # (H, N)
    return {"scale": [round(float(s), 5) for s in scale], "codes": base64.b64encode(codes).decode()}


def saturation_svg(fractions: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> str:
    """An inline SVG: per gate, left- against right-saturation per unit, and histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (scatter, hist) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, (low, high) in fractions.items():
        scatter.scatter(low, high, s=8, alpha=0.6, label=name)
        hist.hist(low + high, bins=20, range=(0, 1), histtype="step", linewidth=1.5, label=name)
    scatter.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="fraction of steps < 0.1 (left-saturated)",
        ylabel="fraction of steps > 0.9 (right-saturated)",
        title=f"{title}: each unit",
    )
    hist.set(
        xlabel="fraction of steps saturated (< 0.1 or > 0.9)",
        ylabel="units",
        title=f"{title}: how often units saturate",
    )
    for ax in (scatter, hist):
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # creator and date: noise
    return svg[svg.index("<svg") :]


def page(trace: Trace, title: str) -> str:
    """The whole report as one HTML string."""
    data = {
        "layers": [{name: quantise(v) for name, v in signals.items()} for signals in trace.signals],
        "tracking": tracking_units(trace),
    }
    spans = "".join(
        '<span class="nl">\u21b5</span><br>' if ch == "\n" else f"<span>{html.escape(ch)}</span>"
        for ch in trace.text
    )
    svgs = (
        "".join(
            f"<figure>{saturation_svg(fractions, f'layer {k}')}</figure>"
            for k, fractions in enumerate(saturation(trace))
            if fractions
        )
        or "<p>This cell has no gates.</p>"
    )
    template = (Path(__file__).parent / "inspection.html").read_text()
    return (
        template.replace("{{title}}", html.escape(title))
        .replace("{{text}}", spans)
        .replace("{{saturation}}", svgs)
        .replace("{{data}}", json.dumps(data).replace("</", "<\\/"))
    )


def report(
    run_dir: Path, text_file: Path, out: Path, max_chars: int = 2000, device: str = "cpu"
) -> Path:
    """Trace the run's model over the first ``max_chars`` characters of a file; write the page."""
    from rnnkit.data.corpus import read_text
    from rnnkit.tasks import charlm

    _, vocab, model = charlm.load_run(run_dir, device)
    text = read_text(Path(text_file))[:max_chars]  # binary or not UTF-8: an error naming the line
    if not text:
        raise ValueError(f"{text_file}: empty")
    trace = trace_model(model.float().cpu(), vocab, text)
    out = Path(out)
    out.write_text(page(trace, f"{Path(run_dir).name} on {Path(text_file).name}"), encoding="utf-8")
    return out
