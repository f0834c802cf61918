"""rnnkit bench on tiny sizes: the structure of its JSON and its tables, not its speed."""

from __future__ import annotations

import json
import math

import pytest

from rnnkit.kernels import autotune, hardware
from rnnkit.tools import bench
from rnnkit.tools.bench_report import TORCH_LSTM

TINY = bench.Plan(
    sizes=((2, 3, 8),),
    repeats=1,
    length_repeats=1,
    stream_hidden=(8,),
    stream_seconds=0.001,
    lengths=(2, 4),
    length_size=(2, 8),
    memory_size=(2, 3, 8),
)
SECTIONS = ("training", "bf16", "inference", "streaming", "length", "memory", "targets")


@pytest.fixture(scope="module")
def result(tmp_path_factory, one_thread_for_module):
    """The JSON of a tiny ``rnnkit bench --quick --threads 1``; ``--threads`` sets torch's
    count and leaves it, so the fixture puts the old count back after the module."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "QUICK", TINY)
        assert bench.main(["--quick", "--json", str(path), "--threads", "1"]) == 0
    return json.loads(path.read_text())


def positive_finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_json_has_every_section_and_the_run_description(result):
    for key in (*SECTIONS, "command", "date", "torch", "threads", "plan", "notes"):
        assert key in result
    assert result["cpu"] == hardware.cpu_model()
    assert result["cpu_features"] == hardware.cpu_features()
    assert result["autotune"] == "by rule (RNNKIT_AUTOTUNE=0)"  # as conftest.py sets it
    assert result["command"].startswith("rnnkit bench --quick --json ")
    assert result["threads"] == 1
    assert result["plan"]["sizes"] == [[2, 3, 8]]


def test_training_rows_compare_every_cell_with_its_peers(result):
    rows = result["training"]
    pairs = {(r["cell"], r["peer"]) for r in rows}
    expected = {(cell, "torch.nn") for cell in bench.CELLS} | {("peephole", "python loop")}
    notes = result["notes"].get("training", "")
    for cell, peer in expected:  # timed, or a note says why not
        assert (cell, peer) in pairs or f"{cell} H=8" in notes, (cell, peer)
    for row in rows:
        for key in ("tokens_per_s", "peer_tokens_per_s", "ratio", "gflops", "peer_gflops"):
            assert positive_finite(row[key]), (key, row)
        assert row["ratio"] == pytest.approx(row["tokens_per_s"] / row["peer_tokens_per_s"])


def test_speed_rows_name_the_kernel_auto_ran(result):
    for section in ("training", "bf16", "inference"):
        for row in result[section]:
            assert row["kernel"] in ("fused", "torch"), (section, row)
    for row in result["length"] + result["memory"]:
        expected = (None,) if row["cell"] == TORCH_LSTM else ("fused", "torch")
        assert row["kernel"] in expected, row
    peephole = [row["kernel"] for row in result["training"] if row["cell"] == "peephole"]
    assert set(peephole) == {"fused"}


def test_speed_rows_say_why_auto_chose_their_kernel(result):
    """Tuning is off in the tests (conftest.py): the rule chose, or there was one candidate
    (the peephole LSTM's fused path; in bf16 without native bfloat16, every cell's)."""
    for section in ("training", "bf16", "inference"):
        for row in result[section]:
            assert row["candidates"] in ("rule", "only candidate"), (section, row)
            assert row["candidates_ms"] == {}, (section, row)
            if row["cell"] == "peephole":
                assert row["candidates"] == "only candidate", (section, row)


def test_speed_rows_list_each_timed_candidate(tmp_path, monkeypatch, one_thread):
    """With tuning on, a row lists the time of every candidate the autotuner timed (here a
    stand-in timing) beside the kernel it chose."""
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "1")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    fixed = {"fused": 2e-3, "torch": 1e-3}
    timing = lambda layer, kernels, *_: {k: fixed[k] for k in kernels}  # noqa: E731
    monkeypatch.setattr(autotune, "TUNER", autotune.Tuner(timing))
    monkeypatch.setattr(bench, "CELLS", ("gru", "peephole"))
    rows, _ = bench.speed_rows(TINY, bench.inference_steps, passes=1)
    by_cell = {row["cell"]: row for row in rows}
    assert by_cell["gru"]["candidates"] == "fused 2, torch 1 ms"
    assert by_cell["gru"]["candidates_ms"] == {"fused": 2.0, "torch": 1.0}
    assert by_cell["gru"]["kernel"] == "torch"
    assert by_cell["peephole"]["candidates"] == "only candidate"


def test_tune_times_the_candidates_and_fills_the_cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RNNKIT_AUTOTUNE", "1")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "QUICK", TINY)
    monkeypatch.setattr(autotune, "TUNER", autotune.Tuner())
    path = tmp_path / "tune.json"
    assert bench.main(["--quick", "--tune", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["tune"]
    cases = {(row["cell"], row["mode"], row["precision"]) for row in rows}
    assert cases == {(c, m, p) for c in bench.CELLS for m, p in bench.TUNED_CASES}
    for row in rows:
        timed = {key.removesuffix("_ms") for key in row if key.endswith("_ms")}
        assert timed in ({"fused", "torch"}, set()), row
        if timed:
            assert all(positive_finite(row[f"{k}_ms"]) for k in timed)
            assert row["kernel"] == min(timed, key=lambda k: row[f"{k}_ms"])
    assert {r["kernel"] for r in rows if r["cell"] == "peephole"} == {"fused"}
    (cache,) = tmp_path.glob("autotune-*.json")
    kernels = [k for k in json.loads(cache.read_text())["choices"] if not k.startswith("linear ")]
    assert len(kernels) == sum(len({k for k in row if k.endswith("_ms")}) > 0 for row in rows)


def test_speed_sections_have_positive_finite_ratios(result):
    for section in ("bf16", "inference"):
        for row in result[section]:
            assert positive_finite(row["ratio"]), (section, row)
    assert result["bf16"] or result["notes"]["bf16"]  # rows, or why there are none


def test_streaming_rows_time_tokens_and_vectors_against_torch_cells(result):
    rows = result["streaming"]
    assert {r["cell"] for r in rows} == set(TINY.stream_cells)
    for row in rows:
        assert row["hidden"] == 8
        for key in ("token_us", "vector_us", "torch_us", "ratio_token", "ratio_vector"):
            assert positive_finite(row[key]), (key, row)
        assert row["torch_us"] == min(row["torch_default_threads_us"], row["torch_one_thread_us"])


def test_length_rows_are_relative_to_the_cheapest_length(result):
    rows = result["length"]
    assert [r["length"] for r in rows] == [2, 4, 2, 4, 2, 4]
    for cell in ("lstm", "peephole", bench.TORCH_LSTM):
        relative = [r["relative"] for r in rows if r["cell"] == cell]
        assert min(relative) == 1.0 and all(positive_finite(v) for v in relative)


def test_memory_rows_are_finite_and_not_negative(result):
    if not result["memory"]:
        assert "clear_refs" in result["notes"]["memory"]
        return
    for row in result["memory"]:
        for key in ("peak_mb", "torch_peak_mb", "memory_ratio"):
            assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
        torch_bytes = max(row["torch_peak_mb"] * 2**20, 1)  # the ratio's guard against 0
        assert row["memory_ratio"] == pytest.approx(row["peak_mb"] * 2**20 / torch_bytes), row


def test_targets_name_issue_targets_one_to_five(result):
    names = [t["target"] for t in result["targets"]]
    assert [n.split()[0] for n in names] == ["1", "2a", "2b", "3", "4a", "4b", "4c", "5"]
    for target in result["targets"]:
        assert target["met"] in (True, False, None)
        assert (target["met"] is None) == (target["worst"] is None), target  # judged on rows
    four_a = result["targets"][4]
    assert four_a["met"] is None  # the tiny plan streams at H=8 only: no H=256 row to judge


def test_target_5_reads_rnnkit_sweeps_only_not_torch_reference(result):
    rows = [dict(r, relative=1.0) for r in result["length"]]
    reference = [dict(r, relative=3.0) for r in rows if r["cell"] == bench.TORCH_LSTM]
    ours = [r for r in rows if r["cell"] != bench.TORCH_LSTM]
    flat = bench.targets(dict(result, length=ours + reference))[-1]
    assert flat["met"] is True and flat["worst"] == 1.0
    steep = [dict(ours[0], relative=1.2)] + ours[1:] + reference
    assert bench.targets(dict(result, length=steep))[-1] == {
        "target": "5 time per token flat within 15%",
        "met": False,
        "worst": 1.2,
    }


def test_table_is_markdown_with_three_significant_digits():
    text = bench.table([{"a": 1.23456, "b": 12345.6, "c": None}], "a b c")
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.23 | 12346 | - |"]
