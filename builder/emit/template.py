"""Block code written once per kind of block, then filled in with each alike block's names.

A chain of 10,000 alike stages would otherwise run the same tile body, and the same mechanism around
it, 10,000 times. A block's code depends on which block it is only through the names it asks for (its
kernel's name, its tensors' pointers, its constants, its docstring and stage comments). Each such name
is a *request* relative to the block ("the pointer of its tensor 2", "stage 0's constant HALF_LANES"),
answered by a function of the block. The first block of a kind is written as usual while its requests
are recorded, and its text is kept with every requested name as a slot. A later block with an equal
`block_key` answers the same requests in the same order (so the file claims the same names, in the
same order, as writing the block would) and fills the slots.

Everything else the code can read is in the key: tile bodies see their stage through `StageView`,
which shows no identity, and the key holds all of it. A block whose text holds a name that came from
no request (a tool that edits bodies by their final names, say) is never shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional

from .naming import PLACEHOLDER, NameTable, word_set

Answer = Callable[..., str]  # (block, file, *args) -> placeholder


class StageView(NamedTuple):
    """What a tile body may know of its stage: its op, params, ports, their types and its tiles; not
    its id, the tensors it reads or its place in the file (names come from the body context)."""

    op: Any
    params: Any
    inputs: tuple[str, ...]             # its wired input ports, in YAML order
    in_types: Mapping[str, Any]
    out_types: Mapping[str, Any]
    tiles: Mapping[str, Any]
    private: Mapping[str, Any]


def view(stage) -> StageView:
    return StageView(stage.op, stage.params, tuple(stage.inputs), stage.in_types, stage.out_types, stage.tiles,
                     stage.private)


def block_key(block, refs: list[str]) -> tuple:
    """What a block's code can depend on besides requested names: how many tensors it takes, its
    domain (with the tile params that cut it) and phase, and for each stage its op, params, ports, their
    types, its tiles, and which of the block's tensors each port is (two ports reading one tensor share a
    pointer). Values by identity: the graph step shares one object among equal params, types and tiles of
    alike stages, and the schedule one domain among them; objects merely equal make another key, which
    only costs sharing. Every object named lives as long as the schedule, so no identity is reused."""
    where = {ref: i for i, ref in enumerate(refs)}.get
    stages = tuple((s.op, id(s.params), tuple(s.inputs), *_ids(s.in_types), *_ids(s.out_types), *_ids(s.tiles),
                    *_ids(s.private), tuple(map(where, s.inputs.values())),
                    tuple(map(where, map(s.ref, s.out_types))), tuple(map(where, map(s.private_ref, s.private))))
                   for s in block.stages)
    return len(refs), id(block.domain), id(block.phase), stages


def _ids(values: Mapping[str, Any]) -> tuple[tuple, tuple]:
    """The names of a mapping, and the identities of its values."""
    return tuple(values), tuple(map(id, values.values()))


class Recorder:
    """The requests of the block being written: each answered at once, and remembered by the name it
    gave (so that a name asked for twice is one slot)."""

    def __init__(self, block, file):
        self.block, self.file = block, file
        self.requests: list[tuple[Answer, tuple]] = []
        self.slots: dict[str, int] = {}  # placeholder -> the request that first gave it
        self.shareable = True

    def ask(self, answer: Answer, *args) -> str:
        placeholder = answer(self.block, self.file, *args)
        if placeholder not in self.slots:
            self.slots[placeholder] = len(self.requests)
            self.requests.append((answer, args))
        return placeholder

    def template(self, code: str, table: NameTable, helpers: frozenset) -> Optional["Template"]:
        """`code` (the block as written) with its requested names as slots; None when it holds a name
        neither requested nor a user name (those are the same in every block of the file)."""
        if not self.shareable:
            return None
        parts = PLACEHOLDER.split(code)  # text, number, text...
        texts, slots, fixed = [parts[0]], [], []
        for number, text in zip(parts[1::2], parts[2::2]):
            placeholder = f"__m{number}__"
            if placeholder in self.slots:
                slots.append(self.slots[placeholder])
                texts.append(text)
            elif table.is_fixed(placeholder):
                texts[-1] += placeholder + text
                fixed.append(placeholder)
            else:
                return None
        words = frozenset(word_set("".join(parts[0::2])))  # what `resolve` checks names against
        resolved = None if not words.isdisjoint(map(table.name_of, fixed)) else tuple(map(table.show, texts))
        return Template(tuple(texts), resolved, tuple(slots), tuple(self.requests), helpers, words, tuple(fixed))


@dataclass(frozen=True)
class Template:
    """A kind of block's code: text between slots (with user names as placeholders, and `resolved`: with
    their final names, unless one of them meets a word of the code), the request filling each slot, the
    helpers it uses, and the words of its text outside names."""

    texts: tuple[str, ...]
    resolved: Optional[tuple[str, ...]]
    slots: tuple[int, ...]
    requests: tuple[tuple[Answer, tuple], ...]
    helpers: frozenset
    words: frozenset
    fixed: tuple[str, ...]

    def fill(self, block, file) -> str:
        """The final code of `block`, one of this kind: its requests answered in order, then resolved as
        `NameTable.resolve` would, directly when no name meets a word of the code (nothing to rename)."""
        answers = [answer(block, file, *args) for answer, args in self.requests]
        table = file.table
        names = [table.name_of(a) for a in answers]
        if self.resolved is not None and self.words.isdisjoint(names):
            table.mark_resolved(self.fixed)
            table.mark_resolved(answers)
            return _interleave(self.resolved, self.slots, names)
        return table.resolve(_interleave(self.texts, self.slots, answers))


def _interleave(texts: tuple[str, ...], slots: tuple[int, ...], names: list[str]) -> str:
    parts = [texts[0]]
    for slot, text in zip(slots, texts[1:]):
        parts += (names[slot], text)
    return "".join(parts)
