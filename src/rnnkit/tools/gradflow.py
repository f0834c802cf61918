"""Vanishing and exploding gradients, measured: how dL_T/dh_t shrinks or grows with T - t.

Backpropagation through time multiplies the gradient by dh_t/dh_{t-1} once per step.
For the lectures' scalar example, a linear unit h_t = w h_{t-1} + x_t, that factor is w,
so after 100 steps the gradient is w^100: 2^100 (about 1.3e30) for w = 2 and 2^-100 for
w = 0.5. :func:`scalar_gradient` computes exactly that with autograd. :func:`state_gradients`
does the same for a real cell: the norm of dL_T/dh_t for every t, where L_T depends on the
last state only, with the recurrent weights scaled (orthogonal times ``scale``, so that a
linear network would give ``scale^(T-t)``), and optionally with the backpropagated state
gradient clipped to a norm at every step (the lectures' remedy for explosion, applied
along time as Mikolov (2012, section 3.2.2) does).

``rnnkit gradflow`` plots the curves on a log scale and prints the ratio first/last. A
fresh peephole LSTM starts with zero peepholes (see :class:`rnnkit.cells.LSTMCell`), so its
curve equals the LSTM's until it is trained.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import rnnkit.scan
from rnnkit.cells import GRUCell, LSTMCell, RNNCell

CELLS = {
    "rnn": lambda i, h: RNNCell(i, h),
    "lstm": lambda i, h: LSTMCell(i, h),
    "gru": lambda i, h: GRUCell(i, h),
    "peephole": lambda i, h: LSTMCell(i, h, peephole=True),
}


def scalar_gradient(weight: float, length: int) -> float:
    """dh_T/dh_0 for the linear unit h_t = w h_{t-1} + x_t, by autograd: exactly w^T."""
    h0 = torch.ones((), dtype=torch.float64, requires_grad=True)
    w = torch.tensor(weight, dtype=torch.float64)
    h = h0
    for x_t in torch.zeros(length, dtype=torch.float64):
        h = w * h + x_t
    (grad,) = torch.autograd.grad(h, h0)
    return grad.item()


def state_gradients(
    cell, length: int, batch: int = 16, clip: float | None = None, seed: int = 0, inputs=None
):
    """Norm of dL_T/dh_t for t = 0..T (h_0 the initial state), averaged over the batch.

    L_T = <v, h_T> with a fixed random unit vector v, so dL_T/dh_T has norm 1 and the curve
    reads directly as the amplification from step T back to step t. The inputs are standard
    normal unless ``inputs`` (T, B, I) are given (a trained model's embedded text, say).
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, batch, cell.input_size, generator=generator, dtype=torch.float64)
    x = x if inputs is None else inputs.to(torch.float64)
    length, batch = x.shape[:2]
    v = torch.randn(cell.hidden_size, generator=generator, dtype=torch.float64)
    cell = cell.double()
    state = _as_leaf(cell.init_state(batch, dtype=torch.float64))
    hs = [state[0] if isinstance(state, tuple) else state]
    for t in range(length):
        h, state = cell(x[t], state)
        hs.append(h)
    for h in hs:
        h.retain_grad()
        if clip is not None:
            h.register_hook(
                lambda g: g * torch.clamp(clip / (g.norm(dim=1, keepdim=True) + 1e-300), max=1)
            )
    (hs[-1] @ (v / v.norm())).sum().backward()
    return torch.stack([h.grad.norm(dim=1).mean() for h in hs]).detach()  # (T + 1,)


def _as_leaf(state):
    if isinstance(state, tuple):
        return tuple(s.requires_grad_() for s in state)
    return state.requires_grad_()


def scaled_cell(kind: str, hidden: int, scale: float, seed: int = 0):
    """A fresh cell whose recurrent blocks are orthogonal times ``scale``; input size = hidden."""
    torch.manual_seed(seed)
    cell = CELLS[kind](hidden, hidden)
    with torch.no_grad():
        cell.weight_hh.mul_(scale)
    return cell


def measure(kinds, scales, length, hidden=32, clip=None, seed=0) -> dict:
    """Curves for every cell and scale: {"rnn@2": [norm at t=0, ..., t=T], ...}."""
    curves = {}
    for kind in kinds:
        for scale in scales:
            cell = scaled_cell(kind, hidden, scale, seed)
            curves[f"{kind}@{scale:g}"] = state_gradients(
                cell, length, clip=clip, seed=seed
            ).tolist()
    return curves


