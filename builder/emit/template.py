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
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

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


def block_key(block, refs: Sequence[str]) -> tuple:
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
    """The requests of the code being written for a block: each answered at once, and remembered by the
    name it gave (so that a name asked for twice is one slot); and the helper functions it uses."""

    def __init__(self, block, file):
        self.block, self.file = block, file
        self.requests: list[tuple[Answer, tuple]] = []
        self.slots: dict[str, int] = {}  # placeholder -> the request that first gave it
        self.helpers: set[str] = set()
        self.shareable = True

    def ask(self, answer: Answer, *args) -> str:
        placeholder = answer(self.block, self.file, *args)
        if placeholder not in self.slots:
            self.slots[placeholder] = len(self.requests)
            self.requests.append((answer, args))
        return placeholder

    def template(self, code: str, table: NameTable) -> Optional["Template"]:
        """`code` (as written for the block) with its requested names as slots; None when it holds a name
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
        return Template(tuple(texts), tuple(map(table.show, texts)), tuple(slots), tuple(self.requests),
                        frozenset(self.helpers), words, tuple(fixed),
                        words.isdisjoint(map(table.name_of, fixed)))


@dataclass(frozen=True)
class Template:
    """A kind of block's code: the text between slots (with user names as placeholders; `shown`: with
    their final names), the request filling each slot, the helpers it uses, the words of its text outside
    names, and whether no user name is one of those words."""

    texts: tuple[str, ...]
    shown: tuple[str, ...]
    slots: tuple[int, ...]
    requests: tuple[tuple[Answer, tuple], ...]
    helpers: frozenset
    words: frozenset
    fixed: tuple[str, ...]
    clean: bool

    def fill(self, block, file, renames: bool) -> str:
        """The final code of `block`, one of this kind: its requests answered in order, then resolved as
        `NameTable.resolve` would (`renames`: the code has locals of its own), directly when no name meets a
        word of the code; else substituted as `NameTable.substitute` would."""
        answers = [answer(block, file, *args) for answer, args in self.requests]
        table = file.table
        names = list(map(table.name_of, answers))
        if renames and not (self.clean and self.words.isdisjoint(names)):
            return table.resolve(_interleave(self.texts, self.slots, answers))
        table.mark_resolved(self.fixed)
        table.mark_resolved(answers)
        return _interleave(self.shown, self.slots, names)


def written(kinds: dict, key: tuple, block, file, write: Callable[[Recorder], str],
            renames: bool) -> tuple[str, frozenset]:
    """The final code `write(recorder)` gives for `block` and the helpers it uses: written (its template
    kept in `kinds` under `key`), or filled in from the template of an alike block written before.
    `renames`: the code has locals of its own, which names may meet (else every name is requested)."""
    template = kinds.get(key)
    if template is not None:
        return template.fill(block, file, renames), template.helpers
    recorder = Recorder(block, file)
    code = write(recorder)
    template = recorder.template(code, file.table)
    if template is not None:
        kinds[key] = template
    final = file.table.resolve(code) if renames else file.table.substitute(code)
    return final, frozenset(recorder.helpers)


def _interleave(texts: tuple[str, ...], slots: tuple[int, ...], names: list[str]) -> str:
    parts = [texts[0]]
    for slot, text in zip(slots, texts[1:]):
        parts += (names[slot], text)
    return "".join(parts)
