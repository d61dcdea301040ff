"""Generated code is reviewed like code: the emitted files of the bundled kernels are kept under
tests/snapshots/, so every change to an emitter or a stage shows up as a diff of generated code (and
a refactor proves itself by leaving them unchanged). Regenerate with

    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_snapshots.py
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import builder

SNAPSHOTS = Path(__file__).parent / "snapshots"
CASES = [(k, b) for k in ("dsv4_sparse_attn_decode", "dsv4_sparse_attn_decode_split_half") for b in ("triton", "pypto")]


@pytest.mark.parametrize("kernel, backend", CASES)
def test_emitted_code_matches_snapshot(kernel, backend):
    code = builder.load("kernels.yaml")[kernel].emit(backend)
    path = SNAPSHOTS / f"{kernel}_{backend}.py.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(code)
    assert path.exists(), f"no snapshot {path.name}: run with UPDATE_SNAPSHOTS=1"
    assert code == path.read_text(), f"{path.name} is stale: review the diff, then run with UPDATE_SNAPSHOTS=1"
