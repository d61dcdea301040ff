"""bench/build_speed.py runs (tiny sizes here: no timing is asserted) and stays free of torch."""
from __future__ import annotations

import json
import subprocess
import sys

import builder
from tests.spec_helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import build_speed  # noqa: E402


def test_generated_specs_load_at_every_size():
    chain = builder.load("chain.yaml", text=build_speed.chain(3))
    assert len(chain["k"].schedule.blocks) == 3 and chain["k"].graph.has_edge("stage:s1", "stage:s2")
    assert len(builder.load("library.yaml", text=build_speed.library(4))) == 4


def test_bench_prints_a_row_per_size_without_torch():
    proc = subprocess.run([sys.executable, "bench/build_speed.py", "--counts", "2,4", "--repeat", "1",
                           "--min-seconds", "0", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=True)
    rows = json.loads(proc.stdout)
    assert [(r["shape"], r["n"]) for r in rows] == [("chain", 2), ("chain", 4), ("library", 2), ("library", 4)]
    assert all(r["total_s"][0] > 0 for r in rows)
