"""`build --graph`: text, DOT, Mermaid, JSON, SVG/PNG renderings, -o files and the committed docs picture."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

import builder
from builder.cli import run
from builder.render import FORMATS, models, render, render_models
from builder.render import graphviz as gv

ROOT = Path(__file__).resolve().parent.parent
YAML = ROOT / "kernels.yaml"
DOCS_KERNEL = "dsv4_sparse_attn_decode"
DOCS_CMD = (f"build --graph --kernel {DOCS_KERNEL} --sizes full "
            f"-o docs/{DOCS_KERNEL}.dot -o docs/{DOCS_KERNEL}.svg")
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed (apt-get install graphviz)")


@pytest.fixture(scope="module")
def lib():
    return builder.load(YAML)


def all_views(lib):
    return [(name, size, lib[name].typed(size)) for name in lib for size in lib[name].spec.sizes]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = run(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- a small DOT reader: enough structure to check clusters, nodes and labelled edges ----------------------

_STR = r'"(?:[^"\\]|\\.)*"'
_ATTRS = re.compile(rf'(\w+)=({_STR}|[^,\]\s]+)')


def parse_dot(text: str) -> dict:
    """Clusters (name -> node ids), nodes (id -> attrs, cluster), edges [(src, dst, attrs)]; checks nesting."""
    clusters: dict[str, list[str]] = {}
    cluster_attrs: dict[str, dict] = {}
    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str, dict]] = []
    stack: list[str] = []
    unquote = lambda s: s[1:-1].replace('\\"', '"').replace("\\\\", "\\") if s.startswith('"') else s  # noqa: E731
    attrs = lambda s: {k: unquote(v) for k, v in _ATTRS.findall(s)}  # noqa: E731
    lines = text.splitlines()
    assert re.match(r'^digraph "[^"]+" \{$', next(line for line in lines if not line.startswith("//")))
    for line in lines:
        s = line.strip()
        if not s or s.startswith("//") or s.startswith("digraph"):
            continue
        if m := re.fullmatch(rf"subgraph ({_STR}) \{{", s):
            name = unquote(m.group(1))
            assert name not in clusters, f"cluster {name} twice"
            clusters[name] = []
            stack.append(name)
        elif s == "}":
            if stack:
                stack.pop()
        elif m := re.fullmatch(rf"({_STR}) -> ({_STR}) \[(.*)\];", s):
            edges.append((unquote(m.group(1)), unquote(m.group(2)), attrs(m.group(3))))
        elif m := re.fullmatch(rf"({_STR}) \[(.*)\];", s):
            node = unquote(m.group(1))
            assert node not in nodes, f"node {node} declared twice"
            nodes[node] = {"attrs": attrs(m.group(2)), "cluster": stack[-1] if stack else None}
            if stack:
                clusters[stack[-1]].append(node)
        elif m := re.fullmatch(r"graph \[(.*)\];", s):
            if stack:
                cluster_attrs[stack[-1]] = attrs(m.group(1))
        elif re.fullmatch(r"(node|edge) \[.*\];", s) or re.fullmatch(r"\{ rank=\w+;.*\}", s):
            continue
        else:
            raise AssertionError(f"unexpected DOT line: {line!r}")
    assert not stack, "unbalanced braces"
    assert text.rstrip().endswith("}")
    return {"clusters": clusters, "cluster_attrs": cluster_attrs, "nodes": nodes, "edges": edges}


# --- DOT -------------------------------------------------------------------------------------------------

def _node(st, b, sched) -> str:
    """A stage's node in block `b`: its id, or `ID:PHASE` for a phase before its last block."""
    return f"stage:{st.id}" if b.phase is None or sched.block_of(st.id) is b else f"stage:{st.id}:{b.phase.name}"


def _nodes(tg, sched) -> set[str]:
    """Inputs, stages and outputs, and the phase nodes of stages that run as several blocks."""
    return set(tg.graph.nodes) | {_node(s, b, sched) for b in sched.blocks for s in b.stages}


