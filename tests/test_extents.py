"""Any sizes, any tiles: the bundled ops recomposed at extents nobody tuned for (3, 5, 40, 100, 192,
7168...), with no tile params at all, verify on both backends; tile defaults fit the extents they
meet; and caller-supplied inputs are checked before they reach a kernel."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import builder
from builder.inputs import InputError, check
from builder.verify import describe
from tests.spec_helpers import run_build

ODD = Path(__file__).parent / "kernels" / "odd_sizes.yaml"


@pytest.fixture(scope="module")
def composed():
    return builder.load(ODD)["composed"]


def test_the_odd_kernel_sets_no_tile_param(composed):
    for st in composed.typed()[0].stages.values():
        assert st.spec.params.keys() <= {"window", "rope", "direction", "groups"}, st.spec.params
        assert all(t.defaulted for t in st.tiles.values())


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", ["small", "d192", "tiny"])
def test_every_op_verifies_at_odd_extents(composed, sizes, backend):
    """small: T=3, H=8, D=256, ROPE=32, TOPK=100, O_LORA=40, quantized rows of 80, D_MODEL=72;
    d192: the same with a head dim of 192; tiny: T=1, H=5, D=40, ROPE=6, D_MODEL=7168."""
    report = composed.verify(backend, sizes)
    assert report.ok, "\n".join(describe(report, str(ODD)))
    assert {c.stage for c in report.stages} == set(composed.typed(sizes)[0].stages)


@pytest.mark.parametrize("backend", ["triton", "pypto"])
@pytest.mark.parametrize("sizes", ["small", "d192"])
def test_attention_split_across_programs_verifies(sizes, backend):
    """Keys split into pieces (the last one short) and combined, head dim combined in tiles (the
    last one short at D = 192)."""
    kernel = builder.load(ODD)["composed_split"]
    sched = kernel.typed(sizes)[1]
    partial, combine = (b for b in sched.blocks if b.phase)
    assert (partial.phase.name, combine.phase.name) == ("partial", "combine")
    assert partial.domain[-1].trips == 4 and partial.domain[-1].tail == 4
    assert combine.domain[-1].tile == 128 and combine.domain[-1].tail == (64 if sizes == "d192" else 0)
    report = kernel.verify(backend, sizes)
    assert report.ok, "\n".join(describe(report, str(ODD)))


def test_extents_really_are_odd(composed):
    for sizes in ("small", "d192", "tiny"):
        tg, sched = composed.typed(sizes)
        extents = {d.value for t in tg.types.values() for d in t.shape}
        assert any(e & (e - 1) for e in extents)
    dims = composed.dims("d192")
    assert dims["D"] == 192 and dims["TOPK"] == 100 and dims["O_LORA"] == 40
    tiny = composed.dims("tiny")
    assert (tiny["H"], tiny["D"], tiny["ROPE"] // 2, tiny["D_MODEL"]) == (5, 40, 3, 7168)


def test_tile_defaults_fit_the_extents(composed):
    tg, sched = composed.typed("small")          # H = 8
    tiles = {sid: {k: (t.size, t.defaulted) for k, t in st.tiles.items()} for sid, st in tg.stages.items()}
    assert tiles["extract"]["block_h"] == (8, True)        # up to 16, capped at H rounded up
    assert tiles["attn"]["block_h"] == (16, True)          # a tl.dot operand needs 16 rows: masked
    assert tiles["attn"]["block_n"] == (32, True)          # 100 keys: three whole blocks and 4
    assert tiles["proj_a"]["block_n"] == (64, True)        # O_LORA = 40: one masked tile
    attn = sched.block_of("attn").domain[1]
    assert attn.tail == 8 and attn.trips == 1


def test_chosen_tiles_are_shown_and_marked_default(composed):
    code = composed.emit("triton")
    assert "EXTRACT_HB_TILE = tl.constexpr(8)  # H tile per program, block_h default" in code
    assert "last tile" in code  # the docstring's domain of the masked attention tile
    proc = run_build("--file", str(ODD), "--graph", "--kernel", "composed")
    assert proc.returncode == 0, proc.stderr
    assert "block_h=8 (default)" in proc.stdout and "block_n=32 (default)" in proc.stdout


def test_a_set_tile_is_not_marked_default():
    text = ODD.read_text().replace("params: {rope: ROPE}}", "params: {rope: ROPE, block_h: 4}}", 1)
    lib = builder.load("k.yaml", text=text)
    assert lib["composed"].typed()[0].stages["extract"].tiles["block_h"].describe() == "block_h=4"


# ------------------------------------------------------------------------------------ input checks

@pytest.fixture(scope="module")
def main_kernel():
    return builder.load("kernels.yaml")["dsv4_sparse_attn_decode"]


def _bad(ins: dict, name: str) -> dict:
    meta = torch.empty(ins["q"].shape, dtype=ins["q"].dtype, device="meta")
    return {
        "dtype": dict(ins, q=ins["q"].float()),
        "shape": dict(ins, q=ins["q"][:, :8].contiguous()),
        "strides": dict(ins, freqs_cos=ins["freqs_cos"].t().contiguous().t()),
        "device": dict(ins, q=meta),
        "page past the pool": dict(ins, cmp_block_table=ins["cmp_block_table"] + 1000),
        "keys past the table": dict(ins, seqused_kv=ins["seqused_kv"] + 1000),
        "missing": {n: v for n, v in ins.items() if n != "q"},
    }[name]


@pytest.mark.parametrize("case, input_name", [
    ("dtype", "q"), ("shape", "q"), ("strides", "freqs_cos"), ("device", "q"), ("missing", "q"),
    ("page past the pool", "cmp_block_table"), ("keys past the table", "seqused_kv"),
])
@pytest.mark.parametrize("backend", ["triton", "pypto"])
def test_bad_inputs_are_refused_naming_the_input_and_its_line(main_kernel, case, input_name, backend):
    ins = main_kernel.make_inputs()
    with pytest.raises(InputError) as info:
        main_kernel.run(_bad(ins, case), backend)
    line = main_kernel.typed()[0].input_locs[input_name].line
    assert f"`{input_name}` (kernels.yaml:{line}:" in str(info.value)


def test_the_index_check_can_be_skipped(main_kernel):
    tg = main_kernel.typed()[0]
    bad = _bad(main_kernel.make_inputs(), "page past the pool")
    with pytest.raises(InputError):
        check(tg, bad, "triton")
    check(tg, bad, "triton", values=False)  # the cheap shape/dtype/device checks pass


def test_a_window_larger_than_its_page_table_is_a_load_error():
    text = Path("kernels.yaml").read_text().replace("    ORI_MAX_BLOCKS: 2\n", "    ORI_MAX_BLOCKS: 1\n", 1)
    with pytest.raises(builder.SpecError) as info:
        builder.load("kernels.yaml", text=text)
    assert any(d.rule == "bad-value" and "`window`" in d.message for d in info.value.diagnostics)
