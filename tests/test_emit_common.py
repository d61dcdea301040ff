"""What every backend's output shares: byte-identical across processes, header naming the YAML line,
and a file that `build` writes only when its content changes."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

import builder
from builder.cli import run as build

BACKENDS = ["triton", "pypto"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_emit_is_byte_identical_across_processes(backend):
    code = ("import builder, sys; sys.stdout.write(builder.load('kernels.yaml')"
            f"['dsv4_sparse_attn_decode'].emit('{backend}'))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].startswith("# @generated from kernels.yaml:")


@pytest.mark.parametrize("backend", BACKENDS)
def test_header_and_docstring_document_every_parameter(backend):
    k = builder.load("kernels.yaml")["dsv4_sparse_attn_decode"]
    src = k.emit(backend)
    assert src.startswith(f"# @generated from kernels.yaml:{k.spec.loc.line} by `build` — do not edit.")
    doc = ast.get_docstring(ast.parse(src))
    tg, sched = k.typed()
    for name, t in tg.inputs.items():
        assert f"\n    {name} ({t.describe()}): {k.spec.inputs[name].doc.split()[0]}" in doc, name
    for name, ref in tg.outputs.items():
        assert f"\n    {name} ({tg.types[ref].describe()}):" in doc, name
    defined = {t.id for n in ast.parse(src).body if isinstance(n, ast.Assign) for t in n.targets}
    for dim in set(k.spec.dims) & defined:  # every derived dim the code uses is explained
        assert f"\n    {dim} = {tg.dims[dim]}: {k.spec.dims[dim]}" in doc, dim
    assert set(k.spec.dims) & defined
    for b in sched.blocks:
        assert f"\n    {b.index}. {b.stages[0].id} ({b.stages[0].op.name}, kernels.yaml:" in doc
    assert "selector" in doc  # says why no selector inputs exist


def test_build_writes_each_backend_file_only_when_it_changes(tmp_path, capsys):
    out = tmp_path / "gen"
    args = ["--kernel", "dsv4_qkv_rope_forward", "--backend", "all", "--no-verify", "--out-dir", str(out)]
    assert build(args) == 0
    files = sorted(out.rglob("*.py"))
    assert [f.name for f in files] == ["dsv4_qkv_rope_forward_pypto.py", "dsv4_qkv_rope_forward_triton.py"]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    capsys.readouterr()
    assert build(args) == 0
    assert "unchanged" in capsys.readouterr().out
    assert [os.stat(f).st_mtime_ns for f in files] == stamps


@pytest.mark.parametrize("cwd, given, shown", [
    ("", "{tmp}/specs/k.yaml", "specs/k.yaml"),                 # an absolute path below the current folder
    ("specs", "../specs/sub/k.yaml", "sub/k.yaml"),              # a relative one, resolved first
    ("specs", "{tmp}/elsewhere/k.yaml", "k.yaml"),               # outside it: the name alone, no author's path
], ids=["absolute-below", "relative-with-dotdot", "outside"])
def test_generated_files_name_the_spec_relative_to_the_current_folder(tmp_path, monkeypatch, cwd, given, shown):
    from tests.test_hostile import TINY

    for folder in ("specs/sub", "elsewhere"):
        (tmp_path / folder).mkdir(parents=True)
    for path in ("specs/k.yaml", "specs/sub/k.yaml", "elsewhere/k.yaml"):
        (tmp_path / path).write_text(TINY)
    monkeypatch.chdir(tmp_path / cwd)
    kernel = builder.load(given.format(tmp=tmp_path))["tiny"]
    for backend in BACKENDS:
        src = kernel.emit(backend)
        assert src.startswith(f"# @generated from {shown}:{kernel.spec.loc.line} by `build`"), src[:200]
        assert str(tmp_path) not in src


def test_fast_wrap_is_textwrap():
    """`common.wrap` fills plain text itself; it must break lines exactly where textwrap does."""
    import random
    import textwrap

    from builder.emit.common import wrap

    rng = random.Random(0)
    vocabulary = ["t", "over", "T=2", "(parallel)", "x", "hb", "H=16", "in", "tiles", "of", "16", "s123",
                  "(rope_apply,", "kernels.yaml:12):", "a" * 30, "a-b", "--", "é", "two  spaces", " lead", "tail "]
    for _ in range(3000):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 30)))
        width = rng.choice([20, 40, 100])
        first, rest = rng.choice([("", ""), ("    ", "        "), ("    ", "    ")])
        assert wrap(text, width, first, rest) == textwrap.wrap(text, width, initial_indent=first,
                                                                subsequent_indent=rest), (text, width)


def test_string_literals_read_back_as_their_text():
    """`naming.string` gives a double-quoted literal of any text, escapes included, that Python reads back
    as the text (JSON's escapes would not: it writes characters beyond U+FFFF as surrogate pairs)."""
    import ast
    import random

    from builder.emit.naming import string

    rng = random.Random(0)
    alphabet = ["a", "Z", "0", ".", " ", "_", "~", '"', "\\", "'", "\n", "\t", "\x00", "\x7f", "é", "\u2028", "😀"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        literal = string(text)
        node = ast.parse(literal, mode="eval").body
        assert literal.startswith('"') and literal.isascii() and isinstance(node, ast.Constant), literal
        assert node.value == text, repr(text)
    assert string("attn.o") == '"attn.o"' and string('a"b\\') == '"a\\"b\\\\"'


def test_top_level_split_matches_a_character_by_character_reference():
    """`common._split_top` visits only brackets, quotes, backslashes and separators; splitting by looking
    at every character must give the same parts."""
    import random

    from builder.emit.common import _split_top

    def reference(text: str, sep: str) -> list[str]:
        if not any(ch in text for ch in "([{\"'"):  # no bracket or string opens: the plain split, as before
            return text.split(sep)
        parts, depth, quote, start, escaped = [], 0, "", 0, False
        for i, ch in enumerate(text):
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == sep and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        return parts + [text[start:]]

    rng = random.Random(0)
    atoms = list("ab ,()[]{}'\"\\") + ["\\\\", "\\'", '\\"', "x[0:8, :]", "pl.cast(v, target_type=pl.FP32)"]
    for _ in range(5000):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 25)))
        assert _split_top(text, ",") == reference(text, ","), text


