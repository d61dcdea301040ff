"""Schedule: loop blocks in a stable order, and `fuse:` groups (legal ones merge, illegal ones are diagnosed)."""
from __future__ import annotations

import json

import pytest

import builder
from builder.stage_api import Op, TensorType
from stages import registry
from stages.rope_extract import HeadTiles, head_domain
from tests.spec_helpers import (BUNDLED, MAIN, MAIN_KERNEL, diagnostics, edit, kernel_yaml, located, position,
                                run_python)

ROPE_STAGES = ["extract", "rotate", "interleave", "pack"]


def fused(text: str, groups: str, kernel_anchor: str = MAIN) -> str:
    """`text` with `fuse: <groups>` added to the kernel starting at `kernel_anchor`."""
    return edit(text, kernel_anchor, kernel_anchor + f"    fuse: {groups}\n")


def block_names(lib, kernel: str = MAIN_KERNEL, sizes=None) -> list[list[str]]:
    return [[s.id for s in b.stages] for b in lib[kernel].typed(sizes)[1].blocks]


# ------------------------------------------------------------------------------------------ default

def test_default_schedule_is_one_block_per_stage_in_file_order(bundled_yaml):
    lib = builder.load(BUNDLED)
    stages = list(kernel_yaml(bundled_yaml)["stages"])
    assert block_names(lib, sizes="small") == [[s] for s in stages]
    # at full size attention moves enough to split its keys across programs: a partial and a combine block
    full = lib[MAIN_KERNEL].typed("full")[1].blocks
    one_each = [[s] for s in stages]
    assert [[s.id for s in b.stages] for b in full] == one_each[:2] + [["attn"]] + one_each[2:]
    assert [b.phase.name if b.phase else None for b in full[1:3]] == ["partial", "combine"]
    sched = lib[MAIN_KERNEL].schedule
    # every tensor between two stages crosses a block boundary: no scratch without fusion
    assert all(not b.scratch for b in sched.blocks)
    assert "attn.o" in sched.crossing and "extract.even" in sched.crossing
    assert set(sched.block_of("rotate").reads) == {"extract.even", "extract.odd", "freqs_cos", "freqs_sin"}
    assert sched.block_of("rotate").writes == ("rotate.even", "rotate.odd")


# ------------------------------------------------------------------------------------- determinism

_DUMP = r"""
import json, builder
lib = builder.load(%r)
out = {}
for name in lib:
    k = lib[name]
    for size_set in k.spec.sizes:
        tg, sched = k.typed(size_set)
        out[f"{name}@{size_set}"] = {
            "nodes": list(tg.graph.nodes),
            "edges": [[u, v, d["port"], d["ref"]] for u, v, d in tg.graph.edges(data=True)],
            "stages": list(tg.stages),
            "blocks": [{"name": b.name, "stages": [s.id for s in b.stages], "domain": b.describe_domain(),
                        "reads": list(b.reads), "writes": list(b.writes), "scratch": list(b.scratch)}
                       for b in sched.blocks],
            "crossing": list(sched.crossing),
        }
print(json.dumps(out))
"""


def _dump_in_subprocess(path: str, hash_seed: str) -> dict:
    proc = run_python(_DUMP % path, env={"PYTHONHASHSEED": hash_seed})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_schedule_is_identical_across_runs_and_hash_seeds(tmp_path, bundled_yaml):
    path = tmp_path / "kernels.yaml"                 # with a fused group, so fusion is covered too
    path.write_text(fused(bundled_yaml, "[[extract, rotate, interleave, pack]]"))
    dumps = [_dump_in_subprocess(str(path), seed) for seed in ("0", "1", "4242")]
    assert dumps[0], "nothing was dumped"
    assert any(len(k["blocks"]) < len(k["stages"]) for k in dumps[0].values())
    assert dumps[0] == dumps[1] == dumps[2]


# ------------------------------------------------------------------------------------------- fusion

def test_fuse_groups_adjacent_compatible_stages_into_one_block(bundled_yaml):
    stages = list(kernel_yaml(bundled_yaml)["stages"])
    assert stages[:6] == ["gather", "attn", *ROPE_STAGES]
    lib = builder.load("kernels.yaml", text=fused(bundled_yaml, "[[extract, rotate, interleave, pack]]"))
    # gather, attn, then the four RoPE/pack stages as one block (then any later stage alone)
    assert block_names(lib) == [["gather"], ["attn"], ROPE_STAGES] + [[s] for s in stages[6:]]
    assert len(block_names(lib)[:3]) == 3
    block = lib[MAIN_KERNEL].schedule.block_of("rotate")
    assert block.name == "extract_rotate_interleave_pack"
    assert block.describe_domain() == lib[MAIN_KERNEL].schedule.block_of("pack").describe_domain()
    # the RoPE intermediates stay inside the block; attn.o and the tables come in; pack.packed leaves
    assert set(block.scratch) == {"extract.even", "extract.odd", "rotate.even", "rotate.odd", "interleave.rope"}
    assert set(block.reads) == {"attn.o", "freqs_cos", "freqs_sin"}
    assert block.writes == ("pack.packed",)
    # the size set does not change the grouping (at full size attention also splits into two blocks)
    full = block_names(lib, sizes="full")
    assert full[:1] + full[2:] == block_names(lib, sizes="small") and full[1] == full[2] == ["attn"]
    # group order in the YAML does not matter, the schedule's does
    lib2 = builder.load("kernels.yaml", text=fused(bundled_yaml, "[[pack, interleave, extract, rotate]]"))
    assert block_names(lib2) == block_names(lib)


