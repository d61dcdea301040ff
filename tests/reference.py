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


# --- DeepSeek-V4-Pro dense kernels (pypto-lib models/deepseek_v4_pro, commit 634e77bd) ---------------
# From the model math, in float64: an RMS norm is x / sqrt(mean(x^2) + eps), a per-token int8
# quantization rounds x * 127 / amax half to even, and bf16 roundings sit where the model stores bf16.

def int8_rows(x: torch.Tensor, floor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, dequant scale amax / 127) of each row of the last axis."""
    amax = x.abs().amax(dim=-1, keepdim=True).clamp_min(floor)
    return torch.round(x * (127.0 / amax)), amax / 127.0


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / torch.sqrt(x.square().mean(dim=-1, keepdim=True) + eps)


def w8a8(codes: torch.Tensor, scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Dequantized `codes @ w^T` for a weight stored [N, K] with one scale per output channel."""
    return (codes @ w.double().T) * scale.double().reshape(-1, 1) * w_scale.double()


def expert_shared(ins: dict, limit: float = 10.0) -> dict:
    """Shared expert: SwiGLU with clamped gate and up over W8A8 projections, int8 again, W8A8 down."""
    x = ins["x_local_i8"].double()
    gate = w8a8(x, ins["x_local_scale_dq"], ins["shared_w1"], ins["shared_w1_scale"]).clamp(max=limit)
    up = w8a8(x, ins["x_local_scale_dq"], ins["shared_w3"], ins["shared_w3_scale"]).clamp(-limit, limit)
    h_codes, h_scale = int8_rows(gate * torch.sigmoid(gate) * up)
    return {"sh": bf16(w8a8(h_codes, h_scale, ins["shared_w2"], ins["shared_w2_scale"]))}


def mtp_projection(ins: dict) -> dict:
    """e_proj(enorm(hidden) * smooth) + h_proj(hnorm(prev) * smooth), each token's e row added to
    each of its hc rows; every projection W8A8 with per-row activation codes."""
    e = rms_norm(ins["hidden_states"].double()) * ins["enorm_w"].double() * ins["e_proj_smooth"].double()
    h = rms_norm(ins["prev_hidden_states"].double()) * ins["hnorm_w"].double() * ins["h_proj_smooth"].double()
    e_codes, e_scale = int8_rows(e)
    h_codes, h_scale = int8_rows(h)
    e_out = w8a8(e_codes, e_scale, ins["e_proj_w"], ins["e_proj_w_scale"])
    h_out = w8a8(h_codes.flatten(0, 1), h_scale.flatten(0, 1), ins["h_proj_w"], ins["h_proj_w_scale"])
    return {"hidden_states_out": e_out[:, None, :] + h_out.reshape(h.shape)}


def qkv_proj_rope(ins: dict, rope: int, qr=None, qr_scale=None) -> dict:
    """qr = int8(rms(x @ wq_a) * gamma_cq); q = forward RoPE on the last `rope` lanes of each head of
    rms(qr @ wq_b, per head); kv = forward RoPE on rms(x @ wkv) * gamma_ckv. With `qr`, `qr_scale` given
    (the kernel's own), q is computed from them, as pypto-lib's q comparator does."""
    x = ins["x"].double()
    codes, scale = int8_rows(rms_norm(x @ ins["wq_a"].double()) * ins["gamma_cq"].double())
    if qr is not None:
        codes, scale = qr.double(), qr_scale.double()
    t, half = x.shape[0], rope // 2
    cos, sin = ins["rope_cos"][:, :half], ins["rope_sin"][:, :half]
    q = (codes @ ins["wq_b"].double()) * scale * ins["wq_b_scale"].double()
    heads = rms_norm(q.reshape(t, -1, ins["gamma_ckv"].shape[0]))
    q_out = torch.cat([bf16(heads[..., :-rope]), forward_rope_interleaved(heads[..., -rope:], cos, sin)], dim=-1)
    kv = rms_norm(x @ ins["wkv"].double()) * ins["gamma_ckv"].double()
    kv_rope = forward_rope_interleaved(kv[:, None, -rope:], cos, sin)[:, 0]
    kv_out = torch.cat([bf16(kv[:, :-rope]), kv_rope], dim=-1)
    return {"q": q_out, "kv": kv_out, "qr": codes, "qr_scale": scale}


# --------------------------------------------------------------------------------------------------
# DeepSeek-V4-Pro decode attention (pypto-lib 634e77bd, decode_sparse_attn{,_hca,_swa}.py), from the
# model: each token's keys are its window's cache rows and its compressed slots; the softmax runs per
# tile of ATTN_K_TILE keys with P rounded to bf16 before P @ V, the tiles merged in order; the sink;
# inverse RoPE; grouped o-projection A; int8 quantisation per (token, group); o-projection B summing
# the groups' dequantised integer products. Float64 except the model's bf16 roundings.

