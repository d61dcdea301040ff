"""Output tolerances: pypto-lib's comparators as policies (`compare: allclose | reldiff | codes`,
`positive`, `given`), validated where the YAML writes them, judged the way pypto-lib judges, and
carried into the generated PyPTO harness."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from builder import plsim
from builder.comparators import judge
from builder.golden import run_given
from builder.verify import compare
from tests import reference
from tests.spec_helpers import diagnostics, edit, position

GENERAL = Path(__file__).parent / "kernels" / "general_ops.yaml"


# ----------------------------------------------------------------------------------- the policies

def test_allclose_allows_the_rounded_count_of_bad_points():
    """pypto-lib's threshold is `round(max_error_ratio * numel)` (half to even): 0.25 of 10 points is 2."""
    expected = torch.zeros(10)
    for bad, ok in ((2, True), (3, False)):
        actual = torch.cat([torch.ones(bad), torch.zeros(10 - bad)])
        passed, figures = judge(actual, expected, rtol=0.0, atol=0.5, max_error_ratio=0.25)
        assert (passed, figures["bad"], figures["allowed"]) == (ok, bad, 2)


def test_reldiff_is_absolute_below_the_threshold_and_relative_above():
    policy = dict(compare="reldiff", diff=2e-3, max_error_ratio=0.0)
    assert judge(torch.tensor([1.9e-3]), torch.tensor([0.0]), **policy)[0]           # |d| < diff: never bad
    assert not judge(torch.tensor([1.0]), torch.tensor([1.01]), **policy)[0]          # 0.01 / 1.01 > diff
    assert judge(torch.tensor([100.0]), torch.tensor([100.1]), **policy)[0]           # 0.1 / 100.1 < diff
    # near zero the denominator is floored at 2^-14 / diff: 0.003 / 0.0305 = 0.098 > diff
    passed, figures = judge(torch.tensor([0.003]), torch.tensor([0.0]), **policy)
    assert not passed and figures["max_rel_err"] == pytest.approx(0.003 / (2 ** -14 / 2e-3 + 1e-9), rel=1e-6)


def test_codes_bound_the_step_the_count_and_each_row():
    expected = torch.zeros(2, 200, dtype=torch.int8)
    policy = dict(compare="codes", max_step=1, max_error_ratio=0.01, max_row_ratio=0.005)  # 4 in all, 1 a row
    one_each = expected.clone()
    one_each[0, 3], one_each[1, 7] = 1, -1
    assert judge(one_each, expected, **policy)[0]
    two_in_a_row = one_each.clone()
    two_in_a_row[0, 9] = 1
    passed, figures = judge(two_in_a_row, expected, **policy)
    assert not passed and figures["bad"] <= figures["allowed"] and "row 0 has 2 changed codes > 1" in figures["problem"]
    step = expected.clone()
    step[1, 0] = 2
    assert "max_step 1" in judge(step, expected, **policy)[1]["problem"]


def test_positive_and_nonfinite_values_fail_whatever_the_count():
    loose = dict(rtol=1.0, atol=1.0, max_error_ratio=1.0)
    assert judge(torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.1]), **loose)[0]
    assert not judge(torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.1]), positive=True, **loose)[0]
    assert not judge(torch.tensor([0.5, 0.5]), torch.tensor([0.5, float("nan")]), **loose)[0]
    assert not judge(torch.tensor([0.5, float("inf")]), torch.tensor([0.5, 0.5]), **loose)[0]


# ----------------------------------------------------------------------------------- the YAML

TOLERANCE = "tolerance: {rtol: 0.0, atol: 1.0, max_error_ratio: 0.01}"   # qkv_like's `qr`


@pytest.mark.parametrize("new, rule, token", [
    ("tolerance: {compare: codes, max_step: 1, rtol: 0.0}", "bad-value", "{compare: codes"),
    ("tolerance: {compare: reldiff, max_error_ratio: 0.01}", "bad-value", "{compare: reldiff"),
    ("tolerance: {compare: exact}", "bad-value", "exact"),
    ("tolerance: {compare: codes, max_step: -1}", "bad-value", "-1"),
    ("tolerance: {given: [qr_scale, nope]}", "unknown-ref", "nope"),
    ("tolerance: {given: [qr]}", "unknown-ref", "qr]"),
])
def test_a_bad_tolerance_is_located(new, rule, token):
    text = edit(GENERAL.read_text(), TOLERANCE, new, after="\n  qkv_like:")
    diags = [d for d in diagnostics(text, str(GENERAL)) if d.severity == "error"]
    line, col = position(text, token, after=["\n  qkv_like:", "qr: {from"])
    assert (rule, line, col) in {(d.rule, d.loc.line, d.loc.col) for d in diags}, [str(d) for d in diags]


