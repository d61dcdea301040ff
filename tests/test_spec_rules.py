"""One negative test per diagnostic rule (builder.diagnostics.RULES), plus the Python API of the spec layer.

Each case is a small edit of the bundled kernels.yaml (or a few lines added to it). The expected
line and column are computed from the edited text by locating the offending token, and the test
asserts the rule id and that exact location; where a kernel extends the broken one, the same
diagnostic may repeat, so locations are compared as sets.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import networkx as nx
import pytest
import yaml

import builder
from builder.aot.check import RULES as TARGET_RULES
from builder.diagnostics import RULES
from tests.spec_helpers import (BUNDLED, MAIN, MAIN_KERNEL, SPLIT, SPLIT_KERNEL, diagnostics, edit, kernel_lines,
                                kernel_yaml, located, position)

ATTN = (MAIN, "\n      attn:")          # the attention stage of the main kernel
EXTRACT = (MAIN, "\n      extract:")
SINK = (MAIN, "\n      attn_sink:")      # the attn_sink input of the main kernel


@dataclass
class Expect:
    text: str
    at: tuple[int, int]
    message: tuple[str, ...] = ()     # substrings the message must contain
    hint: tuple[str, ...] = ()        # substrings the hint must contain
    severity: str = "error"


@dataclass
class Case:
    rule: str
    make: Callable[[str], Expect]


# ---------------------------------------------------------------------------------------------- cases

def _yaml_syntax(b: str) -> Expect:
    t = edit(b, "    inputs:\n", "    inputs:\n      note: one: two\n", after=MAIN)
    # PyYAML stops at the second `:` of a plain scalar: "mapping values are not allowed here"
    return Expect(t, position(t, "note: one:", offset=len("note: one")), ("mapping values",), ("indentation",))


def _yaml_bad_character(b: str) -> Expect:
    t = edit(b, "    inputs:\n", "    inputs:\n      note: bell\x07\n", after=MAIN)
    return Expect(t, position(t, "\x07"), ("\\x07",))


def _duplicate_key(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: [H]\n        shape: [H]\n", after=SINK)
    first_line = position(t, "shape: [H]", after=SINK)[0]
    return Expect(t, position(t, "shape: [H]", after=SINK, nth=2), ("`shape`",), (f"line {first_line}",))


def _unknown_key_stage(b: str) -> Expect:
    t = edit(b, "        op: sparse_attention\n", "        op: sparse_attention\n        parms: {}\n", after=ATTN)
    return Expect(t, position(t, "parms", after=ATTN), ("`parms`",), ("did you mean `params`?",))


def _unknown_key_param(b: str) -> Expect:
    t = edit(b, "params: {window: WIN", "params: {windw: 3, window: WIN", after=MAIN)
    return Expect(t, position(t, "windw", after=MAIN), ("`windw`",), ("did you mean `window`?",))


def _unknown_key_kernel(b: str) -> Expect:
    t = edit(b, MAIN, MAIN + "    tolerence: {rtol: 0.01}\n")
    return Expect(t, position(t, "tolerence"), ("`tolerence`",), ("did you mean `tolerance`?",))


def _missing_key(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n        dtype: fp32\n", "        shape: [H]\n", after=SINK)
    # reported where the mapping that lacks the key starts
    return Expect(t, position(t, "shape: [H]", after=SINK), ("`dtype`",), ("dtype:",))


def _missing_port(b: str) -> Expect:
    t = edit(b, " valid: gather.valid,", "", after=ATTN)  # `sink` is optional (Qwen3 has none); `valid` is not
    return Expect(t, position(t, "{", after=ATTN + ("in: ",)), ("`valid`",), ("valid:",))


def _wrong_type(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: H\n", after=SINK)
    return Expect(t, position(t, "H", after=SINK + ("shape: ",)), ("shape",), ("list",))


def _wrong_type_merged(b: str) -> Expect:
    """In a mapping built with a merge key, a bad explicit value is reported where it is written."""
    t = edit(b, "\nkernels:\n", "  my_base: &my_base {T: 1}\n  my_sizes: {<<: *my_base, T: lots}\n\nkernels:\n")
    return Expect(t, position(t, "lots"), ("my_sizes",), ("integer",))


def _unknown_op(b: str) -> Expect:
    t = edit(b, "op: rope_apply", "op: rope_aply", after=MAIN)
    return Expect(t, position(t, "rope_aply"), ("rope_aply",), ("did you mean `rope_apply`?",))


def _unknown_ref(b: str) -> Expect:
    t = edit(b, "even: extract.even", "even: extract.evn", after=MAIN)
    return Expect(t, position(t, "extract.evn"), ("extract.evn",), ("did you mean `extract.even`?",))


def _unknown_size_set(b: str) -> Expect:
    t = edit(b, "small: dsv4_small\n", "small: dsv4_smal\n", after=MAIN)
    return Expect(t, position(t, "dsv4_smal\n"), ("dsv4_smal",), ("did you mean `dsv4_small`?",))


def _unknown_default_sizes(b: str) -> Expect:
    t = edit(b, MAIN, MAIN + "    default_sizes: smal\n")
    return Expect(t, position(t, "smal\n", after=MAIN), ("smal",), ("did you mean `small`?",))


def _unknown_kernel(b: str) -> Expect:
    t = edit(b, f"extends: {MAIN_KERNEL}\n", f"extends: {MAIN_KERNEL}x\n", after=SPLIT)
    return Expect(t, position(t, f"{MAIN_KERNEL}x"), (f"{MAIN_KERNEL}x",), (f"did you mean `{MAIN_KERNEL}`?",))


def _cycle(b: str) -> Expect:
    t = edit(b, "in: {x: attn.o}", "in: {x: pack.packed}", after=EXTRACT)
    # reported at the reference that closes the loop; the message prints the whole loop
    return Expect(t, position(t, "pack.packed", after=EXTRACT),
                  ("extract -> rotate -> interleave -> pack -> extract",), ("produced before",))


def _cycle_extends(b: str) -> Expect:
    t = edit(b, MAIN, MAIN + f"    extends: {SPLIT_KERNEL}\n")
    # resolved in file order: the main kernel extends split-half, whose `extends:` closes the loop
    return Expect(t, position(t, MAIN_KERNEL, after=(SPLIT, "extends: ")),
                  (f"{MAIN_KERNEL} -> {SPLIT_KERNEL} -> {MAIN_KERNEL}",))


def _shape_mismatch(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: [T]\n", after=SINK)
    return Expect(t, position(t, "attn_sink", after=ATTN + ("sink: ",)), ("T=", "H=", "`sink`"))


def _dtype_mismatch(b: str) -> Expect:
    t = edit(b, "        dtype: fp32\n", "        dtype: bf16\n", after=SINK)
    return Expect(t, position(t, "attn_sink", after=ATTN + ("sink: ",)), ("bf16", "fp32"), ("fp32",))


def _layout_mismatch(b: str) -> Expect:
    t = edit(b, "layout: interleave}", "layout: split_half}", after=EXTRACT)
    # the message names both sides: the producer's layout and the one the stage declares
    return Expect(t, position(t, "attn.o", after=EXTRACT), ("`interleave`", "`split_half`", "attn.o"), ("layout",))


def _output_not_produced(b: str) -> Expect:
    t = edit(b, "from: pack.packed", "from: pack.pakced", after=MAIN)
    return Expect(t, position(t, "pack.pakced"), ("pack.pakced",), ("did you mean `pack.packed`?",))


def _unused_input(b: str) -> Expect:
    t = edit(b, "    inputs:\n", "    inputs:\n      spare:\n        shape: [T]\n        dtype: fp32\n"
                                 "        init: {zeros: {}}\n", after=MAIN)
    return Expect(t, position(t, "spare:"), ("`spare`",), ("remove it",), severity="warning")


def _unused_stage(b: str) -> Expect:
    t = edit(b, "    stages:\n", "    stages:\n      spare_rot:\n        op: rope_apply\n"
                                 "        in: {even: extract.even, odd: extract.odd, cos: freqs_cos, sin: freqs_sin}\n"
                                 "        params: {direction: forward}\n", after=MAIN)
    return Expect(t, position(t, "spare_rot:"), ("`spare_rot`",), severity="warning")


def _undefined_dim(b: str) -> Expect:
    t = edit(b, "NOPE: D - ROPE\n", "NOPE: D - ROPES\n", after=MAIN)
    return Expect(t, position(t, "D - ROPES"), ("`ROPES`",), ("dims:",))


def _undefined_dim_in_shape(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: [HEADS]\n", after=SINK)
    return Expect(t, position(t, "HEADS", after=SINK), ("HEADS", "attn_sink"))


def _circular_dim(b: str) -> Expect:
    t = edit(b, "NOPE: D - ROPE\n", "NOPE: D - HALF_ROPE\n", after=MAIN)
    t = edit(t, "HALF_ROPE: ROPE // 2\n", "HALF_ROPE: NOPE // 2\n", after=MAIN)
    return Expect(t, position(t, "D - HALF_ROPE"), ("NOPE -> HALF_ROPE -> NOPE",))


def _bad_expr(b: str) -> Expect:
    t = edit(b, "NOPE: D - ROPE\n", "NOPE: __import__('os').getcwd()\n", after=MAIN)
    return Expect(t, position(t, "__import__"), ("__import__",), ("arithmetic",))


def _bad_value_range(b: str) -> Expect:
    t = edit(b, "params: {window: WIN", "params: {block_j: 0, window: WIN", after=MAIN)
    return Expect(t, position(t, "0", after=(MAIN, "block_j: ")), ("block_j",), (">= 1",))


def _bad_value_tile(b: str) -> Expect:
    """A tile size no backend can use is located at the param, with the sizes that fit."""
    t = edit(b, "params: {block_n: 16}", "params: {block_n: 24}", after=ATTN)
    return Expect(t, position(t, "24}", after=ATTN), ("`block_n` = 24", "power of two"),
                  ("values that fit: 16, 32, 64, 128", "leave `block_n` out"))


def _bad_value_enum(b: str) -> Expect:
    t = edit(b, "        dtype: fp32\n", "        dtype: fp33\n", after=SINK)
    return Expect(t, position(t, "fp33"), ("fp33",), ("'fp32'",))


def _bad_value_literal(b: str) -> Expect:
    t = edit(b, "direction: inverse", "direction: sideways", after=MAIN)
    return Expect(t, position(t, "sideways"), ("sideways",), ("'inverse'",))


def _bad_value_negative_extent(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: [H - 100]\n", after=SINK)
    return Expect(t, position(t, "H - 100"), ("attn_sink", "H - 100"))


def _bad_value_zero_extent(b: str) -> Expect:
    t = edit(b, "        shape: [H]\n", "        shape: [H - H]\n", after=SINK)
    return Expect(t, position(t, "H - H"), ("attn_sink", "H - H", ">= 1"))


def _bad_value_zero_divisor(b: str) -> Expect:
    """A param the op's shape rule divides by is 0: a diagnostic at the param, not a ZeroDivisionError."""
    pack = (MAIN, "\n      pack:")
    t = edit(b, "params: {groups: O_GROUPS}", "params: {groups: 0}", after=pack)
    return Expect(t, position(t, "0}", after=pack + ("groups: ",)), ("`pack`", "`groups` = 0"))


