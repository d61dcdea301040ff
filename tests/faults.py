"""Fault injection: a copy of the op registry where one op's tile body is altered by a text edit.

The edit must apply (else the helper raises), so a test built on it cannot pass vacuously.
"""
from __future__ import annotations

import re

from stages import registry


def faulty_ops(op_name: str, backend: str, edits: dict[str, str], matched: "set[str] | None" = None) -> dict:
    """Registry copy whose `op_name` tile body for `backend` has each `old` text replaced by `new`
    (all at once, so that two texts can be swapped). Every edit must match every stage of the op, unless
    `matched` is given: the edits that matched some stage are then added to it (for a kernel whose stages
    of one op differ; the test asserts the set is complete)."""
    pattern = re.compile("|".join(re.escape(old) for old in edits))
    real = registry()[op_name]

    class Faulty(type(real)):
        def __getattribute__(self, name):
            attr = super().__getattribute__(name)
            if name != backend:
                return attr

            def broken(ctx):
                seen: list[str] = []

                def edit(lines):
                    # edits are written against the code as it reads (final names, not placeholders)
                    shown = [ctx.show(line) for line in lines]
                    seen.extend(shown)
                    return [ctx.hide(pattern.sub(lambda m: edits[m.group(0)], line)) for line in shown]

                if hasattr(ctx, "setup"):  # PyPTO bodies may also emit setup code (derived constants)
                    emit_setup = ctx.setup
                    ctx.setup = lambda buffers, body: emit_setup(buffers, edit(body))
                edited = edit(attr(ctx))
                missing = [old for old in edits if not any(old in line for line in seen)]
                if matched is not None:
                    matched.update(set(edits) - set(missing))
                elif missing:
                    raise AssertionError(f"fault text {missing} matched nothing in {op_name}.{backend}")
                return edited
            return broken

    ops = dict(registry())
    ops[op_name] = Faulty()
    return ops


# name -> (op, {text in its tile body: replacement}, stage id expected to be reported first), per backend
FAULTS = {
    "swap even/odd lanes": ("rope_extract", {"extract_even_ptr": "extract_odd_ptr",
                                             "extract_odd_ptr": "extract_even_ptr"}, "extract"),
    "flip the sign of sin": ("rope_apply", {"* s": "* (-s)"}, "rotate"),
    "drop the sink": ("sparse_attention", {" + tl.exp(sink - m)": ""}, "attn"),
    "off-by-one in pack": ("pack", {"* T + t": "* T + (t + 1) % T"}, "pack"),
    "wrong layout on write-back": ("rope_interleave", {"2 * k[None, :] + 1": "HALF_ROPE + k[None, :]",
                                                       "2 * k[None, :]": "k[None, :]"}, "interleave"),
    # the three below pass with identity page tables, a full `seqused_kv` and no -1 slots inside rows
    "gather ignores the page table": ("gather_kv", {
        "ori_row = ori_page * BLOCK_SIZE": "ori_row = (t * ORI_MAX_BLOCKS + raw // BLOCK_SIZE) * BLOCK_SIZE",
        "cmp_row = cmp_page * BLOCK_SIZE": "cmp_row = (t * CMP_MAX_BLOCKS + slot // BLOCK_SIZE) * BLOCK_SIZE"},
        "gather"),
    "gather ignores seqused": ("gather_kv", {"seq = tl.load(seqused_kv_ptr + t)": "seq = TOPK"}, "gather"),
    "last key block unmasked": ("sparse_attention", {
        "live = tl.load(valid_at) != 0": "live = (tl.load(valid_at) != 0) | (n0 + ATTN_BLOCK_N >= TOPK)"}, "attn"),
}
PYPTO_FAULTS = {
    "swap even/odd lanes": ("rope_extract", {"extract_even[": "extract_odd[", "extract_odd[": "extract_even["},
                            "extract"),
    "flip the sign of sin": ("rope_apply", {"pl.add(pl.col_expand_mul(rotate_re": "pl.sub(pl.col_expand_mul(rotate_re"},
                             "rotate"),
    "drop the sink": ("sparse_attention", {", pl.exp(pl.sub(attn_sink_tile, attn_m))": ", pl.mul(attn_l, 0.0)"},
                      "attn"),
    "off-by-one in pack": ("pack", {"* T + t": "* T + (t + 1) % T"}, "pack"),
    # write-back through the identity index: concat(real, imag) lands as split-half lanes
    "wrong layout on write-back": ("rope_interleave", {"pl.cast(interleave_lane_src,": "pl.cast(interleave_lane,"},
                                   "interleave"),
    "gather ignores the page table": ("gather_kv", {
        "gather_page * BLOCK_SIZE + gather_raw %": "(t * ORI_MAX_BLOCKS + gather_raw // BLOCK_SIZE) * BLOCK_SIZE "
                                                   "+ gather_raw %",
        "gather_page * BLOCK_SIZE + gather_slot %": "(t * CMP_MAX_BLOCKS + gather_slot // BLOCK_SIZE) * BLOCK_SIZE "
                                                    "+ gather_slot %"}, "gather"),
    "gather ignores seqused": ("gather_kv", {"gather_seq = pl.read(seqused_kv, [t])": "gather_seq = TOPK"}, "gather"),
    "last key block unmasked": ("sparse_attention", {
        "pl.cast(gather_valid[t : t + 1, n0 : n0 + ATTN_BLOCK_N], target_type=pl.FP32)":
            "(pl.cast(gather_valid[t : t + 1, n0 : n0 + ATTN_BLOCK_N], target_type=pl.FP32) "
            "if n0 + ATTN_BLOCK_N < TOPK else pl.full([1, ATTN_BLOCK_N], dtype=pl.FP32, value=1.0))"}, "attn"),
}
