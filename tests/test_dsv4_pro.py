"""DeepSeek-V4-Pro decode attention as pypto-lib ships it (dsv4_pro_sparse_attn_decode{,_hca,_swa}):
every backend against the stage goldens and against the independent whole-kernel reference at small
sizes; the interop contract (pypto-lib's tensor names, shapes and dtypes at full sizes); the new op
paths (window rows, per-request page tables, key-tile softmax with bf16 P, per-group A8, group-summed
W8A8) at extents nobody tuned for; and injected faults caught at their stage."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import builder
from builder.verify import compare, describe
from tests import reference
from tests.faults import faulty_ops

KERNELS = {"dsv4_pro_sparse_attn_decode": "csa", "dsv4_pro_sparse_attn_decode_hca": "hca",
           "dsv4_pro_sparse_attn_decode_swa": "swa"}
ODD = Path(__file__).parent / "kernels" / "dsv4_pro_odd.yaml"


@pytest.fixture(scope="module")
def odd():
    return builder.load(ODD)


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("name", KERNELS)
def test_every_block_matches_its_stage_golden(lib, name, backend):
    report = lib[name].verify(backend)
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert {c.stage for c in report.stages} == set(lib[name].typed()[0].stages)


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("name", KERNELS)
def test_every_backend_matches_the_model_reference(lib, name, backend):
    k = lib[name]
    ins = k.make_inputs(seed=3)
    ref = reference.dsv4_pro_attn_decode(ins, k.dims(), KERNELS[name])
    out = k.run(ins, backend)
    torch.testing.assert_close(out["attn.o"].double(), ref["attn"], atol=1e-5, rtol=1e-4)
    stats = compare(out["attn_out"], ref["attn_out"], k.spec.outputs["attn_out"].tolerance)
    assert stats.ok, stats
    assert ref["attn_out"].abs().max() > 1e-3  # a real signal, not zeros


def test_the_fixtures_exercise_masks_tables_and_partial_windows(lib):
    """Invalid window rows, compressed slots hidden by the position bound, requests sharing a table row,
    a short SWA window: each changes which keys a token sees."""
    k = lib["dsv4_pro_sparse_attn_decode"]
    d, ins = k.dims(), k.make_inputs()
    g = k.golden(ins, intermediates=True)
    raw = ins["idx_topk"][:, : d["IDX_TOPK"]]
    assert ((raw >= 0) & (g["slots.y"] == -1)).any()           # the position bound drops real slots
    assert (g["slots.y"] >= 0).any() and (ins["window_swa_indices"] == -1).any()
    window = g["gather.valid"][:, : d["WIN"]]
    assert 0 < int(window.sum()) < window.numel()
    swa = lib["dsv4_pro_sparse_attn_decode_swa"].make_inputs()
    assert (swa["swa_lens"] < d["WIN"]).any()


# pypto-lib 634e77bd's tensor specs at default arguments: name -> (shape, dtype), in JIT order
CONTRACT = {
    "dsv4_pro_sparse_attn_decode": {
        "q": ([8, 128, 512], "bf16"), "ori_kv": ([128, 128, 1, 512], "bf16"), "window_swa_indices": ([8, 128], "int32"),
        "cmp_kv": ([32, 128, 1, 512], "bf16"), "cmp_block_table": ([4, 32], "int32"),
        "idx_topk": ([8, 4096], "int32"), "position_ids": ([8, 1], "int32"), "attn_sink": ([128], "fp32"),
        "freqs_cos": ([8, 64], "bf16"), "freqs_sin": ([8, 64], "bf16"), "wo_a": ([16, 1024, 4096], "bf16"),
        "wo_b": ([7168, 16384], "int8"), "wo_b_scale": ([7168], "fp32")},
    "dsv4_pro_sparse_attn_decode_hca": {
        "q": ([8, 128, 512], "bf16"), "ori_kv": ([128, 128, 1, 512], "bf16"), "window_swa_indices": ([8, 128], "int32"),
        "cmp_kv": ([32, 128, 1, 512], "bf16"), "cmp_block_table": ([4, 32], "int32"),
        "cmp_sparse_indices": ([8, 128], "int32"), "attn_sink": ([128], "fp32"), "freqs_cos": ([8, 64], "bf16"),
        "freqs_sin": ([8, 64], "bf16"), "wo_a": ([16, 1024, 4096], "bf16"), "wo_b": ([7168, 16384], "int8"),
        "wo_b_scale": ([7168], "fp32")},
    "dsv4_pro_sparse_attn_decode_swa": {
        "q": ([8, 128, 512], "bf16"), "ori_kv": ([128, 128, 1, 512], "bf16"), "swa_indices": ([8, 128], "int32"),
        "swa_lens": ([8], "int32"), "attn_sink": ([128], "fp32"), "freqs_cos": ([8, 64], "bf16"),
        "freqs_sin": ([8, 64], "bf16"), "wo_a": ([16, 1024, 4096], "bf16"), "wo_b": ([7168, 16384], "int8"),
        "wo_b_scale": ([7168], "fp32")},
}


@pytest.mark.parametrize("name", KERNELS)
def test_full_sizes_take_pypto_libs_tensors(lib, name):
    tg = lib[name].typed("full")[0]
    got = {n: ([d.value for d in t.shape], t.dtype.value) for n, t in tg.inputs.items()}
    assert list(got.items()) == list(CONTRACT[name].items())
    (out, ref), = tg.outputs.items()
    assert (out, list(tg.types[ref].numel_shape), tg.types[ref].dtype.value) == ("attn_out", [8, 7168], "bf16")
    tol = lib[name].spec.outputs["attn_out"].tolerance       # pypto-lib's ratio_allclose(1e-4, 1/128), 0.5 %
    assert (tol.atol, tol.rtol, tol.max_error_ratio, tol.allowed_bad) == (1e-4, 1 / 128, 0.005, "round_half_even")


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", ["small", "tiny"])
@pytest.mark.parametrize("name", ["pro_csa", "pro_csa_split", "pro_swa"])
def test_the_new_paths_verify_at_odd_extents(odd, name, sizes, backend):
    """small: T=6 in requests of 2, H=5, HEAD_DIM=72, 52 keys in tiles of 32 (the last short) read in two
    passes, 5 groups of 24 lanes; tiny: extents of 1. pro_csa_split: whole tiles split across programs,
    one pass per tile."""
    report = odd[name].verify(backend, sizes)
    assert report.ok, "\n".join(describe(report, str(ODD)))


def test_the_odd_split_kernel_really_splits_and_makes_one_pass(odd):
    sched = odd["pro_csa_split"].typed("small")[1]
    partial, combine = (b for b in sched.blocks if b.phase)
    assert partial.domain[-1].trips == 2 and partial.domain[-1].tile == 32
    assert "for n0 in range" not in odd["pro_csa_split"].emit("triton", "small")
    assert "for n0 in range" in odd["pro_csa"].emit("triton", "small")  # two passes of sub-blocks


TRITON_FAULTS = {  # (op, edits of its Triton body, stage reported first)
    "table row t % B, not t // S": ("gather_kv", {"(t // S) * CMP_MAX_BLOCKS": "(t % B) * CMP_MAX_BLOCKS"},
                                             "gather"),
    "P not rounded": ("sparse_attention", {"pb = round_bf16(p).to(tl.float32)": "pb = p"}, "attn"),
    "running output not rescaled": ("sparse_attention", {"acc = acc * alpha[:, None] +": "acc = acc +"}, "attn"),
    "one scale per row": ("quant_rowwise_int8", {"+ g * O_LORA + j": "+ j"}, "quant"),
    "group 0's scale for every group": ("matmul_w8a8", {"r * O_GROUPS + s": "r * O_GROUPS"}, "proj_b"),
}


PYPTO_FAULTS = {
    "table row t % B, not t // S": ("gather_kv", {"[t // S, gather_slot": "[t % B, gather_slot"}, "gather"),
    "P truncated to bf16, not rounded": ("sparse_attention", {'pl.cast(attn_p, target_type=pl.BF16, mode="rint")':
                                                              'pl.cast(attn_p, target_type=pl.BF16, mode="trunc")'},
                                         "attn"),
    "group 0's scale for every group": ("matmul_w8a8", {"quant_dequant[0:T, proj_b_s : proj_b_s + 1]":
                                                        "quant_dequant[0:T, 0:1]"}, "proj_b"),
}
FAULTS = [("triton", f) for f in TRITON_FAULTS] + [("pypto", f) for f in PYPTO_FAULTS]


@pytest.mark.parametrize("backend, fault", FAULTS)
def test_injected_faults_are_caught_at_their_stage(backend, fault):
    op, edits, stage = (TRITON_FAULTS if backend == "triton" else PYPTO_FAULTS)[fault]
    k = builder.load("kernels.yaml", ops=faulty_ops(op, backend, edits))["dsv4_pro_sparse_attn_decode"]
    report = k.verify(backend)
    assert not report.ok and report.first_bad_stage.stage == stage, "\n".join(describe(report, "kernels.yaml"))


PRO = "\n  dsv4_pro_sparse_attn_decode:\n"


@pytest.mark.parametrize("old, new, rule, at, message", [
    # the parts of a gather, and slots addressing, do not mix
    ("in: {window_rows: window_swa_indices, ori_kv: ori_kv,", "in: {window_rows: window_swa_indices, ori_kv: ori_kv, "
     "indices: idx_topk,", "unknown-key", "window_rows: window_swa_indices", "belongs to parts addressing"),
    # requests of S tokens need B = T / S table rows
    ("params: {tokens_per_request: S}", "params: {tokens_per_request: 1}", "shape-mismatch",
     "cmp_block_table: cmp_block_table}", "need 8"),
    ("params: {key_tile: ATTN_K_TILE, p_dtype: bf16, out_dtype: fp32}",
     "params: {p_dtype: bf16, out_dtype: fp32}", "bad-value", "p_dtype: bf16", "needs `key_tile`"),
    ("params: {key_tile: ATTN_K_TILE,", "params: {key_tile: 48,", "bad-value", "key_tile: 48", "power of two"),
    ("params: {groups: O_GROUPS}\n      proj_b", "params: {groups: 3}\n      proj_b", "bad-value", "groups: 3",
     "must divide"),
])
def test_bad_params_are_located_errors(old, new, rule, at, message):
    from tests.spec_helpers import assert_edit_is_located_error

    assert_edit_is_located_error(old, new, rule, at, message, after=PRO)


def test_the_split_key_tiles_leave_the_vector_buffer_room_at_full_sizes(lib):
    """At D = 512 the CSA kernel's split-key phase keeps four [16, 512] fp32 tiles on the vector core,
    which with PyPTO's default 2-slot cross-core ring overflows an a2a3 core (196,928 > 188,416 bytes,
    as its compiler reports): that scope asks for a 1-slot ring; the unsplit HCA and SWA scopes, and
    every scope at small sizes, keep the default."""
    def scopes_with_slots(name, sizes):
        code = lib[name].emit("pypto", sizes)
        return [line.strip() for line in code.splitlines() if "cross_core_slot" in line]

    one_slot = ["optimizations=[pl.cross_core_slot(slot_num=1)],"]
    assert scopes_with_slots("dsv4_pro_sparse_attn_decode", "full") == one_slot
    for name in KERNELS:
        assert scopes_with_slots(name, "small") == []
    assert scopes_with_slots("dsv4_pro_sparse_attn_decode_hca", "full") == []
    assert scopes_with_slots("dsv4_pro_sparse_attn_decode_swa", "full") == []


def test_the_executor_takes_a_ring_depth_and_refuses_other_options():
    from builder import plsim

    pl = plsim.PlLanguage()
    with pl.at(level=pl.Level.CORE_GROUP, name_hint="s", optimizations=[pl.cross_core_slot(slot_num=1)]):
        pass
    with pytest.raises(plsim.Unsupported):
        pl.cross_core_slot(slot_num=0)
    with pytest.raises(plsim.Unsupported):
        with pl.at(level=pl.Level.CORE_GROUP, name_hint="s", optimizations=["split"]):
            pass