def _illegal_fuse(b: str) -> Expect:
    t = edit(b, MAIN, MAIN + "    fuse: [[gather, attn]]\n")
    return Expect(t, position(t, "[gather, attn]"), ("`gather`", "`attn`"), ("iteration domain",))


def _bad_name(b: str) -> Expect:
    t = edit(b, "      attn_sink:\n", "      attn-sink:\n", after=MAIN)
    return Expect(t, position(t, "attn-sink:"), ("attn-sink", "identifier"), ("reserved",))


def _bad_name_clash(b: str) -> Expect:
    """An input named like a dim: both would be one identifier of the generated code."""
    t = edit(b, "      attn_sink:\n", "      NOPE:\n", after=MAIN).replace("sink: attn_sink}", "sink: NOPE}", 1)
    return Expect(t, position(t, "NOPE:", after=(MAIN, "    inputs:")), ("input `NOPE`", "dim `NOPE`"), ("rename",))


def _bad_tag(b: str) -> Expect:
    t = edit(b, "params: {window: WIN}", "params: {window: !!python/name:os.system WIN}", after=MAIN)
    return Expect(t, position(t, "!!python"), ("python/name",),
                  ("remove the tag",))


def _too_deep(b: str) -> Expect:
    t = edit(b, MAIN, MAIN + "    extra: " + "[" * 40 + "]" * 40 + "\n")
    return Expect(t, position(t, "[", after=(MAIN, "extra: "), offset=29), ("32 levels",))  # 3 levels above


