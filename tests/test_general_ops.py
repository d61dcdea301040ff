"""The general ops (rmsnorm, elementwise, matmul, causal_index_mask): every kernel of
tests/kernels/general_ops.yaml verifies on both backends at powers of two, odd extents and extents of
1; the goldens match independent math (the A5 summation order bit for bit); the expression language
refuses what it does not know, at the param; injected faults are caught at their stages."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import builder
from builder import plsim
from builder.inputs import InputError
from builder.verify import describe
from stages import registry
from stages.elementwise import parse
from tests import reference
from tests.faults import faulty_ops
from tests.spec_helpers import diagnostics, edit, position, unread_constants, unread_names

GENERAL = Path(__file__).parent / "kernels" / "general_ops.yaml"
KERNELS = ["norms", "elementwise_ops", "broadcast_edges", "matmuls", "causal_masks", "qkv_like", "mtp_like",
           "expert_like", "rotary_ops", "reshapes"]
SIZES = ["small", "odd", "tiny"]


@pytest.fixture(scope="module")
def lib():
    return builder.load(GENERAL)


@pytest.fixture(scope="module")
def text():
    return GENERAL.read_text()


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("name", KERNELS)
def test_every_kernel_verifies_on_both_backends(lib, name, sizes, backend):
    """small: powers of two; odd: T=3, H=5, D=200, N=100, K=200...; tiny: T=1, N=1, I=1, D=12."""
    report = lib[name].verify(backend, sizes)
    assert report.ok, "\n".join(describe(report, str(GENERAL)))
    assert {c.stage for c in report.stages} == set(lib[name].typed(sizes)[0].stages)


@pytest.mark.parametrize("name", KERNELS)
def test_the_goldens_copied_into_the_pypto_file_reproduce_ours(lib, name):
    """Each golden is self-contained: the copies in the emitted file give our golden, bit for bit."""
    k = lib[name]
    namespace, _ = plsim.load(k.emit("pypto", "odd"), "<test>")
    ins = k.make_inputs(sizes="odd")
    tensors = {**{n: t.clone() for n, t in ins.items()}, **{n: torch.zeros_like(t) for n, t in
                                                            k.golden(ins, sizes="odd").items()}}
    namespace[f"golden_{name}"](tensors)
    for out, expected in k.golden(ins, sizes="odd").items():
        assert torch.equal(tensors[out], expected), out


def test_the_size_sets_are_what_they_claim(lib):
    for name in KERNELS:
        extents = {d.value for t in lib[name].typed("odd")[0].types.values() for d in t.shape}
        assert any(e & (e - 1) for e in extents), name
    small = {d.value for t in lib["norms"].typed("small")[0].types.values() for d in t.shape}
    assert all(e & (e - 1) == 0 for e in small)
    assert 1 in {d.value for t in lib["matmuls"].typed("tiny")[0].types.values() for d in t.shape}


def test_emitted_code_has_no_dead_values(lib):
    for name in KERNELS:
        for backend in ("triton", "pypto"):
            tree = ast.parse(lib[name].emit(backend, "odd"))
            for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("golden")):
                assert not unread_names(fn), f"{name} {backend} {fn.name}: never read: {unread_names(fn)}"
            assert not unread_constants(tree), f"{name} {backend}: constants never read: {unread_constants(tree)}"


# ----------------------------------------------------------------------------------- rmsnorm goldens

def trowsum_a5(values: np.ndarray) -> np.float32:
    """A5 TROWSUM, one float32 operation at a time: 64-lane groups (zero padded), adjacent pairs in six
    levels, group sums added to 0 in order."""
    values = np.concatenate([values.astype(np.float32), np.zeros(-len(values) % 64, np.float32)])
    total = np.float32(0)
    for g in range(0, len(values), 64):
        level = list(values[g:g + 64])
        while len(level) > 1:
            level = [np.float32(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        total = np.float32(total + level[0])
    return total


def rms_reference(x: torch.Tensor, chunk: int, order: str, eps: float) -> torch.Tensor:
    """inv per row of the last axis, from the docstring's steps, in numpy float32."""
    rows = x.float().reshape(-1, x.shape[-1]).numpy()
    d = rows.shape[1]
    out = []
    for row in rows:
        sq = np.float32(0)
        for k0 in range(0, d, chunk):
            part = (row[k0:k0 + chunk] * row[k0:k0 + chunk]).astype(np.float32)
            s = trowsum_a5(part) if order == "a5" else np.float32(torch.from_numpy(part).sum().item())
            sq = np.float32(sq + s)
        arg = np.float32(np.float32(sq * np.float32(1.0 / d)) + np.float32(eps))
        out.append(np.float32(1.0 / np.sqrt(np.float64(arg))) if order == "a5"
                   else torch.rsqrt(torch.tensor(arg)).item())
    return torch.tensor(np.array(out, np.float32)).reshape(x.shape[:-1])


