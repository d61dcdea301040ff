"""Identifiers and literals of generated code: the only way text from a spec enters an emitted file.

User names (dims, inputs, outputs, the kernel) are validated identifiers (builder/names.py) and keep
their spelling. Names the emitters derive from them (buffers, pointer arguments, stage constants,
block kernels, stage locals) are allocated, so two of them never meet however the user names things.
While a function is generated, every such name is written as a placeholder `__m<N>__`. A stage's tile
body also writes plain locals of its own (`h`, `row`, `acc`...); once the function is complete, any of
those that equals a placeholder's final name is renamed, and only then are placeholders replaced.
So a dim named `h` and a tile body's local `h` both keep working, and users never need to know the
emitters' locals. Free text (docs, comments, strings) goes through `string`, `comment` or `docstring`.
"""
from __future__ import annotations

import ast
import functools
import math
import operator
import re
from typing import Iterable

from .. import expr
from ..names import IDENTIFIER, RESERVED

PLACEHOLDER = re.compile(r"__m(\d+)__")
_NUMBER = operator.itemgetter(slice(3, -2))  # a placeholder's number
_WORD = re.compile(r"\b[A-Za-z_]\w*\b")
_RUN = re.compile(r"\w+")  # _WORD's words, and numbers (which never equal a name): found faster
_NOT_WORD = {i: " " for i in range(128) if not (chr(i).isalnum() or chr(i) == "_")}  # ASCII that `\w` skips


# --- literals -------------------------------------------------------------------------------------

def string(text: str) -> str:
    """A double-quoted Python string literal of any text: printable ASCII as it is (`"` and `\\` escaped),
    everything else as Python's own escapes (`\\n`, `\\x00`, `\\u2028`, `\\U0001f600`)."""
    text = str(text)
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # the usual case: names, `stage.port`
    return '"' + "".join("\\" + ch if ch in '"\\' else ch if ch.isascii() and ch.isprintable() else ascii(ch)[1:-1]
                         for ch in text) + '"'


def literal(value) -> str:
    """A Python literal of a number, string, bool, None or list of them; refuses NaN and infinities
    (their repr is not a literal)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value!r} cannot be written into generated code")
        return repr(value)
    if isinstance(value, str):
        return repr(value)  # a valid literal of any text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"no literal for {type(value).__name__}")


def comment(text: str) -> str:
    """Text safe inside a `#` comment: one line, control characters escaped."""
    text = str(text)
    if text.isprintable():  # the usual case, without a loop per character
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def docstring_text(text: str) -> str:
    """Text safe inside a `\"\"\"` docstring: backslashes, quotes and control characters escaped, so the
    docstring's value is the text itself (newlines and tabs stay as they are)."""
    text = str(text)
    if text.replace("\n", "").replace("\t", "").isprintable():  # the usual case, without a loop per character
        return text.replace("\\", "\\\\").replace('"', '\\"')
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in "\n\t" or ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)


def name(identifier: str) -> str:
    """A validated identifier written as is (a checkpoint: anything else is a bug upstream)."""
    if not IDENTIFIER.match(identifier):
        raise ValueError(f"not an identifier: {identifier!r}")
    return identifier


# --- placeholders ---------------------------------------------------------------------------------

