"""bench/bench_serve.py's pure parts: method parsing, the numbers it reports and the process-tree memory.

The bench itself starts servers and runs for minutes; it is run by hand (docs/benchmarks.md#serving).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_serve.py"
_spec = importlib.util.spec_from_file_location("bench_serve", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_parse_methods():
    assert bench.parse_methods("fp32:1, int8:16,onnx-int8:32") == [
        ("fp32", 1),
        ("int8", 16),
        ("onnx-int8", 32),
    ]
    for bad in ("fp16:4", "fp32", "fp32:0", "int8:x"):
        with pytest.raises(ValueError, match=f"method '{bad}': expected PRECISION:BATCH"):
            bench.parse_methods(bad)
    with pytest.raises(ValueError, match="no method"):
        bench.parse_methods(" , ")


def test_summarize_and_mean_batch():
    s = bench.summarize([i / 100 for i in range(100, 0, -1)], wall=4.0)  # 10 ms .. 1000 ms, unordered
    assert s["requests"] == 100 and s["rps"] == 25.0
    assert s["p50_ms"] == pytest.approx(505.0) and s["p99_ms"] == pytest.approx(990.1)
    before = {"requests": 10, "batches": 10, "batch_sizes": {"1": 10}}
    after = {"requests": 74, "batches": 14, "batch_sizes": {"1": 10, "16": 4}}
    assert bench.mean_batch(before, after) == 16.0
    assert bench.mean_batch(after, after) != bench.mean_batch(after, after)  # no batch: nan


def _row(prec, batch, clients, rps):
    return {
        "precision": prec,
        "batch": batch,
        "clients": clients,
        "rps": rps,
        "p50_ms": 12.4,
        "p99_ms": 30.6,
        "mean_batch": 1.0 if batch == 1 else 7.25,
        "rss_before_mb": 900.2,
        "rss_after_mb": 901.7,
    }


def test_ratios_are_to_batch_one_of_the_same_precision_and_clients():
    rows = [
        _row("fp32", 1, 32, 10.0),
        _row("fp32", 16, 32, 25.0),
        _row("fp32", 16, 8, 12.0),  # no batch-1 row at 8 clients
        _row("int8", 1, 32, 20.0),
        _row("int8", 16, 32, 30.0),
        {"precision": "onnx", "batch": 16, "clients": "all", "error": "the server exited (1): bad"},
    ]
    bench.add_ratios(rows)
    assert [r["ratio"] for r in rows] == [1.0, 2.5, None, 1.0, 1.5, None]
    lines = bench.table(rows).splitlines()
    assert lines[0].startswith("| method | clients | req/s | p50 (ms) | p99 (ms) | mean batch | vs batch 1")
    assert lines[2] == "| fp32, batching off | 32 | 10.0 | 12 | 31 | 1.00 | 1.00× | 900 → 902 |"
    assert lines[3] == "| fp32, batch 16 | 32 | 25.0 | 12 | 31 | 7.25 | 2.50× | 900 → 902 |"
    assert "| 7.25 | — |" in lines[4]
    assert lines[7] == "| onnx, batch 16 | all | failed: the server exited (1): bad | | | | | |"


def test_memory_line_and_soak_table():
    samples = [(0, 800.0), (100, 850.0), (500, 870.0), (1000, 860.0)]
    m = bench.memory_line(samples)
    assert m == {"start": 800.0, "end": 860.0, "max": 870.0, "growth_from_10pct": 10.0}
    soak = {"precision": "fp32", "batch": 16, "clients": 8, "requests": 1000, "rps": 41.26, "processes": 3}
    line = bench.soak_table([soak | m]).splitlines()[-1]
    assert line == "| fp32, batch 16 | 8 | 1000 | 41.3 | 800 → 860, max 870 (3 proc.) | +10 |"


def test_tree_rss_sums_the_children():
    own, n = bench.tree_rss(os.getpid())
    code = "import sys; x = b'1' * (64 << 20); print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"  # its 64 MiB are touched; it waits for stdin to close
        total, count = bench.tree_rss(os.getpid())
        assert count >= n + 1 and total - own > 64
        alone, one = bench.tree_rss(child.pid)
        assert one == 1 and 64 < alone < total
    finally:
        child.stdin.close()
        child.wait(30)
    assert bench.tree_rss(2**22 + 12345) == (0.0, 0)  # no such process