def _too_many_nodes(b: str) -> Expect:
    """Ten uses per level of the previous level's anchor: the loader stops at the use that passes its
    alias budget (each use adds the whole anchored value, counted as the loader counts it)."""
    from builder.yamlsource import MAX_ALIAS_NODES

    levels = ["  a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"]
    levels += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7)]
    t = edit(b, "\nkernels:\n", "\n" + "".join(levels) + "\nkernels:\n")
    cost, spent = [11], 0                     # a0: the list and its ten scalars
    for i in range(1, 7):
        for use in range(1, 11):
            spent += cost[i - 1]
            if spent > MAX_ALIAS_NODES:
                return Expect(t, position(t, f"*a{i - 1}", after=f"  a{i}: ", nth=use), ("aliases expand",))
        cost.append(1 + 10 * cost[i - 1])
    raise AssertionError("the aliases never pass the budget")


def _expr_too_complex(b: str) -> Expect:
    t = edit(b, "HALF_ROPE: ROPE // 2", "HALF_ROPE: ROPE // 2 ** 99", after=MAIN)
    return Expect(t, position(t, "ROPE // 2 ** 99"), ("exponents",))


def _tensor_too_large(b: str) -> Expect:
    t = edit(b, "    T: 2\n", "    T: 200000000\n", after="  dsv4_small: &dsv4_small")
    return Expect(t, position(t, "small: dsv4_small", after=MAIN, offset=7), ("size set `small`", "bytes"),
                  ("--max-bytes",))


