"""Where a command writes, checked before it loads anything: a run must not find out at its end (or at its first
checkpoint) that it cannot save.

`check_writable` creates the output folder (or a file's folder) and writes a probe file in it, and turns every way
that fails into one `UsageError` that names the option, the path and the reason. Imports `errors` only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UsageError


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, option: str, file: bool = False) -> Path:
    """The folder `path` (or, with `file=True`, the folder of the file `path`), created if needed and shown to be
    writable by writing and removing a probe file in it. Returns it; a `UsageError` names `option` and the path."""
    path = Path(path).expanduser()
    where = f"{option} {path}"
    if file and path.is_dir():
        raise UsageError(f"{where} is a folder; give a file name.")
    if file and path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{where}: the file exists and cannot be written (permission denied); choose another path.")
    folder = path.parent if file else path
    blocker = _first_existing(folder)
    if not blocker.is_dir():
        raise UsageError(f"{where}: {blocker} is a file, not a folder; choose another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".trl-margins-write-check-"):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise UsageError(f"{where}: cannot write there ({reason.lower()}); choose a folder you can write to.") from e
    return folder
