"""The `build` CLI: exit statuses, error output, --graph, --help, writing nothing on error, no torch import.

Every run is a real subprocess (`python -m builder`), so exit statuses and stderr are what a user sees.
No numerical checks run here: every build uses --no-verify.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from builder.cli import parser
from tests.spec_helpers import (BUNDLED, MAIN, MAIN_KERNEL, SIX_OPS, SPLIT, SPLIT_KERNEL, assert_no_traceback,
                                edit, kernel_yaml, parse_report, position, run_build, run_python)

# ---------------------------------------------------------------------------------- the happy paths

def test_check_no_verify_passes_on_the_bundled_file(tmp_path, bundled_yaml):
    out = tmp_path / "out"
    proc = run_build("--file", str(BUNDLED), "--check", "--no-verify", "--out-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    for name in yaml.safe_load(bundled_yaml)["kernels"]:
        assert re.search(rf"^{re.escape(name)} \(", proc.stdout, re.M), proc.stdout
    assert "error[" not in proc.stderr and "warning[" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []     # --check writes nothing


def test_graph_shows_the_six_ops_and_the_loop_blocks(bundled_yaml):
    proc = run_build("--graph", "--kernel", MAIN_KERNEL)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    text = proc.stdout
    for op in SIX_OPS:
        assert re.search(rf"\b{op}\(", text), f"op {op} not shown:\n{text}"
    stages = kernel_yaml(bundled_yaml)["stages"]
    for i, (sid, body) in enumerate(stages.items()):       # one loop block per stage, each stage shown
        assert re.search(rf"loop block {i}\b", text), f"loop block {i} not shown:\n{text}"
        assert re.search(rf"\b{sid} = {body['op']}\(", text), f"stage {sid} not shown:\n{text}"
    assert not re.search(rf"loop block {len(stages)}\b", text)
    assert MAIN_KERNEL in text and SPLIT_KERNEL not in text           # only the kernel asked for


def test_graph_shows_fused_blocks(tmp_path, bundled_yaml):
    path = tmp_path / "fused.yaml"
    path.write_text(edit(bundled_yaml, MAIN, MAIN + "    fuse: [[extract, rotate, interleave, pack]]\n"))
    proc = run_build("--file", str(path), "--graph", "--kernel", MAIN_KERNEL)
    assert proc.returncode == 0, proc.stderr
    n = len(kernel_yaml(bundled_yaml)["stages"]) - 3
    assert re.search(rf"loop block {n - 1}\b", proc.stdout) and not re.search(rf"loop block {n}\b", proc.stdout)


def test_help_documents_every_flag():
    proc = run_build("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    text = proc.stdout
    for flag in ("--file", "--kernel", "--sizes", "--backend", "--out-dir", "--check", "--no-verify", "--seed",
                 "--json", "--graph"):
        assert re.search(rf"^\s+{flag}\b.*\S", text, re.M), f"{flag} not documented:\n{text}"
    for action in parser()._actions:                      # and whatever flag is added later
        assert action.help and action.help != "==SUPPRESS==", action.option_strings
        for opt in action.option_strings:
            assert opt in text
    assert "Exit status" in text and "2 invalid spec or usage" in text


# ---------------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args, says", [
    (["--kernel", "no_such_kernel", "--check", "--no-verify"], "no_such_kernel"),
    (["--graph", "--kernel", "no_such_kernel"], "no_such_kernel"),
    (["--sizes", "huge", "--check", "--no-verify"], "huge"),
    (["--bogus-flag"], "--bogus-flag"),
    (["--backend", "cuda"], "cuda"),
    (["--seed", "many"], "many"),
], ids=["unknown-kernel", "graph-unknown-kernel", "unknown-size-set", "unknown-flag", "bad-choice", "bad-int"])
def test_usage_errors_exit_2_without_traceback(args, says):
    proc = run_build(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_no_traceback(proc)
    assert says in proc.stderr and "error" in proc.stderr
    assert proc.stdout == ""


def test_missing_file_exits_2(tmp_path):
    proc = run_build("--file", str(tmp_path / "absent.yaml"), "--check", "--no-verify")
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert [r[:2] for r in parse_report(proc.stderr)] == [(str(tmp_path / "absent.yaml"), "missing-file")]


# ------------------------------------------------------------------------------ invalid spec files

def realistic_broken(text: str) -> tuple[str, set[tuple[str, int, int]]]:
    """Several different mistakes of the kind people make, in several kernels; and where each is."""
    t = edit(text, "        dtype: fp32\n", "        dtype: bf16\n", after=(MAIN, "\n      attn_sink:"))
    t = edit(t, "cos: freqs_cos", "cos: freqs_cso", after=MAIN)
    t = edit(t, "from: pack.packed", "from: pack.pakced", after=MAIN)
    t = edit(t, "extract: {params:", "extract: {parms:", after=SPLIT)
    t = edit(t, "q: {layout: split_half}", "q: {layout: splithalf}", after=SPLIT)
    t = edit(t, SPLIT, f"\n  my_variant:\n    extends: {MAIN_KERNEL}x\n    doc: a typo in extends\n" + SPLIT)
    expected = {
        ("dtype-mismatch", *position(t, "attn_sink", after=(MAIN, "\n      attn:", "sink: "))),
        ("unknown-ref", *position(t, "freqs_cso")),
        ("output-not-produced", *position(t, "pack.pakced")),
        ("unknown-key", *position(t, "parms")),
        ("bad-value", *position(t, "splithalf")),
        ("unknown-kernel", *position(t, f"{MAIN_KERNEL}x")),
    }
    return t, expected


def test_a_broken_file_reports_every_mistake_in_one_run(tmp_path, bundled_yaml):
    text, expected = realistic_broken(bundled_yaml)
    path = tmp_path / "kernels.yaml"
    path.write_text(text)
    proc = run_build("--file", str(path), "--check", "--no-verify")
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    report = parse_report(proc.stderr)
    assert {(rule, line, col) for _, rule, line, col in report} == expected, proc.stderr
    assert {file for file, *_ in report} == {str(path)}
    assert len({rule for _, rule, _, _ in report}) == len(expected) == 6       # six different rules
    assert re.search(rf"^{re.escape(str(path))}: {len(report)} errors; nothing was written$", proc.stderr, re.M)
    assert "did you mean `freqs_cos`?" in proc.stderr and "did you mean `pack.packed`?" in proc.stderr
    assert proc.stdout == ""


def test_json_report_of_a_broken_file(tmp_path, bundled_yaml):
    text, expected = realistic_broken(bundled_yaml)
    path = tmp_path / "kernels.yaml"
    path.write_text(text)
    proc = run_build("--file", str(path), "--check", "--no-verify", "--json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["status"] == "invalid"
    assert {(d["rule"], d["line"], d["col"]) for d in report["diagnostics"]} == expected
    assert all(d["hint"] and d["severity"] == "error" and d["file"] == str(path) for d in report["diagnostics"])


def test_nothing_is_written_on_error(tmp_path, bundled_yaml):
    """The first kernel is fine, a later one is broken: the run writes nothing at all."""
    broken = edit(bundled_yaml, "extract: {params:", "extract: {parms:", after=SPLIT)
    work = tmp_path / "work"
    work.mkdir()
    (work / "kernels.yaml").write_text(broken)
    proc = run_build("--out-dir", str(work / "gen"), "--no-verify", cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert "nothing was written" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["kernels.yaml"]      # no gen/, no generated/, no temp files

    # the same command on a valid file does write: the check above can see a write
    good = tmp_path / "good"
    good.mkdir()
    (good / "kernels.yaml").write_text(bundled_yaml)
    proc = run_build("--out-dir", str(good / "gen"), "--no-verify", "--kernel", MAIN_KERNEL, cwd=good)
    assert proc.returncode == 0, proc.stderr
    assert any((good / "gen" / MAIN_KERNEL).iterdir())


def test_warnings_are_printed_and_do_not_fail_the_build(tmp_path, bundled_yaml):
    text = edit(bundled_yaml, "    inputs:\n", "    inputs:\n      spare:\n        shape: [T]\n        dtype: fp32\n"
                                              "        init: {zeros: {}}\n", after=MAIN)
    path = tmp_path / "kernels.yaml"
    path.write_text(text)
    proc = run_build("--file", str(path), "--check", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert parse_report(proc.stderr, "warning") == [(str(path), "unused", *position(text, "spare:"))]
    assert parse_report(proc.stderr, "error") == []


# ------------------------------------------------------------------------------ no torch, no triton

_NO_TORCH = r"""
import json, sys
import builder
from builder.cli import run

