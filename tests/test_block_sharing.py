"""Alike stages are type-checked once and their block kernels written once (builder/emit/template.py):
the code must be exactly what writing every block would give, and only truly alike blocks may share."""
from __future__ import annotations

import ast
import glob
import sys

import pytest

import builder
from builder import graph
from builder.emit import template, triton
from builder.emit.common import FileContext
from builder.emit.pypto import PyptoCtx
from builder.emit.triton import TritonCtx
from builder.yamlsource import frozen_data
from tests.faults import faulty_ops
from tests.spec_helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import build_speed  # noqa: E402


def _stage(sid: str, even: str, odd: str, params: str = "direction: inverse", order: str = "even-odd") -> str:
    ports = [f"even: {even}", f"odd: {odd}"]
    ports = ports if order == "even-odd" else ports[::-1]
    return f"      {sid}: {{op: rope_apply, in: {{{', '.join(ports)}, cos: c, sin: c}}, params: {{{params}}}}}\n"


# Each stage after s1 differs from the one before in one thing a block's code depends on, except s2 (alike
# s1) and the second fused pair (alike the first).
MIXED = f"""version: 1
sizes:
  small: {{T: 2, H: 16, R: 64}}
kernels:
  k:
    doc: alike and unlike rope_apply stages
    sizes: {{small: small}}
    inputs:
      e: {{shape: [T, H, R], dtype: bf16, layout: interleave, init: {{uniform: {{}}}}}}
      c: {{shape: [T, R], dtype: bf16, init: {{rope_table: {{fn: cos}}}}}}
    stages:
{_stage("s0", "e", "e")}{_stage("s1", "s0.even", "s0.odd")}{_stage("s2", "s1.even", "s1.odd")}\
{_stage("s3", "s2.even", "s2.odd", "direction: forward")}{_stage("s4", "s3.even", "s3.even")}\
{_stage("s5", "s4.even", "s4.odd", "direction: inverse, out_dtype: fp32")}{_stage("s6", "s5.even", "s5.odd")}\
{_stage("s7", "s6.even", "s6.odd", "direction: inverse, block_h: 4")}\
{_stage("s8", "s7.even", "s7.odd", order="odd-even")}{_stage("f0", "s8.even", "s8.odd")}\
{_stage("f1", "f0.even", "f0.odd")}{_stage("f2", "f1.even", "f1.odd")}{_stage("f3", "f2.even", "f2.odd")}\
    fuse: [[f0, f1], [f2, f3]]
    outputs:
      o_even: {{from: f3.even}}
      o_odd: {{from: f3.odd}}
"""


def _never_shared(monkeypatch) -> None:
    """Every block its own kind: each is written, as it was before blocks could share code."""
    monkeypatch.setattr(triton, "block_key", lambda block, refs: object())


def _emit_both_ways(monkeypatch, tg, sched) -> tuple[str, str, list[str], list[str]]:
    """(code with sharing, code without, names of the blocks whose kernel was filled in from another's
    code, and of those whose launcher lines were)."""
    filled: list[tuple[str, bool]] = []
    fill = template.Template.fill

    def noted(self, block, file, renames):
        filled.append((block.name, renames))
        return fill(self, block, file, renames)

    with monkeypatch.context() as m:
        m.setattr(template.Template, "fill", noted)
        shared = triton.emit(tg, sched)
    with monkeypatch.context() as m:
        _never_shared(m)
        alone = triton.emit(tg, sched)
    return shared, alone, [n for n, renames in filled if renames], [n for n, renames in filled if not renames]


def test_only_alike_blocks_share_code_and_the_code_is_unchanged(monkeypatch):
    kernel = builder.load("mixed.yaml", text=MIXED)["k"]
    shared, alone, filled, launcher = _emit_both_ways(monkeypatch, *kernel.typed())
    assert shared == alone
    assert filled == ["s2", "f2_f3"]  # s1 and the first fused pair are written; nothing else is alike
    assert launcher == filled
    assert kernel.verify("triton").ok


def test_alike_stages_share_params_and_types_but_not_unlike_ones():
    tg, _ = builder.load("mixed.yaml", text=MIXED)["k"].typed()
    st = tg.stages
    assert st["s1"].params is st["s2"].params and st["s2"].params is not st["s3"].params
    assert st["s1"].out_types["even"] is st["s2"].out_types["even"]
    assert st["s5"].out_types["even"].dtype.value == "fp32" and st["s6"].out_types["even"].dtype.value == "bf16"
    assert st["s6"].in_types["even"] is st["s5"].out_types["even"]
    assert st["s7"].tiles["block_h"].size == 4 and st["s6"].tiles["block_h"].size == 8