class NameTable:
    """The identifiers of one generated file, as placeholders until a function is complete.

    User names (`fixed`) keep their spelling. Derived names are allocated by `claim`, once per key
    (a tensor's pointer argument has one name in every kernel of the file) and unique in the whole
    file, so that no name shadows another anywhere (a buffer named like a block function, say)."""

    def __init__(self, taken: Iterable[str] = ()):
        self.taken: set[str] = set(RESERVED) | set(taken)  # every name the file defines or reads
        self._keys: dict[object, str] = {}
        self._placeholders: dict[str, str] = {}  # placeholder -> its final name
        self._numbered: dict[str, str] = {}  # a placeholder's number, as text -> its final name
        self._final_of = self._numbered.__getitem__  # mapped over a split's numbers: no Python loop per name
        self.name_of = self._placeholders.__getitem__  # the final name of one placeholder
        self._resolved: set[str] = set()  # numbers of the placeholders `resolve` has replaced
        self._fixed: set[str] = set()  # placeholders of user names

    def _new(self, final: str) -> str:
        number = str(len(self._numbered))
        self._numbered[number] = final
        placeholder = f"__m{number}__"
        self._placeholders[placeholder] = final
        return placeholder

    def fixed(self, n: str) -> str:
        """Placeholder of a user name (validated, and distinct from the other user names of the file)."""
        key = ("fixed", n)
        if key not in self._keys:
            self._keys[key] = self._new(name(n))
            self._fixed.add(self._keys[key])
            self.taken.add(n)
        return self._keys[key]

    def is_fixed(self, placeholder: str) -> bool:
        """`placeholder` stands for a user name (one name in every function of the file)."""
        return placeholder in self._fixed

    def claimed(self, key: object) -> str | None:
        """Placeholder of `key` when claimed already (callers asking often skip making a preferred name)."""
        return self._keys.get(key)

    def claim(self, key: object, preferred: str, *alternatives: str) -> str:
        """Placeholder of a derived name: `preferred`, else the first free alternative, else
        `preferred_2`, `_3`..."""
        if key in self._keys:
            return self._keys[key]
        if preferred not in self.taken:  # the usual case, without looking at the alternatives
            candidate: str | None = preferred
        else:
            candidate = next((c for c in alternatives if c not in self.taken), None)
        n = 1
        while candidate is None or candidate in self.taken:
            n += 1
            candidate = f"{preferred}_{n}"
        self.taken.add(candidate)
        self._keys[key] = self._new(candidate)
        return self._keys[key]

    def text(self, literal: str) -> str:
        """Placeholder of a string literal (a docstring) shown as it is: `resolve` then never scans it
        for locals to rename (a block's docstring names the dims, which are allocated names)."""
        return self._new(literal)

    def show(self, code: str) -> str:
        """`code` with every placeholder replaced by its final name."""
        if code in self._placeholders:  # one name alone (interfaces ask for each argument)
            return self._placeholders[code]
        parts = PLACEHOLDER.split(code)  # text, number, text, ...: no Python call per placeholder
        parts[1::2] = map(self._final_of, parts[1::2])
        return "".join(parts)

    def hide(self, code: str) -> str:
        """Inverse of `show` (for test helpers that edit shown code; assumes no local shares a name)."""
        by_name = {final: f"__m{number}__" for number, final in self._numbered.items()}
        return _WORD.sub(lambda m: by_name.get(m.group(0), m.group(0)), code)

    def mark_resolved(self, placeholders: Iterable[str]) -> None:
        """Count `placeholders` as used, for code resolved without `resolve` (see template.Template)."""
        self._resolved.update(map(_NUMBER, placeholders))

    def used(self) -> set[str]:
        """Final names of the placeholders in the code resolved so far (recorded by `resolve`, which
        splits every function anyway: a search of the whole file again cost more)."""
        return set(map(self._final_of, self._resolved))

    def substitute(self, chunk: str) -> str:
        """Final code of a function whose every name comes from this table (it has no locals of its own,
        so nothing can need renaming): placeholders replaced, and counted as used."""
        parts = PLACEHOLDER.split(chunk)
        numbers = parts[1::2]
        self._resolved.update(numbers)
        parts[1::2] = map(self._final_of, numbers)
        return "".join(parts)

    def resolve(self, chunk: str) -> str:
        """Final code of one function (or statement group): plain locals that equal the final name of a
        placeholder in it are renamed first, then placeholders are replaced."""
        parts = PLACEHOLDER.split(chunk)  # text, number, text...: one pass serves every step below
        numbers = parts[1::2]
        distinct = set(numbers)
        self._resolved |= distinct
        finals = set(map(self._final_of, distinct))
        plain = "".join(parts[0::2])
        # a block kernel's few names: a search each (most are not even substrings) beats listing every word;
        # a launcher reads every buffer
        words = None if len(finals) <= 32 else word_set(plain)
        if words is None:
            clash = {name for name in finals if name in plain and _has_word(plain, name)}
        else:
            clash = finals & words
        if clash:
            renamed = _rename(chunk, clash, avoid=_Words(plain, finals) if words is None else finals | words)
            if renamed is not chunk:  # else the clashing word was only in a docstring or comment
                return self.show(renamed)
        parts[1::2] = map(self._final_of, numbers)
        return "".join(parts)

    def expr_code(self, text) -> str:
        """Code of a dim expression with every dim as its placeholder; parenthesized unless atomic."""
        tree = expr.parse_tree(str(text))
        code = expr.unparse_names(tree, self.fixed)
        return code if isinstance(tree, (ast.Name, ast.Constant)) else f"({code})"


# A string literal from its prefix on (escapes included); an f-string is renamed inside its fields.
_STRING = re.compile(r"[A-Za-z]{0,2}(?:" + "|".join([  # each body as runs of plain characters (fast in sre)
    r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""', r"'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''",
    r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"', r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'"]) + ")", re.DOTALL)
_FSTRING = re.compile(r"[A-Za-z]*[fF]")
_KEYWORD = re.compile(r"[ \t]*=(?!=)")  # after a name inside brackets: a keyword argument, e.g. `mask=...`


def fresh_names(clash: set[str], avoid: "set[str] | _Words") -> dict[str, str]:
    """A new name for each clashing one: `name_`, else `name_2`, `name_3`... avoiding `avoid` and each other."""
    fresh: dict[str, str] = {}
    for old in sorted(clash):
        new, n = f"{old}_", 1
        while new in avoid or new in fresh.values():
            n += 1
            new = f"{old}_{n}"
        fresh[old] = new
    return fresh


