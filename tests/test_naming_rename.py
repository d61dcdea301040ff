"""The renaming of tile-body locals that meet an allocated name (`naming._rename`) scans the code with
one regular expression. It must rename exactly what Python's tokenizer calls a plain name: this test
holds the tokenizer-based renaming as the oracle and compares both on every function the emitters
produce for the bundled kernels, renaming every word of each, and on hand-written tricky code."""
from __future__ import annotations

import io
import re
import tokenize

import pytest

import builder
from builder.emit import naming


def _oracle(chunk: str, clash: set[str], avoid: set[str]) -> str:
    """The previous implementation: Python's tokenizer, token by token (Python < 3.12 semantics)."""
    fresh = naming.fresh_names(clash, avoid)  # the same new names: the oracle checks where they go
    lines = chunk.split("\n")
    edits: dict[int, list[tuple[int, int, str]]] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(chunk).readline))
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        if tok.type == tokenize.STRING and re.match(r"[A-Za-z]*[fF]", tok.string):
            new = naming._rename_in_fstring(tok.string, fresh)
            if new != tok.string:
                (row, col), (_, end) = tok.start, tok.end
                edits.setdefault(row - 1, []).append((col, end, new))
            continue
        if tok.type != tokenize.NAME or tok.string not in fresh:
            continue
        before = tokens[i - 1] if i else None
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if before is not None and before.type == tokenize.OP and before.string == ".":
            continue
        if depth and after is not None and after.type == tokenize.OP and after.string == "=":
            continue
        (row, col), (_, end) = tok.start, tok.end
        edits.setdefault(row - 1, []).append((col, end, fresh[tok.string]))
    for row, spans in edits.items():
        line = lines[row]
        for col, end, new in sorted(spans, reverse=True):
            line = line[:col] + new + line[end:]
        lines[row] = line
    return "\n".join(lines)


def _emitted_chunks(monkeypatch) -> list[str]:
    chunks: list[str] = []
    resolve = naming.NameTable.resolve

    def record(self, chunk):
        chunks.append(chunk)
        return resolve(self, chunk)

    monkeypatch.setattr(naming.NameTable, "resolve", record)
    lib = builder.load("kernels.yaml")
    for name in ("dsv4_sparse_attn_decode", "dsv4_sparse_attn_decode_split_half", "dsv4_qkv_rope_forward"):
        for backend in ("triton", "pypto"):
            lib[name]._code.clear()
            lib[name].emit(backend)
    return chunks


def test_regex_renaming_matches_the_tokenizer_on_emitted_code(monkeypatch):
    chunks = _emitted_chunks(monkeypatch)
    assert len(chunks) > 20
    for chunk in chunks:
        words = set(re.findall(r"\b[A-Za-z_]\w*\b", chunk))
        plain = {w for w in words if not w.startswith("__m")}
        assert naming._rename(chunk, plain, words) == _oracle(chunk, plain, words)


TRICKY = '''def f(c, *, s=1, k=c):
    """A docstring naming c and s, with "quotes", \\""" and (brackets."""
    c = tl.load(c + s, mask=c < s, other=0.0)  # c and s in a comment (
    s = {"c": c, 's': s.c, r"c\\"": c}
    x = f"{c} {s!r} {{c}} {c.s:>{s}}" + rb'c' + F'{s}'
    y = g(c
          =c, s ==c, k=[c for c in s],
          m=lambda s: s)
    z = c . s + c.s + x.  c + 1.5e3 + c[s:c] + (c := s)
    return c if s else (c,)
'''


# quotes inside strings: four closing quotes, escaped quotes, empty strings, a continued line
QUOTES = "\n".join([
    'def g(c, s):',
    '    a = """c""""" + """""" + "" + \'\' + "c\\"s" + \'c\\\'s\' + """c\\"""" + c',
    "    b = \'\'\'s \"\"\" c\'\'\' + s + \'\'\'\'\'\' + \"\"\"\"c\"\"\" + s",
    '    d = "c \\',
    's" + c  # c',
    '    return (c, s, a, b, d)',
    ''])


@pytest.mark.parametrize("code", [TRICKY, QUOTES], ids=["tricky", "quotes"])
@pytest.mark.parametrize("clash", [{"c"}, {"s"}, {"c", "s"}, {"k", "x", "f", "r", "rb", "m"}])
def test_regex_renaming_matches_the_tokenizer_on_tricky_code(clash, code):
    if code is QUOTES:
        compile(code, "<quotes>", "exec")  # valid Python, as emitted code is
    words = set(re.findall(r"\b[A-Za-z_]\w*\b", code))
    assert naming._rename(code, clash, words) == _oracle(code, clash, words)


def test_word_set_is_the_regular_expressions():
    """`naming.word_set` splits ASCII text with `str.translate`; it must find the runs `\\w+` finds."""
    import random

    rng = random.Random(0)
    alphabet = "ab_Z09 .,:()[]{}\"'#\\\n\t=+-*/%<>!?@$^&|~`;\x00\x1c\x7f"
    for extra in ("", "é—ß٣"):
        for _ in range(2000):
            text = "".join(rng.choice(alphabet + extra) for _ in range(rng.randint(0, 40)))
            assert naming.word_set(text) == set(re.findall(r"\w+", text)), text
