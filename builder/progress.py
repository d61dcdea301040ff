"""Progress on a terminal while verifications run (rich): kernel, backend, loop block, elapsed time.

Shown only when stderr is a terminal and the output is not --json; otherwise every call is a no-op.
rich redraws on its own thread, so the elapsed time moves while one long block runs.
"""
from __future__ import annotations

import sys
from typing import Any, Optional


class Progress:
    """One bar per running verification (`start` .. `done`), on stderr, gone once the build ends."""

    def __init__(self, enabled: bool):
        self._live: Any = None  # a rich Progress when shown (rich is only imported then)
        self._tasks: dict[tuple[str, str], Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn,
                                       TimeElapsedColumn)

            self._live = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[what]}"), TimeElapsedColumn(),
                              console=Console(file=sys.stderr), transient=True)

    @staticmethod
    def for_terminal(json_output: bool) -> "Progress":
        return Progress(sys.stderr.isatty() and not json_output)

    def __enter__(self) -> "Progress":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()

    def start(self, kernel: str, backend: str, blocks: int, unit: str = "blocks") -> None:
        if self._live is not None:
            self._tasks[kernel, backend] = self._live.add_task(f"{kernel} {backend} ({unit})", total=blocks,
                                                               what="starting")

    def step(self, kernel: str, backend: str, what: str, completed: Optional[int] = None) -> None:
        task = self._tasks.get((kernel, backend))
        if task is not None:
            self._live.update(task, what=what, refresh=True,  # a block may be quicker than a redraw period
                              **({} if completed is None else {"completed": completed}))

    def done(self, kernel: str, backend: str) -> None:
        task = self._tasks.pop((kernel, backend), None)
        if task is not None:
            self._live.remove_task(task)
