"""Run folders that ecl_jax owns: names, the ownership marker, atomic writes, one-process lock.

A run folder ``<out_dir>/<name>/`` is created by ecl_jax with a marker file
(:data:`MARKER`) written first. Only a folder with the marker may be deleted
(``--fresh``) or rewritten. Every file that a later run reads is written atomically
(temporary file in the same folder, fsync, rename), so an interrupt or a full disk
leaves either the old file or the new one, never a torn one. A lock file holds the PID
of the process using the folder; a lock whose process is gone is taken over.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import socket
from typing import Union

from ecl_jax.errors import RunFolderError

__all__ = [
    "MARKER",
    "LOCK",
    "check_run_name",
    "is_run_folder",
    "create",
    "remove",
    "clear",
    "atomic_write_bytes",
    "atomic_write_text",
    "RunLock",
    "describe_os_error",
]

MARKER = ".ecl_jax_run"
"""File that marks a folder as made by ecl_jax (JSON: format and creating version)."""
LOCK = ".lock"
"""File holding ``pid host`` of the process running in a folder."""

PathLike = Union[str, os.PathLike]


def check_run_name(name: object) -> str:
    """``name`` if it is one plain path component, else a ConfigError saying what is valid."""
    from ecl_jax.errors import ConfigError

    valid = "a run name is one plain folder name such as 'default' or 'ring_lr0.1' (no '/', not '.', '..' or empty)"
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name {name!r} is empty; {valid}")
    if name in (".", "..") or "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ConfigError(f"name {name!r} is not a single folder name; {valid}")
    if pathlib.PurePath(name).is_absolute() or name != name.strip() or "\x00" in name or name.startswith("~"):
        raise ConfigError(f"name {name!r} is not a plain folder name; {valid}")
    return name


def is_run_folder(path: PathLike) -> bool:
    """True if ``path`` is a folder that ecl_jax created (it holds the marker file)."""
    p = pathlib.Path(path)
    return p.is_dir() and (p / MARKER).is_file()


def _marker_text() -> str:
    from ecl_jax import __version__

    return json.dumps({"made_by": "ecl_jax", "version": __version__, "marker_format": 1}) + "\n"


def create(path: PathLike) -> pathlib.Path:
    """Create the run folder ``path`` with its marker, or accept an existing ecl_jax run folder.

    An existing folder without the marker is refused (it is not ours: writing into it
    could overwrite someone's files).
    """
    p = pathlib.Path(path)
    if p.exists() and not p.is_dir():
        raise RunFolderError(f"{p} exists and is not a folder; choose another --set name=... or out_dir=...")
    if p.is_dir() and not is_run_folder(p):
        if any(p.iterdir()):
            raise RunFolderError(
                f"{p} exists and was not made by ecl_jax (no {MARKER} file); ecl_jax will not write into it. "
                "Choose another --set name=... or out_dir=..."
            )
    p.mkdir(parents=True, exist_ok=True)
    if not (p / MARKER).is_file():
        atomic_write_text(p / MARKER, _marker_text())
    return p


def remove(path: PathLike) -> None:
    """Delete the run folder ``path``; refused unless ecl_jax made it (marker present)."""
    p = pathlib.Path(path)
    if not p.exists():
        return
    if p.is_symlink():
        raise RunFolderError(_symlink_refusal(p, "--fresh deletes"))
    if not is_run_folder(p):
        raise RunFolderError(
            f"refusing to delete {p}: it was not made by ecl_jax (no {MARKER} file). "
            "Delete it yourself if you mean to, or choose another --set name=..."
        )
    shutil.rmtree(p)


def _symlink_refusal(p: pathlib.Path, action: str) -> str:
    """Why ``action`` refuses the symbolic link ``p``, saying whether its target is a run folder."""
    target = p.resolve()
    if is_run_folder(target):
        return (f"{p} is a symbolic link to the run folder {target}; {action} only a folder named directly, "
                f"never through a link: name the folder itself (--set out_dir=... --set name=...)")
    return f"{p} is a symbolic link (to {target}, not a run folder ecl_jax made); {action} only run folders ecl_jax made"


def clear(path: PathLike) -> None:
    """Empty the run folder ``path`` (``--fresh``), keeping its marker and lock.

    Refused unless ecl_jax made the folder (marker present). Symbolic links inside are
    removed as links; what they point to is never touched.
    """
    p = pathlib.Path(path)
    if p.is_symlink():
        raise RunFolderError(_symlink_refusal(p, "--fresh empties"))
    if not is_run_folder(p):
        raise RunFolderError(
            f"refusing to empty {p}: it was not made by ecl_jax (no {MARKER} file). "
            "Delete it yourself if you mean to, or choose another --set name=..."
        )
    for entry in p.iterdir():
        if entry.name in (MARKER, LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    p = pathlib.Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where unknown."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _age(path: pathlib.Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _pid_alive(pid: int, start: str = "") -> bool:
    """True if process ``pid`` runs and (where known) started at ``start`` (not a reused PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    now = _start_time(pid)
    return not (start and now and now != start)


class RunLock:
    """Exclusive use of a run folder by one process: ``with RunLock(run_dir): ...``.

    The lock file is created with O_EXCL and holds ``pid host start-time``. A second
    process gets a :class:`RunFolderError` naming the holder's PID. A lock left by a killed
    process (same host, that PID no longer running or now another process) is taken over,
    so it never stays stuck.
    """

    def __init__(self, folder: PathLike):
        self.path = pathlib.Path(folder) / LOCK
        self._held = False

    def acquire(self) -> "RunLock":
        host = socket.gethostname()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid_s, lock_host, start = (self.path.read_text().split() + ["", ""])[:3]
                    pid = int(pid_s)
                except (OSError, ValueError):
                    # Unreadable: its writer is between create and write (a fresh file) or died
                    # there, or it is not a lock ecl_jax wrote. Taken over once 5 s old.
                    age = _age(self.path)
                    if age >= 5.0:
                        pid, lock_host, start = -1, host, ""
                    else:
                        raise RunFolderError(self._unreadable(age)) from None
                if lock_host == host and (pid < 0 or pid > 0 and not _pid_alive(pid, start)) or pid == os.getpid():
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                raise RunFolderError(
                    f"{self.path.parent} is in use by process {pid} on {lock_host} (lock file {self.path}); "
                    "wait for it to finish or stop it. If that process is gone, delete the lock file."
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {host} {_start_time(os.getpid())}\n")
            self._held = True
            return self
        raise RunFolderError(f"could not take the lock {self.path}; delete it if no ecl_jax run uses that folder")

    def _unreadable(self, age: float) -> str:
        """Why a lock file that names no process refuses the folder (it is under 5 s old)."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        what = ("is still empty (another process is taking the lock)" if not text else
                f"holds {text[:40]!r}, not the 'pid host start-time' line ecl_jax writes")
        return (f"{self.path.parent} may be in use: its lock file {self.path} was made {age:.1f} s ago and {what}. "
                "Retry in a few seconds (a lock that still names no process is taken over once 5 s old), "
                "or delete the lock file if no ecl_jax run uses this folder.")

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _first_file_on(path: pathlib.Path) -> pathlib.Path | None:
    """The first component of ``path`` (from the root) that exists and is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def describe_os_error(err: OSError) -> str | None:
    """A one-line message for an OS error a user's files or disk cause (full, read-only,
    permission, a file where a folder must be, a folder where a file must be), else None."""
    where = f" ({err.filename})" if err.filename else ""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
    }
    if err.errno in reasons:
        return (f"cannot write{where}: {reasons[err.errno]}. Free space or choose a writable out_dir "
                "(--set out_dir=...); completed checkpoints are kept and the run resumes from them.")
    name = pathlib.Path(err.filename) if isinstance(err.filename, (str, os.PathLike)) else None
    if err.errno == errno.EEXIST and name is not None:
        return (f"cannot create the folder {name}: a file of that name is in the way, and ecl_jax does not "
                "replace a file it did not make; move that file away, or choose another name or out_dir "
                "(--set name=... / --set out_dir=...)")
    if err.errno == errno.ENOTDIR and name is not None:
        blocker = _first_file_on(name)
        what = f"{blocker} is a file, not a folder" if blocker is not None else "a part of it is not a folder"
        return (f"cannot use {name}: {what}; choose a folder for out_dir / --out, or move that file away")
    if err.errno == errno.EISDIR and name is not None:
        return f"cannot use {name}: it is a folder where ecl_jax expects a file; move it away or choose another name"
    return None
