"""YAML text -> plain data plus the line and column of every key and value.

Uses PyYAML's safe composer (no object construction from tags) and converts nodes ourselves, so
that duplicate keys are errors and every path into the data maps back to a place in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .diagnostics import DiagnosticSink, Location, SpecError

Path = tuple  # keys and list indices from the document root


@dataclass
class Source:
    """A parsed YAML document: `data` and the locations of each value (`values`) and key (`keys`)."""

    file: str
    data: Any
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def where(self, path: Path, key: bool = False) -> Location:
        """The closest known location of `path`: the path itself, else its nearest ancestor."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), Location(self.file, 1, 1))


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    def __init__(self, file: str, sink: DiagnosticSink):
        self.file, self.sink = file, sink
        self.src = Source(file, None)
        self._scalars = yaml.SafeLoader("")  # only used to resolve scalar tags to Python values
        self._merging = 0  # > 0 while re-converting the source of a merge key

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.src.values.setdefault(path, _loc(self.file, node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        out: dict = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # YAML merge key `<<: *anchor`
                merges.append(value_node)
                continue
            key = self._scalars.construct_object(key_node)
            if key in out:
                if not self._merging:  # a merged anchor's duplicates were reported where it is defined
                    first = self.src.keys[path + (key,)]
                    self.sink.error("duplicate-key", f"key `{key}` appears twice in this mapping",
                                    _loc(self.file, key_node), f"the first `{key}` is at line {first.line}; keep one")
                continue
            if self._merging:
                self.src.keys.setdefault(path + (key,), _loc(self.file, key_node))
            else:
                self.src.keys[path + (key,)] = _loc(self.file, key_node)
            out[key] = self.convert(value_node, path + (key,))
        if not merges:
            return out
        # Merged keys are converted after the explicit ones, so that explicit keys keep their own
        # locations; as in YAML, merged keys come first and explicit keys override them.
        merged: dict = {}
        self._merging += 1
        try:
            for value_node in merges:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    for k, v in self.convert(src, path).items():
                        merged.setdefault(k, v)
        finally:
            self._merging -= 1
        merged.update(out)
        return merged


def parse(text: str, file: str) -> Source:
    """Parse YAML text; raises SpecError (yaml-syntax, duplicate-key) on bad input."""
    sink = DiagnosticSink()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        sink.error("yaml-syntax", f"{exc.problem or exc.context}", loc,
                   "check indentation and that every `key: value` pair has a space after the colon")
        raise SpecError(sink.errors) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; carries an offset, not a mark
        before = text[:exc.position] if isinstance(text, str) else ""
        loc = Location(file, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        sink.error("yaml-syntax", f"{exc.reason}: character {char!r} (U+{ord(char[:1] or ' '):04X})", loc,
                   "remove the character, or quote it as an escape such as `\"\\x07\"`")
        raise SpecError(sink.errors) from None
    conv = _Converter(file, sink)
    conv.src.data = conv.convert(root, ()) if root is not None else {}
    sink.raise_if_errors()
    return conv.src