@pytest.mark.parametrize("order, chunk, width", [("a5", 96, 200), ("a5", 256, 1536), ("a5", 512, 512),
                                                 ("a5", 7, 30), ("plain", 128, 448), ("plain", 64, 200)])
def test_rmsnorm_golden_is_the_documented_summation(order, chunk, width):
    op = registry()["rmsnorm"]
    torch.manual_seed(width)
    x = torch.randn(6, width) * 3
    gamma = torch.rand(width) + 0.5
    p = op.Params(order=order, chunk=chunk, out_dtype="fp32")
    y = op.golden({"x": x, "gamma": gamma}, p, None, {})["y"]
    inv = rms_reference(x, chunk, order, p.eps)
    assert torch.equal(y, (x * inv[:, None]) * gamma)  # gamma after the scale, in fp32, bit for bit


def test_the_two_orders_differ_only_in_rounding():
    op = registry()["rmsnorm"]
    torch.manual_seed(1)
    x = torch.randn(64, 1536)
    a5 = op.golden({"x": x}, op.Params(order="a5", chunk=256, out_dtype="fp32"), None, {})["y"]
    plain = op.golden({"x": x}, op.Params(chunk=256, out_dtype="fp32"), None, {})["y"]
    assert not torch.equal(a5, plain)  # the order is observable...
    assert torch.allclose(a5, plain, rtol=1e-6, atol=0)  # ...at the last bits only


def test_rmsnorm_without_chunk_is_mean_of_squares_over_rows_of_any_rank():
    op = registry()["rmsnorm"]
    x = torch.randn(2, 3, 4, 64, dtype=torch.float32)
    y = op.golden({"x": x.to(torch.bfloat16)}, op.Params(eps=1e-3), None, {})["y"]
    xb = x.to(torch.bfloat16).double()
    expected = xb / torch.sqrt(xb.square().mean(-1, keepdim=True) + 1e-3)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.double(), expected, rtol=8e-3)


def test_triton_mirrors_the_a5_order_bit_for_bit(lib):
    """The Triton body sums 64-lane groups by adjacent pairs and adds them in order, like the golden
    (PyPTO's `pl.row_sum` is the hardware's own order; the executor sums in torch's)."""
    k = lib["norms"]
    for sizes in ("small", "odd"):
        ins = k.make_inputs(sizes=sizes, seed=3)
        out, golden = k.run(ins, "triton", sizes=sizes), k.golden(ins, sizes=sizes)
        for name in ("a5_chunked", "a5_row"):
            assert torch.equal(out[name], golden[name]), (sizes, name)


# ------------------------------------------------------------------------------- elementwise goldens