CASES = {
    "yaml-syntax": Case("yaml-syntax", _yaml_syntax),
    "bad-name": Case("bad-name", _bad_name),
    "bad-name/clash": Case("bad-name", _bad_name_clash),
    "bad-tag": Case("bad-tag", _bad_tag),
    "too-deep": Case("too-deep", _too_deep),
    "too-many-nodes": Case("too-many-nodes", _too_many_nodes),
    "expr-too-complex": Case("expr-too-complex", _expr_too_complex),
    "tensor-too-large": Case("tensor-too-large", _tensor_too_large),
    "yaml-syntax/bad-character": Case("yaml-syntax", _yaml_bad_character),
    "duplicate-key": Case("duplicate-key", _duplicate_key),
    "unknown-key/stage": Case("unknown-key", _unknown_key_stage),
    "unknown-key/op-param": Case("unknown-key", _unknown_key_param),
    "unknown-key/kernel": Case("unknown-key", _unknown_key_kernel),
    "missing-key": Case("missing-key", _missing_key),
    "missing-key/port": Case("missing-key", _missing_port),
    "wrong-type": Case("wrong-type", _wrong_type),
    "wrong-type/merge-key": Case("wrong-type", _wrong_type_merged),
    "unknown-op": Case("unknown-op", _unknown_op),
    "unknown-ref": Case("unknown-ref", _unknown_ref),
    "unknown-ref/size-set": Case("unknown-ref", _unknown_size_set),
    "unknown-ref/default-sizes": Case("unknown-ref", _unknown_default_sizes),
    "unknown-kernel": Case("unknown-kernel", _unknown_kernel),
    "cycle": Case("cycle", _cycle),
    "cycle/extends": Case("cycle", _cycle_extends),
    "shape-mismatch": Case("shape-mismatch", _shape_mismatch),
    "dtype-mismatch": Case("dtype-mismatch", _dtype_mismatch),
    "layout-mismatch": Case("layout-mismatch", _layout_mismatch),
    "output-not-produced": Case("output-not-produced", _output_not_produced),
    "unused/input": Case("unused", _unused_input),
    "unused/stage": Case("unused", _unused_stage),
    "undefined-dim": Case("undefined-dim", _undefined_dim),
    "undefined-dim/shape": Case("undefined-dim", _undefined_dim_in_shape),
    "circular-dim": Case("circular-dim", _circular_dim),
    "bad-expr": Case("bad-expr", _bad_expr),
    "bad-value/range": Case("bad-value", _bad_value_range),
    "bad-value/tile": Case("bad-value", _bad_value_tile),
    "bad-value/enum": Case("bad-value", _bad_value_enum),
    "bad-value/literal": Case("bad-value", _bad_value_literal),
    "bad-value/negative-extent": Case("bad-value", _bad_value_negative_extent),
    "bad-value/zero-extent": Case("bad-value", _bad_value_zero_extent),
    "bad-value/zero-divisor": Case("bad-value", _bad_value_zero_divisor),
    "illegal-fuse": Case("illegal-fuse", _illegal_fuse),
}


