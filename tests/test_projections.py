"""Stages 7-9 (grouped projection, A8 quant, W8A8 projection), kernel composition and speed of light."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import builder
from builder import sol
from builder.verify import compare, describe
from tests import reference
from tests.faults import faulty_ops

PROJECTION_FAULTS = {  # name -> (op, {Triton text: replacement}, stage expected first)
    "rows read token-major instead of group-major": ("grouped_matmul", {"(g * T + r)": "(r * O_GROUPS + g)"},
                                                     "proj_a"),
    "truncating instead of rounding": ("quant_rowwise_int8", {"round_half_even(x * sq)": "(x * sq)"}, "quant"),
    "per-channel scale dropped": ("matmul_w8a8", {" * w_scale[None, :]": ""}, "proj_b"),
}


def test_stage_goldens_match_independent_math(lib):
    k = lib["dsv4_sparse_attn_decode"]
    ins = k.make_inputs(seed=5)
    g = k.golden(ins, intermediates=True)
    groups = k.dims()["O_GROUPS"]
    heads = g["o_packed"].double().reshape(groups, k.dims()["T"], -1).transpose(0, 1)
    o_r = reference.bf16(torch.einsum("bgd,grd->bgr", heads, ins["wo_a"].double()).flatten(1))
    assert torch.equal(g["proj_a.y"].double(), o_r)
    amax = o_r.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    assert torch.equal(g["quant.q"].double(), torch.round(o_r * (127.0 / amax)))
    expected = reference.output_projections(heads.reshape(heads.shape[0], -1, k.dims()["D"]), ins, groups)
    assert compare(g["attn_out"], expected, k.spec.outputs["attn_out"].tolerance).ok


def test_quant_rounds_half_to_even_and_floors_amax(lib):
    op = __import__("stages").registry()["quant_rowwise_int8"]
    x = torch.tensor([[127.0, 0.5 * 127 / 127, 1.5, 2.5, -2.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    out = op.golden({"x": x}, op.Params(), None, {})
    assert out["q"][0].tolist() == [127, 0, 2, 2, -2]        # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2
    assert out["q"][1].tolist() == [0] * 5 and out["dequant"][1].item() == pytest.approx(1e-4 / 127)


def test_weight_fixture_quantizes_per_output_row(lib):
    ins = lib["dsv4_sparse_attn_decode"].make_inputs()
    assert ins["wo_b"].dtype == torch.int8 and ins["wo_b"].abs().amax(-1).eq(127).all()
    dims = lib["dsv4_sparse_attn_decode"].dims()
    w = ins["wo_b"].float() * ins["wo_b_scale"][:, None]
    assert w.abs().max() <= 0.5 * (dims["O_GROUPS"] * dims["O_LORA"]) ** -0.5 + 1e-6


def test_full_kernel_meets_upstream_tolerance_on_attn_out(lib):
    report = lib["dsv4_sparse_attn_decode"].verify("triton")
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert lib["dsv4_sparse_attn_decode"].spec.outputs["attn_out"].tolerance.rtol == 1 / 128


@pytest.mark.parametrize("fault", PROJECTION_FAULTS)
def test_projection_fault_is_caught_at_its_stage(fault):
    op, edits, stage = PROJECTION_FAULTS[fault]
    report = builder.load("kernels.yaml", ops=faulty_ops(op, "triton", edits))["dsv4_sparse_attn_decode"].verify()
    assert not report.ok
    assert report.first_bad_stage.stage == stage, "\n".join(describe(report, "kernels.yaml"))


def _stage_definitions(text: str) -> list[str]:
    """The text of each stage mapping in a kernels.yaml: its `op:` line and the lines indented at least as
    deep that follow it."""
    lines = text.splitlines()
    stages = []
    for i, line in enumerate(lines):
        if m := re.match(r"^(\s+)op: \w+", line):
            depth, block = len(m.group(1)), [line.strip()]
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) < depth:
                    break
                block.append(nxt.strip())
            stages.append("\n".join(b for b in block if b))
    return stages


def test_variants_share_stage_definitions():
    """Each stage definition is spelled out once in kernels.yaml: variants reuse it through `extends:` or
    anchors (the same op with other params or inputs is another definition)."""
    stages = _stage_definitions(Path("kernels.yaml").read_text())
    assert len(stages) > 9
    repeated = [s for s in stages if stages.count(s) > 1]
    assert not repeated, f"a stage definition is repeated: {repeated[0]}"
    lib = builder.load("kernels.yaml")
    for variant in ("dsv4_sparse_attn_decode_split_half", "dsv4_sparse_attn_decode_window_only",
                    "dsv4_sparse_attn_decode_ratio128"):
        assert lib[variant].spec.extends == "dsv4_sparse_attn_decode"
        assert list(lib[variant].spec.stages) == list(lib["dsv4_sparse_attn_decode"].spec.stages)
    assert [s.op for s in lib["dsv4_qkv_rope_forward"].spec.stages.values()] == [
        "rope_extract", "rope_apply", "rope_interleave", "pack"]


def test_ratio_variants_differ_only_in_sizes(lib):
    base = lib["dsv4_sparse_attn_decode"].spec
    for name, valid in (("dsv4_sparse_attn_decode_window_only", 0), ("dsv4_sparse_attn_decode_ratio128", 32)):
        spec = lib[name].spec
        assert spec.stages == base.stages and spec.inputs == base.inputs
        assert lib[name].dims("full")["CMP_VALID"] == valid


def test_speed_of_light_counts_matmul_flops_and_gathered_rows(lib):
    tg, sched = lib["dsv4_sparse_attn_decode"].typed("full")
    r = sol.report(tg, sched)
    d = tg.dims
    assert r["stages"]["proj_a"]["flops"] == 2 * d["T"] * d["O_GROUPS"] * d["O_LORA"] * d["O_GROUP_IN"]
    assert r["stages"]["attn"]["flops"] == 4 * d["T"] * d["H"] * d["TOPK"] * d["D"]
    pool_bytes = d["CMP_BLOCK_NUM"] * d["BLOCK_SIZE"] * d["D"] * 2
    assert r["stages"]["gather"]["bytes"] < pool_bytes  # reads the gathered rows, not the pools
    h100 = r["kernel"]["ideal_floor_us"]["H100"]
    assert h100 == pytest.approx(max(r["kernel"]["bytes"] / 3.35e12, 0) * 1e6, rel=0.5)
    assert r["kernel"]["schedule_floor_us"]["H100"] >= h100
    assert r["kernel"]["schedule_floor_us"]["Ascend910B"] is None