def test_swiglu_is_expert_shared_math():
    op = registry()["elementwise"]
    gate, up = torch.randn(4, 64) * 12, torch.randn(4, 64) * 12
    p = op.Params(expr="silu(min(gate, 10)) * clamp(up, -10, 10)")
    types = {"gate": _t([4, 64]), "up": _t([4, 64]), "y": _t([4, 64])}
    y = op.golden({"gate": gate, "up": up}, p, None, types)["y"]
    g = gate.clamp(max=10)
    assert torch.equal(y, (g * (1 / (torch.exp(-g) + 1))) * up.clamp(-10, 10))
    assert torch.allclose(y, torch.nn.functional.silu(g) * up.clamp(-10, 10), rtol=3e-7, atol=1e-6)
    assert (gate > 10).any() and (up.abs() > 10).any()


def test_broadcast_views_are_mtp_add_and_row_scales(lib):
    k = lib["elementwise_ops"]
    ins = k.make_inputs(sizes="odd")
    g = k.golden(ins, sizes="odd", intermediates=True)
    e, h = ins["e"], ins["h"].float()
    assert torch.equal(g["mtp_add.y"], e[:, None, :] + h)
    s = ins["row_scale"][:, None, None]
    expected = (g["mtp_add.y"] * ins["smooth"] / s - 1 / s).to(torch.bfloat16)
    assert torch.equal(g["smoothed.y"], expected)
    assert torch.equal(g["cast.y"], ins["h"])


def test_expressions_are_parsed_folded_and_bounded():
    program, ports = parse("x * (1 / 4) - -2 + min(y, 3 * 2) + +x")
    assert ports == ("x", "y")
    assert program == ("add", ("add", ("sub", ("mul", ("in", "x"), ("const", 0.25)), ("const", -2.0)),
                                      ("min", ("in", "y"), ("const", 6.0))), ("in", "x"))


def _t(shape):
    from builder.spec import DType
    from builder.stage_api import Dim, TensorType

    return TensorType(tuple(Dim(str(s), s) for s in shape), DType.fp32)


# ------------------------------------------------------------------------------ matmul, mask goldens

def test_matmul_golden_layouts_and_ordered_slices():
    op = registry()["matmul"]
    x = torch.randn(3, 12).to(torch.bfloat16)
    w = torch.randn(12, 5).to(torch.bfloat16)
    kn = op.golden({"x": x, "w": w}, op.Params(weight_layout="kn", out_dtype="fp32"), None, {})["y"]
    nk = op.golden({"x": x, "w": w.T.contiguous()}, op.Params(weight_layout="nk", out_dtype="fp32"), None, {})["y"]
    assert torch.equal(kn, nk) and torch.allclose(kn.double(), x.double() @ w.double(), rtol=1e-6, atol=1e-6)
    split = op.golden({"x": x, "w": w}, op.Params(weight_layout="kn", split_k=3, out_dtype="fp32"), None, {})["y"]
    xf, wf = x.float(), w.float()
    slices = [xf[:, 4 * s:4 * s + 4] @ wf[4 * s:4 * s + 4] for s in range(3)]
    assert torch.equal(split, (slices[0] + slices[1]) + slices[2])


def test_causal_mask_golden_is_the_csa_rule():
    op = registry()["causal_index_mask"]
    idx = torch.tensor([[-1, 0, 1, 2, 3, 7], [5, 0, -4, 1023, 1024, 9]], dtype=torch.int32)
    pos = torch.tensor([[7], [4095]], dtype=torch.int32)
    y = type(op).golden_fn(indices=idx, positions=pos, ratio=4, columns=5)["y"]
    assert y.tolist() == [[-1, 0, 1, -1, -1], [5, 0, -1, 1023, -1]]  # bounds (7+1)//4 = 2, 4096//4 = 1024
    assert y.dtype == torch.int32


def test_the_mask_fixture_keeps_and_drops(lib):
    k = lib["causal_masks"]
    g = k.golden(k.make_inputs())
    assert (g["ratio4"] >= 0).any() and (g["ratio4"] == -1).any()