def _edges(tg, sched) -> list[tuple]:
    """(from, to, tensor, its type, crossing blocks) of every edge a rendering draws: an edge carries the
    tensor as it was produced (a stage reading it with `reshape:` says so on its node)."""
    wanted = []
    for b in sched.blocks:
        for st in b.stages:
            ports = b.phase.reads if b.phase else tuple(st.inputs)
            for r in (st.inputs[p] for p in ports):
                producer = tg.producer(r)
                crossing = producer is not None and sched.block_of(producer) is not b
                wanted.append((f"input:{r}" if producer is None else f"stage:{producer}", _node(st, b, sched), r,
                               tg.types[r], crossing))
            wanted += [(f"stage:{st.id}:{sched.blocks[b.index - 1].phase.name}", _node(st, b, sched),
                        st.private_ref(n), st.private[n], True) for n in (b.phase.private_reads if b.phase else ())]
    return wanted + [(f"stage:{tg.producer(r)}", f"output:{o}", r, tg.types[r], tg.producer(r) is not None)
                     for o, r in tg.outputs.items()]


def test_dot_one_cluster_per_loop_block_and_every_edge_labelled(lib):
    split_seen = False
    for name, _size, (tg, sched) in all_views(lib):
        d = parse_dot(render([(tg, sched)], "dot"))
        assert set(d["clusters"]) == {f"cluster_block:{b.name}" for b in sched.blocks}, name
        for b in sched.blocks:
            assert d["clusters"][f"cluster_block:{b.name}"] == [_node(s, b, sched) for s in b.stages]
        split_seen |= _nodes(tg, sched) != set(tg.graph.nodes)
        assert set(d["nodes"]) == _nodes(tg, sched), name  # inputs, stages, outputs: distinct
        for n, info in d["nodes"].items():
            assert (info["cluster"] is not None) == n.startswith("stage:")
        wanted = _edges(tg, sched)
        assert sorted((s, t) for s, t, _ in d["edges"]) == sorted((s, t) for s, t, *_ in wanted)
        crossing = set(sched.crossing)
        for src, dst, attrs in d["edges"]:
            label = attrs.get("label", "")
            assert label.strip(), f"{name}: edge {src} -> {dst} has no label"
            ref = label.split("\\n")[0].split(" ")[0]
            t = next(t for s, d2, r, t, _ in wanted if (s, d2, r) == (src, dst, ref))
            dims = ", ".join(x.text for x in t.shape)
            nums = ", ".join(str(x.value) for x in t.shape)
            assert f"[{dims}]=[{nums}]" in label and t.dtype.value in label
            if t.layout is not None:
                assert t.layout.value in label
            producer_block = sched.block_of(ref.split(".")[0]).index if "." in ref else None
            consumer_block = d["nodes"][dst]["cluster"] if dst.startswith("stage:") else None
            is_private = "~" in ref  # handed between the phases of one stage: always a buffer
            is_buffer = is_private or (ref in crossing and producer_block is not None
                                       and f"cluster_block:{sched.blocks[producer_block].name}" != consumer_block)
            assert (attrs.get("style") == "bold") == is_buffer, f"{src} -> {dst}: buffer marking"
            assert ("buffer" in label) == is_buffer
    assert split_seen, "no bundled kernel runs a stage as several loop blocks"


def test_dot_stage_nodes_show_id_op_params_and_line(lib):
    tg, sched = lib[DOCS_KERNEL].typed("full")
    d = parse_dot(render([(tg, sched)], "dot"))
    for st in tg.stages.values():
        label = d["nodes"][f"stage:{st.id}"]["attrs"]["label"].split("\\n")
        assert label == [st.id, f"{st.op.name}({st.op.key_params(st.params, st.tiles)})",
                         f"{st.loc.file}:{st.loc.line}"]
    for b in sched.blocks:
        label = d["cluster_attrs"][f"cluster_block:{b.name}"]["label"].split("\\n")
        assert label[:2] == [f"loop block {b.index}: {b.name}", b.describe_domain()]
        assert "moved" in label[2] and "FLOP" in label[2]  # speed-of-light bytes and FLOPs per block


