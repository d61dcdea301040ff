"""Qwen3-14B paged GQA decode attention (qwen3_14b_paged_attention, pypto-lib's paged_attention_cce.py):
every backend against the stage goldens and against the independent model reference at small sizes with
ragged lengths; the interop contract at full sizes; the new params (`kv_heads`, `v`, no `sink`) at odd
extents; located errors; injected faults caught at their stage."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import builder
from builder.verify import compare, describe
from tests import reference
from tests.faults import faulty_ops

NAME = "qwen3_14b_paged_attention"
ODD = Path(__file__).parent / "kernels" / "qwen3_odd.yaml"


@pytest.fixture(scope="module")
def odd():
    return builder.load(ODD)


def model_reference(ins: dict) -> torch.Tensor:
    return reference.paged_gqa_attention(ins["query"], ins["key_cache"], ins["value_cache"], ins["block_table"],
                                         ins["seq_lens"])


@pytest.mark.parametrize("backend", ["triton", "pypto"])
def test_every_block_matches_its_stage_golden(lib, backend):
    report = lib[NAME].verify(backend)
    assert report.ok, "\n".join(describe(report, "kernels.yaml"))
    assert {c.stage for c in report.stages} == {"keys", "values", "attn"}


def _short_lengths(ins: dict, d: dict) -> dict:
    """Lengths of 1, one page exactly, a page and one row, and random others (seeded)."""
    gen = torch.Generator().manual_seed(5)
    lens = torch.randint(1, d["CAPACITY"] + 1, (d["B"],), generator=gen)
    lens[: 3] = torch.tensor([1, d["BLOCK_SIZE"], d["BLOCK_SIZE"] + 1])[: d["B"]]
    return {**ins, "seq_lens": lens.int()}


@pytest.mark.parametrize("lengths", ["ragged", "short"])
@pytest.mark.parametrize("backend", ["triton", "pypto"])
def test_every_backend_matches_the_model_reference(lib, backend, lengths):
    k = lib[NAME]
    d = k.dims()
    ins = k.make_inputs(seed=3)
    if lengths == "short":
        ins = _short_lengths(ins, d)
    ref = model_reference(ins)
    out = k.run(ins, backend)["out"]
    stats = compare(out, ref, k.spec.outputs["out"].tolerance)
    assert stats.ok, stats
    # tighter than pypto-lib's tolerance: only P's bf16 rounding and fp32 sums separate them
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=1e-2)
    assert ref.abs().max() > 0.05  # a real signal, not zeros


def test_small_lengths_are_ragged_and_end_inside_pages(lib):
    k = lib[NAME]
    d, ins = k.dims(), k.make_inputs()
    lens = ins["seq_lens"]
    assert lens.tolist() == [70, 59, 48]            # ragged_lens: CONTEXT - CONTEXT // (2 B) * b
    assert (lens % d["BLOCK_SIZE"] != 0).any() and len(set(lens.tolist())) == d["B"]
    valid = k.golden(ins, intermediates=True)["keys.valid"]
    assert valid.sum(1).tolist() == lens.tolist()   # each request sees exactly its own keys


def test_the_reference_reads_only_each_requests_keys(lib):
    """Rows past a request's length (on its last, partial page) and other requests' pages change nothing;
    a row inside it does."""
    k = lib[NAME]
    d, ins = k.dims(), k.make_inputs()
    base = model_reference(ins)
    block = d["BLOCK_SIZE"]
    b, length = 0, int(ins["seq_lens"][0])
    page = int(ins["block_table"][b, length // block])
    cache = ins["key_cache"].clone()
    cache[page, length % block:] = 100.0          # past the end of request 0
    assert torch.equal(model_reference({**ins, "key_cache": cache}), base)
    cache[page, length % block - 1] = 100.0       # its last key
    assert not torch.equal(model_reference({**ins, "key_cache": cache}), base)


def test_full_sizes_take_pypto_libs_tensors(lib):
    """pypto-lib's qwen_decode_attention_cce at its annotated batch 16, capacity 4096, context 3338; its
    driver's tolerance (run_jit rtol 5e-3, atol 2e-2)."""
    tg = lib[NAME].typed("full")[0]
    got = {n: ([d.value for d in t.shape], t.dtype.value) for n, t in tg.inputs.items()}
    assert list(got.items()) == [("query", ([16, 40, 128], "bf16")), ("key_cache", ([512, 128, 1024], "bf16")),
                                 ("value_cache", ([512, 128, 1024], "bf16")), ("block_table", ([16, 32], "int32")),
                                 ("seq_lens", ([16], "int32"))]
    (out, ref), = tg.outputs.items()
    assert (out, list(tg.types[ref].numel_shape), tg.types[ref].dtype.value) == ("out", [16, 40, 128], "bf16")
    tol = lib[NAME].spec.outputs["out"].tolerance
    assert (tol.rtol, tol.atol) == (5e-3, 2e-2)
    assert tg.stages["attn"].params.kv_heads == "NUM_KV_HEADS" and tg.dims.value("NUM_HEADS // NUM_KV_HEADS") == 5