def test_causal_mask_refuses_positions_the_pl_body_cannot_take(lib):
    k = lib["causal_masks"]
    ins = k.make_inputs()
    ins["pos"] = ins["pos"] - 1000
    with pytest.raises(InputError, match="`pos`.*positions must lie in"):
        k.run(ins, "pypto")


def test_costs(lib):
    from builder.sol import stage_cost

    stages = {sid: st for name in ("norms", "elementwise_ops", "matmuls", "causal_masks")
              for sid, st in lib[name].typed("odd")[0].stages.items()}
    t, h, hc, d, n, k, w, c, i = 3, 5, 3, 200, 100, 200, 90, 70, 40
    assert stage_cost(stages["kn"]).flops == {"bf16": 2 * t * k * n}
    assert stage_cost(stages["fp32"]).flops == {"bf16": 2 * t * k * n}
    assert stage_cost(stages["plain_chunked"]).flops == {"fp32": 4 * t * h * d}  # gamma: 4 per element
    assert stage_cost(stages["a5_chunked"]).flops == {"fp32": 3 * t * h * d}
    assert stage_cost(stages["swiglu"]).flops == {"fp32": (1 + 5 + 2 + 1) * t * i}  # min, silu, clamp, mul
    assert stage_cost(stages["cast"]).flops == {}
    assert stage_cost(stages["mtp_add"]).bytes == 4 * t * d + 2 * t * hc * d + 4 * t * hc * d
    assert stage_cost(stages["ratio4"]).bytes == 4 * t * c + 4 * t + 4 * t * c  # reads only `columns` of W
    assert stage_cost(stages["ratio3"]).bytes == 4 * t * w + 4 * t + 4 * t * w


# ------------------------------------------------------------------------ located errors in the YAML

def _stage(name: str) -> str:
    return f"\n      {name}:"


