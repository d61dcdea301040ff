"""Emitted Triton code: executes (CPU interpreter here, unchanged on a GPU), matches the golden, is
deterministic and readable, and every injected fault is caught at the stage that was broken."""
from __future__ import annotations

import ast

import pytest
import torch

import builder
from builder.verify import compare, describe
from tests.faults import FAULTS, faulty_ops

KERNELS = ["dsv4_sparse_attn_decode", "dsv4_sparse_attn_decode_split_half",
           "dsv4_sparse_attn_decode_window_only", "dsv4_sparse_attn_decode_ratio128"]


@pytest.mark.parametrize("name", KERNELS)
def test_emitted_triton_matches_golden(lib, name):
    report = lib[name].verify("triton")
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert report.first_bad_stage is None
    assert {c.stage for c in report.stages} == set(lib[name].typed()[0].stages)


def test_layouts_give_different_outputs_each_matching_its_golden(lib):
    a, b = lib["dsv4_sparse_attn_decode"], lib["dsv4_sparse_attn_decode_split_half"]
    ins = a.make_inputs()
    out_a, out_b = a.run(ins)["o_packed"], b.run(ins)["o_packed"]
    tol = a.spec.tolerance
    assert not compare(out_a, out_b, tol).ok
    assert compare(out_a, a.golden(ins)["o_packed"], tol).ok
    assert compare(out_b, b.golden(ins)["o_packed"], tol).ok
    assert not compare(out_b, a.golden(ins)["o_packed"], tol).ok


def test_emitted_module_is_documented_and_has_no_dead_code(lib):
    k = lib["dsv4_sparse_attn_decode"]
    tree = ast.parse(k.emit("triton"))
    kernels = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("block")]
    assert len(kernels) == len(k.schedule.blocks)
    run = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "run")
    assert [a.arg for a in run.args.kwonlyargs] == list(k.spec.inputs)
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.While, ast.If)):
            assert not all(isinstance(s, ast.Pass) for s in node.body), ast.unparse(node)
    defined = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert defined <= used, f"module constants never read: {defined - used}"


def test_callers_with_stale_signature_fail_loudly(lib):
    k = lib["dsv4_sparse_attn_decode"]
    ins = k.make_inputs()
    with pytest.raises(ValueError, match="`even_select`: not an input"):
        k.run({**ins, "even_select": torch.zeros(32, 16)})
    bad = dict(ins, q=ins["q"].float())
    with pytest.raises(ValueError, match="`q` .*expected bf16"):
        k.run(bad)
    # the generated module checks its own callers too
    from builder.runtime import load_module, prepare_triton

    prepare_triton()
    module = load_module(k.emit("triton"), "triton", k.name)
    with pytest.raises(TypeError):
        module.run(**ins, even_select=torch.zeros(32, 16))
    with pytest.raises(ValueError, match="q: expected torch.bfloat16"):
        module.run(**bad)


@pytest.mark.parametrize("fault", FAULTS)
def test_injected_fault_is_caught_at_the_broken_stage(fault):
    op, edits, stage = FAULTS[fault]
    lib = builder.load("kernels.yaml", ops=faulty_ops(op, "triton", edits))
    report = lib["dsv4_sparse_attn_decode"].verify("triton")
    assert not report.ok
    assert not report.outputs["o_packed"].ok
    bad = report.first_bad_stage
    assert bad is not None and bad.stage == stage, "\n".join(describe(report, "kernels.yaml"))
    assert bad.line == lib["dsv4_sparse_attn_decode"].typed()[0].stages[stage].loc.line
    assert all(c.ok for c in report.stages if c.stage != stage)  # upstream and downstream blocks are fine
