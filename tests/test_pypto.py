"""PyPTO backend: the emitted `pl` program is readable, documented, deterministic, carries a golden and
a harness that reproduce ours, runs on the torch-backed executor to match the golden, and every
injected fault is caught at the broken stage. The executor refuses constructs outside its subset."""
from __future__ import annotations

import ast
import re
import sys
import types

import pytest
import torch

import builder
from builder import plsim
from builder.runtime import run_emitted
from builder.verify import describe
from tests.faults import PYPTO_FAULTS, faulty_ops
from tests.spec_helpers import unread_constants, unread_names

KERNELS = ["dsv4_sparse_attn_decode", "dsv4_sparse_attn_decode_split_half", "dsv4_sparse_attn_decode_window_only",
           "dsv4_sparse_attn_decode_ratio128", "dsv4_qkv_rope_forward"]


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}


@pytest.mark.parametrize("name", KERNELS)
def test_executor_matches_golden(lib, name):
    report = lib[name].verify("pypto")
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert {c.stage for c in report.stages} == set(lib[name].typed()[0].stages)


def test_program_is_house_style_and_documented(lib):
    k = lib["dsv4_sparse_attn_decode"]
    tree = ast.parse(k.emit("pypto"))
    fns = functions(tree)
    kernel = fns[k.name]
    assert [d.attr for d in kernel.decorator_list] == ["jit"]
    params = [a.arg for a in kernel.args.args]
    assert params == list(k.spec.inputs) + list(k.spec.outputs)
    for a in kernel.args.args[len(k.spec.inputs):]:
        assert ast.unparse(a.annotation).startswith("pl.Out[pl.Tensor[[")
    scopes = sorted((w for w in ast.walk(kernel) if isinstance(w, ast.With)), key=lambda w: w.lineno)
    hints = [kw.value.value for w in scopes for kw in w.items[0].context_expr.keywords if kw.arg == "name_hint"]
    assert [h for h in hints if not h.endswith("_constants")] == [b.name for b in k.schedule.blocks]
    assert {"golden_" + k.name, "build_tensor_specs"} <= set(fns)
    main = [n for n in tree.body if isinstance(n, ast.If)][-1]
    assert "'--platform'" in ast.unparse(main) and "'--device'" in ast.unparse(main)
    assert "import torch" not in ast.unparse(tree.body[:5])  # torch only inside golden / harness helpers


def test_no_empty_loops_and_no_unused_values(lib):
    for name in KERNELS:
        tree = ast.parse(lib[name].emit("pypto"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.For, ast.While, ast.If, ast.With)):
                assert not all(isinstance(s, ast.Pass) for s in node.body), ast.unparse(node)[:80]
        assert not unread_names(functions(tree)[name]), f"{name}: values never read"
        assert not unread_constants(tree), f"{name}: constants never read: {unread_constants(tree)}"


def test_embedded_golden_and_harness_reproduce_the_builder(lib):
    """The file's own golden and tensor specs give exactly our golden and our fixtures."""
    k = lib["dsv4_sparse_attn_decode"]
    namespace, _ = plsim.load(k.emit("pypto"), "<test>")
    specs = []
    fake_golden = types.ModuleType("golden")
    fake_golden.TensorSpec = lambda name, shape, dtype, init_value=None, is_output=False: specs.append(
        (name, shape, dtype, init_value, is_output))
    sys.modules["golden"] = fake_golden
    try:
        namespace["build_tensor_specs"]()
    finally:
        del sys.modules["golden"]
    inputs = k.make_inputs()
    assert [s[0] for s in specs] == list(k.spec.inputs) + list(k.spec.outputs)
    tensors = {}
    for name, shape, dtype, init, is_output in specs:
        if is_output:
            tensors[name] = torch.zeros(shape, dtype=dtype)
        else:
            tensors[name] = init()
            assert torch.equal(tensors[name], inputs[name]), name
    namespace[f"golden_{k.name}"](tensors)
    expected = k.golden(inputs)
    for name in k.spec.outputs:
        assert torch.equal(tensors[name], expected[name]), name


def test_layout_switch_changes_only_the_rope_lane_code(lib):
    inter = lib["dsv4_sparse_attn_decode"].emit("pypto")
    split = lib["dsv4_sparse_attn_decode_split_half"].emit("pypto")
    assert "pl.gather(" in inter and "pl.gather(" not in split
    kernel_lines = lambda src: [l for l in src.split("def golden_")[0].splitlines()
                                if "extract" in l or "interleave" in l]
    assert kernel_lines(inter) != kernel_lines(split)


