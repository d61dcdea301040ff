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
    ("init: {fill: {value: WIN + CMP_VALID}}", "init: {fill: {value: WIN + CMP_VALIDX}}", "undefined-dim",
     "CMP_VALIDX"),
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


def test_reference_fixture_values():
    """Section 5 of the reference: identity block tables, index rows, rope angles, quantized weights."""
    k = builder.load("kernels.yaml")["dsv4_sparse_attn_decode"]
    d, ins = k.dims(), k.make_inputs()
    assert ins["cmp_block_table"][1].tolist() == list(range(d["CMP_MAX_BLOCKS"], 2 * d["CMP_MAX_BLOCKS"]))
    row = ins["cmp_sparse_indices"][0].tolist()
    assert row[: d["WIN"]] == list(range(d["WIN"])) and row[d["WIN"]] == d["WIN"]
    assert ins["seqused_kv"].tolist() == [d["WIN"] + d["CMP_VALID"]] * d["T"]
    angles = torch.arange(d["T"] * d["HALF_ROPE"], dtype=torch.float64).reshape(d["T"], -1) * 1e-3
    torch.testing.assert_close(ins["freqs_cos"][:, : d["HALF_ROPE"]].double(), torch.cos(angles).to(torch.bfloat16).double())
    assert torch.equal(ins["freqs_sin"][:, : d["HALF_ROPE"]], ins["freqs_sin"][:, d["HALF_ROPE"]:])
