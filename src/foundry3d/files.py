"""Every file and folder a foundry3d verb writes goes through here: one output rule, atomic writes, a lock.

The output rule, the same for every verb that writes a folder (``distill``, ``pretrain``, ``expert``,
``quickstart``, ``study``, ``eval``, ``embed``, ``bench``):

* a run folder is created and *marked* by us (a ``.foundry3d-run`` file naming the verb);
* a folder that is not empty and carries no marker is a user's folder: we refuse to write into it,
  whatever the flags (a folder written by an older foundry3d is recognised only when every entry in it
  is one the verb writes);
* ``overwrite`` removes only the entries the verb itself writes, inside a folder we marked, never the
  folder itself, anything above or outside it, ``/`` or a home folder (links are removed, never followed);
* one process at a time writes into a run folder (an advisory lock, released when the process ends, even
  when it is killed).

Single files (releases, ONNX graphs, records) are written to a temporary name beside the target and
renamed into place only when complete, so a kill or a full disk never leaves a file that looks
complete; they get the permissions of an ordinary file under the user's umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from foundry3d.errors import Foundry3DError, disk_full, environment_error, full_disk_error

MARKER = ".foundry3d-run"
LOCK = ".foundry3d-lock"
_HIDDEN = (MARKER, LOCK)


class OutputError(Foundry3DError, ValueError):
    """An output path we must not write to, or a run folder another process is writing into."""


class FolderBusy(OutputError):
    """Another live process holds the folder's lock (a caller that can do other work first may come back)."""


def user_path(path: str | Path, what: str = "--out") -> Path:
    """``path`` as the user meant it: ``~`` expanded, an empty string refused."""
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputError(f"{what} is empty: expected a path")
    return Path(text).expanduser()


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode an ordinary new file gets under the user's umask (``mkstemp`` would give 0600)."""
    return 0o666 & ~_umask()


def protected_folders() -> set[Path]:
    """Folders no verb ever writes a run into or removes anything from: ``/``, home folders and their parents."""
    homes = {Path.home()}
    with contextlib.suppress(Exception):  # no passwd database in some containers
        homes |= {Path(p.pw_dir) for p in pwd.getpwall() if p.pw_dir and p.pw_dir != "/nonexistent"}
    out = {Path("/")}
    for h in homes:
        with contextlib.suppress(OSError):
            h = h.resolve()
        out.add(h)
        out.update(h.parents)
    return out


def refuse_protected(path: Path, what: str = "--out") -> None:
    """Refuse ``/`` and home folders as an output (an overwrite there would delete what we did not write)."""
    real = path.resolve() if path.exists() else path.absolute()
    if real in protected_folders():
        raise OutputError(f"{what} {path} is the root or a home folder: choose a new folder for the output")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str) -> None:
    """Remove the debris of killed writers of ``parent/name``: ``.<name>.<pid>.*`` temporaries (files or
    folders) and ``.<name>.old-<pid>`` folders whose process is gone."""
    if not parent.is_dir():
        return
    for p in parent.glob(f".{name}.*"):
        rest = p.name[len(name) + 2 :]
        pid = rest[4:] if rest.startswith("old-") else rest.split(".", 1)[0]
        if not (pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))):
            continue
        if p.is_dir() and not p.is_symlink():
            _delete_tree(p)
        else:
            p.unlink(missing_ok=True)