# Rules about the file itself, or about sizes an edit of the bundled file cannot reach cheaply, have
# their negative tests in tests/test_hostile.py.
ELSEWHERE = {"missing-file", "not-a-file", "file-too-large", "too-many-stages"}


def test_every_rule_has_a_negative_test():
    from tests.test_hostile import CASES as HOSTILE

    # the rules of compiled code (`build --target`) are exercised in tests/test_targets.py
    assert {c.rule for c in CASES.values()} | ELSEWHERE == set(RULES) - set(TARGET_RULES)
    assert ELSEWHERE - {"missing-file", "file-too-large"} <= {c.rule for c in HOSTILE.values()}


def test_the_bundled_file_is_clean(bundled_yaml):
    """The baseline the cases edit has no errors and no warnings: every diagnostic below is the edit's."""
    assert diagnostics(bundled_yaml, str(BUNDLED)) == []


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_rule(case: Case, bundled_yaml):
    exp = case.make(bundled_yaml)
    assert exp.text != bundled_yaml
    diags = diagnostics(exp.text)
    shown = "\n".join(d.render() for d in diags)
    # the one mistake, at the offending token; kernels that reuse the edited text (through `extends:`
    # or a YAML alias) may repeat it, at their own places, but nothing else in the main kernel is flagged
    assert (case.rule, *exp.at) in located(diags), shown
    main = kernel_lines(exp.text)
    for rule, line, col in located(diags):
        assert rule == case.rule, shown
        assert (line, col) == exp.at or line not in main, shown
    for d in diags:
        assert d.severity == exp.severity, shown
        assert d.loc.file == "kernels.yaml"
        if d.severity == "error":
            assert d.hint, f"every error carries a hint:\n{shown}"
        if (d.loc.line, d.loc.col) == exp.at:
            for part in exp.message:
                assert part in d.message, shown
            for part in exp.hint:
                assert part in d.hint, shown


@pytest.mark.parametrize("case", [c for c in CASES.values() if c.rule != "unused"],
                         ids=[k for k, c in CASES.items() if c.rule != "unused"])
def test_rule_raises_spec_error(case: Case, bundled_yaml):
    """Errors raise builder.SpecError from builder.load; its text is the rendered diagnostics."""
    exp = case.make(bundled_yaml)
    with pytest.raises(builder.SpecError) as info:
        builder.load("kernels.yaml", text=exp.text)
    line, col = exp.at
    assert f"kernels.yaml:{line}:{col}: error[{case.rule}]: " in str(info.value)


def test_unused_is_a_warning_not_an_error(bundled_yaml):
    exp = _unused_input(bundled_yaml)
    lib = builder.load("kernels.yaml", text=exp.text)    # does not raise
    assert [(w.rule, w.severity) for w in lib.warnings] == [("unused", "warning")] * len(lib.warnings)
    assert {(w.loc.line, w.loc.col) for w in lib.warnings} == {exp.at}
    assert "spare" in lib[MAIN_KERNEL].spec.inputs


# ------------------------------------------------------------------------------ several errors at once

