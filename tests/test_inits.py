"""Init recipes: validated when the spec loads (located errors), deterministic, independent per tensor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import builder

TEXT = Path("kernels.yaml").read_text()


def first_error(old: str, new: str):
    """The first diagnostic of kernels.yaml with `old` replaced by `new`, and the line of `new`."""
    assert old in TEXT
    text = TEXT.replace(old, new, 1)
    with pytest.raises(builder.SpecError) as exc:
        builder.load("kernels.yaml", text=text)
    return exc.value.diagnostics[0], text.count("\n", 0, text.index(new)) + 1


@pytest.mark.parametrize("old, new, rule, message", [
    ("init: {rope_table: {fn: cos", "init: {rope_tabel: {fn: cos", "unknown-key", "unknown init recipe `rope_tabel`"),
    ("init: {dequant_scale: {of: wo_b}}", "init: {dequant_scale: {of: wo_a}}", "bad-value", "`wo_a` is not an input"),
    ("init: {randint: {low: WIN + CMP_VALID // 2,", "init: {randint: {low: WIN + CMP_VALID // 2X,", "bad-expr",
     "// 2X"),
    ("high: WIN + CMP_VALID + 1}}", "high: WIN + CMP_VALIDX + 1}}", "undefined-dim", "CMP_VALIDX"),
    ("{block_table: {pages: CMP_BLOCK_NUM}}", "{block_table: {pages: CMP_BLOCK_NUM - 1}}", "bad-value",
     "physical pages"),
    ("init: {uniform: {low: -0.5, high: 0.5}}\n        doc: queries", "init: {block_table: {pages: 4}}\n"
     "        doc: queries", "bad-value", "fills 2-D tensors, and the input is 3-D"),
    ("{fn: sin, step: 0.001}", "{fn: tan, step: 0.001}", "bad-value", "'cos' or 'sin'"),
])
def test_bad_recipe_is_a_located_error(old, new, rule, message):
    d, line = first_error(old, new)
    assert d.rule == rule and message in d.message
    assert d.loc.line == line


def test_fixtures_are_deterministic_and_independent_per_tensor():
    k = builder.load("kernels.yaml")["dsv4_sparse_attn_decode"]
    a, b = k.make_inputs(seed=7), k.make_inputs(seed=7)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["q"], k.make_inputs(seed=8)["q"])
    extra = TEXT.replace("      q: &q_input\n", "      extra:\n        shape: [T]\n        dtype: fp32\n"
                         "        init: {uniform: {}}\n      q: &q_input\n", 1)
    lib = builder.load("kernels.yaml", text=extra)
    c = lib["dsv4_sparse_attn_decode"].make_inputs(seed=7)
    assert all(torch.equal(a[n], c[n]) for n in a)  # adding an input leaves the others unchanged


def test_fixtures_expose_page_table_length_and_mask_faults():
    """The fixtures are built so that a gather ignoring the page table or `seqused`, or attention
    dropping a key block's validity mask, changes the result (tests/test_triton.py injects those faults)."""
    k = builder.load("kernels.yaml")["dsv4_sparse_attn_decode"]
    d, ins = k.dims(), k.make_inputs()
    for table, pool in (("ori_block_table", "ORI_BLOCK_NUM"), ("cmp_block_table", "CMP_BLOCK_NUM")):
        pages = ins[table].flatten().tolist()
        assert len(set(pages)) == len(pages) and 0 <= min(pages) and max(pages) < d[pool]
        assert pages != list(range(len(pages)))  # not the identity: the table matters
    rows = ins["cmp_sparse_indices"]
    valid = d["WIN"] + d["CMP_VALID"]
    for row in rows.tolist():
        kept = [s for s in row[:valid] if s != -1]
        assert kept == sorted(kept) and len(kept) < valid and row[valid - 1] == -1  # holes, the last one too
        assert all(s == -1 for s in row[valid:])
    slots = (rows != -1).sum(dim=1)
    assert (ins["seqused_kv"] < slots).any()  # some tokens see fewer keys than their slots name
    assert (ins["seqused_kv"] >= d["WIN"]).all()
    angles = torch.arange(d["T"] * d["HALF_ROPE"], dtype=torch.float64).reshape(d["T"], -1) * 1e-3
    torch.testing.assert_close(ins["freqs_cos"][:, : d["HALF_ROPE"]].double(),
                               torch.cos(angles).to(torch.bfloat16).double())
    assert torch.equal(ins["freqs_sin"][:, : d["HALF_ROPE"]], ins["freqs_sin"][:, d["HALF_ROPE"]:])
