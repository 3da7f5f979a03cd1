"""Work split in shards of rows, resumable and shared among processes: the machinery of `trl-margins annotate`
(and of any command that writes one file of rows from many).

- `shard_ranges` / `shards_of_rank`: rows `[k * size, (k + 1) * size)` form shard `k`; rank `r` of `w` takes the
  shards `k % w == r`, so every rank gets about as many rows.
- A finished shard is `output_dir/shards/shard-00003.jsonl`, written under a name no other process uses and renamed,
  with the fingerprint of its input rows beside it (`shard-00003.sha256`): a shard is kept on resume only while its
  input rows are the same (`shard_fingerprint`), and the settings in the manifest (`check_manifest`) too.
- `merge_shards` concatenates the shards, in order, into one file.
- `acquire_lock`: one run per output folder. The processes of one run share the lock; another live run's lock stops
  a second run with one line naming the process that holds it.

Imports `datasets` and `errors` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..errors import UsageError

logger = logging.getLogger(__name__)

SHARD_DIR = "shards"
LOCK_FILE = "run.lock"


def shard_ranges(num_rows: int, shard_size: int) -> list[range]:
    if shard_size < 1:
        raise UsageError(f"--shard_size must be >= 1, got {shard_size}.")
    return [range(start, min(start + shard_size, num_rows)) for start in range(0, num_rows, shard_size)]


def shards_of_rank(num_shards: int, rank: int, world_size: int) -> list[int]:
    """Round-robin, so that every rank gets about as many rows, and the last (short) shard falls on one of them."""
    return [k for k in range(num_shards) if k % world_size == rank]


def shard_path(output_dir: str | os.PathLike, k: int) -> Path:
    return Path(output_dir) / SHARD_DIR / f"shard-{k:05d}.jsonl"


def check_manifest(output_dir: Path, manifest: dict[str, Any], manifest_file: str, rank: int) -> None:
    """Shards of an earlier run are reused only if they were made with the same settings (and each only while its
    input rows are the same: `shard_fingerprint`)."""
    path = output_dir / manifest_file
    if path.is_file():
        previous = json.loads(path.read_text())
        previous.pop("rows", None)  # from an older manifest: the fingerprints say which shards still hold
        if previous != manifest:
            changed = sorted(k for k in manifest.keys() | previous.keys() if previous.get(k) != manifest.get(k))
            raise UsageError(
                f"{output_dir} holds shards of another run (different {', '.join(changed)}): resume with the "
                "same settings, or give a new --output_dir."
            )
    elif rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(manifest, indent=2))


def shard_fingerprint(rows: Iterable[Any]) -> str:
    """A digest of a shard's input rows: a finished shard is kept only while the rows it was scored from are the
    same (a file changed under the same path is scored again)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def fingerprint_path(shard: Path) -> Path:
    return shard.with_suffix(".sha256")


def tmp_path(path: Path) -> Path:
    """A temporary name beside `path` that no other process uses (the host and the process id in it)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def write_atomically(path: Path, text: str) -> None:
    tmp = tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- one run per output folder --------------------------------------------------------------------------------------
def _run_token() -> str:
    """What the processes of one run share, and another run does not: the launcher's rendezvous, or this process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        keys = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
        return ":".join(os.environ.get(k, "") for k in keys)
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: assume it runs
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _written_holder(path: Path, wait_s: float = 2.0) -> dict[str, Any]:
    """The lock's holder, read again while the file is empty or half written: `acquire_lock` creates it and writes it
    in two steps, and a process of the same run reading in between would take it for a dead run's lock."""
    deadline = time.monotonic() + wait_s
    holder = _holder(path)
    while not holder and path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
        holder = _holder(path)
    return holder


def _refuse(output_dir: Path, path: Path, holder: dict[str, Any]) -> UsageError:
    return UsageError(
        f"{output_dir} is being written by process {holder.get('pid')} on {holder.get('host')} (since "
        f"{holder.get('since')}): wait for it to finish, or give another --output_dir (remove {path} if that process "
        "is gone)."
    )


def check_lock(output_dir: Path) -> None:
    """Before loading anything: a `UsageError` naming the process when another live run holds `output_dir`."""
    path = Path(output_dir) / LOCK_FILE
    holder = _holder(path) if path.is_file() else {}
    if holder and holder.get("run") != _run_token() and _alive(holder):
        raise _refuse(Path(output_dir), path, holder)


def acquire_lock(output_dir: Path) -> Path:
    """Make this run the only one writing into `output_dir`: a lock file naming its process, which every process of
    the run may take (they share `_run_token`). Another live run's lock is a `UsageError` naming its process; a dead
    one's is taken over, with a warning."""
    path = output_dir / LOCK_FILE
    mine = {"run": _run_token(), "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
    for _ in range(2):
        try:
            with open(path, "x") as f:
                json.dump(mine, f)
            return path
        except FileExistsError:
            holder = _written_holder(path)
            if holder.get("run") == mine["run"]:
                return path  # another process of this run took it
            if holder and _alive(holder):
                raise _refuse(output_dir, path, holder) from None
            logger.warning("Taking over %s from process %s, which is gone.", path, holder.get("pid"))
            path.unlink(missing_ok=True)
    raise UsageError(f"could not take the lock {path}: another run keeps taking it; give another --output_dir.")


def write_shard(rows: list[dict[str, Any]], path: Path, fingerprint: str) -> None:
    # Written beside the target and renamed, its fingerprint first: a shard that exists is complete, whatever stopped
    # the run, and says which input rows it was scored from
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(fingerprint_path(path), fingerprint + "\n")
    tmp = tmp_path(path)
    Dataset.from_list(rows).to_json(tmp, lines=True, force_ascii=False)
    os.replace(tmp, path)


def merge_shards(shard_root: str | os.PathLike, num_shards: int, target: str | os.PathLike) -> Path:
    """Concatenate the shards under `shard_root`, in order, into the file `target`; a missing shard is an error."""
    shard_root, target = Path(shard_root), Path(target)
    missing = [k for k in range(num_shards) if not shard_path(shard_root, k).is_file()]
    if missing:
        raise UsageError(f"Shards {missing} of {shard_root} are missing: run the command again to make them.")
    tmp = tmp_path(target)
    with open(tmp, "wb") as out:
        for k in range(num_shards):
            out.write(shard_path(shard_root, k).read_bytes())
    os.replace(tmp, target)
    return target


def kept_shard(path: Path, fingerprint: str) -> bool:
    """Whether the finished shard at `path` was made from the rows whose fingerprint is `fingerprint`."""
    kept = fingerprint_path(path)
    return path.is_file() and kept.is_file() and kept.read_text().strip() == fingerprint