ERRORS = [  # (kernel anchor, old text, new text, rule, token located)
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate ** 2 + up"', "bad-expr", '"gate ** 2'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"__import__(gate) + up"', "bad-expr", '"__import__'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate.real + up"', "bad-expr", '"gate.real'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"exp(gate, up)"', "bad-expr", '"exp(gate, up)'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"clamp(gate, lo=1, hi=2) + up"', "bad-expr",
     '"clamp(gate, lo'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate + up + 1 / 0"', "bad-expr", '"gate + up + 1'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate + up * exp(1000)"', "bad-expr", '"gate + up *'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', "\"gate + up + 'a'\"", "bad-expr", '"gate + up + '),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate + up + tl"', "bad-expr", '"gate + up + tl'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate + up + silu"', "bad-expr", '"gate + up + s'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate +"', "bad-expr", '"gate +"'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"' + " + ".join(["gate"] * 40) + ' + up"',
     "expr-too-complex", '"gate + gate'),
    ("swiglu", '"silu(min(gate, 10)) * clamp(up, -10, 10)"', '"gate + up + ' + "1" * 400 + '"',
     "expr-too-complex", '"gate + up + 1'),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [T, 1, D], q: [T]}", "bad-value", "{e: [T, 1, D], q"),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [T, 2, D]}", "bad-value", "{e: [T, 2, D]}"),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [D, 1, T]}", "bad-value", "{e: [D, 1, T]}"),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [T, D, 1]}", "shape-mismatch", ("h: h}", 3)),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [T, 1, DD]}", "undefined-dim", "{e: [T, 1, DD]}"),
    ("mtp_add", ", views: {e: [T, 1, D]}", "", "shape-mismatch", ("e: e,", 3)),
    ("mtp_add", "views: {e: [T, 1, D]}", "views: {e: [1, T, D]}", "shape-mismatch", ("h: h}", 3)),
    ("mtp_add", "in: {e: e, h: h}", "in: {e: e, h: h, z: h}", "unknown-key", "z: h"),
    ("mtp_add", "in: {e: e, h: h}", "in: {e: e}", "missing-key", "{e: e}"),
    ("mtp_add", "expr: e + h,", "expr: e + h, out_dtype: int8,", "bad-value", "int8"),
    ("plain_chunked", "gamma: gamma}", "gamma: rows}", "shape-mismatch", "rows}"),
    ("plain_chunked", "params: {chunk: 64}", "params: {chunk: 64, block_d: 32}", "bad-value", "32}"),
    ("plain_chunked", "params: {chunk: 64}", "params: {chunk: 64, out_dtype: int32}", "bad-value", "int32}"),
    ("plain_chunked", "params: {chunk: 64}", "params: {chunk: 64, order: a6}", "bad-value", "a6}"),
    ("plain_chunked", "in: {x: x, gamma: gamma}", "in: {gamma: gamma}", "missing-key", "{gamma: gamma}"),
    ("kn_split", "split_k: 2,", "split_k: 7,", "bad-value", "7,"),
    ("kn:", "w: w_kn}", "w: w_nk}", "shape-mismatch", "w_nk}"),
    ("kn:", "x: x, w: w_kn}", "x: idx, w: w_kn}", "unknown-ref", "idx,"),
    ("kn:", "params: {weight_layout: kn}", "params: {}", "missing-key", "{}"),
    ("ratio4", "columns: C}", "columns: W + 1}", "bad-value", "W + 1}"),
    ("ratio4", "positions: pos}", "positions: idx}", "shape-mismatch", "idx}"),
    ("heads", "reshape: {x: [T, H, HD]}", "reshape: {x: [T, H, D]}", "shape-mismatch", "[T, H, D]}"),
    ("heads", "reshape: {x: [T, H, HD]}", "reshape: {y: [T, H, HD]}", "unknown-key", "y: [T"),
    ("heads", "reshape: {x: [T, H, HD]}", "reshape: {x: [T, H, HDD]}", "undefined-dim", "HDD]}"),
    ("bf16_heads", "in: {x: heads,", "reshape: {x: [T, H * HD]}, in: {x: heads,", "layout-mismatch", "[T, H * HD]}"),
    ("q_like", "rope: HALF_HD,", "rope: HD + 2,", "bad-value", "HD + 2,"),
    ("q_like", ", layout: interleave}", "}", "layout-mismatch", "heads_f,"),
    ("back", "cos: cos_d,", "cos: heads_f,", "shape-mismatch", "heads_f,"),
]


@pytest.mark.parametrize("stage, old, new, rule, token", ERRORS,
                         ids=[f"{e[3]}:{e[2][:28]}" for e in ERRORS])
def test_errors_are_located_at_the_param_or_port(text, stage, old, new, rule, token):
    anchor = _stage(stage.rstrip(":")) if not stage.endswith(":") else f"\n      {stage}"
    bad = edit(text, old, new, after=anchor)
    diags = [d for d in diagnostics(bad, str(GENERAL)) if d.severity == "error"]
    token, offset = token if isinstance(token, tuple) else (token, 0)
    line, col = position(bad, token, after=anchor, offset=offset)
    assert (rule, line, col) in {(d.rule, d.loc.line, d.loc.col) for d in diags}, \
        "\n".join(f"{d.rule} {d.loc.line}:{d.loc.col} {d.message}" for d in diags)


