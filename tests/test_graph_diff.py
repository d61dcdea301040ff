"""`build --graph --against`: added, removed and changed stages, edges and loop blocks."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

import builder
from builder.cli import run
from builder.render import models, render
from builder.render.dot import DIFF

try:
    from test_render import parse_dot, parse_mermaid
except ImportError:  # tests/ as a package
    from .test_render import parse_dot, parse_mermaid

ROOT = Path(__file__).resolve().parent.parent
YAML = ROOT / "kernels.yaml"
BASE, SPLIT = "dsv4_sparse_attn_decode", "dsv4_sparse_attn_decode_split_half"
GREEN, RED, ORANGE = (DIFF[s][0] for s in ("added", "removed", "changed"))


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = run(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def lib():
    return builder.load(YAML)


def _edges(tg) -> dict:
    """(producer node, tensor, consumer node, port) -> TensorType, straight from the typed graph."""
    out = {}
    for st in tg.stages.values():
        for port, ref in st.inputs.items():
            src = f"stage:{tg.producer(ref)}" if tg.producer(ref) else f"input:{ref}"
            out[(src, ref, f"stage:{st.id}", port)] = st.in_types[port]
    for name, ref in tg.outputs.items():
        src = f"stage:{tg.producer(ref)}" if tg.producer(ref) else f"input:{ref}"
        out[(src, ref, f"output:{name}", name)] = tg.types[ref]
    return out


def _expected_layout_change(lib):
    new, old = lib[SPLIT].typed()[0], lib[BASE].typed()[0]
    ne, oe = _edges(new), _edges(old)
    assert ne.keys() == oe.keys()
    edges = {k for k in ne if ne[k] != oe[k]}
    assert all(ne[k].layout != oe[k].layout and ne[k].shape == oe[k].shape for k in edges)
    stages = {f"stage:{s}" for s in new.stages
              if new.stages[s].op.key_params(new.stages[s].params) != old.stages[s].op.key_params(old.stages[s].params)}
    inputs = {f"input:{n}" for n in new.inputs if new.inputs[n] != old.inputs[n]}
    outputs = {f"output:{n}" for n, r in new.outputs.items() if new.types[r] != old.types[old.outputs[n]]}
    return stages, edges, inputs, outputs


def test_interleave_vs_split_half_shows_exactly_the_layout_changes(capsys, monkeypatch, lib):
    monkeypatch.chdir(ROOT)
    stages, edges, inputs, outputs = _expected_layout_change(lib)
    assert stages == {"stage:extract", "stage:interleave"} and edges and inputs
    rc, out, err = cli(capsys, "--graph", "--kernel", SPLIT, "--against", "kernels.yaml", "--against-kernel", BASE,
                       "--format", "json")
    assert rc == 0, err
    (k,) = json.loads(out)["kernels"]
    assert k["name"] == SPLIT and k["against"].startswith(f"{BASE} (kernels.yaml:")
    changed_nodes = {n["id"] for n in k["nodes"] if n["status"] == "changed"}
    assert changed_nodes == stages | inputs | outputs
    assert {(e["from"], e["tensor"], e["to"], e["port"]) for e in k["edges"] if e["status"] == "changed"} == edges
    for e in k["edges"]:
        if e["status"] == "changed":
            assert e["was"] == f"{e['dtype']} interleave" and e["layout"] == "split_half"
    everything = k["nodes"] + k["edges"] + k["blocks"]
    assert not [x for x in everything if x["status"] in ("added", "removed")]
    assert all(b["status"] is None for b in k["blocks"])
    extract = next(n for n in k["nodes"] if n["id"] == "stage:extract")
    assert "layout=interleave" in extract["was"] and "layout=split_half" in extract["params"]


def test_interleave_vs_split_half_text_markers(capsys, monkeypatch, lib):
    monkeypatch.chdir(ROOT)
    stages, edges, inputs, _ = _expected_layout_change(lib)
    rc, out, _ = cli(capsys, "--graph", "--kernel", SPLIT, "--against-kernel", BASE)
    assert rc == 0
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert not [line for line in lines if line.startswith(("+", "-"))]
    stage_lines = [line for line in lines if re.match(r"^. \| \w+ = \w+\(", line)]
    assert {line.split()[2] for line in stage_lines if line.startswith("~")} == {s[6:] for s in stages}
    # every consumer line `<- port  tensor` of a changed edge, and only those, carries `~`
    marked = set()
    current = None
    for line in lines:
        if m := re.match(r"^. \| (\w+) = ", line):
            current = m.group(1)
        elif m := re.match(r"^(.) \|   <[-=] (\w+)\s+(\S+) ", line):
            key = (m.group(3), f"stage:{current}", m.group(2))
            if m.group(1) == "~":
                marked.add(key)
    assert marked == {(ref, dst, port) for _, ref, dst, port in edges if dst.startswith("stage:")}
    assert f"against {BASE} (kernels.yaml:" in out and "stages ~2" in out


def test_interleave_vs_split_half_dot_colours(lib):
    stages, edges, inputs, outputs = _expected_layout_change(lib)
    text = render([lib[SPLIT].typed()], "dot", against=[lib[BASE].typed()])
    d = parse_dot(text)
    orange_nodes = {n for n, info in d["nodes"].items() if info["attrs"].get("color") == ORANGE}
    assert orange_nodes == stages | inputs | outputs
    orange_edges = [(s, t, a) for s, t, a in d["edges"] if a.get("color") == ORANGE]
    assert len(orange_edges) == len(edges)
    assert all("was: " in a["label"] for _, _, a in orange_edges)
    assert GREEN not in text and RED not in text


def test_self_diff_has_no_differences(lib, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, out, _ = cli(capsys, "--graph", "--against", "kernels.yaml")
    assert rc == 0 and out.count("no differences") == len(lib)
    assert not [line for line in out.splitlines() if line.startswith(("+", "-", "~"))]


# --- structural changes: a renamed stage, a new fuse group, a changed param, a dropped kernel --------------

def _variant(tmp_path: Path) -> Path:
    data = yaml.safe_load(YAML.read_text())
    k = data["kernels"][BASE]
    k["stages"]["attn"].setdefault("params", {})["block_n"] = 32
    stages = {}
    for sid, st in k["stages"].items():
        st = dict(st, **{"in": {p: r.replace("rotate.", "unrotate.") for p, r in st["in"].items()}})
        stages["unrotate" if sid == "rotate" else sid] = st
    k["stages"] = stages
    k["fuse"] = [["extract", "unrotate", "interleave", "pack"]]
    del data["kernels"][SPLIT]
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_added_removed_changed_stages_edges_blocks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    variant = _variant(tmp_path)
    rc, out, err = cli(capsys, "--graph", "--file", str(variant), "--against", "kernels.yaml", "--format", "json")
    assert rc == 0, err
    kernels = {k["name"]: k for k in json.loads(out)["kernels"]}
    assert {BASE, SPLIT} <= set(kernels)
    k = kernels[BASE]
    status = lambda items, s: {x["id"] for x in items if x["status"] == s}  # noqa: E731
    assert status(k["nodes"], "added") == {"stage:unrotate"}
    assert status(k["nodes"], "removed") >= {"stage:rotate"}
    assert {"stage:attn"} <= status(k["nodes"], "changed")
    assert status(k["blocks"], "added") == {"block:extract_unrotate_interleave_pack"}
    assert status(k["blocks"], "removed") == {"block:extract", "block:rotate", "block:interleave", "block:pack"}
    added_edges = {(e["from"], e["to"]) for e in k["edges"] if e["status"] == "added"}
    removed_edges = {(e["from"], e["to"]) for e in k["edges"] if e["status"] == "removed"}
    assert ("stage:unrotate", "stage:interleave") in added_edges
    assert ("stage:extract", "stage:rotate") in removed_edges and ("stage:rotate", "stage:interleave") in removed_edges
    rope = next(e for e in k["edges"] if e["tensor"] == "interleave.rope" and e["to"] == "stage:pack")
    assert rope["status"] == "changed" and not rope["crossing"]  # a buffer before, block-local now
    # the kernel only the other side has shows as removed, whole
    gone = kernels[SPLIT]
    assert {x["status"] for x in gone["nodes"] + gone["edges"] + gone["blocks"]} == {"removed"}

    rc, text, _ = cli(capsys, "--graph", "--file", str(variant), "--against", "kernels.yaml")
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert any(re.match(r"^\+ \| unrotate = rope_apply\(", line) for line in lines)
    assert any(re.match(r"^- \| rotate = rope_apply\(", line) for line in lines)
    assert any(re.match(r"^~ \| attn = sparse_attention\(block_n=32", line) for line in lines)
    assert any(line.startswith("+ loop block 2 `extract_unrotate_interleave_pack`") for line in lines)
    assert any(line.startswith("- loop block 3 `rotate`") for line in lines)


def test_structural_diff_in_dot_and_mermaid(tmp_path):
    variant = builder.load(_variant(tmp_path))
    lib = builder.load(YAML)
    views, against = [variant[BASE].typed()], [lib[BASE].typed()]
    d = parse_dot(render(views, "dot", against=against))
    assert d["nodes"]["stage:unrotate"]["attrs"]["color"] == GREEN
    assert d["nodes"]["stage:rotate"]["attrs"]["color"] == RED
    assert d["nodes"]["stage:attn"]["attrs"]["color"] == ORANGE
    assert set(d["clusters"]) == {f"cluster_{b.id}" for b in models(views, against)[0].blocks}
    assert all(a.get("label") for _, _, a in d["edges"])
    m = parse_mermaid(render(views, "mermaid", against=against))
    assert len(m["subgraphs"]) == len(models(views, against)[0].blocks)
    assert len(m["edges"]) == len(models(views, against)[0].edges)
    if shutil.which("dot"):
        root = ET.fromstring(render(views, "svg", against=against))
        titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
        assert {"stage:unrotate", "stage:rotate", "cluster_block:rotate"} <= titles


# --- OTHER as a git revision, and errors in OTHER ----------------------------------------------------------

def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_against_a_git_revision(tmp_path, capsys, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "kernels.yaml").write_text(YAML.read_text())
    _git(tmp_path, "add", "kernels.yaml")
    _git(tmp_path, "commit", "-q", "-m", "base")
    data = yaml.safe_load(YAML.read_text())
    data["kernels"][BASE]["stages"]["attn"].setdefault("params", {})["block_n"] = 32
    (tmp_path / "kernels.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for other in ("HEAD", "HEAD:kernels.yaml"):
        rc, out, err = cli(capsys, "--graph", "--kernel", BASE, "--against", other, "--format", "json")
        assert rc == 0, err
        (k,) = json.loads(out)["kernels"]
        assert k["against"].startswith(f"{BASE} (HEAD:")
        assert {n["id"] for n in k["nodes"] if n["status"]} == {"stage:attn"}
    rc, _, err = cli(capsys, "--graph", "--against", "no-such-rev")
    assert rc == 2 and "no-such-rev" in err and "Traceback" not in err


def test_errors_in_other_are_reported_like_spec_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.read_text().replace("op: sparse_attention", "op: sparse_atention", 1))
    rc, out, err = cli(capsys, "--graph", "--against", str(bad))
    assert rc == 2 and out == ""
    assert re.search(rf"{re.escape(str(bad))}:\d+:\d+: error\[unknown-op\]", err)
    assert "did you mean" in err and "Traceback" not in err


def test_against_kernel_usage_errors(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, _, err = cli(capsys, "--graph", "--kernel", SPLIT, "--against-kernel", "nope")
    assert rc == 2 and "no kernel named nope" in err
    rc, _, err = cli(capsys, "--graph", "--against-kernel", BASE)
    assert rc == 2 and "exactly one --kernel" in err
