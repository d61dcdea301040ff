"""Writing generated files: atomically, and only when their content changes (quiet rebuilds)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_if_changed(path: Union[str, Path], data: Union[str, bytes]) -> bool:
    """Atomic write (temp file + rename), skipped when the file already holds `data`."""
    path = Path(path)
    blob = data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == blob:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
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