def test_names_in_generated_code_cannot_collide(text):
    """Dims and ports named like the tile bodies' locals (`a`, `r`, `n`, `x0`, `v0`, `k`, `sq`) still work:
    ports never become identifiers, and locals that meet a dim are renamed."""
    kernel = """
  collide:
    doc: names that tile bodies also use
    sizes: {small: {a: 3, r: 5, n: 70, x0: 40}}
    inputs:
      v0: {shape: [a, r, n], dtype: bf16, init: {uniform: {}}}
      x1: {shape: [a, n], dtype: bf16, init: {uniform: {}}}
      k: {shape: [n, x0], dtype: bf16, init: {uniform: {}}}
    stages:
      sq: {op: rmsnorm, in: {x: v0}, params: {order: a5, chunk: 64, out_dtype: fp32}}
      inv: {op: elementwise, in: {x0: sq.y, v0: x1}, params: {expr: "x0 * v0 - silu(x0)", views: {v0: [a, 1, n]}}}
      mm: {op: matmul, in: {x: x1, w: k}, params: {weight_layout: kn}}
    outputs:
      y: {from: inv.y}
      z: {from: mm.y}
"""
    lib = builder.load(str(GENERAL), text=text + kernel)
    for backend in ("triton", "pypto"):
        report = lib["collide"].verify(backend)
        assert report.ok, "\n".join(describe(report, str(GENERAL)))


def test_the_expression_text_never_reaches_generated_code(lib):
    """Code comes from the parsed program; the PyPTO golden receives that program as data."""
    for backend in ("triton", "pypto"):
        code = lib["elementwise_ops"].emit(backend)
        assert "silu(min(gate" not in code and "clamp(up" not in code
    assert "program=['mul', ['silu', ['min', ['in', 'gate', [T, I]]" not in code  # sizes are literals
    literal_sizes = r"program=\['mul', \['silu', \['min', \['in', 'gate', \[\d+, \d+\]\], \['const', 10\.0\]\]\]"
    assert re.search(literal_sizes, code)


# -------------------------------------------------------------------------------- injected faults

FAULTS = {  # name -> (op, kernel, {backend: {text: replacement}}, stages expected bad)
    "gamma dropped": ("rmsnorm", "norms", {"triton": {"y = y * g[None, :]": "y = y"},
                                           "pypto": {"pl.col_expand_mul(": "pl.col_expand_add("}},
                      {"plain_chunked", "a5_row"}),
    "broadcast reads the next row": ("elementwise", "elementwise_ops", {
        "triton": {"e_ptr + a * D": "e_ptr + (a + 1) % T * D"},
        "pypto": {"e[a : a + 1,": "e[(a + 1) % T : (a + 1) % T + 1,"}}, {"mtp_add", "functions"}),
    "gate not clamped": ("elementwise", "elementwise_ops", {"triton": {"tl.minimum(x0, 10.0)": "x0"},
                                                           "pypto": {"pl.minimum(swiglu_in_0, 10.0)": "swiglu_in_0"}},
                         {"swiglu"}),
    "a K slice dropped": ("matmul", "matmuls", {
        "triton": {"acc += tl.load": "acc = tl.load"},
        "pypto": {"pl.add(kn_split_acc, ": "pl.add(pl.mul(kn_split_acc, 0.0), ",
                  "pl.add(nk_split_acc, ": "pl.add(pl.mul(nk_split_acc, 0.0), "}},
                          {"kn_split", "nk_split"}),
    "mask keeps raw == bound": ("causal_index_mask", "causal_masks", {
        "triton": {"raw < bound": "raw <= bound"},
        "pypto": {"pl.sub(ratio4_bound, ratio4_raw)": "pl.add(pl.sub(ratio4_bound, ratio4_raw), 1.0)",
                  "pl.sub(ratio3_bound, ratio3_raw)": "pl.add(pl.sub(ratio3_bound, ratio3_raw), 1.0)"}},
        {"ratio4", "ratio3"}),
}


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("fault", FAULTS)
def test_injected_fault_is_caught_at_its_stages(fault, backend):
    op, kernel, edits, bad = FAULTS[fault]
    matched: set[str] = set()
    ops = faulty_ops(op, backend, edits[backend], matched)
    report = builder.load(GENERAL, ops=ops)[kernel].verify(backend)
    assert matched == set(edits[backend]), f"edits that matched nothing: {set(edits[backend]) - matched}"
    assert not report.ok
    assert {c.stage for c in report.stages if not c.ok} == bad, "\n".join(describe(report, str(GENERAL)))


