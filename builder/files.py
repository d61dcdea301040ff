"""Writing generated files: atomically, only when their content changes, and inside their folder.

`write_set` writes one build's files into `--out-dir` as a unit: every file is first written to a
staging folder inside it, then moved into place, all under a lock, so that two builds into one folder
run one after the other and a build killed midway leaves only staged files, which the next build
removes. Paths are made of validated names and must resolve inside the folder.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Union

LOCK = ".build.lock"
STAGING = ".build-staging"


class OutputError(Exception):
    """The output folder cannot hold the files (not a folder, read-only, full...): a usage error."""


def _mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _blob(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else data


def write_if_changed(path: Union[str, Path], data: Union[str, bytes]) -> bool:
    """Atomic write (temp file in the same folder + rename), skipped when the file already holds `data`."""
    path = Path(path)
    blob = _blob(data)
    if path.is_file() and path.read_bytes() == blob:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else _mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / LOCK, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # a concurrent build waits here
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _inside(folder: Path, rel: str) -> Path:
    path = (folder / rel).resolve()
    if folder.resolve() not in path.parents:
        raise OutputError(f"refusing to write {rel!r}: it resolves outside {folder}")
    return path


def write_set(folder: Union[str, Path], files: Mapping[str, Union[str, bytes]]) -> dict[str, bool]:
    """Write `files` (path relative to `folder` -> content) as one unit; returns which changed.
    Raises OutputError, with nothing moved into place, when the folder cannot take them."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            staging = folder / STAGING
            shutil.rmtree(staging, ignore_errors=True)  # left by a build that was killed
            targets = {rel: _inside(folder, rel) for rel in files}
            changed = {rel: not (p.is_file() and p.read_bytes() == _blob(files[rel])) for rel, p in targets.items()}
            staged = {}
            try:
                for i, rel in enumerate(r for r in files if changed[r]):
                    staging.mkdir(exist_ok=True)
                    tmp = staging / f"{i}.tmp"
                    tmp.write_bytes(_blob(files[rel]))
                    os.chmod(tmp, targets[rel].stat().st_mode & 0o7777 if targets[rel].exists() else _mode())
                    staged[rel] = tmp
                for rel, tmp in staged.items():
                    targets[rel].parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, targets[rel])
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return changed
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOSPC:
            reason += " (nothing was moved into place)"
        raise OutputError(f"cannot write to {folder}: {reason}") from None
