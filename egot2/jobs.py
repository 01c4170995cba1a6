"""Machinery shared by the prepare tools: a parallel job runner and idempotent, resumable output steps.

Conventions every prepare step follows:

* An expensive output (a folder of frames, an extracted wav) is *complete* only when its done marker exists and
  holds the fingerprint of the inputs it was built from. The marker is a hidden sibling file
  (``video_imgs/.<clip_uid>.done`` for ``video_imgs/<clip_uid>``), so the output folder itself holds nothing but
  the files the loaders read.
* :func:`build_once` builds such an output in a hidden temporary folder beside it, moves it into place and only
  then writes the marker. A run killed at any point therefore leaves either a complete output with its marker, or
  an output without a marker (rebuilt next time), or a temporary folder (removed next time) — never a half-written
  output that looks finished.
* Cheap outputs (JSON, CSV, lists) are regenerated in memory on every run and written with
  :func:`write_bytes_atomic` / :func:`write_json_atomic`, which leave a file untouched when its bytes would not
  change. Re-running a prepare step is therefore a no-op that keeps every byte and every mtime.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from tqdm import tqdm

__all__ = [
    "run_jobs",
    "fingerprint",
    "file_identity",
    "done_marker",
    "is_done",
    "mark_done",
    "clear_done",
    "staging_dir",
    "build_once",
    "remove_stale_staging",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "relative_symlink",
]

DONE_SUFFIX = ".done"
STAGING_TAG = ".staging-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions once they are in place.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 200 else text[:197] + "..."


def _name_item(err: BaseException, desc: str, item: Any) -> BaseException:
    # The exception keeps its type (callers catch FileNotFoundError, ValueError, ...); the note names the item.
    if hasattr(err, "add_note"):
        err.add_note(f"{desc}: failed on item {_describe(item)}")
    return err


def run_jobs(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, desc: str = "jobs",
             progress: Optional[bool] = None) -> list:
    """Run ``fn(item)`` for every item, in a process pool or inline, and return the results in item order.

    Args:
        fn: a picklable (module-level) function of one argument.
        items: the work items; each must be picklable when ``workers > 1``.
        workers: number of worker processes; ``<= 1`` runs everything inline in this process. Results never
            depend on this number. Workers are *spawned* (fresh interpreters), so a script that asks for more
            than one needs the usual ``if __name__ == "__main__":`` guard.
        desc: label of the progress bar and of error notes.
        progress: show a tqdm bar; ``None`` shows it only on an interactive terminal.

    Returns:
        ``[fn(item) for item in items]``.

    Raises:
        The first exception raised by ``fn``, with its type unchanged and a note naming the failing item; the
        items not yet started are cancelled.
    """
    items = list(items)
    disable = None if progress is None else not progress
    results: list = [None] * len(items)
    if workers <= 1 or len(items) <= 1:
        for index, item in enumerate(tqdm(items, desc=desc, disable=disable, dynamic_ncols=True)):
            try:
                results[index] = fn(item)
            except Exception as err:
                raise _name_item(err, desc, item)
        return results
    # spawn, not fork: the parent may hold torch/OpenMP/x264 threads, and forking a threaded process can deadlock.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        futures = {pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            with tqdm(total=len(items), desc=desc, disable=disable, dynamic_ncols=True) as bar:
                for future in concurrent.futures.as_completed(futures):
                    index = futures[future]
                    try:
                        results[index] = future.result()
                    except Exception as err:
                        raise _name_item(err, desc, items[index])
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (input identities, parameters, a format version)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_identity(path) -> list:
    """``[name, size, mtime_ns]`` of an input file: cheap to compute for multi-GB videos, changes when it changes.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: input file not found") from None
    return [path.name, stat.st_size, stat.st_mtime_ns]


def done_marker(path) -> Path:
    """The marker file that certifies ``path`` (a folder or a file) as complete: ``<parent>/.<name>.done``."""
    path = Path(path)
    return path.parent / f".{path.name}{DONE_SUFFIX}"


def is_done(path, expected_fingerprint: Optional[str] = None) -> bool:
    """Whether ``path`` exists and its marker exists (and holds ``expected_fingerprint`` when one is given)."""
    path = Path(path)
    marker = done_marker(path)
    if not path.exists() or not marker.is_file():
        return False
    return expected_fingerprint is None or marker.read_text().strip() == expected_fingerprint


def mark_done(path, fingerprint_value: str) -> None:
    """Certify ``path`` as complete, built from inputs with this fingerprint (atomic)."""
    write_text_atomic(done_marker(path), fingerprint_value + "\n")


def clear_done(path) -> None:
    """Remove the marker of ``path`` (the output is then treated as incomplete)."""
    with contextlib.suppress(FileNotFoundError):
        done_marker(path).unlink()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def staging_dir(path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``path``; on success it replaces ``path``, on failure it is removed.

    The caller writes the marker afterwards (see :func:`build_once`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{STAGING_TAG}"))
    try:
        yield staging
        os.chmod(staging, _DIR_MODE)
        clear_done(path)
        if path.exists() or path.is_symlink():
            _remove(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def build_once(path, fingerprint_value: str, build: Callable[[Path], None]) -> bool:
    """Build the folder ``path`` with ``build(staging_folder)`` unless it is already complete for this fingerprint.

    A folder without a marker, or with a marker for other inputs, is rebuilt from scratch; the new folder
    appears under its final name only complete.

    Returns:
        True when the folder was (re)built, False when it was already complete.
    """
    path = Path(path)
    if is_done(path, fingerprint_value):
        return False
    with staging_dir(path) as staging:
        build(staging)
    mark_done(path, fingerprint_value)
    return True


def remove_stale_staging(folder) -> int:
    """Delete staging folders/files that a killed run left in ``folder``; returns how many were removed.

    Only call this while no other process is preparing into the same folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if entry.name.startswith(".") and STAGING_TAG in entry.name:
            _remove(entry)
            removed += 1
    return removed


def write_bytes_atomic(path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file and a rename, unless the file already holds these bytes.

    Returns:
        True when the file was written, False when it was already identical (left untouched, mtime included).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def write_text_atomic(path, text: str) -> bool:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj: Any, indent: Optional[int] = None, sort_keys: bool = False) -> bool:
    """Serialise ``obj`` as JSON (UTF-8, trailing newline when indented) and write it with :func:`write_bytes_atomic`.

    Returns:
        True when the file was written, False when it already held exactly this JSON.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    if indent is not None:
        text += "\n"
    return write_text_atomic(path, text)


def relative_symlink(link, target) -> bool:
    """Make ``link`` a symlink to ``target`` written relative to the link's folder (the tree stays movable).

    An existing correct link is left alone; a wrong link is replaced; a real file or folder in the way is an
    error (never deleted silently).

    Returns:
        True when the link was created or changed.
    """
    link, target = Path(link), Path(target)
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == relative:
            return False
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link}: expected a symlink to {relative}, found a real "
                              f"{'folder' if link.is_dir() else 'file'}; move it away and re-run")
    os.symlink(relative, link)
    return True

