"""What ``rnnkit bench`` reports: the issue's targets against a run's numbers, and the
Markdown tables of its sections (:mod:`rnnkit.tools.bench` measures them)."""

from __future__ import annotations

TORCH_LSTM = "lstm (torch.nn)"  # the length sweep's reference rows, not a target's


def targets(result: dict) -> list[dict]:
    """The issue's targets 1-5 against this run's numbers (speed only for target 3)."""
    train = result["training"]
    standard = [r["ratio"] for r in train if r["cell"] != "peephole"]
    peephole = [r["ratio"] for r in train if r["cell"] == "peephole" and r["peer"] == "torch.nn"]
    loop = [r["ratio"] for r in train if r["peer"] == "python loop"]
    bf16 = [r["ratio"] for r in result["bf16"]]
    stream = result["streaming"]
    at_256 = [r["ratio_token"] for r in stream if r["cell"] == "lstm" and r["hidden"] == 256]
    by_token, by_vector = [r["ratio_token"] for r in stream], [r["ratio_vector"] for r in stream]
    spreads = [r["relative"] for r in result["length"] if r["cell"] != TORCH_LSTM]
    checks = [
        ("1 LSTM/GRU/RNN training >= 0.95x torch.nn", standard, lambda v: min(v) >= 0.95),
        ("2a peephole training >= 0.8x torch.nn.LSTM", peephole, lambda v: min(v) >= 0.8),
        ("2b peephole training >= 2.5x Python loop", loop, lambda v: min(v) >= 2.5),
        ("3 bf16 training >= 1.8x fp32 (speed only)", bf16, lambda v: min(v) >= 1.8),
        ("4a streaming LSTM H=256 >= 6x torch.nn.LSTMCell", at_256, lambda v: min(v) >= 6),
        ("4b streaming by token faster at every size", by_token, lambda v: min(v) > 1),
        ("4c streaming by vector faster at every size", by_vector, lambda v: min(v) > 1),
        ("5 time per token flat within 15%", spreads, lambda v: max(v) <= 1.15),
    ]
    rows = []
    for name, values, passes in checks:
        if not values:
            rows.append({"target": name, "met": None, "worst": None})
            continue
        worst = max(values) if name.startswith("5") else min(values)
        rows.append({"target": name, "met": bool(passes(values)), "worst": worst})
    return rows


def candidates(decision: dict) -> dict:
    """A speed row's kernel and why (:func:`rnnkit.kernels.autotune.decision`): each timed
    candidate's milliseconds (``candidates_ms``) and, for the table, one line of them
    (``candidates``: "fused 12.1, torch 10.3 ms"), or how the kernel was chosen."""
    ms = {kernel: seconds * 1e3 for kernel, seconds in decision["seconds"].items()}
    line = ", ".join(f"{kernel} {number(value)}" for kernel, value in ms.items()) + " ms"
    text = line if ms else decision["by"]
    return {"kernel": decision["kernel"], "candidates": text, "candidates_ms": ms}


SIZE = "cell batch length hidden"
COLUMNS = {
    "training": f"{SIZE} kernel candidates peer tokens_per_s peer_tokens_per_s ratio gflops "
    "peer_gflops",
    "bf16": f"{SIZE} kernel candidates peer tokens_per_s peer_tokens_per_s ratio gflops",
    "inference": f"{SIZE} kernel candidates peer tokens_per_s peer_tokens_per_s ratio",
    "streaming": "cell hidden token_us vector_us torch_us torch_default_threads_us "
    "torch_one_thread_us ratio_token ratio_vector",
    "length": "cell kernel batch hidden length us_per_token relative",
    "memory": f"{SIZE} kernel peak_mb torch_peak_mb memory_ratio",
    "targets": "target met worst",
    "tune": "cell precision mode batch hidden fused_ms torch_ms kernel",
}


def number(value: float) -> str:
    """3 significant digits, whole numbers above 1000."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(rows: list[dict], columns: str) -> str:
    """A Markdown table, numbers to 3 significant digits (whole numbers above 1000)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return number(value)
        return "-" if value is None else str(value)

    columns = columns.split()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
