"""YAML text -> plain data plus the line and column of every key and value, within fixed limits.

The data is built from PyYAML's event stream (libyaml's C parser when PyYAML has it), never from its
object constructors: only the core schema's scalars (str, int, float, bool, null) exist, tags beyond
them are errors, duplicate keys are errors, and every path into the data maps back to a place in the
file. A spec is untrusted input, so the work it can cause is bounded: the file's size and kind, the
nesting depth, and the nodes that aliases add once expanded (a 455-byte "billion laughs" file would
otherwise expand to gigabytes). Building is iterative, so no input can exhaust Python's stack. An
alias shares its anchor's value: nothing downstream mutates the data it is given.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Optional

import yaml

from .diagnostics import Diagnostic, DiagnosticSink, Location, SpecError

Path = tuple  # keys and list indices from the document root

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
MAX_ALIAS_NODES = 500_000    # nodes that aliases add when expanded (plain nodes are bounded by the file size)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml composes ~5x faster, same marks
_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_COLLECTION_TAGS = {None, "!", _CORE + "map", _CORE + "seq"}
# First characters of the plain scalars the core resolver may type (bool, int, null...); any other untagged
# scalar, like a quoted one, is the string as written, made without the resolver and constructor (unique
# values, such as a chain's stage ids and references, miss the scalar cache). Everything goes through the
# resolver if it has a resolver for any first character or by path.
_RESOLVER = yaml.resolver.Resolver
_TYPED_FIRST = (None if None in _RESOLVER.yaml_implicit_resolvers or _RESOLVER.yaml_path_resolvers
                else frozenset(_RESOLVER.yaml_implicit_resolvers))


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


def frozen_data(value: Any) -> Any:
    """A hashable stand-in for parsed data, equal only for the same data of the same types (`1`, `1.0`
    and `true` differ, as do `{a: 1, b: 2}` and `{b: 2, a: 1}`)."""
    if isinstance(value, dict):
        return dict, tuple((frozen_data(k), frozen_data(v)) for k, v in value.items())
    if isinstance(value, list):
        return list, tuple(frozen_data(v) for v in value)
    return type(value), value


def read_text(path: str, limit: Optional[int] = None) -> str:
    """The text of a spec file; SpecError (missing-file, not-a-file, file-too-large, yaml-syntax) otherwise.
    Only regular files are read (a FIFO or /dev/zero would block or never end), and at most `limit` bytes."""
    here = Location(path, 1, 1)
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError([Diagnostic("missing-file", f"no such file: {path}", here,
                                    "run `build` where kernels.yaml is, or name the file with `--file`")]) from None
    except OSError as exc:
        raise SpecError([Diagnostic("not-a-file", f"cannot open the file: {exc.strerror}", here,
                                    "check the path given to `--file` and its permissions")]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory with an OSError
        os.close(fd)
        raise SpecError([Diagnostic("not-a-file", f"{path} is not a regular file", here,
                                    "name a YAML file; devices, pipes and directories are not read")])
    with os.fdopen(fd, "rb") as fh:
        blob = fh.read(limit + 1)
    if len(blob) > limit:
        raise SpecError([Diagnostic("file-too-large", f"the file is larger than {limit} bytes", here,
                                    "split the library into several files")])
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Diagnostic("yaml-syntax", f"the file is not UTF-8 text: {exc.reason} at byte {exc.start}",
                                    here, "save the file as UTF-8")]) from None


_TUPLE = tuple.__new__  # a Location without the Python-level __new__ of a NamedTuple: one per YAML node


def _loc(file: str, mark) -> Location:
    return _TUPLE(Location, (file, mark.line + 1, mark.column + 1)) if mark else Location(file, 1, 1)


class _Abort(Exception):
    """A limit was hit: stop reading, report what the sink holds."""


_NO_KEY, _BAD_KEY, _MERGE = object(), object(), object()


class _Frame:
    """A mapping or sequence being built (slots, and no lists until a merge needs them: a spec of 10,000
    stages opens some 30,000 mappings)."""

    __slots__ = ("value", "path", "loc", "anchor", "log_start", "cost_start", "merge_source", "key", "merges",
                 "merge_logs")

    def __init__(self, value: Any, path: Path, loc: Location, anchor: Optional[str], log_start: int,
                 cost_start: int, merge_source: bool = False):
        self.value = value                # dict or list
        self.path, self.loc, self.anchor = path, loc, anchor
        self.log_start = log_start        # first entry of the location log written inside this node
        self.cost_start = cost_start
        self.merge_source = merge_source  # the value of a `<<` key (its locations go to the merging mapping)
        self.key: Any = _NO_KEY           # mappings: the key whose value comes next
        self.merges: list = []            # merged mappings, in order
        self.merge_logs: list = []        # their location logs, relative to the mapping


@dataclass
class _Anchor:
    value: Any
    cost: int
    log: list                        # (kind, path relative to the anchored node, location)
    open: bool = False


class _Builder:
    """Consumes parser events; keeps a location log so that aliases replay the locations of their anchor."""

    def __init__(self, file: str, sink: DiagnosticSink):
        self.file, self.sink = file, sink
        self.src = Source(file, None)
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.log: list[tuple[str, Path, Location]] = []
        self.recording = 0  # open anchored or merged nodes: only their locations need logging
        self.cost = 0         # nodes, aliases expanded (an anchor's cost is what each use adds)
        self.alias_cost = 0
        self.root: Any = None
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self._scalars: dict[tuple, Any] = {}
        self.documents = 0

    # --- locations and budget ----------------------------------------------------------------------
    def _note(self, kind: str, path: Path, loc: Location, overwrite: bool = False) -> None:
        if self.recording:
            self.log.append((kind, path, loc))
        table = self.src.keys if kind == "k" else self.src.values
        if overwrite:
            table[path] = loc
        else:
            table.setdefault(path, loc)

    def _replay(self, entries: list, base: Path, skip: AbstractSet = frozenset()) -> None:
        for kind, rel, loc in entries:
            if not (rel and rel[0] in skip):
                self._note(kind, base + rel, loc)

    def _relative(self, start: int, base: Path) -> list:
        n = len(base)
        return [(k, p[n:], l) for k, p, l in self.log[start:]]

    def _count(self, n: int, loc: Location, alias: bool = False) -> None:
        self.cost += n
        if alias:
            self.alias_cost += n
            if self.alias_cost > MAX_ALIAS_NODES:
                self.sink.error("too-many-nodes", f"aliases expand to more than {MAX_ALIAS_NODES} nodes", loc,
                                "use fewer or smaller aliases; a spec this large is not a kernel library")
                raise _Abort

    # --- where values go ---------------------------------------------------------------------------
    def _in_key_position(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is _NO_KEY

    def _next_path(self) -> Path:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return top.path + (len(top.value),)
        if top.key is _BAD_KEY:
            return top.path + ("<discarded>",)
        return top.path + ("<<" if top.key is _MERGE else top.key,)

    def _deliver(self, value: Any, loc: Location) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
            return
        key, top.key = top.key, _NO_KEY
        if key is _BAD_KEY:
            return
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not sources or not all(isinstance(s, dict) for s in sources):
                self.sink.error("wrong-type", "a merge key `<<` takes a mapping or a list of mappings", loc,
                                "write `<<: *anchor` or `<<: [*a, *b]` with anchors of mappings")
                return
            top.merges.extend(sources)
            return
        top.value[key] = value

    def _set_key(self, top: _Frame, key: Any, loc: Location) -> None:
        if key in top.value:
            first = self.src.keys.get(top.path + (key,))
            self.sink.error("duplicate-key", f"key `{key}` appears twice in this mapping", loc,
                            f"the first `{key}` is at line {first.line}; keep one" if first else "keep one")
            top.key = _BAD_KEY
            return
        top.key = key
        self._note("k", top.path + (key,), loc, overwrite=True)

    # --- events ----------------------------------------------------------------------------------
    def scalar(self, ev) -> None:
        # the commonest event: helpers inlined (a spec of 10,000 stages holds some 150,000 scalars)
        mark = ev.start_mark
        loc = _TUPLE(Location, (self.file, mark.line + 1, mark.column + 1)) if mark else Location(self.file, 1, 1)
        self.cost += 1
        top = self.stack[-1] if self.stack else None
        text, tag = ev.value, ev.tag
        mapping = top if top is not None and top.key is _NO_KEY and type(top.value) is dict else None  # a key of it
        if mapping is not None and text == "<<" and tag is None and ev.implicit[0]:
            mapping.key = _MERGE
            return
        if tag is None and _TYPED_FIRST is not None and not (ev.implicit[0] and text[:1] in _TYPED_FIRST):
            value = text  # a string as written, as `_construct` would find
        else:
            value = self._scalars.get((text, ev.implicit), _BAD_KEY) if tag is None else _BAD_KEY
            if value is _BAD_KEY:
                value = self._construct(ev, loc)
        if mapping is not None:
            if value is _BAD_KEY:
                mapping.key = _BAD_KEY
                return
            if ev.anchor is not None:
                self.anchors[ev.anchor] = _Anchor(value, 1, [("v", (), loc)])
            if value in mapping.value:
                self._set_key(mapping, value, loc)  # reports the duplicate
                return
            mapping.key = value
            path = mapping.path + (value,)
            if self.recording:
                self.log.append(("k", path, loc))
            self.src.keys[path] = loc
            return
        if value is _BAD_KEY:
            value = None
        if ev.anchor is not None:
            self.anchors[ev.anchor] = _Anchor(value, 1, [("v", (), loc)])
        if top is not None and type(top.value) is dict and top.key is not _BAD_KEY and top.key is not _MERGE:
            key, top.key = top.key, _NO_KEY  # a mapping's value (`_deliver`'s commonest case)
            path = top.path + (key,)
            if self.recording:
                self.log.append(("v", path, loc))
            self.src.values.setdefault(path, loc)
            top.value[key] = value
            return
        path = self._next_path()
        if self.recording:
            self.log.append(("v", path, loc))
        self.src.values.setdefault(path, loc)
        if top is not None and type(top.value) is list:
            top.value.append(value)
        else:
            self._deliver(value, loc)

    def _construct(self, ev, loc: Location) -> Any:
        """The value of a tagged scalar, or of an untagged one that `scalar` could neither take as written
        nor find in the cache (typed by the resolver, then cached)."""
        tag, cache_key = ev.tag, None
        if tag == "!":
            tag = _CORE + "str"
        elif tag is None:
            cache_key = (ev.value, ev.implicit)
            tag = self._resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag not in _SCALAR_TAGS:
            self.sink.error("bad-tag", f"tag `{ev.tag or tag}` is not allowed: a spec holds plain strings, numbers, "
                                       "booleans and null", loc, "remove the tag, or quote the value")
            return _BAD_KEY
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
        try:
            value = self._constructor.yaml_constructors[tag](self._constructor, node)
        except Exception as exc:  # a core constructor refusing the text (`!!int abc`, `!!int ""`)
            shown = ev.value if len(ev.value) <= 40 else ev.value[:40] + "..."
            self.sink.error("wrong-type", f"`{shown}` is not a valid {tag.rsplit(':', 1)[-1]} ({exc})"[:300],
                            loc, "remove the tag, or write a value of that type")
            return _BAD_KEY
        if cache_key is not None:
            self._scalars[cache_key] = value
        return value

    def start(self, ev, kind: type) -> None:
        loc = _loc(self.file, ev.start_mark)
        what = "mapping" if kind is dict else "list"
        if ev.tag not in _COLLECTION_TAGS:
            self.sink.error("bad-tag", f"tag `{ev.tag}` is not allowed on a {what}", loc, "remove the tag")
        if len(self.stack) >= MAX_DEPTH:
            self.sink.error("too-deep", f"the document nests deeper than {MAX_DEPTH} levels", loc,
                            "a kernel spec needs only a few levels of nesting")
            raise _Abort
        top = self.stack[-1] if self.stack else None
        if top is not None and top.key is _NO_KEY and type(top.value) is dict:
            self.sink.error("wrong-type", f"a {what} cannot be a mapping key", loc, "keys are plain names or numbers")
            top.key = _BAD_KEY
        self.cost += 1
        path = self._next_path()
        merge_source = top is not None and top.key is _MERGE
        if ev.anchor is not None or merge_source:
            self.recording += 1
            if ev.anchor is not None:
                self.anchors[ev.anchor] = _Anchor(None, 0, [], open=True)
        self.stack.append(_Frame(kind(), path, loc, ev.anchor, len(self.log), self.cost - 1, merge_source))
        if self.recording:
            self.log.append(("v", path, loc))
        self.src.values.setdefault(path, loc)

    def end(self, ev=None) -> None:
        frame = self.stack.pop()
        value = frame.value
        if frame.merges:
            value = {}
            for source in frame.merges:  # merged keys first, earlier sources winning; explicit keys override
                for k, v in source.items():
                    value.setdefault(k, v)
            value.update(frame.value)
            for entries in frame.merge_logs:
                self._replay(entries, frame.path, skip=frame.value.keys())
        if frame.merge_source and self.stack:
            self._hand_to_merging(frame)
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchor(value, self.cost - frame.cost_start,
                                                 self._relative(frame.log_start, frame.path))
        if frame.anchor is not None or frame.merge_source:
            self.recording -= 1
            if not self.recording:
                self.log.clear()
        self._deliver(value, frame.loc)

    def _hand_to_merging(self, frame: _Frame) -> None:
        """The locations inside a merged mapping, for the mapping it merges into (replayed at its end)."""
        target = self.stack[-1]
        entries = self._relative(frame.log_start + 1, frame.path)
        if isinstance(frame.value, dict):
            target.merge_logs.append(entries)
            return
        by_item: dict = {}
        for kind, rel, loc in entries:  # a list of merged mappings: entries start with the item index
            if rel:
                by_item.setdefault(rel[0], []).append((kind, rel[1:], loc))
        target.merge_logs.extend(by_item[i] for i in sorted(by_item))

    def alias(self, ev) -> None:
        loc = _loc(self.file, ev.start_mark)
        anchor = self.anchors.get(ev.anchor)
        if anchor is None:
            self.sink.error("yaml-syntax", f"alias `*{ev.anchor}` names no anchor defined before it", loc,
                            f"define `&{ev.anchor}` earlier in the file")
            raise _Abort
        if anchor.open:
            self.sink.error("yaml-syntax", f"alias `*{ev.anchor}` refers to the node that contains it", loc,
                            "a spec cannot be recursive; copy the values instead")
            raise _Abort
        self._count(anchor.cost, loc, alias=True)
        if self._in_key_position():
            if isinstance(anchor.value, (dict, list)):
                self.sink.error("wrong-type", "an alias used as a key must name a plain scalar", loc,
                                "keys are plain names or numbers")
                self.stack[-1].key = _BAD_KEY
            else:
                self._set_key(self.stack[-1], anchor.value, loc)
            return
        top = self.stack[-1] if self.stack else None
        if top is not None and top.key is _MERGE:
            top.merge_logs.append(anchor.log[1:])  # replayed once the mapping's explicit keys are known
        else:
            self._replay(anchor.log, self._next_path())
        self._deliver(anchor.value, loc)

    def run(self, loader) -> None:
        """Consume `loader`'s events (what `yaml.parse` yields, without a generator step per event)."""
        handle = {yaml.ScalarEvent: self.scalar, yaml.MappingStartEvent: lambda ev: self.start(ev, dict),
                  yaml.SequenceStartEvent: lambda ev: self.start(ev, list), yaml.MappingEndEvent: self.end,
                  yaml.SequenceEndEvent: self.end, yaml.AliasEvent: self.alias,
                  yaml.DocumentStartEvent: self.document}.get
        more, get = loader.check_event, loader.get_event
        while more():
            ev = get()
            handler = handle(type(ev))
            if handler is not None:  # stream start and end, document end: nothing to do
                handler(ev)

    def document(self, ev) -> None:
        self.documents += 1
        if self.documents > 1:
            self.sink.error("yaml-syntax", "the file holds more than one YAML document",
                            _loc(self.file, ev.start_mark), "remove the `---` separators after the first")
            raise _Abort


def parse(text: str, file: str) -> Source:
    """Parse YAML text; raises SpecError (yaml-syntax, duplicate-key, bad-tag, too-deep, too-many-nodes...)."""
    sink = DiagnosticSink()
    builder = _Builder(file, sink)
    loader = None
    try:
        loader = _LOADER(text)
        builder.run(loader)
    except _Abort:
        pass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        sink.error("yaml-syntax", f"{exc.problem or exc.context}", _loc(file, mark),
                   "check indentation and that every `key: value` pair has a space after the colon")
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; carries an offset, not a mark
        before = text[:exc.position] if isinstance(text, str) else ""
        loc = Location(file, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        sink.error("yaml-syntax", f"{exc.reason}: character {char!r} (U+{ord(char[:1] or ' '):04X})", loc,
                   "remove the character, or quote it as an escape such as `\"\\x07\"`")
    except yaml.YAMLError as exc:  # libyaml reports some problems without a mark
        sink.error("yaml-syntax", str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                   Location(file, 1, 1), "check the file's YAML syntax")
    finally:
        if loader is not None:
            loader.dispose()
    sink.raise_if_errors()
    builder.src.data = builder.root if builder.root is not None else {}
    return builder.src
