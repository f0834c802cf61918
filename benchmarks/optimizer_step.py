"""One optimiser step over the weights of two task models, in torch's three ways: its
default loop over the weights, ``foreach`` (lists of weights per operation) and ``fused``
(one kernel), on 1 thread (one process of a 2-process run).

    PYTHONPATH=src python benchmarks/optimizer_step.py

Why it matters: under torchrun every process takes the whole optimiser step, so its time is
not divided by the processes (``rnnkit bench distributed``); on one process it is a share of
every step too.
"""

import time

import torch

SHAPES = {  # the weights of each model, by shape
    "classify (1.3 M weights)": [(20000, 64), (256, 64), (256, 64), (256,), (256,), (2, 64), (2,)],
    "charlm (0.6 M weights)": [(1152, 84), (1152, 384), (1152,), (1152,), (84, 384), (84,)],
}
KINDS = {
    "default loop": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}


def milliseconds(shapes, options, steps: int = 30) -> float:
    weights = [torch.nn.Parameter(torch.randn(*shape)) for shape in shapes]
    for w in weights:
        w.grad = torch.randn_like(w)
    optimizer = torch.optim.AdamW(weights, lr=1e-3, weight_decay=0.1, **options)
    for _ in range(3):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'model':26} " + " ".join(f"{k:>14}" for k in KINDS))
    for name, shapes in SHAPES.items():
        times = [milliseconds(shapes, options) for options in KINDS.values()]
        print(f"{name:26} " + " ".join(f"{t:11.2f} ms" for t in times))


if __name__ == "__main__":
    main()