def test_wrap_of_long_lines_matches_a_character_by_character_reference():
    """`common._wrap` keeps short arguments as they are and finds the `(` that matches the final `)`
    by visiting parentheses only; a plain per-character version must break every line the same way."""
    import random

    from builder.emit.common import WIDTH, _split_top, _wrap

    def reference(line: str) -> list[str]:
        pad = line[: len(line) - len(line.lstrip())]
        code, _, comment = line.strip().partition("  # ")
        lines = [f"{pad}# {comment}"] if comment else []
        comma = code[-1] if code.endswith((",", ":")) else ""
        code = code[:-1] if comma else code
        if len(pad) + len(code) + len(comma) <= WIDTH or not code.endswith(")"):
            return lines + [pad + code + comma]
        depth, open_at = 0, -1
        for i in range(len(code) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(code[i], 0)
            if depth == 0:
                open_at = i
                break
        args = [a.strip() for a in _split_top(code[open_at + 1:-1], ",") if a.strip()]
        if open_at <= 0 or len(args) < 2:
            return lines + [pad + code + comma]
        body = [out for a in args for out in reference(f"{pad}    {a},")]
        return lines + [pad + code[: open_at + 1]] + body + [pad + ")" + comma]

    rng = random.Random(0)
    atoms = ["x", "s1234_even_ptr", "tl.load(a + b, mask=m)", "f(g(h), [1, 2])", "'a, (b'", '"q)"', "k[None, :]",
             "a" * 40, "(", ")", "  # note", " ", "  "]
    for _ in range(3000):
        args = ", ".join("".join(rng.choice(atoms) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 9)))
        line = rng.choice(["", "    ", "        "]) + rng.choice(["def k(", "y = f(", "run[(T, g(H))]("]) + args + ")"
        line += rng.choice(["", ":", ",", "  # a comment", " "])
        assert _wrap(line) == reference(line), line
