"""Independent whole-kernel references, written from the model math (reference sections 3 and 4).

Nothing here imports `stages/`: these are the second opinion the stage goldens are checked against.
Float64 throughout, with the reference's bf16 roundings (attention output, rotated lanes).
"""
from __future__ import annotations

import torch


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).double()


def key_rows(t: int, ins: dict, win: int) -> torch.Tensor:
    """Token t's valid keys, in index-row order, read one slot at a time from the paged pools."""
    seq = int(ins["seqused_kv"][t])
    w = min(win, seq)
    c = max(seq - w, 0)
    rows = []
    for raw in ins["cmp_sparse_indices"][t].tolist():
        if 0 <= raw < w:
            pool, table, pos = ins["ori_kv"], ins["ori_block_table"], raw
        elif win <= raw < win + c:
            pool, table, pos = ins["cmp_kv"], ins["cmp_block_table"], raw - win
        else:
            continue  # -1 padding or out of range
        block = pool.shape[1]
        rows.append(pool[int(table[t, pos // block]), pos % block, 0].double())
    return torch.stack(rows) if rows else torch.zeros(0, ins["q"].shape[-1], dtype=torch.float64)


def attention(ins: dict, win: int, scale: float) -> torch.Tensor:
    """Closed-form softmax with the sink in the denominator only; tokens without keys give zeros."""
    q = ins["q"].double()
    out = torch.zeros_like(q)
    for t in range(q.shape[0]):
        k = key_rows(t, ins, win)
        if k.shape[0] == 0:
            continue
        s = scale * q[t] @ k.T                                     # [H, keys]
        m = s.max(dim=-1, keepdim=True).values
        p = torch.exp(s - m)
        den = p.sum(-1, keepdim=True) + torch.exp(ins["attn_sink"].double()[:, None] - m)
        out[t] = (p / den) @ k
    return bf16(out)


def inverse_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, R] interleaved lanes times conj(cos + i sin), via complex numbers."""
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    rot = torch.complex(cos.double(), sin.double())[:, None, :]
    y = torch.view_as_real(z * rot.conj()).flatten(-2)
    return bf16(y)


def forward_rope_interleaved(x, cos, sin):
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    y = torch.view_as_real(z * torch.complex(cos.double(), sin.double())[:, None, :]).flatten(-2)
    return bf16(y)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def inverse_rope_split_half(x, cos, sin):
    """Split-half lanes: inverse rotation as `x * cos - rotate_half(x) * sin` on full-width tables."""
    c = cos.double().repeat(1, 2)[:, None, :]
    s = sin.double().repeat(1, 2)[:, None, :]
    return bf16(x.double() * c - rotate_half(x.double()) * s)


def pack_group_major(o: torch.Tensor, groups: int) -> torch.Tensor:
    """The model's `o.view(T, 1, G, G_IN)`, then group-major rows: [G * T, G_IN]."""
    t = o.shape[0]
    grouped = o.reshape(t, 1, groups, -1)[:, 0]                 # [T, G, G_IN]
    return grouped.permute(1, 0, 2).reshape(groups * t, -1)


def output_projections(o_packed_heads: torch.Tensor, ins: dict, groups: int) -> torch.Tensor:
    """Stages 7-9 from the model: grouped wo_a einsum, A8 per-row dynamic quant, W8A8 wo_b.

    `o_packed_heads` is the attention output after inverse RoPE, [T, H, D] (not yet group-major)."""
    t = o_packed_heads.shape[0]
    o = o_packed_heads.double().reshape(t, 1, groups, -1)                # o.view(T, 1, G, G_IN)
    o_r = torch.einsum("bsgd,grd->bsgr", o, ins["wo_a"].double())      # [T, 1, G, R]
    o_r = bf16(o_r.reshape(t, -1))
    amax = o_r.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)
    scale = 127.0 / amax
    q = torch.round(o_r * scale)                                        # half to even, like torch.round
    acc = q @ ins["wo_b"].double().T                                    # exact integer sums
    return bf16(acc / scale * ins["wo_b_scale"].double()[None, :])


def sparse_attn_decode_full(ins: dict, dims: dict, layout: str) -> dict:
    """The whole kernel: stages 1-9."""
    rope, half = dims["ROPE"], dims["ROPE"] // 2
    o = attention(ins, dims["WIN"], dims["D"] ** -0.5)
    cos, sin = ins["freqs_cos"][:, :half], ins["freqs_sin"][:, :half]
    x = o[..., -rope:]
    y = inverse_rope_interleaved(x, cos, sin) if layout == "interleave" else inverse_rope_split_half(x, cos, sin)
    heads = torch.cat([o[..., :-rope], y], dim=-1)
    return {"attn": o, "o_packed": pack_group_major(heads, dims["O_GROUPS"]),
            "attn_out": output_projections(heads, ins, dims["O_GROUPS"])}