def measure_run(run_dir: Path, length: int, clip=None, batch: int = 16, seed: int = 0) -> dict:
    """Curves for every layer of a trained character model, on windows of its own text."""
    from rnnkit.data import load_corpus
    from rnnkit.tasks import charlm

    config, vocab, model = charlm.load_run(run_dir, "cpu")
    ids = vocab.encode(load_corpus(config.data).text)
    if len(ids) <= length:
        raise ValueError(f"{config.data}: {len(ids)} characters, fewer than --length {length}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (batch,), generator=generator)
    windows = torch.stack([ids[s : s + length] for s in starts.tolist()], dim=1)  # (T, B)
    with torch.no_grad():
        x = (
            model.embed(windows)
            if model.embed is not None
            else torch.nn.functional.one_hot(windows, model.vocab_size).float()
        )  # (T, B, E)
    curves, rnn = {}, model.rnn
    for k, cell in enumerate(rnn.cells):
        curve = state_gradients(copy.deepcopy(cell), length, clip=clip, seed=seed, inputs=x)
        curves[f"{config.cell} layer {k}"] = curve.tolist()
        with torch.no_grad():  # the next layer reads this one's outputs
            x, _ = rnnkit.scan.scan(cell, x, cell.init_state(batch))
    return curves


def ratio(curve) -> float:
    """||dL_T/dh_0|| / ||dL_T/dh_T||: the gradient's growth (>1) or decay (<1) over the sequence."""
    return curve[0] / curve[-1]


def plot(panels: dict, path: Path, length: int) -> None:
    """One log-scale panel per setting (e.g. without and with clipping), a curve per cell@scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    colours = {kind: f"C{k}" for k, kind in enumerate(CELLS)}
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        fresh = [name for name in curves if "@" in name]
        scales = sorted({name.split("@")[1] for name in fresh}, key=float)
        for k, (name, curve) in enumerate(curves.items()):
            if name in fresh:
                kind, scale = name.split("@")
                style = dict(
                    color=colours[kind], linestyle=["-", "--", ":", "-."][scales.index(scale) % 4]
                )
            else:  # a trained run's layer: thick and black
                style = dict(color="black", linewidth=2.2, linestyle=["-", "--", ":"][k % 3])
            ax.semilogy([max(c, 1e-300) for c in curve], label=name, **style)
        ax.set(title=title, xlabel="time step t", ylabel="||dL_T / dh_t||", xlim=(0, length))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Gradient of the last step's loss with respect to each hidden state (T={length})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(panels: dict, length: int) -> str:
    """Rows cell@scale, columns the panels, each cell the ratio first/last."""
    names = list(next(iter(panels.values())))
    head = ["cell@scale", *(f"{title}: dL/dh_0 / dL/dh_{length}" for title in panels)]
    rows = [[name, *(f"{ratio(curves[name]):.3g}" for curves in panels.values())] for name in names]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit gradflow", description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru,peephole", help="comma-separated cells")
    parser.add_argument("--length", type=int, default=100, help="time steps T")
    parser.add_argument("--scale", default="0.5,1,2", help="recurrent-weight scales")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units of the fresh cells")
    parser.add_argument("--clip", type=float, default=1.0, help="state-gradient norm clip")
    parser.add_argument("--out", default="gradflow.png", help="where to write the plot")
    parser.add_argument("--json", default=None, help="also write the curves here")
    parser.add_argument("--run", default=None, help="also measure a trained charlm run's layers")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.cells.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CELLS]
    if unknown or args.length < 1:
        parser.error(
            f"unknown cells {unknown} (choose from {list(CELLS)})"
            if unknown
            else f"--length must be at least 1, got {args.length}"
        )
    scales = [float(s) for s in args.scale.split(",")]
    for w in (2.0, 0.5):
        grad = scalar_gradient(w, args.length)
        print(f"scalar linear unit, w={w:g}: dh_{args.length}/dh_0 = {grad:.6g}", end="")
        print(f" (w^{args.length} = {w**args.length:.6g})")
    panels = {
        "no clipping": measure(kinds, scales, args.length, args.hidden),
        f"clipped at {args.clip:g}": measure(kinds, scales, args.length, args.hidden, args.clip),
    }
    if args.run:  # the trained layers as curves beside the fresh cells
        for title, clip in zip(panels, (None, args.clip), strict=True):
            panels[title].update(measure_run(Path(args.run), args.length, clip))
    print(table(panels, args.length))
    plot(panels, Path(args.out), args.length)
    print(f"plot written to {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(panels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