def test_all_errors_of_a_file_in_one_load(bundled_yaml):
    t = bundled_yaml
    t = edit(t, "op: rope_apply", "op: rope_aply", after=MAIN)                      # unknown-op
    t = edit(t, "        dtype: fp32\n", "        dtype: bf16\n", after=SINK)        # dtype-mismatch
    t = edit(t, "from: pack.packed", "from: pack.pakced", after=MAIN)               # output-not-produced
    t = edit(t, "q: {layout: split_half}", "q: {layout: splithalf}", after=SPLIT)   # bad-value (other kernel)
    with pytest.raises(builder.SpecError) as info:
        builder.load("kernels.yaml", text=t)
    got = located(info.value.diagnostics)
    assert got == {
        ("unknown-op", *position(t, "rope_aply")),
        ("dtype-mismatch", *position(t, "attn_sink", after=ATTN + ("sink: ",))),
        ("output-not-produced", *position(t, "pack.pakced")),
        ("bad-value", *position(t, "splithalf")),
    }, str(info.value)
    # sorted by location, and the exception text shows every one of them
    assert info.value.diagnostics == sorted(info.value.diagnostics, key=lambda d: (d.loc, d.rule))
    for d in info.value.diagnostics:
        assert d.render() in str(info.value)


def test_an_error_in_a_stage_does_not_cascade(bundled_yaml):
    """Readers of a stage with a bad op or bad params are not reported as reading an unknown tensor."""
    t = edit(bundled_yaml, "params: {window: WIN", "params: {block_j: -1, window: WIN", after=MAIN)
    assert {d.rule for d in diagnostics(t)} == {"bad-value"}


# -------------------------------------------------------------------------------------- Python API

@pytest.fixture(scope="module")
def lib():
    return builder.load(BUNDLED)


def test_load_returns_a_read_only_mapping_of_kernels(lib):
    assert isinstance(lib, builder.Library)
    assert isinstance(lib, Mapping)
    assert list(lib) == list(yaml.safe_load(BUNDLED.read_text())["kernels"])      # names, in file order
    assert MAIN_KERNEL in lib and SPLIT_KERNEL in lib
    assert isinstance(lib[MAIN_KERNEL], builder.Kernel)
    with pytest.raises(TypeError):
        lib["other"] = lib[MAIN_KERNEL]  # type: ignore[index]
    with pytest.raises(KeyError):
        lib["no_such_kernel"]


def test_kernel_graph_is_a_networkx_digraph(lib, bundled_yaml):
    k = lib[MAIN_KERNEL]
    g = k.graph
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    raw = kernel_yaml(bundled_yaml)
    assert {f"stage:{s}" for s in raw["stages"]} <= set(g.nodes)
    assert {f"input:{i}" for i in raw["inputs"]} <= set(g.nodes)
    assert {f"output:{o}" for o in raw["outputs"]} <= set(g.nodes)
    assert g.has_edge("stage:gather", "stage:attn") and g.has_edge("input:q", "stage:attn")
    assert g.edges["stage:extract", "stage:rotate"]["type"].dtype.value == "bf16"


def test_kernel_schedule_has_blocks(lib, bundled_yaml):
    sched = lib[MAIN_KERNEL].schedule
    stages = list(kernel_yaml(bundled_yaml)["stages"])
    assert len(sched.blocks) == len(stages)                   # one loop block per stage without `fuse:`
    assert [s.id for b in sched.blocks for s in b.stages] == stages
    assert [b.index for b in sched.blocks] == list(range(len(stages)))
    assert all(b.domain for b in sched.blocks)


def test_kernel_dims_default_to_small_and_take_a_size_set(lib, bundled_yaml):
    k = lib[MAIN_KERNEL]
    data = yaml.safe_load(bundled_yaml)
    small, full = data["sizes"]["dsv4_small"], data["sizes"]["dsv4_full"]
    assert k.spec.default_sizes == "small"
    assert k.dims() == k.dims("small")
    assert {n: k.dims()[n] for n in small} == small
    assert {n: k.dims("full")[n] for n in full} == full
    assert (k.dims("full")["T"], k.dims("full")["H"], k.dims("full")["D"]) == (16, 64, 512)
    for dims, sizes in ((k.dims(), small), (k.dims("full"), full)):   # derived dims from their expressions
        assert dims["NOPE"] == sizes["D"] - sizes["ROPE"]
        assert dims["HALF_ROPE"] == sizes["ROPE"] // 2
        assert dims["O_GROUP_IN"] == sizes["H"] // sizes["O_GROUPS"] * sizes["D"]
    with pytest.raises(KeyError):
        k.dims("huge")


