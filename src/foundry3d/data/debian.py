"""Fetch Debian packages without root: ``apt-get download`` + ``dpkg-deb``.

Package lists are refreshed with ``apt-get update`` only when the package is unknown; as a
non-root user the lists go into a private folder under the cache (``Dir::State::Lists``), so no
root is needed at any point. Archive members are filtered by pattern and their paths checked:
nothing is ever written outside the destination folder.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from foundry3d.data.base import DatasetError

HOW_ELSE = (
    "foundry3d builds its embedded datasets from Debian packages. Without apt-get, download the "
    "'{pkg}' .deb from https://packages.debian.org/bookworm/all/{pkg}/download on another machine, "
    "copy it here and pass it with --deb PATH (Python: deb=PATH)."
)


class PackageError(DatasetError):
    """A Debian package that cannot be downloaded or unpacked."""


def _apt_options(cache: Path) -> list[str]:
    if os.geteuid() == 0:
        return []
    lists = cache / "apt" / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    return [f"-oDir::State::Lists={lists}", "-oDebug::NoLocking=1", f"-oDir::Cache={cache / 'apt' / 'cache'}"]


def download_package(name: str, cache: Path) -> Path:
    """The .deb of ``name`` in ``cache/debs`` (downloaded once; reused when present)."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{name}_*.deb"))
    if have:
        return have[-1]
    if shutil.which("apt-get") is None:
        raise PackageError("apt-get is not available on this machine. " + HOW_ELSE.format(pkg=name))
    opts = _apt_options(cache)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", *opts, *args], cwd=debs, capture_output=True, text=True)

    res = run("download", name)
    if res.returncode != 0:
        # Unknown package usually means the package lists were never fetched on this machine.
        upd = run("update")
        if upd.returncode != 0:
            raise PackageError(
                f"'apt-get download {name}' failed ({res.stderr.strip()[-300:]}) and 'apt-get update' "
                f"could not refresh the package lists ({upd.stderr.strip()[-300:]}). " + HOW_ELSE.format(pkg=name)
            )
        res = run("download", name)
        if res.returncode != 0:
            raise PackageError(
                f"'apt-get download {name}' failed: {res.stderr.strip()[-500:]}. " + HOW_ELSE.format(pkg=name)
            )
    have = sorted(debs.glob(f"{name}_*.deb"))
    if not have:
        raise PackageError(f"apt-get reported success but no {name}_*.deb appeared in {debs}")
    return have[-1]


def package_version(deb: Path) -> str:
    """The ``Version`` field of a ``.deb`` (recorded with every dataset built from it)."""
    res = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    if res.returncode != 0:
        raise PackageError(f"{deb} is not a readable Debian package: {res.stderr.strip()}")
    return res.stdout.strip()


def _safe_name(name: str) -> PurePosixPath | None:
    p = PurePosixPath(name)
    parts = [q for q in p.parts if q not in ("", ".", "/")]
    if not parts or any(q == ".." for q in parts) or (p.is_absolute() and not parts):
        return None
    return PurePosixPath(*parts)


def iter_members(deb: Path, patterns: list[str]) -> Iterator[tuple[str, bytes]]:
    """Stream (path, bytes) of regular files in ``deb`` whose path matches one of ``patterns``."""
    if shutil.which("dpkg-deb") is None:
        raise PackageError("dpkg-deb is not available; install the 'dpkg' package or build on Debian/Ubuntu")
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    stopped = False  # the reader stopped early (enough members): dpkg-deb's broken pipe is ours, not an error
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                if not m.isreg():
                    continue
                safe = _safe_name(m.name)
                if safe is None:
                    continue
                name = str(safe)
                if not any(fnmatch.fnmatch(name, p) for p in patterns):
                    continue
                f = tar.extractfile(m)
                if f is not None:
                    yield name, f.read()
    except tarfile.TarError as e:
        raise PackageError(f"{deb}: corrupt data archive ({e})") from e
    except GeneratorExit:
        stopped = True
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
        if code not in (0, -13) and err and not stopped:  # -13: we stopped reading early (SIGPIPE)
            raise PackageError(f"dpkg-deb failed on {deb}: {err.strip()[-300:]}")


def extract_members(deb: Path, dest: Path, patterns: list[str]) -> list[Path]:
    """Write matching regular files of ``deb`` under ``dest``; paths that would escape are refused."""
    dest = dest.resolve()
    out = []
    for name, data in iter_members(deb, patterns):
        target = (dest / name).resolve()
        if dest not in target.parents:
            raise PackageError(f"{deb}: archive member {name!r} would be written outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        out.append(target)
    return out