def test_dot_node_ids_are_stable_across_unrelated_edits(tmp_path, lib):
    data = yaml.safe_load(YAML.read_text())
    before = builder.load(YAML)[DOCS_KERNEL].typed()
    data["kernels"][DOCS_KERNEL]["stages"]["attn"].setdefault("params", {})["block_n"] = 32
    other = tmp_path / "kernels.yaml"
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    after = builder.load(other)[DOCS_KERNEL].typed()
    a, b = render([before], "dot"), render([after], "dot")
    a = a.replace(str(YAML), "F").replace("kernels.yaml", "F")
    b = b.replace(str(other), "F")
    strip_lines = lambda text: [re.sub(r"F:\d+", "F:N", line) for line in text.splitlines()]  # noqa: E731
    changed = [line for line in set(strip_lines(a)) ^ set(strip_lines(b))]
    assert changed and all('"stage:attn" [' in line for line in changed), changed


# --- SVG / PNG --------------------------------------------------------------------------------------------

@needs_dot
def test_svg_parses_and_names_every_stage(lib):
    for name, _size, view in all_views(lib):
        svg = render([view], "svg")
        root = ET.fromstring(svg)
        ns = "{http://www.w3.org/2000/svg}"
        titles = {t.text for t in root.iter(f"{ns}title")}
        texts = {t.text for t in root.iter(f"{ns}text")}
        tg, sched = view
        for sid in tg.stages:
            assert f"stage:{sid}" in titles and sid in texts, f"{name}: stage {sid} missing from the SVG"
        for b in sched.blocks:
            assert f"cluster_block:{b.name}" in titles


@needs_dot
def test_png_is_a_png(lib):
    data = render([lib[DOCS_KERNEL].typed()], "png")
    assert isinstance(data, bytes) and data.startswith(b"\x89PNG\r\n\x1a\n")


@needs_dot
def test_dot_output_is_accepted_by_graphviz(lib):
    views = [lib[n].typed() for n in lib]
    for text in [render([v], "dot") for v in views] + [render(views, "dot")]:
        proc = subprocess.run(["dot", "-Tcanon"], input=text.encode(), capture_output=True)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()


def test_svg_without_graphviz_says_how_to_install(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(gv.shutil, "which", lambda name: None)
    for argv in (["--format", "svg"], ["--format", "png"], ["-o", "/nonexistent/never-written.svg"]):
        rc, out, err = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, *argv)
        assert rc == 2 and out == ""
        assert "apt-get install graphviz" in err and "Traceback" not in err


# --- Mermaid ----------------------------------------------------------------------------------------------

def parse_mermaid(text: str) -> dict:
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    subgraphs, nodes, edges, depth = [], set(), [], 0
    for line in lines[1:]:
        s = line.strip()
        if m := re.fullmatch(r'subgraph (\w+)\["[^"]*"\]', s):
            subgraphs.append(m.group(1))
            depth += 1
        elif s == "end":
            depth -= 1
            assert depth >= 0
        elif m := re.fullmatch(r'(\w+) (-->|==>|-\.->)\|"([^"]+)"\| (\w+)', s):
            edges.append((m.group(1), m.group(4), m.group(2), m.group(3)))
        elif m := re.fullmatch(r'(\w+)(\[/"[^"]*"/\]|\[\\"[^"]*"\\\]|\["[^"]*"\])', s):
            assert m.group(1) not in nodes
            nodes.add(m.group(1))
        elif re.fullmatch(r"(classDef|class|style|linkStyle) .+|%%.*", s):
            continue
        else:
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    assert depth == 0, "unbalanced subgraph/end"
    return {"subgraphs": subgraphs, "nodes": nodes, "edges": edges}