@pytest.mark.parametrize("fault", PYPTO_FAULTS)
def test_injected_fault_is_caught_at_the_broken_stage(fault):
    op, edits, stage = PYPTO_FAULTS[fault]
    k = builder.load("kernels.yaml", ops=faulty_ops(op, "pypto", edits))["dsv4_sparse_attn_decode"]
    report = k.verify("pypto")
    assert not report.ok
    bad = report.first_bad_stage
    assert bad is not None and bad.stage == stage, "\n".join(describe(report, "kernels.yaml"))
    assert all(c.ok for c in report.stages if c.stage != stage)


PROGRAM = """
import pypto.language as pl

@pl.jit
def k(x: pl.Tensor[[16, 16], pl.BF16], y: pl.Out[pl.Tensor[[16, 16], pl.BF16]]):
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="s"):
        {body}
    return y
"""


@pytest.mark.parametrize("body, message", [
    ("y[:, :] = pl.sigmoid(x)", "pl.sigmoid is outside the subset"),
    ("y[:, :] = pl.add(x, pl.cast(x, target_type=pl.FP32))", "no implicit promotion"),
    ("y[:, :] = pl.cast(x, target_type=pl.FP32)", "never casts implicitly"),
    ("y[0:8, :] = x", "shape"),
    ("y[:, :] = pl.row_expand_mul(x, x)", "row_expand_mul"),
    ("y[:, :] = pl.cast(pl.cast(x, target_type=pl.FP32), target_type=pl.BF16, mode='odd')", "mode 'odd'"),
    ("for i in pl.parallel(2):\n            y[:, :] = x", "pl.parallel inside a pl.at"),
])
def test_constructs_outside_the_subset_are_refused(body, message):
    x = torch.ones(16, 16, dtype=torch.bfloat16)
    with pytest.raises(plsim.Unsupported, match=message):
        plsim.run(PROGRAM.format(body=body), "<test>", "k", {"x": x}, {"y": ([16, 16], torch.bfloat16)})


def test_tensor_op_in_orchestration_is_refused():
    src = PROGRAM.replace('    with pl.at(level=pl.Level.CORE_GROUP, name_hint="s"):\n        {body}',
                          "    y[:, :] = pl.exp(x)")
    with pytest.raises(plsim.Unsupported, match="outside any pl.at"):
        plsim.run(src, "<test>", "k", {"x": torch.ones(16, 16, dtype=torch.bfloat16)},
                  {"y": ([16, 16], torch.bfloat16)})


def test_executor_semantics_match_the_pl_documentation():
    pl = plsim.PlLanguage()
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="t"):
        x = torch.tensor([[0.5, 1.5, 2.5, -2.5]], dtype=torch.float32)
        assert pl.cast(x, target_type=pl.INT32, mode="rint").tolist() == [[0, 2, 2, -2]]
        assert pl.cast(x, target_type=pl.INT32, mode="round").tolist() == [[1, 2, 3, -3]]
        assert pl.cast(x, target_type=pl.INT32, mode="trunc").tolist() == [[0, 1, 2, -2]]
        a = torch.full((16, 32), 127, dtype=torch.int8)
        assert pl.matmul(a, a, b_trans=True, out_dtype=pl.INT32)[0, 0].item() == 32 * 127 * 127
        assert pl.row_max(torch.ones(4, 8)).shape == (4, 1)
        v = torch.tensor([[1.00390625]], dtype=torch.float32)  # halfway between two bf16 values
        assert pl.cast(v, target_type=pl.BF16, mode="rint").item() == 1.0
        assert pl.cast(v, target_type=pl.BF16, mode="round").item() == 1.0078125
    buffer = pl.create_tensor([2, 2], dtype=pl.FP32)
    assert torch.isnan(buffer).all()  # unwritten regions cannot pass a comparison


REBIND = """
import pypto.language as pl

@pl.jit
def k(x: pl.Tensor[[8, 32], pl.FP32], y: pl.Out[pl.Tensor[[8, 32], pl.FP32]]):
{body}
    return y
"""
SCOPE, SCOPE2 = ('    with pl.at(level=pl.Level.CORE_GROUP, name_hint="{}"):'.format(n) for n in ("s", "s2"))
ROWS4 = "pl.slice(x, [4, 32], [0, 0])"
ROWS2 = "pl.slice(x, [2, 32], [0, 0])"
STORE = "y[0:2, :] = pl.slice(a, [2, 32], [0, 0])"


