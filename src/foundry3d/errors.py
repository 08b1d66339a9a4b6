"""The one base class of every error foundry3d raises on purpose.

The CLI prints these as one line (exit 2); anything else is a bug and shows its traceback.
Each subclass also derives from the built-in class it refines (ValueError, RuntimeError, ...), so
``except ValueError`` around foundry3d calls keeps working.
"""

from __future__ import annotations

import errno
import os


class Foundry3DError(Exception):
    """Base of every deliberate foundry3d error: a user input, file or state we cannot use."""


class ConfigError(Foundry3DError, ValueError):
    """A config file, key or value that does not fit the recipe (every ``validate()`` raises this)."""


class InputError(Foundry3DError, ValueError, TypeError):
    """An argument or array passed to a function that does not fit what it expects (type, shape, size, range).

    Also a TypeError, so callers that caught the built-in TypeError of a wrong argument type still do."""


# errno values that mean "this machine cannot hold or accept the output", not a bug in foundry3d
_ENVIRONMENT = {
    errno.EACCES: "no permission to write there (choose a folder you own)",
    errno.EPERM: "no permission to write there (choose a folder you own)",
    errno.EROFS: "it is on a read-only file system (choose a writable folder)",
    errno.ENOSPC: "the disk is full (free some space or choose another disk; nothing complete was replaced)",
    errno.EDQUOT: "the disk quota is exceeded (free some space; nothing complete was replaced)",
}


class OutputWriteError(Foundry3DError, OSError):
    """A file or folder the machine would not let us write: permissions, a read-only or full disk."""


def environment_error(e: BaseException, path: str | os.PathLike[str] | None = None) -> OutputWriteError | None:
    """The one-line error for an ``OSError`` a user can fix (permissions, read-only or full disk), else None.

    Why: a verb writing to a read-only folder or a full disk is a user's situation, not a bug, so it must
    print as one line naming the path (CLI exit 2) instead of a traceback from deep inside a writer."""
    if not isinstance(e, OSError) or e.errno not in _ENVIRONMENT:
        return None
    where = e.filename if e.filename is not None else path
    shown = os.fspath(where) if where is not None else "an output"
    return OutputWriteError(f"cannot write {shown}: {_ENVIRONMENT[e.errno]}")


def full_disk_error(path: str | os.PathLike[str]) -> OutputWriteError:
    """The one-line error for a write that failed on a full disk (see :func:`disk_full`)."""
    return OutputWriteError(f"cannot write {os.fspath(path)}: {_ENVIRONMENT[errno.ENOSPC]}")


def disk_full(path: str | os.PathLike[str]) -> bool:
    """Whether the file system holding ``path`` has (almost) no free block left: some writers (torch's zip
    writer, safetensors) report a full disk as a RuntimeError without an errno."""
    try:
        st = os.statvfs(os.fspath(path))
    except OSError:
        return False
    return st.f_bfree * st.f_frsize < 1 << 20
