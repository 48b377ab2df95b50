"""One process at a time on an output directory: a sweep's or a reproduction's ``--out``, or a run directory.

    with OutputLock(out):                 # a second process refuses at once, naming the holder
        ...
    with OutputLock(out, wait=True):      # or waits for the holder to finish
        ...

The lock is ``OUT/.qresnet.lock``, held with ``flock``: the kernel drops it when its holder dies,
however it dies (kill -9 included), so a lock left by a dead process is taken over without asking.
The file records the holder's PID, host, command and start time, for the refusal message only.
The same process may take a lock it holds again (a reproduction locks its ``--out``, each study's
sweep locks its own directory inside it, each run its run directory).

Where it cannot work: ``flock`` is local to one machine's kernel. On a network filesystem (NFS, SMB,
sshfs, Lustre...; read from ``/proc/mounts``) the lock still serialises the processes of this machine,
and a warning says that processes on other machines are not held back. A filesystem that refuses
locks altogether gets a warning and no lock.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from qresnet.errors import LockedError

LOCK_NAME = ".qresnet.lock"
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "sshfs", "lustre", "gpfs", "ceph",
                       "glusterfs", "fuse.glusterfs", "afs", "beegfs", "fuse.s3fs", "fuse.gcsfuse")
POLL_SECONDS = 0.5

_held: dict[Path, int] = {}  # lock path -> how many times this process holds it
_warned: set[str] = set()


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem ``path`` lives on (the longest mount point above it), or None if unknown."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target, best, kind = str(path.resolve()), -1, None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            best, kind = len(point), parts[2]
    return kind


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"warning: {text}", file=sys.stderr)


def _holder(path: Path) -> str:
    """The holder as the lock file names it, for a message."""
    try:
        info = json.loads(path.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["started"])))
        host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
        return f"process {int(info['pid'])}{host} (`{info.get('command', '?')}`, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"


class OutputLock:
    """An exclusive lock on ``directory`` for the life of a ``with`` block (see the module's docstring).

    The directory is created if missing; if the block fails and left nothing in a directory the lock
    created, the directory is removed again, so a refused command leaves no files behind.
    """

    def __init__(self, directory: str | Path, wait: bool = False):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> OutputLock:
        key = self.path.absolute()
        if key in _held:  # this process holds it already (a study inside a reproduction)
            _held[key] += 1
            return self
        self._make_directory()
        kind = filesystem_type(self.directory)
        if kind in NETWORK_FILESYSTEMS:
            _warn_once(kind + str(self.directory), f"{self.directory} is on a network filesystem ({kind}): the lock on "
                       "it holds back other processes of this machine only, not processes on other machines")
        try:
            self._acquire()
        except BaseException:
            self._remove_created()
            raise
        _held[key] = 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        key = self.path.absolute()
        _held[key] = _held.get(key, 1) - 1
        if _held[key] > 0:
            return
        del _held[key]
        if self._fd is not None:
            # unlinked while still held: a process waiting on the old file notices (inode check) and retries
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
        self._remove_created()

    def _make_directory(self) -> None:
        missing = []
        for parent in [self.directory, *self.directory.parents]:
            if parent.exists():
                break
            missing.append(parent)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first

    def _remove_created(self) -> None:
        for directory in self._created:
            try:
                directory.rmdir()  # only if empty: whatever the block wrote stays
            except OSError:
                break
        self._created = []

    def _acquire(self) -> None:
        import fcntl

        waiting = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not self.wait:
                    raise LockedError(f"{self.directory} is in use by {_holder(self.path)}; wait for it to finish, or "
                                      "pass --wait to start when it does") from None
                if not waiting:
                    print(f"waiting for {_holder(self.path)} to release {self.directory} ...", file=sys.stderr)
                    waiting = True
                time.sleep(POLL_SECONDS)
                continue
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise LockedError(f"cannot lock {self.path}: {exc.strerror}") from None
                _warn_once(str(self.directory), f"{self.directory} cannot be locked ({exc.strerror}): two processes "
                           "on it are not held back from each other")
                self.path.unlink(missing_ok=True)  # a lock file nobody holds would only mislead
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released and removed the file between our open and our lock: again
                os.close(fd)
                continue
            self._fd = fd
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode())
            return