def test_load_from_a_path_raises_spec_error_with_every_diagnostic(tmp_path, bundled_yaml):
    t = edit(bundled_yaml, "even: extract.even", "even: extract.evn", after=MAIN)
    t = edit(t, "NOPE: D - ROPE\n", "NOPE: D - ROPE\n      NOPE: D\n", after=MAIN)
    path = tmp_path / "broken.yaml"
    path.write_text(t)
    with pytest.raises(builder.SpecError) as info:
        builder.load(path)
    # a duplicate key stops at parsing, so only it is reported; its file is the path given
    assert [(d.rule, d.loc.file) for d in info.value.diagnostics] == [("duplicate-key", str(path))]

    t = edit(bundled_yaml, "even: extract.even", "even: extract.evn", after=MAIN)
    t = edit(t, "from: pack.packed", "from: pack.pakced", after=MAIN)
    path.write_text(t)
    with pytest.raises(builder.SpecError) as info:
        builder.load(str(path))
    assert sorted(d.rule for d in info.value.diagnostics) == ["output-not-produced", "unknown-ref"]
    assert all(d.loc.file == str(path) for d in info.value.diagnostics)
    assert isinstance(info.value, Exception)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(builder.SpecError) as info:
        builder.load(tmp_path / "absent.yaml")
    assert [d.rule for d in info.value.diagnostics] == ["missing-file"]


# ----------------------------------------------------------------------------- layouts and extends

def _strip_layouts(value):
    if isinstance(value, dict):
        return {k: _strip_layouts(v) for k, v in value.items() if k != "layout"}
    if isinstance(value, list):
        return [_strip_layouts(v) for v in value]
    return value


def _leaves(value, path=()) -> list[tuple]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, path + (k,))]
    return [path]


def _layouts(value, path=()):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update({path + (k,): v} if k == "layout" else _layouts(v, path + (k,)))
        return out
    return {}


def test_split_half_kernel_differs_only_in_layout_lines(lib, bundled_yaml):
    raw = kernel_yaml(bundled_yaml, SPLIT_KERNEL)
    assert raw["extends"] == MAIN_KERNEL
    # as written: besides `extends:` and `doc:`, every value it sets is a layout
    written = {k: v for k, v in raw.items() if k not in ("extends", "doc")}
    assert _leaves(written) and all(path[-1] == "layout" for path in _leaves(written)), _leaves(written)
    # as loaded: the merged specs are equal except for the layouts (and name, doc, extends)
    ignore = {"name", "doc", "extends"}
    a = {k: v for k, v in lib[MAIN_KERNEL].spec.model_dump(by_alias=True).items() if k not in ignore}
    b = {k: v for k, v in lib[SPLIT_KERNEL].spec.model_dump(by_alias=True).items() if k not in ignore}
    assert _strip_layouts(a) == _strip_layouts(b)
    diff = {p for p in _layouts(a) | _layouts(b) if _layouts(a).get(p) != _layouts(b).get(p)}
    assert diff == set(_layouts(raw))
    assert all(_layouts(b)[p] == "split_half" for p in diff)
    # and the layouts reach the typed graph
    assert lib[SPLIT_KERNEL].typed()[0].types["extract.even"].layout.value == "split_half"
    assert lib[MAIN_KERNEL].typed()[0].types["extract.even"].layout.value == "interleave"


def test_extract_declaring_split_half_on_interleaved_input_is_a_layout_mismatch(bundled_yaml):
    """A kernel (via `extends:`) whose rope_extract says split_half while its input is interleaved."""
    t = bundled_yaml.rstrip("\n") + (f"\n\n  wrong_layout:\n    extends: {MAIN_KERNEL}\n    doc: broken on purpose\n"
                                     "    stages:\n      extract: {params: {layout: split_half}}\n")
    diags = diagnostics(t)
    assert {d.rule for d in diags} == {"layout-mismatch"}, "\n".join(d.render() for d in diags)
    (d,) = {d.message: d for d in diags}.values()
    assert "`interleave`" in d.message and "`split_half`" in d.message
    # the edge it concerns is written in the parent kernel: `x: attn.o` of its extract stage
    assert (d.loc.line, d.loc.col) == position(t, "attn.o", after=EXTRACT)