@pytest.mark.parametrize("path", ["kernels.yaml"] + sorted(glob.glob("tests/kernels/*.yaml")))
def test_sharing_leaves_every_kernel_unchanged(monkeypatch, path):
    lib = builder.load(path)
    for name in lib:
        for sizes in lib[name].spec.sizes:
            shared, alone, _, _ = _emit_both_ways(monkeypatch, *lib[name].typed(sizes))
            assert shared == alone, (name, sizes)


@pytest.mark.parametrize("path", ["kernels.yaml", "tests/kernels/general_ops.yaml", "mixed"])
def test_checking_alike_stages_once_leaves_every_kernel_unchanged(monkeypatch, path):
    """With every stage's params made distinct, no stage shares a check with another: the typed graphs,
    schedules and code of both backends must be what sharing gives."""
    text = MIXED if path == "mixed" else None

    def code(lib):
        return {(n, sizes, backend): lib[n].emit(backend, sizes) for n in lib for sizes in lib[n].spec.sizes
                for backend in ("triton", "pypto")}

    shared = builder.load(path, text=text)
    with monkeypatch.context() as m:
        m.setattr(graph, "frozen_data", lambda data: object())
        alone = builder.load(path, text=text)
    for name in shared:
        a, b = shared[name].typed(), alone[name].typed()
        assert a[0].types == b[0].types and a[1] == b[1], name
    assert code(shared) == code(alone)


def test_a_long_chain_writes_two_kernels_and_fills_the_rest(monkeypatch):
    kernel = builder.load("chain.yaml", text=build_speed.chain(40))["k"]
    shared, alone, filled, launcher = _emit_both_ways(monkeypatch, *kernel.typed())
    assert shared == alone and filled == [f"s{i}" for i in range(2, 40)]  # s0 reads one tensor as both parts
    assert launcher == filled


def test_a_body_edited_by_its_final_names_is_written_for_every_block(monkeypatch):
    """Fault injection edits tile bodies as they read (`ctx.show`, `ctx.hide`): such code depends on the
    names of its block, so no block shares it."""
    matched: set[str] = set()
    ops = faulty_ops("rope_apply", "triton", {"tl.load(s2_even_ptr": "tl.load(s2_odd_ptr"}, matched)
    kernel = builder.load("chain.yaml", text=build_speed.chain(5), ops=ops)["k"]
    shared, alone, filled, launcher = _emit_both_ways(monkeypatch, *kernel.typed())
    assert matched and shared == alone and filled == []
    assert launcher == ["s2", "s3", "s4"]  # the launcher's lines do not come from the tile body
    assert shared.count("tl.load(s2_odd_ptr + pair)") == 2  # block s3 reads both parts from s2's odd one


# ------------------------------------------------------------------ what a tile body can know

def _public(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


BODY_FIELDS = {"stage", "p", "dims", "phase"}  # set by BodyCtx.__init__, the rest are methods
MECHANISM = {"block", "tg", "file", "names"}   # the block's identity: what sharing must not depend on


def test_tile_bodies_read_only_what_the_block_key_covers():
    """Stage modules reach their context only through its methods and `stage`/`p`/`dims`/`phase`, and the
    stage only through `StageView`: nothing that names the block or stage, which alike blocks differ in."""
    allowed = (_public(TritonCtx) | _public(PyptoCtx) | BODY_FIELDS) - MECHANISM
    seen, stage_fields = set(), set()
    for path in sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("c", "ctx"):
                assert node.attr in allowed, f"{path.name}:{node.lineno}: tile body reads `{node.value.id}.{node.attr}`"
                seen.add(node.attr)
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "stage" and isinstance(node.value.value, ast.Name)
                    and node.value.value.id in ("c", "ctx")):
                stage_fields.add(node.attr)
                assert node.attr in template.StageView._fields, f"{path.name}:{node.lineno}: `c.stage.{node.attr}`"
    assert {"src", "dst", "const", "stage", "p"} <= seen and {"in_types", "tiles"} <= stage_fields
    tg, sched = builder.load("chain.yaml", text=build_speed.chain(2))["k"].typed()
    block = sched.blocks[1]
    ctx = TritonCtx(block.stages[0], block, tg, FileContext(tg), set())
    assert {n for n in vars(ctx) if not n.startswith("_")} == BODY_FIELDS | MECHANISM  # each field classified
    assert isinstance(ctx.stage, template.StageView) and not hasattr(ctx.stage, "id")


def test_frozen_data_tells_apart_what_params_validation_could():
    assert len({frozen_data(v) for v in (1, 1.0, True, "1", None, [1], {"a": 1})}) == 7
    assert frozen_data({"a": 1, "b": [2, {"c": 3}]}) == frozen_data({"a": 1, "b": [2, {"c": 3}]})
    assert frozen_data({"a": 1, "b": 2}) != frozen_data({"b": 2, "a": 1})
    hash(frozen_data({"a": [1, {"b": None}], 2: 0.5}))