def pro_keys(t: int, ins: dict, dims: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token t's key rows [N, D] (zero where invalid) and their validity [N], window part first."""
    d, block = dims["HEAD_DIM"], dims["BLOCK_SIZE"]
    rows, ok = [], []

    def add(row):
        rows.append(row.double() if row is not None else torch.zeros(d, dtype=torch.float64))
        ok.append(row is not None)

    ori = ins["ori_kv"].reshape(-1, d)
    if kind == "swa":
        slots, length = ins["swa_indices"][t].tolist(), int(ins["swa_lens"][t])
        for k, slot in enumerate(slots):
            add(ori[slot] if k < length and slot >= 0 else None)
        return torch.stack(rows), torch.tensor(ok)
    for slot in ins["window_swa_indices"][t].tolist():
        add(ori[slot] if slot >= 0 else None)
    if kind == "csa":
        visible = (int(ins["position_ids"][t, 0]) + 1) // 4          # compress ratio 4
        raw = ins["idx_topk"][t, : dims["IDX_TOPK"]].tolist()
        slots = [s if 0 <= s < visible else -1 for s in raw]
    else:
        slots = ins["cmp_sparse_indices"][t].tolist()
    table = ins["cmp_block_table"][t // dims["S"]]
    for slot in slots:
        add(ins["cmp_kv"][int(table[slot // block]), slot % block, 0] if slot >= 0 else None)
    return torch.stack(rows), torch.tensor(ok)


def tiled_attention(q: torch.Tensor, k: torch.Tensor, ok: torch.Tensor, sink: torch.Tensor, scale: float,
                    tile: int) -> torch.Tensor:
    """One token: q [H, D], keys k [N, D] with validity ok; softmax per key tile, P rounded to bf16."""
    if not ok.any():
        return torch.zeros_like(q)
    m = l = o = None
    for k0 in range(0, k.shape[0], tile):
        kt, live = k[k0:k0 + tile], ok[k0:k0 + tile]
        s = (scale * q @ kt.T).masked_fill(~live, float("-inf"))
        m_i = s.max(dim=-1, keepdim=True).values.clamp_min(-1e30)    # an all-invalid tile adds nothing
        p = torch.exp(s - m_i)
        l_i, o_i = p.sum(-1, keepdim=True), bf16(p) @ kt
        if m is None:
            m, l, o = m_i, l_i, o_i
            continue
        m_new = torch.maximum(m, m_i)
        a, b = torch.exp(m - m_new), torch.exp(m_i - m_new)
        m, l, o = m_new, a * l + b * l_i, a * o + b * o_i
    return o / (l + torch.exp(sink[:, None] - m))


def dsv4_pro_attn_decode(ins: dict, dims: dict, kind: str) -> dict:
    """The whole kernel, `kind` csa (ratio 4), hca (ratio 128) or swa (window only)."""
    q = ins["q"].double()
    t_count, h, d = q.shape
    rope, groups = dims["ROPE"], dims["O_GROUPS"]
    o = torch.stack([tiled_attention(q[t], *pro_keys(t, ins, dims, kind), ins["attn_sink"].double(), d ** -0.5,
                                     dims["ATTN_K_TILE"]) for t in range(t_count)])
    half = rope // 2
    rotated = inverse_rope_interleaved(o[..., -rope:], ins["freqs_cos"][:, :half], ins["freqs_sin"][:, :half])
    heads = bf16(torch.cat([o[..., :-rope], rotated], dim=-1))                 # nope rounded once
    o_r = torch.einsum("tgk,grk->tgr", heads.reshape(t_count, groups, -1), ins["wo_a"].double())
    scale = 127.0 / o_r.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)      # per token and group
    codes = torch.round(o_r * scale)
    w = ins["wo_b"].double().reshape(ins["wo_b"].shape[0], groups, -1)
    out = torch.einsum("tgr,ngr->tgn", codes, w) / scale                       # exact integer sums
    return {"attn": o, "attn_out": bf16(out.sum(dim=1) * ins["wo_b_scale"].double()[None, :])}


def paged_gqa_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                        block_table: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    """Qwen3 paged decode attention: request b attends its first seq_lens[b] tokens, token j read from page
    block_table[b, j // block], row j % block; a cache row holds the KV heads side by side, and query head
    h reads KV head h // (heads / kv_heads). Softmax in float64 without a sink; the output rounded to bf16."""
    batch, heads, dim = query.shape
    block = key_cache.shape[1]
    kv_heads = key_cache.shape[2] // dim
    out = torch.zeros(batch, heads, dim, dtype=torch.float64)
    for b in range(batch):
        length = int(seq_lens[b])
        pos = torch.arange(length)
        pages = block_table[b].long()[pos // block]
        k = key_cache[pages, pos % block].double().reshape(length, kv_heads, dim)
        v = value_cache[pages, pos % block].double().reshape(length, kv_heads, dim)
        for h in range(heads):
            g = h // (heads // kv_heads)
            s = (query[b, h].double() @ k[:, g].T) * dim ** -0.5
            out[b, h] = torch.softmax(s, dim=0) @ v[:, g]
    return bf16(out)