def _rename(chunk: str, clash: set[str], avoid: "set[str] | _Words") -> str:
    """Rename plain-name tokens in `clash` (not attributes, not keyword-argument names); `chunk` itself
    when none is found.

    The tokenizer's rules for strings, comments, brackets and names, applied only where a string,
    a comment or a clashing name can start; brackets are counted between those places (a file holds
    a function per loop block, and tokenizing each whole cost more than everything else emitted)."""
    scan, names = _scanners(frozenset(clash))
    fresh: dict[str, str] = {}

    def renaming() -> dict[str, str]:  # the new names, chosen once something is to be renamed
        if not fresh:
            fresh.update(fresh_names(clash, avoid))
        return fresh

    out, done, depth, code, pos = [], 0, 0, 0, 0  # `code`: where the text not yet counted for brackets starts
    while True:
        m = scan.search(chunk, pos)
        if m is None:
            break
        i, ch = m.start(), m.group()
        pos = i + 1
        if ch == "#":
            depth += _brackets(chunk, code, i)
            pos = code = chunk.find("\n", i) + 1 or len(chunk)
        elif ch in "\"'":
            start = i - len(_prefix(chunk, i))
            depth += _brackets(chunk, code, start)
            found = _STRING.match(chunk, start)
            pos = code = found.end() if found else pos
            text = chunk[start:pos]
            if found and _FSTRING.match(text):
                renamed = _rename_in_fstring(text, renaming())
                if renamed != text:
                    out += [chunk[done:start], renamed]
                    done = pos
        elif not (i and _word_char(chunk[i - 1])):  # the start of a word: a clashing name?
            found = names.match(chunk, i)
            if found is None:
                continue
            pos = found.end()
            if _attribute(chunk, i):
                continue
            if _KEYWORD.match(chunk, pos):
                depth += _brackets(chunk, code, i)
                code = i
                if depth:
                    continue
            out += [chunk[done:i], renaming()[found.group()]]
            done = pos
    return "".join(out) + chunk[done:] if out else chunk


@functools.lru_cache(maxsize=256)
def _scanners(clash: frozenset) -> tuple[re.Pattern, re.Pattern]:
    """Where a string, comment or clashing name can start; a clashing name as a whole token."""
    firsts = "".join(sorted({old[0] for old in clash}))
    scan = re.compile(f"[{re.escape(firsts)}\"'#]")
    names = re.compile("(?:" + "|".join(re.escape(old) for old in sorted(clash, key=lambda o: (-len(o), o)))
                       + r")(?![\w'\"])")
    return scan, names


def _brackets(chunk: str, start: int, end: int) -> int:
    """Brackets opened minus closed in code without strings or comments."""
    text = chunk[start:end]
    return (text.count("(") + text.count("[") + text.count("{")
            - text.count(")") - text.count("]") - text.count("}"))


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # what `\w` matches


def word_set(text: str) -> set[str]:
    """The runs of word characters in `text` (what `_RUN` finds): in ASCII text, by turning every other
    character into a space and splitting, several times faster than the regular expression."""
    return set(text.translate(_NOT_WORD).split()) if text.isascii() else set(_RUN.findall(text))


class _Words:
    """The whole words of `text` (plus `also`), looked up one at a time without listing them all."""

    def __init__(self, text: str, also: Iterable[str] = ()):
        self.text, self.also = text, set(also)

    def __contains__(self, word: str) -> bool:
        return word in self.also or _has_word(self.text, word)


def _has_word(text: str, word: str) -> bool:
    """`word` occurs in `text` as a whole word (as `_WORD` would find it)."""
    i = text.find(word)
    while i >= 0:
        end = i + len(word)
        if not (i and _word_char(text[i - 1])) and not (end < len(text) and _word_char(text[end])):
            return True
        i = text.find(word, i + 1)
    return False


def _prefix(chunk: str, quote: int) -> str:
    """The letters of a string prefix (`f`, `rb`...) right before the quote at `quote`."""
    start = quote
    while start > 0 and quote - start < 3 and _word_char(chunk[start - 1]):
        start -= 1
    letters = chunk[start:quote]
    return letters if len(letters) <= 2 and letters.isalpha() else ""


def _attribute(chunk: str, start: int) -> bool:
    """The name at `start` follows a `.` (an attribute, e.g. `tl.max`)."""
    i = start - 1
    while i >= 0 and chunk[i] in " \t":
        i -= 1
    return i >= 0 and chunk[i] == "."


def _rename_in_fstring(literal: str, fresh: dict[str, str]) -> str:
    """Rename names inside the replacement fields `{...}` of a one-line f-string literal."""
    out, depth, i = [], 0, 0
    while i < len(literal):
        ch = literal[i]
        if ch in "{}" and literal[i:i + 2] in ("{{", "}}") and depth == 0:
            out.append(literal[i:i + 2])
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth and (ch.isalpha() or ch == "_") and not (out and (out[-1][-1:].isalnum() or out[-1][-1:] in "._")):
            m = re.match(r"[A-Za-z_]\w*", literal[i:])
            assert m is not None  # `ch` starts a word
            word = m.group(0)
            out.append(fresh.get(word, word))
            i += len(word)
            continue
        out.append(ch)
        i += 1
    return "".join(out)
