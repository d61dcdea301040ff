"""pypto-lib's DeepSeek-V4-Pro dense decode kernels (expert_shared, mtp_projection, qkv_proj_rope, at
commit 634e77bd): every backend against the independent whole-kernel references of reference.py at
small sizes, each output under its own tolerance; the interop contract (pypto-lib's tensor specs at
their default arguments); and what the full-size PyPTO programs hand the Ascend cube."""
from __future__ import annotations

import ast

import pytest
import torch

from builder import plsim
from builder.verify import compare
from tests import reference

# kernel -> every parameter of pypto-lib's `*_test` entry in order, (shape at the default preset, dtype)
CONTRACT = {
    "dsv4_pro_expert_shared": {
        "x_local_i8": ([8, 7168], "int8"), "x_local_scale_dq": ([8, 1], "fp32"),
        "shared_w1": ([3072, 7168], "int8"), "shared_w1_scale": ([3072], "fp32"),
        "shared_w3": ([3072, 7168], "int8"), "shared_w3_scale": ([3072], "fp32"),
        "shared_w2": ([7168, 3072], "int8"), "shared_w2_scale": ([7168], "fp32"),
        "sh": ([8, 7168], "bf16")},
    "dsv4_pro_mtp_projection": {
        "hidden_states": ([8, 7168], "bf16"), "prev_hidden_states": ([8, 4, 7168], "fp32"),
        "enorm_w": ([7168], "fp32"), "hnorm_w": ([7168], "fp32"),
        "e_proj_w": ([7168, 7168], "int8"), "e_proj_w_scale": ([7168], "fp32"), "e_proj_smooth": ([7168], "fp32"),
        "h_proj_w": ([7168, 7168], "int8"), "h_proj_w_scale": ([7168], "fp32"), "h_proj_smooth": ([7168], "fp32"),
        "hidden_states_out": ([8, 4, 7168], "fp32")},
    "dsv4_pro_qkv_proj_rope": {
        "x": ([8, 7168], "bf16"), "wq_a": ([7168, 1536], "bf16"), "wq_b": ([1536, 65536], "int8"),
        "wq_b_scale": ([65536], "fp32"), "wkv": ([7168, 512], "bf16"), "rope_cos": ([8, 64], "bf16"),
        "rope_sin": ([8, 64], "bf16"), "gamma_cq": ([1536], "bf16"), "gamma_ckv": ([512], "bf16"),
        "q": ([8, 128, 512], "bf16"), "kv": ([8, 512], "bf16"), "qr": ([8, 1536], "int8"),
        "qr_scale": ([8, 1], "fp32")},
}


def references(name: str, k, ins: dict, out: dict) -> dict:
    if name == "dsv4_pro_expert_shared":
        return reference.expert_shared(ins)
    if name == "dsv4_pro_mtp_projection":
        return reference.mtp_projection(ins)
    rope = k.dims()["ROPE_DIM"]
    ref = reference.qkv_proj_rope(ins, rope)
    # q as pypto-lib judges it: downstream of the kernel's own int8 qr and its scale
    ref["q"] = reference.qkv_proj_rope(ins, rope, out["qr"], out["qr_scale"])["q"]
    return ref


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("name", CONTRACT)
def test_every_backend_matches_the_model_reference(lib, name, backend):
    k = lib[name]
    ins = k.make_inputs(seed=1)
    out = k.run(ins, backend)
    ref = references(name, k, ins, out)
    for output, spec in k.spec.outputs.items():
        stats = compare(out[output], ref[output].to(torch.float64), spec.tolerance or k.spec.tolerance)
        assert stats.ok, (output, stats)


@pytest.mark.parametrize("name", CONTRACT)
def test_the_full_sizes_take_pypto_libs_tensors(lib, name):
    tg = lib[name].typed("full")[0]
    types = {**tg.inputs, **{n: tg.types[ref] for n, ref in tg.outputs.items()}}
    got = {n: ([d.value for d in t.shape], t.dtype.value) for n, t in types.items()}
    assert list(got.items()) == list(CONTRACT[name].items())


@pytest.mark.parametrize("name", CONTRACT)
def test_full_size_cube_matmuls_read_16_rows(lib, name):
    """T = 8 at full sizes: every `pl.matmul` / `pl.matmul_acc` takes an activation tile of at least
    16 rows (a 16-row `pl.slice` whose valid part holds the real rows, or a slice of 16 rows or more):
    no operand below the Ascend cube's 16 rows, so no PyPTO hint PH-AT-005."""
    code = lib[name].emit("pypto", "full")
    namespace, _ = plsim.load(code, "<test>")
    rows = []
    for call in ast.walk(ast.parse(code)):
        if isinstance(call, ast.Call) and ast.unparse(call.func) in ("pl.matmul", "pl.matmul_acc"):
            tile = call.args[0 if ast.unparse(call.func) == "pl.matmul" else 1]
            if isinstance(tile, ast.Call):  # pl.slice(tensor, [rows, cols], offset, valid_shape=...)
                assert ast.unparse(tile.func) == "pl.slice" and tile.keywords[0].arg == "valid_shape"
                rows.append(eval(ast.unparse(tile.args[1].elts[0]), dict(namespace)))
            else:  # tensor[r0 : r0 + rows, k0 : k1]: the loop indices cancel out
                first = tile.slice.elts[0]
                span = f"({ast.unparse(first.upper)}) - ({ast.unparse(first.lower or ast.Constant(0))})"
                free = {n.id: 0 for n in ast.walk(ast.parse(span)) if isinstance(n, ast.Name) and n.id not in namespace}
                rows.append(eval(span, {**namespace, **free}))
    assert rows and min(rows) >= 16, rows