def test_mermaid_structure(lib):
    for _name, _size, (tg, sched) in all_views(lib):
        text = render([(tg, sched)], "mermaid")
        assert not text.startswith("```")
        m = parse_mermaid(text)
        assert m["subgraphs"] == [f"block_{b.name}" for b in sched.blocks]
        model = models([(tg, sched)])[0]
        assert m["nodes"] == {n.id.replace(":", "_") for n in model.nodes}
        assert {n.replace(":", "_") for n in tg.graph.nodes} <= m["nodes"]
        assert [(s, d) for s, d, _, _ in m["edges"]] == [(e.src.replace(":", "_"), e.dst.replace(":", "_"))
                                                         for e in model.edges]
        for (_, _, arrow, label), e in zip(m["edges"], model.edges):
            assert label.startswith(e.ref) and e.type.dtype in label
            assert (arrow == "==>") == e.crossing
        assert sum(1 for line in text.splitlines() if line.strip().startswith("linkStyle")) == \
            sum(1 for e in model.edges if e.crossing)


def test_mermaid_several_kernels_nest_block_subgraphs(lib):
    views = [lib[n].typed() for n in lib]
    m = parse_mermaid(render(views, "mermaid"))
    assert len(m["subgraphs"]) == len(views) + sum(len(s.blocks) for _, s in views)
    assert len(m["edges"]) == sum(len(models([v])[0].edges) for v in views)


# --- JSON -------------------------------------------------------------------------------------------------

def test_json_nodes_edges_blocks(lib):
    views = [lib[n].typed() for n in lib]
    doc = json.loads(render(views, "json"))
    assert doc["schema"] == "kernel-builder.graph/1"
    assert [k["name"] for k in doc["kernels"]] == list(lib)
    for k, (tg, sched) in zip(doc["kernels"], views):
        assert {n["id"] for n in k["nodes"]} == _nodes(tg, sched)
        wanted = {(src, dst, ref): (t, crossing) for src, dst, ref, t, crossing in _edges(tg, sched)}
        assert {(e["from"], e["to"], e["tensor"]) for e in k["edges"]} == set(wanted)
        assert k["dims"] == dict(tg.dims) and k["sizes"] == tg.dims.size_set
        for e in k["edges"]:
            t, crossing = wanted[e["from"], e["to"], e["tensor"]]
            assert e["shape"] == list(t.numel_shape) and e["dtype"] == t.dtype.value
            assert e["layout"] == (t.layout.value if t.layout else None)
            assert e["crossing"] == crossing
        assert [b["stages"] for b in k["blocks"]] == [[s.id for s in b.stages] for b in sched.blocks]
        for b, blk in zip(k["blocks"], sched.blocks):
            assert b["domain"] == blk.describe_domain() and b["reads"] == list(blk.reads)
            assert isinstance(b["bytes"], int) and b["bytes"] > 0 and isinstance(b["flops"], int)
        stage = next(n for n in k["nodes"] if n["kind"] == "stage")
        assert {"op", "params", "line", "block", "outputs"} <= set(stage)
        assert "status" not in stage  # only diffs carry statuses


# --- text -------------------------------------------------------------------------------------------------

def test_text_fits_100_columns_and_shows_everything(lib):
    for name, _size, (tg, sched) in all_views(lib):
        text = render([(tg, sched)], "text")
        too_long = [line for line in text.splitlines() if len(line) > 100]
        assert not too_long, too_long
        assert f"kernel {name} " in text
        for b in sched.blocks:
            assert f"loop block {b.index} `{b.name}`" in text
        for st in tg.stages.values():
            assert f"{st.id} = {st.op.name}(" in text and f"{st.loc.file}:{st.loc.line}" in text
        for ref in sched.crossing:
            assert re.search(rf"=> \w+\s+{re.escape(ref)} ", text), f"buffer {ref} not marked"


def test_text_is_the_default(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, out, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL)
    assert rc == 0 and out.startswith("legend:") and "loop block 0" in out


# --- determinism ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [f for f in FORMATS if f not in ("svg", "png") or HAVE_DOT])
def test_render_is_deterministic(lib, fmt):
    views = [lib[n].typed() for n in lib]
    ms = models(views)
    assert render_models(ms, fmt) == render_models(models(views), fmt)