def test_full_lengths_are_pypto_libs_ragged_ones(lib):
    k = lib[NAME]
    d = k.dims("full")
    from builder.inits import init_ragged_lens
    lens = init_ragged_lens([d["B"]], 0, longest=d["CONTEXT"], step=d["CONTEXT"] // (2 * d["B"]))
    assert lens.tolist() == [3338 - 104 * i for i in range(16)]   # pypto-lib's --ragged at --batch 16
    assert init_ragged_lens([4], 0, longest=5, step=2).tolist() == [5, 3, 1, 1]


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", ["small", "odd5", "tiny"])
@pytest.mark.parametrize("name", ["paged_gqa", "paged_gqa_split", "paged_gqa_online", "gqa_shared_kv_sink"])
def test_the_new_params_verify_at_odd_extents(odd, name, sizes, backend):
    """small: 3 query heads per KV head; odd5: 5 per head over 3 KV heads; 24-lane heads, pages of 4, lengths
    36, 25, 14, 3; tiny: extents of 1."""
    if sizes == "tiny" and name in ("paged_gqa_split", "paged_gqa_online"):
        pytest.skip("the split kernels' tiny is odd5: tiny has one key tile, nothing to split")
    report = odd[name].verify(backend, sizes)
    assert report.ok, "\n".join(describe(report, str(ODD)))


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", ["small", "odd5"])
def test_odd_kernels_match_the_model_reference(odd, sizes, backend):
    k = odd["paged_gqa"]
    ins = k.make_inputs(seed=1, sizes=sizes)
    out = k.run(ins, backend, sizes=sizes)["out"]
    ref = model_reference(ins)
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=1e-2)


def test_the_odd_split_kernels_really_split_and_fold_the_grid(odd):
    for name in ("paged_gqa_split", "paged_gqa_online"):
        sched = odd[name].typed("small")[1]
        partial, combine = (b for b in sched.blocks if b.phase)
        assert [a.var for a in partial.domain] == ["t", "g", "hb", "ks"] and partial.domain[-1].trips == 2
        code = odd[name].emit("triton", "small")
        assert "pid = tl.program_id(0)" in code and "g = pid % NUM_KV_HEADS" in code


TRITON_FAULTS = {  # (edits of sparse_attention's Triton body, stage reported first)
    "KV head 0 for every group": {"+ g * HEAD_DIM + d[None, :]": "+ d[None, :]"},
    "the keys as values": {"vv = tl.load(v_at,": "vv = tl.load(keys_kv_ptr + (t * CAPACITY + n)[:, None] * KV_HIDDEN "
                                                 "+ g * HEAD_DIM + d[None, :],"},
    "heads grouped h % G, not h // (H / G)": {"h = g * (NUM_HEADS // NUM_KV_HEADS) + h":
                                              "h = h * NUM_KV_HEADS + g"},
}
PYPTO_FAULTS = {
    "KV head 0 for every group": {"attn_lane0 : attn_lane0 + HEAD_DIM]": "0:HEAD_DIM]"},
    "the keys as values": {"attn_v = values_kv[": "attn_v = keys_kv["},
}
FAULTS = [("triton", f) for f in TRITON_FAULTS] + [("pypto", f) for f in PYPTO_FAULTS]


@pytest.mark.parametrize("backend, fault", FAULTS)
def test_injected_faults_are_caught_at_the_attention(backend, fault):
    edits = (TRITON_FAULTS if backend == "triton" else PYPTO_FAULTS)[fault]
    k = builder.load("kernels.yaml", ops=faulty_ops("sparse_attention", backend, edits))[NAME]
    report = k.verify(backend)
    assert not report.ok and report.first_bad_stage.stage == "attn", "\n".join(describe(report, "kernels.yaml"))


QWEN = "\n  qwen3_14b_paged_attention:\n"


@pytest.mark.parametrize("old, new, rule, at, message", [
    ("params: {kv_heads: NUM_KV_HEADS,", "params: {kv_heads: 3,", "bad-value", "kv_heads: 3", "divides"),
    ("params: {kv_heads: NUM_KV_HEADS,", "params: {", "shape-mismatch", "kv: keys.kv", "axis 2"),
    ("v: values.kv,", "v: values.valid,", "shape-mismatch", "v: values.valid", "rank 2"),
    ("params: {window: CAPACITY}\n      values", "params: {window: CAPACITY + 1}\n      values", "bad-value",
     "window: CAPACITY + 1", "must be a whole number in [1, "),
])
def test_bad_params_are_located_errors(old, new, rule, at, message):
    from tests.spec_helpers import assert_edit_is_located_error

    assert_edit_is_located_error(old, new, rule, at, message, after=QWEN)