def test_two_fuse_groups(bundled_yaml):
    lib = builder.load("kernels.yaml", text=fused(bundled_yaml, "[[extract, rotate], [interleave, pack]]"))
    assert block_names(lib)[:4] == [["gather"], ["attn"], ["extract", "rotate"], ["interleave", "pack"]]
    assert "rotate.even" in lib[MAIN_KERNEL].schedule.crossing         # crosses between the two groups
    assert "extract.even" not in lib[MAIN_KERNEL].schedule.crossing


@pytest.mark.parametrize("groups, token, says", [
    ("[[gather, attn]]", "[gather, attn]", ("`attn` iterates", "`gather` iterates", "jb over TOPK")),
    ("[[extract, interleave]]", "[extract, interleave]", ("not adjacent", "rotate")),
    ("[[extract, rotate], [rotate, interleave]]", "[rotate, interleave]", ("rotate already fused",)),
    ("[[rotate]]", "[rotate]", ("at least two stages",)),
    ("[[extract, rotat]]", "[extract, rotat]", ("unknown stage", "rotat")),
], ids=["different-domains", "not-adjacent", "stage-in-two-groups", "single-stage", "unknown-stage"])
def test_illegal_fuse_is_diagnosed_at_its_group(bundled_yaml, groups, token, says):
    text = fused(bundled_yaml, groups)
    diags = diagnostics(text)
    shown = "\n".join(d.render() for d in diags)
    assert located(diags) == {("illegal-fuse", *position(text, token, after=MAIN))}, shown
    for part in says:
        assert part in diags[0].message, shown
    assert diags[0].hint
    with pytest.raises(builder.SpecError):
        builder.load("kernels.yaml", text=text)


def test_fuse_rejects_stages_with_different_tiles(bundled_yaml):
    """Same loops but another tile size is another iteration domain."""
    text = edit(bundled_yaml, "params: {direction: inverse}", "params: {direction: inverse, block_h: 4}", after=MAIN)
    assert diagnostics(text) == []
    text = fused(text, "[[extract, rotate]]")
    diags = diagnostics(text)
    assert located(diags) == {("illegal-fuse", *position(text, "[extract, rotate]"))}
    assert "tiles of 8" in diags[0].message


class _Shift(Op):
    """Test op: reads its input at neighbouring heads, so it cannot fuse with the producer."""

    name = "shift_heads"
    summary = "test op"
    inputs = {"x": "[T, H, D]"}
    outputs = {"y": "[T, H, D]"}
    pointwise_inputs = frozenset()

    def infer(self, ins, p, dims):
        return {"y": TensorType(ins["x"].shape, ins["x"].dtype, ins["x"].layout)}

    def domain(self, ins, p, dims):
        return head_domain(ins["x"], HeadTiles(block_h=16))  # attention's head tile


def test_fuse_rejects_a_consumer_that_reads_beyond_its_domain_point(bundled_yaml):
    ops = {**registry(), "shift_heads": _Shift()}
    # the PR #253 kernels only: later kernels alias the `extract` stage edited here
    pr253 = bundled_yaml[:bundled_yaml.index("\n  dsv4_pro_")]
    text = edit(pr253, "in: {x: attn.o}", "in: {x: shift.y}", after=(MAIN, "\n      extract:"))
    text = edit(text, "\n      extract:", "\n      shift:\n        op: shift_heads\n        in: {x: attn.o}"
                                          "\n      extract:", after=MAIN)
    lib = builder.load("kernels.yaml", text=text, ops=ops)
    assert block_names(lib)[:3] == [["gather"], ["attn"], ["shift"]]
    # pointwise: extract reads its input only at its own domain point, so shift+extract may fuse
    wide = text.replace("params: {rope: ROPE, layout: interleave}",
                        "params: {rope: ROPE, layout: interleave, block_h: 16}", 1)
    ok = builder.load("kernels.yaml", text=fused(wide, "[[shift, extract]]"), ops=ops)
    assert block_names(ok)[2] == ["shift", "extract"]
    # not pointwise: shift reads attn.o beyond the point, it needs all of attn done first
    bad = fused(text, "[[attn, shift]]")
    diags = diagnostics(bad, ops=ops)
    assert located(diags) == {("illegal-fuse", *position(bad, "[attn, shift]"))}
    assert "beyond its own domain point" in diags[0].message


def test_stages_that_read_only_above_them_keep_the_sorted_order(monkeypatch, lib):
    """Stages reading only stages above them are typed in file order without a topological sort; the
    lexicographic sort (file order breaking ties) orders them the same."""
    from builder import graph

    def order(library):
        return {(k, s): list(library[k].typed(s)[0].stages) for k in library for s in library[k].spec.sizes}

    wire = graph._GraphBuilder.wire_stages

    def always_sorted(self):
        wire(self)
        assert self.forward  # the bundled kernels take the unsorted path
        self.forward = False

    monkeypatch.setattr(graph._GraphBuilder, "wire_stages", always_sorted)
    assert order(builder.load(BUNDLED)) == order(lib)