def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton"))

steps = {}
lib = builder.load("kernels.yaml")
for name in lib:
    for size_set in lib[name].spec.sizes:
        lib[name].typed(size_set)
steps["validate+schedule"] = heavy()
try:
    builder.load("broken.yaml", text="version: 1\nkernels: {k: {doc: x}}\n")
except builder.SpecError:
    pass
steps["invalid spec"] = heavy()
steps["graph rc"] = run(["--graph"])
steps["graph"] = heavy()
steps["check rc"] = run(["--check", "--no-verify", "--backend", "all"])
steps["check --no-verify"] = heavy()
steps["target rc"] = run(["--check", "--no-verify", "--kernel", "dsv4_qkv_rope_forward", "--target", "cuda:sm_90"])
steps["target"] = heavy()  # compiling for a GPU happens in worker processes
print("@@" + json.dumps(steps))
"""


def test_validation_scheduling_and_graph_do_not_import_torch_or_triton():
    proc = run_python(_NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout.rsplit("@@", 1)[1])
    assert steps["graph rc"] == 0 and steps["check rc"] == 0 and steps["target rc"] == 0
    assert steps["validate+schedule"] == []
    assert steps["invalid spec"] == []
    assert steps["graph"] == []
    assert steps["check --no-verify"] == []  # emitting both backends included
    assert steps["target"] == []


def test_target_report_in_text():
    """`--target` prints, per kernel, one row per loop block and the modelled time beside the floor,
    saying that it is a model; the four blocks of the small kernel, in schedule order."""
    proc = run_build("--check", "--no-verify", "--kernel", "dsv4_qkv_rope_forward", "--target", "cuda:sm_90")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert re.search(r"^  target cuda:sm_90: H100 SXM, 132 SMs, 3\.35 TB/s, 232448 B shared memory per program",
                     text, re.M), text
    assert re.search(r"^    block\s+regs\s+spill B\s+smem B\s+warps\s+programs\s+per SM\s+tensor cores\s+"
                     r"compile s\s+floor us\s+model us$", text, re.M), text
    rows = re.findall(r"^    (\d) (\w+)\s+\d+\s+\d+\s+\d+\s+4\s+(\d+)\s+\d+\s+no dot\s+[\d.]+\s+[\d.]+\s+[\d.]+$",
                      text, re.M)
    assert [r[1] for r in rows] == ["extract", "rotate", "interleave", "pack"], text
    assert re.search(r"^    predicted \d+\.\d\d us beside the floor of \d+\.\d\d us on H100 SXM", text, re.M)
    assert "model, not a measurement" in text


# ------------------------------------------------------------------------------ version and --json

def test_version():
    from importlib.metadata import version

    proc = run_build("--version")
    assert proc.returncode == 0 and proc.stdout == f"build (kernel-builder) {version('kernel-builder')}\n"
    assert re.search(rf'^version = "{re.escape(version("kernel-builder"))}"$',
                     (BUNDLED.parent / "pyproject.toml").read_text(), re.M)


def test_json_report_has_a_schema_version_and_consistent_types(bundled_yaml):
    proc = run_build("--check", "--kernel", "dsv4_qkv_rope_forward", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == 1 and report["status"] == "ok" and report["verification"] == "ran"
    (entry,) = report["kernels"]
    stages = list(kernel_yaml(bundled_yaml, "dsv4_qkv_rope_forward")["stages"])
    assert entry["stages"] == stages and entry["loop_blocks"] == stages       # names, one block per stage
    for backend in ("triton", "pypto"):
        info = entry["backends"][backend]
        assert info["status"] == "ok" and info["loop_block_count"] == len(entry["loop_blocks"])
        assert "loop_blocks" not in info
    # an invalid file: the same schema field
    proc = run_build("--file", "no_such.yaml", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["schema"] == 1