def test_the_kernel_tolerance_stays_allclose():
    """It also judges every stage's own buffers, which no output-specific policy fits."""
    text = edit(GENERAL.read_text(), "    tolerance: {rtol: 0.0, atol: 0.0}",
                "    tolerance: {compare: reldiff, diff: 0.01}", after="\n  causal_masks:")
    assert "bad-value" in {d.rule for d in diagnostics(text, str(GENERAL))}


# ----------------------------------------------------------------------------------- given

def test_given_recomputes_the_output_from_the_kernels_own_values(lib):
    """q's reference starts from the qr codes and scale handed in: one changed code moves its row only."""
    k = lib["dsv4_pro_qkv_proj_rope"]
    tg = k.typed()[0]
    ins = k.make_inputs(seed=2)
    golden = k.golden(ins)
    codes = golden["qr"].clone()
    codes[1, :8] += torch.where(codes[1, :8] < 127, 1, -1).to(torch.int8)
    given = {tg.outputs["qr"]: codes, tg.outputs["qr_scale"]: golden["qr_scale"]}
    q = run_given(tg, ins, given, tg.outputs["q"])
    assert torch.equal(q[0], golden["q"][0]) and not torch.equal(q[1], golden["q"][1])
    model = reference.qkv_proj_rope(ins, k.dims()["ROPE_DIM"], codes, golden["qr_scale"])["q"]
    assert compare(q, model, k.spec.outputs["q"].tolerance).ok


def test_verification_judges_q_against_the_kernels_own_qr(lib):
    k = lib["dsv4_pro_qkv_proj_rope"]
    report = k.verify("pypto")
    assert report.ok and set(report.outputs) == {"q", "kv", "qr", "qr_scale"}


def compare_fn(code: str) -> dict:
    """output -> (comparator, its keyword arguments) of the `compare_fn=` a generated file hands run_jit."""
    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and ast.unparse(n.func) == "run_jit")
    table = next(k.value for k in call.keywords if k.arg == "compare_fn")
    return {ast.literal_eval(key): (ast.unparse(v.func), {k.arg: ast.unparse(k.value) if k.arg == "given" else
                                                          ast.literal_eval(k.value) for k in v.keywords})
            for key, v in zip(table.keys, table.values)}


def test_the_pypto_harness_carries_every_policy(lib):
    """The generated file's `compare_fn` uses pypto-lib's own comparators where they express the
    tolerance, and its copy of `judge` (with `golden_given_q` for q) where they do not; that copy judges
    the kernel's outputs as verification does."""
    code = lib["dsv4_pro_qkv_proj_rope"].emit("pypto")
    assert compare_fn(code) == {
        "q": ("tolerance_compare", dict(compare="allclose", rtol=1 / 128, atol=1e-4, max_error_ratio=0.005,
                                        given="golden_given_q")),
        "kv": ("ratio_allclose", dict(atol=1e-4, rtol=1 / 128, max_error_ratio=0.005)),
        "qr": ("tolerance_compare", dict(compare="codes", max_error_ratio=0.005, max_step=1, max_row_ratio=0.005)),
        "qr_scale": ("tolerance_compare", dict(compare="allclose", rtol=5e-3, atol=2.5e-5, max_error_ratio=0.0,
                                               positive=True))}
    assert compare_fn(lib["dsv4_pro_expert_shared"].emit("pypto")) == {
        "sh": ("ratio_reldiff", dict(diff_thd=2e-3, pct_thd=0.01))}
    namespace, _ = plsim.load(code, "<test>")
    k = lib["dsv4_pro_qkv_proj_rope"]
    ins = k.make_inputs(seed=2)
    out = k.run(ins, "pypto")
    outputs = {n: out[n] for n in k.spec.outputs}
    q_compare = namespace["tolerance_compare"](compare="allclose", rtol=1 / 128, atol=1e-4, max_error_ratio=0.005,
                                               given=namespace["golden_given_q"])
    kwargs = dict(actual_outputs=outputs, expected_outputs={}, inputs=ins, rtol=0.0, atol=0.0)
    assert q_compare(out["q"], None, **kwargs)[0]
    assert not q_compare(out["q"] * 1.1, None, **kwargs)[0]