def temp_path(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary name beside ``path`` that carries our pid (so debris can be cleaned)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write(
    path: str | Path, write: Callable[[str], object], check: Callable[[str], object] | None = None
) -> None:
    """Call ``write(tmp_path)`` (then ``check(tmp_path)``, which raises if the file is not right) and move the
    finished file onto ``path``. A kill, a full disk or a failed check leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)
    tmp = temp_path(path, ".tmp" + path.suffix)  # the real suffix last: some writers choose the format by it
    try:
        try:
            write(str(tmp))
        except OSError as e:
            err = environment_error(e, path)
            if err is None:
                raise
            raise err from e
        except Exception as e:  # torch (RuntimeError) and safetensors report a full disk without an errno
            if not disk_full(path.parent):
                raise
            raise full_disk_error(path) from e
        if check is not None:
            check(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: a reader sees the old file or the new one, never half of it."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder we created, or None (no marker, or not a file)."""
    p = folder / MARKER
    if not p.is_file() or p.is_symlink():
        return None
    try:
        data = json.loads(p.read_text() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) and data.get("foundry3d") == "run" else None


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` as a foundry3d run of ``kind``: only marked folders are ever overwritten."""
    write_text(folder / MARKER, json.dumps({"foundry3d": "run", "kind": kind, "created": time.time()}) + "\n")


def user_entries(folder: Path, ours: tuple[str, ...]) -> list[str]:
    """Names in ``folder`` that a verb writing ``ours`` did not write."""
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and p.name not in _HIDDEN)


def _delete_tree(p: Path) -> None:
    """The one place a folder tree is removed (tests intercept it)."""
    shutil.rmtree(p)


def remove_entries(folder: Path, names: tuple[str, ...]) -> None:
    """Remove ``folder/<name>`` for each of ``names`` (our own outputs) and nothing else."""
    refuse_protected(folder)
    if read_marker(folder) is None:
        raise OutputError(f"{folder} was not created by foundry3d (no {MARKER}): refusing to remove anything in it")
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise OutputError(f"internal: {name!r} is not an entry name")
        p = folder / name
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            _delete_tree(p)


def _empty(folder: Path) -> bool:
    return not any(p.name not in _HIDDEN for p in folder.iterdir())


def claim_folder(
    path: str | Path,
    kind: str,
    ours: tuple[str, ...],
    overwrite: bool = False,
    legacy: Callable[[Path], bool] | None = None,
) -> Path:
    """Create or take back the run folder ``path`` of verb ``kind`` (the rule in the module docstring);
    call it holding the folder's lock (:func:`run_folder` does both).

    ``ours`` names every entry the verb writes; ``legacy(path)`` says whether an unmarked folder holding
    only such entries is an older foundry3d run of this verb (it is then marked and used)."""
    folder = user_path(path)
    check_folder(folder, kind, ours, legacy)
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None and overwrite:
        remove_entries(folder, ours)
    folder.mkdir(parents=True, exist_ok=True)
    if marker is None:
        write_marker(folder, kind)
    return folder


def check_folder(folder: Path, kind: str, ours: tuple[str, ...], legacy: Callable[[Path], bool] | None = None) -> None:
    """Raise unless ``folder`` may become or is a run folder of ``kind``; changes nothing."""
    refuse_protected(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder} is an existing file: expected a folder for the {kind} outputs")
    if not folder.is_dir():
        return
    marker = read_marker(folder)
    if marker is None and _empty(folder):
        return
    if marker is None:
        foreign = user_entries(folder, ours)
        if foreign or legacy is None or not legacy(folder):
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise OutputError(
                f"--out {folder} is not empty and was not written by foundry3d {kind}"
                + (f" (it holds {shown})" if shown else "")
                + ": refusing to write into it; choose a new or empty folder"
            )
    elif marker.get("kind") not in (None, kind):
        raise OutputError(f"--out {folder} holds a foundry3d {marker['kind']} run, not {kind}: choose another --out")


@contextlib.contextmanager
def run_folder(
    path: str | Path,
    kind: str,
    ours: tuple[str, ...],
    overwrite: bool = False,
    legacy: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """The run folder of one verb call, checked, locked, cleared of our own outputs when ``overwrite``."""
    folder = user_path(path)
    check_folder(folder, kind, ours, legacy)  # before the lock creates anything
    with folder_lock(folder):
        yield claim_folder(folder, kind, ours, overwrite, legacy)


def holds_record(name: str, key: str) -> Callable[[Path], bool]:
    """A ``legacy`` test for :func:`run_folder`: the folder's ``name`` is a JSON record of ours (has ``key``),
    as written by a foundry3d from before run markers."""

    def test(folder: Path) -> bool:
        try:
            return key in json.loads((folder / name).read_text())
        except (OSError, ValueError, TypeError):
            return False

    return test


_HELD: dict[str, tuple[int, int]] = {}  # real path -> (fd, depth): a process may re-enter its own lock


def drop_inherited_locks() -> None:
    """In a forked child (a data-loading worker): close the lock files it inherited, so that a killed parent's
    folders are free again as soon as the parent is gone, not when its workers notice."""
    for fd, _ in list(_HELD.values()):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the run folder's lock; a second process gets a one-line error naming the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FolderBusy(
            f"another foundry3d process (pid {holder}) is writing into {folder}: wait for it to finish or choose "
            f"another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def slug(name: str) -> str:
    """``name`` as a file name: every character other than a letter or digit becomes ``_`` (a model name such as
    ``foundry s=16 seed=2`` names its run folder and its ledger claim)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
