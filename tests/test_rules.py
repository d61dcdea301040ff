"""builder/rules.py: every rule's example raises that rule; `build --explain`; the README's rule list.

Rules about the file itself (`file` examples describe a situation) are built here; the `--target`
rules' examples are compiled for sm_90 on this CPU.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import builder
from builder import explain, yamlsource
from builder.aot.check import RULES as TARGET_RULES
from builder.diagnostics import DEFAULT_HINTS, RULES
from builder.rules import BASE, BY_ID, CATALOGUE
from tests.spec_helpers import REPO, diagnostics, run_build

SPEC = [r for r in CATALOGUE if r.kind == "spec"]


def test_one_table_feeds_the_rule_ids_hints_and_target_rules():
    assert list(RULES) == [r.id for r in CATALOGUE] and len(BY_ID) == len(CATALOGUE)
    assert all(RULES[r.id] == r.summary and DEFAULT_HINTS[r.id] == r.hint for r in CATALOGUE)
    assert set(TARGET_RULES) == {"gpu-resources", "gpu-underuse"}
    for r in CATALOGUE:
        assert r.summary and r.hint and r.explain and r.example and r.fix, r.id
        assert r.kind in ("spec", "file", "target") and r.severity in ("error", "warning")


def test_the_base_of_the_examples_is_clean():
    assert diagnostics(BASE) == []


@pytest.mark.parametrize("rule", SPEC, ids=[r.id for r in SPEC])
def test_each_example_raises_its_rule(rule):
    found = diagnostics(rule.example, "example.yaml")
    shown = "\n".join(d.render() for d in found)
    assert rule.id in {d.rule for d in found if d.severity == rule.severity}, shown
    # a minimal example: its one mistake, no other error
    assert {d.rule for d in found if d.severity == "error"} <= {rule.id}, shown


def _missing_file(tmp_path: Path) -> list:
    return _load(tmp_path / "no_such_file.yaml")


def _not_a_file(tmp_path: Path) -> list:
    return _load(tmp_path)  # a directory


def _file_too_large(tmp_path: Path) -> list:
    path = tmp_path / "huge.yaml"
    path.write_text(BASE + "#" * yamlsource.MAX_FILE_BYTES + "\n")
    return _load(path)


def _too_many_stages(tmp_path: Path) -> list:
    from builder.specload import MAX_STAGES

    stages = "".join(f"      s{i}: {{op: rope_apply}}\n" for i in range(MAX_STAGES + 1))
    return diagnostics(BASE.replace("    stages:\n", "    stages:\n" + stages, 1))


def _load(path) -> list:
    with pytest.raises(builder.SpecError) as info:
        builder.load(path)
    return list(info.value.diagnostics)


SITUATIONS = {"missing-file": _missing_file, "not-a-file": _not_a_file, "file-too-large": _file_too_large,
              "too-many-stages": _too_many_stages}


def test_every_situation_is_built():
    assert set(SITUATIONS) == {r.id for r in CATALOGUE if r.kind == "file"}


@pytest.mark.parametrize("rule_id", list(SITUATIONS))
def test_each_situation_raises_its_rule(rule_id, tmp_path):
    found = SITUATIONS[rule_id](tmp_path)
    assert [d.rule for d in found] == [rule_id], "\n".join(d.render() for d in found)


def test_the_target_examples_raise_their_rules():
    from builder.aot import analyze
    from builder.targets import target

    for rule in (r for r in CATALOGUE if r.kind == "target"):
        lib = builder.load("example.yaml", text=rule.example)
        assert not lib.warnings
        (kernel,) = lib.values()
        (fit,) = analyze([kernel.typed()], [target("cuda:sm_90")], workers=1).values()
        assert rule.id in {d.rule for d in fit.diagnostics if d.severity == rule.severity}, \
            "\n".join(d.render() for d in fit.diagnostics)


# ------------------------------------------------------------------------------------- the CLI

def test_explain_lists_every_rule_with_its_summary():
    proc = run_build("--explain")
    assert proc.returncode == 0 and proc.stderr == ""
    for r in CATALOGUE:
        assert re.search(rf"^{re.escape(r.id)}\s+{re.escape(r.summary)}$", proc.stdout, re.M), r.id


@pytest.mark.parametrize("rule_id", ["unknown-ref", "missing-file", "gpu-underuse"])
def test_explain_a_rule(rule_id):
    rule = BY_ID[rule_id]
    proc = run_build("--explain", rule_id)
    assert proc.returncode == 0 and proc.stderr == ""
    text = proc.stdout
    assert text.startswith(f"{rule.severity}[{rule_id}]: {rule.summary}\n")
    assert " ".join(rule.explain.split()) in " ".join(text.split())
    for line in rule.example.strip().splitlines():                 # the example, indented as a block
        assert "    " + line in text.splitlines()
    assert " ".join(("Fix: " + rule.fix).split()) in " ".join(text.split())


def test_the_explained_command_reports_the_rule(tmp_path):
    """What `--explain` says to run on its example is what a user sees."""
    (tmp_path / "example.yaml").write_text(BY_ID["unknown-op"].example)
    proc = run_build("--file", "example.yaml", "--check", "--no-verify", cwd=tmp_path)
    assert proc.returncode == 2 and "error[unknown-op]" in proc.stderr, proc.stderr


def test_explain_an_unknown_rule_is_a_usage_error():
    proc = run_build("--explain", "unkown-ref")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no rule 'unkown-ref'" in proc.stderr and "did you mean `unknown-ref`?" in proc.stderr


def test_readme_rule_list_is_current():
    text = (REPO / "README.md").read_text()
    assert explain.readme_section(text) == explain.markdown(), \
        "README's rule list is stale: run `python -m builder.explain --readme README.md`"


def test_update_readme_rewrites_only_the_list(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n{explain.BEGIN}\n| stale |\n{explain.END}\n\nafter\n")
    assert explain.update_readme(str(path)) is True
    assert path.read_text() == f"# title\n\n{explain.markdown()}\n\nafter\n"
    assert explain.update_readme(str(path)) is False
    assert os.path.getsize(path) > 0