def test_render_is_byte_identical_across_processes():
    outs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-m", "builder", "--graph", "--format", "dot"], cwd=ROOT,
                              env=env, capture_output=True, check=True)
        proc2 = subprocess.run([sys.executable, "-m", "builder", "--graph", "--format", "json"], cwd=ROOT,
                               env=env, capture_output=True, check=True)
        outs.add(proc.stdout + proc2.stdout)
    assert len(outs) == 1


def test_graph_never_imports_torch_or_triton():
    code = ("import sys\nfrom builder.cli import run\n"
            "for fmt in ('text', 'dot', 'mermaid', 'json'):\n"
            "    assert run(['--graph', '--format', fmt]) == 0\n"
            "assert run(['--graph', '--kernel', 'dsv4_sparse_attn_decode_split_half', '--against-kernel',"
            " 'dsv4_sparse_attn_decode']) == 0\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton'))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- -o and --format --------------------------------------------------------------------------------------

def test_output_file_format_follows_extension_and_is_written_only_on_change(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    exts = {"txt": "legend:", "dot": "// kernel-builder", "mmd": "flowchart TB", "json": "{"}
    paths = [tmp_path / f"g.{e}" for e in exts]
    rc, out, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, *[a for p in paths for a in ("-o", str(p))])
    assert rc == 0 and out.splitlines() == [f"wrote {p}" for p in paths]
    for p, head in zip(paths, exts.values()):
        assert p.read_text().startswith(head)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    rc, out, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, *[a for p in paths for a in ("-o", str(p))])
    assert rc == 0 and out.splitlines() == [f"unchanged {p}" for p in paths]
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
    # --format wins over the extension
    rc, _, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, "--format", "json", "-o", str(tmp_path / "g.txt"))
    assert rc == 0 and json.loads((tmp_path / "g.txt").read_text())["schema"]


@needs_dot
def test_output_svg_and_png_files(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    rc, _, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, "-o", str(tmp_path / "g.svg"),
                   "-o", str(tmp_path / "g.png"))
    assert rc == 0
    ET.parse(tmp_path / "g.svg")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("argv, message", [
    (["--graph", "-o", "graph.unknown"], "cannot tell the format"),
    (["--format", "dot"], "--format needs --graph"),
    (["-o", "x.dot"], "-o needs --graph"),
    (["--against", "kernels.yaml"], "--against needs --graph"),
    (["--graph", "--format", "bmp"], "invalid choice"),
])
def test_graph_usage_errors_exit_2(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kernels.yaml").write_text(YAML.read_text())
    try:
        rc = run(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "graph.unknown").exists()


# --- the committed picture --------------------------------------------------------------------------------

def _svg_content(svg: str) -> tuple:
    """What an SVG says, independent of Graphviz's version: titles, texts and link tooltips, sorted."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = sorted(t.text or "" for t in root.iter(f"{ns}title"))
    texts = sorted(t.text or "" for t in root.iter(f"{ns}text"))
    return titles, texts


def _graphviz_version(svg: str):
    m = re.search(r"<!-- Generated by graphviz version ([^\n]*?)\s*\n?\s*-->", svg)
    return m.group(1).strip() if m else None


def test_docs_dot_is_current(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, out, _ = cli(capsys, "--graph", "--kernel", DOCS_KERNEL, "--sizes", "full", "--format", "dot")
    assert rc == 0
    committed = (ROOT / "docs" / f"{DOCS_KERNEL}.dot").read_text()
    assert out == committed, f"docs/{DOCS_KERNEL}.dot is stale; regenerate it with: {DOCS_CMD}"


@needs_dot
def test_docs_svg_was_made_from_the_docs_dot():
    source = (ROOT / "docs" / f"{DOCS_KERNEL}.dot").read_text()
    committed = (ROOT / "docs" / f"{DOCS_KERNEL}.svg").read_text()
    fresh = gv.run_dot(source, "svg").decode()
    stale = f"docs/{DOCS_KERNEL}.svg is stale; regenerate it with: {DOCS_CMD}"
    assert _svg_content(fresh) == _svg_content(committed), stale
    if _graphviz_version(fresh) == _graphviz_version(committed):  # same Graphviz: the very same bytes
        assert fresh == committed, stale
