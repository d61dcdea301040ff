"""A `fuse:` group becomes one loop block in every backend and still matches the golden."""
from __future__ import annotations

from pathlib import Path

import pytest

import builder
from builder.verify import describe

FUSED = ["extract", "rotate", "interleave", "pack"]


@pytest.fixture(scope="module")
def fused():
    text = Path("kernels.yaml").read_text()
    anchor = "    tolerance: {rtol: 0.001, atol: 0.001, max_error_ratio: 0.005}   # intermediates"
    assert anchor in text
    text = text.replace(anchor, f"    fuse: [[{', '.join(FUSED)}]]\n" + anchor, 1)
    return builder.load("kernels.yaml", text=text)["dsv4_sparse_attn_decode"]


def test_fused_group_is_one_block(fused):
    names = [b.name for b in fused.schedule.blocks]
    assert "_".join(FUSED) in names and len(names) == 9 - len(FUSED) + 1


@pytest.mark.parametrize("backend", ["triton", "pypto"])
def test_fused_block_matches_golden(fused, backend):
    report = fused.verify(backend)
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert {c.stage for c in report.stages} >= set(FUSED)


def test_fused_block_is_one_kernel_and_one_scope(fused):
    triton = fused.emit("triton")
    assert triton.count("def block2_extract_rotate_interleave_pack(") == 1
    assert triton.count("tl.debug_barrier()") == len(FUSED) - 1
    pypto = fused.emit("pypto")
    assert pypto.count('name_hint="extract_rotate_interleave_pack"') == 1