# ----------------------------------------------------------------------------------- the executor

def test_executor_rsqrt_follows_its_documentation():
    pl = plsim.PlLanguage()
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="t"):
        x = torch.tensor([[2.0, 3.0, 1e-6, 7.0]])
        assert torch.equal(pl.rsqrt(x, high_precision=True), torch.rsqrt(x.double()).float())
        assert torch.equal(pl.rsqrt(x), torch.rsqrt(x))
        with pytest.raises(plsim.Unsupported, match="pl.rsqrt of a INT32"):
            pl.rsqrt(torch.ones(1, 4, dtype=torch.int32))
    with pytest.raises(plsim.Unsupported, match="outside any pl.at"):
        pl.rsqrt(x)


def test_executor_refuses_what_pyptos_a2a3_backend_cannot_build():
    """Each refusal is a compile error the real PyPTO gave on a program this project emitted: no codegen for
    tile.expands, no INT8 -> FP32 conversion, no pl.arange of one column."""
    pl = plsim.PlLanguage()
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="t"):
        x = torch.ones(2, 4)
        with pytest.raises(plsim.Unsupported, match="tile.expands"):
            pl.expands(x, 2.5)
        with pytest.raises(plsim.Unsupported, match="INT8 tile to FP32"):
            pl.cast(torch.ones(1, 4, dtype=torch.int8), target_type=pl.FP32)
        assert torch.equal(pl.cast(pl.cast(torch.full((1, 4), -7, dtype=torch.int8), target_type=pl.FP16),
                                   target_type=pl.FP32), torch.full((1, 4), -7.0))
        with pytest.raises(plsim.Unsupported, match=r"arange with shape \[1, 1\]"):
            pl.arange(0, [1, 1], dtype=pl.INT32)
        assert pl.arange(0, [1, 2], dtype=pl.INT32).tolist() == [[0, 1]]


def test_rotary_golden_is_the_complex_rotation(lib):
    """Forward interleaved and inverse split-half RoPE on the last lanes, from complex numbers in
    float64 (tests/reference.py); the other lanes copied; one rounding each."""
    k = lib["rotary_ops"]
    ins = k.make_inputs(sizes="odd")
    g = k.golden(ins, sizes="odd")
    hd, d = k.dims("odd")["HD"], k.dims("odd")["D"]
    rope, half = hd // 2, hd // 4
    x = ins["heads_f"]
    turned = reference.forward_rope_interleaved(x[..., -rope:], ins["cos_h"][:, :half], ins["sin_h"][:, :half])
    expected = torch.cat([reference.bf16(x[..., :-rope].double()), turned], dim=-1)
    torch.testing.assert_close(g["q_like"].double(), expected, rtol=2 ** -8, atol=0)
    rows = ins["rows"][:, None, -(d // 2):]
    back = reference.inverse_rope_split_half(rows, ins["cos_d"][:, :d // 4], ins["sin_d"][:, :d // 4])
    torch.testing.assert_close(g["back"][:, -(d // 2):].double(), back[:, 0].double(), rtol=1e-2, atol=1e-6)
    assert torch.equal(g["back"][:, :d - d // 2], ins["rows"][:, :d - d // 2])


def test_executor_slice_poisons_the_rows_past_its_valid_shape():
    pl = plsim.PlLanguage()
    x = plsim._pl(torch.arange(12, dtype=torch.float32).reshape(3, 4))
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="t"):
        tile = pl.slice(x, [16, 2], [1, 2], valid_shape=[2, 2])
        assert torch.equal(tile[:2], x[1:3, 2:4]) and tile[2:].isnan().all()
        with pytest.raises(plsim.Unsupported):
            pl.slice(x, [16, 2], [2, 2], valid_shape=[2, 2])  # the valid rows run past the tensor
