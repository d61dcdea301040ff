"""Stage goldens and the composed kernel golden against the independent references in reference.py."""
from __future__ import annotations

import pytest
import torch

from builder.verify import compare
from tests import reference

KERNELS = {  # kernel -> (layout, compress ratio it models)
    "dsv4_sparse_attn_decode": "interleave",
    "dsv4_sparse_attn_decode_split_half": "split_half",
    "dsv4_sparse_attn_decode_window_only": "interleave",
    "dsv4_sparse_attn_decode_ratio128": "interleave",
}


def close(actual, expected):
    torch.testing.assert_close(actual.double(), expected.double(), atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("name", KERNELS)
def test_composed_golden_matches_model_reference(lib, name):
    k = lib[name]
    ins = k.make_inputs(seed=3)
    golden = k.golden(ins, intermediates=True)
    ref = reference.sparse_attn_decode_full(ins, k.dims(), KERNELS[name])
    close(golden["attn.o"], ref["attn"])
    close(golden["o_packed"], ref["o_packed"])
    assert compare(golden["attn_out"], ref["attn_out"], k.spec.outputs["attn_out"].tolerance).ok


def test_ratio_fixtures_differ_in_compressed_keys(lib):
    """The three fixtures really exercise different key sets (no, some, many compressed keys), and where
    there are compressed keys some token has fewer valid keys than its row names (`seqused_kv` is short)."""
    win = lib["dsv4_sparse_attn_decode"].dims()["WIN"]
    counts = []
    for n in ("dsv4_sparse_attn_decode_window_only", "dsv4_sparse_attn_decode_ratio128", "dsv4_sparse_attn_decode"):
        ins = lib[n].make_inputs()
        valid = lib[n].golden(ins, intermediates=True)["gather.valid"]
        counts.append(int(valid[:, win:].sum()))
        named = (ins["cmp_sparse_indices"] != -1).sum(dim=1)
        assert (valid.sum(dim=1) < named).any() or n.endswith("window_only"), n
    assert counts[0] == 0 < counts[1] < counts[2]


def test_gather_golden_filters_padding_and_out_of_range(lib):
    k = lib["dsv4_sparse_attn_decode_ratio128"]
    ins = k.make_inputs()
    ins["cmp_sparse_indices"][0, :3] = torch.tensor([-1, 10_000, 5], dtype=torch.int32)
    g = k.golden(ins, intermediates=True)
    assert g["gather.valid"][0, :3].tolist() == [0, 0, 1]
    assert torch.count_nonzero(g["gather.kv"][0, :2]) == 0
    torch.testing.assert_close(g["gather.kv"][0, 2], ins["ori_kv"][int(ins["ori_block_table"][0, 0]), 5, 0])


def test_token_without_keys_outputs_zeros(lib):
    k = lib["dsv4_sparse_attn_decode"]
    ins = k.make_inputs()
    ins["seqused_kv"][1] = 0
    g = k.golden(ins, intermediates=True)
    assert torch.count_nonzero(g["attn.o"][1]) == 0
    close(g["attn.o"], reference.attention(ins, k.dims()["WIN"], k.dims()["D"] ** -0.5))


def test_sink_enters_the_denominator_only(lib):
    k = lib["dsv4_sparse_attn_decode"]
    ins = k.make_inputs()
    base = k.golden(ins, intermediates=True)["attn.o"].double()
    ins["attn_sink"] += 1.0
    sunk = k.golden(ins, intermediates=True)["attn.o"].double()
    ratio = (sunk / base)[base.abs() > 1e-2]
    assert ratio.max() < 1.0  # only shrinks: a bigger denominator, same direction
    close(sunk, reference.attention(ins, k.dims()["WIN"], k.dims()["D"] ** -0.5))


def test_rope_stage_goldens_match_complex_rotation(lib):
    """rope_extract -> rope_apply(inverse) -> rope_interleave equals multiplying by conj(cos + i sin)."""
    k = lib["dsv4_sparse_attn_decode"]
    ins = k.make_inputs(seed=1)
    g = k.golden(ins, intermediates=True)
    half = k.dims()["HALF_ROPE"]
    expected = reference.inverse_rope_interleaved(g["attn.o"][..., -2 * half:], ins["freqs_cos"][:, :half],
                                                  ins["freqs_sin"][:, :half])
    close(g["interleave.rope"], expected)


def test_forward_then_inverse_rope_is_identity(lib):
    from builder.stage_api import Dims
    from stages import registry

    apply = registry()["rope_apply"]
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    ang = torch.rand(3, 8, dtype=torch.float64)
    cos, sin = torch.cos(ang), torch.sin(ang)
    ins = {"even": x, "odd": x.flip(-1), "cos": cos, "sin": sin}
    fwd = apply.golden(ins, apply.Params(direction="forward", out_dtype="fp32"), Dims({}, "t"), {})
    back = apply.golden({**ins, **fwd}, apply.Params(direction="inverse", out_dtype="fp32"), Dims({}, "t"), {})
    close(back["even"], x)
    close(back["odd"], x.flip(-1))


def test_pack_golden_is_model_view(lib):
    k = lib["dsv4_sparse_attn_decode"]
    g = k.golden(k.make_inputs(), intermediates=True)
    o = torch.cat([g["attn.o"][..., : k.dims()["NOPE"]], g["interleave.rope"]], dim=-1)
    assert torch.equal(g["o_packed"], reference.pack_group_major(o, k.dims()["O_GROUPS"]))


def test_forward_rope_kernel_matches_complex_rotation(lib):
    k = lib["dsv4_qkv_rope_forward"]
    ins = k.make_inputs(seed=2)
    dims = k.dims()
    half = dims["HALF_ROPE"]
    rotated = reference.forward_rope_interleaved(ins["q"][..., -2 * half:], ins["freqs_cos"][:, :half],
                                                 ins["freqs_sin"][:, :half])
    expected = torch.cat([ins["q"].double()[..., :-2 * half], rotated], dim=-1).reshape(dims["T"], -1)
    close(k.golden(ins)["q_rope"], expected)