# Each program and PyPTO's answer: compiled with the real compiler (hw-native-sys/pypto e2d0f78ae,
# `kernel.compile(x, y)`), which either built it or raised `Cannot reassign 'a' with a different type`.
@pytest.mark.parametrize("lines, accepted", [
    ([SCOPE, f"        a = {ROWS4}", f"        a = {ROWS2}", f"        {STORE}"], True),
    ([SCOPE, f"        a = {ROWS4}", SCOPE2, f"        a = {ROWS2}", f"        {STORE}"], True),
    ([SCOPE, f"        a = {ROWS4}", "        a = pl.cast(a, target_type=pl.BF16)",
      "        y[0:4, :] = pl.cast(a, target_type=pl.FP32)"], True),
    (["    a = pl.create_tensor([8, 32], dtype=pl.FP32)", "    a = pl.create_tensor([4, 32], dtype=pl.FP32)",
      SCOPE, f"        y[0:4, :] = {ROWS4}"], True),
    (["    for j in pl.parallel(2):", "    " + SCOPE, f"            a = {ROWS4}", "    for j in pl.parallel(2):",
      "    " + SCOPE2, f"            a = {ROWS2}", f"            {STORE}"], True),
    ([SCOPE, f"        a = {ROWS4}", "        for i in pl.range(2):", f"            a = {ROWS2}",
      f"            {STORE}"], False),                          # rebound in a loop body
    ([SCOPE, f"        a = {ROWS4}", SCOPE2, "        for i in pl.range(2):", f"            a = {ROWS2}",
      f"            {STORE}"], False),                          # ... bound before it in another scope
    (["    a = pl.create_tensor([8, 32], dtype=pl.FP32)", SCOPE, "        for i in pl.range(2):",
      f"            a = {ROWS2}", f"            {STORE}"], False),  # ... bound in orchestration
    ([SCOPE, "        for i in pl.range(2):", f"            a = {ROWS4}", f"        a = {ROWS2}",
      f"        {STORE}"], False),                              # first bound in a loop body
    ([SCOPE, "        for i in pl.range(2):", f"            a = {ROWS4}", SCOPE2, f"        a = {ROWS4}",
      f"        a = {ROWS2}", f"        {STORE}"], False),      # ... which holds in every later scope
    ([SCOPE, f"        a = {ROWS4}", "        for i in pl.range(2):", f"            a = {ROWS4}",
      f"        a = {ROWS2}", f"        {STORE}"], True),       # after a loop that kept the type it had
])
def test_executor_holds_loop_carried_names_to_one_type_as_pyptos_parser_does(lines, accepted):
    run = lambda: plsim.run(REBIND.format(body="\n".join(lines)), "<test>", "k", {"x": torch.ones(8, 32)},
                            {"y": ([8, 32], torch.float32)})
    if accepted:
        run()
    else:
        with pytest.raises(plsim.Unsupported, match="rejects reassigning a loop-carried name with a different type"):
            run()


@pytest.mark.parametrize("file, kernel, sizes, suffix", [
    ("tests/kernels/general_ops.yaml", "norms", "odd", "_tail"),   # D = 72: a step of 64 in a loop, then 8
    ("tests/kernels/qwen3_odd.yaml", "paged_gqa_split", None, "_last_db_hb"),  # whole, then partial tiles
])
def test_tiles_of_another_shape_get_names_of_their_own(file, kernel, sizes, suffix):
    """The names the emitter keeps apart are ones the real compiler needs apart: without the suffix, the
    program is refused (PyPTO refused both: `Cannot reassign 'plain_chunked_x'` [8, 64] -> [8, 8] and
    `'attn_acc_s'` [3, 16] -> [3, 8])."""
    k = builder.load(file)[kernel]
    code = k.emit("pypto", sizes)
    assert suffix in code
    merged = re.sub(rf"\b([a-z]\w*?){suffix}\b", r"\1", code)
    tg = k.typed(sizes)[0]
    with pytest.raises(plsim.Unsupported, match="loop-carried name"):
        run_emitted(merged, "pypto", tg, k.make_inputs(0, sizes))


def test_attention_query_tile_is_padded_to_the_cube_rows():
    """Five query heads per KV head read as a 16-row slice whose valid rows are the real heads."""
    code = builder.load("kernels.yaml")["qwen3_14b_paged_attention"].emit("pypto", "full")
    q_tiles = {ast.unparse(node.value) for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Assign)
               and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "attn_q"}
    assert q_tiles == {"pl.slice(query_2d, [16, HEAD_DIM], [attn_r0, 0], valid_shape=[ATTN_HB_TAIL, HEAD_DIM])"}
