"""One writer per study: a lock file that works across the nodes of a shared file system.

The lock is ``<study>/.privstudy.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local file systems
and on NFS v3 and later) and holding its holder's host, pid, start time, command and a random token.
While held, a thread touches it every ``HEARTBEAT_S`` seconds. A lock is *stale*, and is broken by the
next taker, when its holder is provably gone: on the same host, its pid no longer exists; on another
host, the file has not been touched for ``STALE_AFTER_S`` seconds (the holder's node died or lost the
file system). Breaking renames the stale file to a unique name and checks that it renamed the stale
holder's file and not a fresh one (if not, it puts it back), so two takers cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

LOCK_NAME = ".privstudy.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class LockHeld(RuntimeError):
    """Another live process holds the study's lock; the message names it."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host and can still act.

    A zombie (exited, not yet reaped: a killed sweep's worker whose parent died, in a container whose
    init does not reap) still answers ``kill(pid, 0)`` but will never write again: it counts as gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (or it vanished just now): trust kill(pid, 0)
    # the state follows the parenthesised command name, which may itself hold spaces or parentheses
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")


class StudyLock:
    """The lock of one study folder; use as a context manager, or ``acquire`` / ``release``."""

    def __init__(self, study_dir: Path, purpose: str, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(study_dir) / LOCK_NAME
        self.purpose = purpose
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _info(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv[:4]),
            "token": self.token,
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self._info(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def holder(self) -> Optional[dict]:
        """The current holder's info (with ``age_s``, seconds since its last heartbeat), or None."""
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            info = {}  # being written right now, or damaged: judged by age alone
        return {**info, "age_s": age}

    def is_stale(self, info: dict) -> bool:
        """Whether the holder described by ``info`` is provably gone."""
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return not pid_alive(info["pid"])
        return info["age_s"] > self.stale_after_s

    def acquire(self) -> "StudyLock":
        """Take the lock, breaking a stale one; raises LockHeld when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="privstudy-lock", daemon=True)
                self._thread.start()
                return self
            info = self.holder()
            if info is None:
                continue  # released between our attempt and our look: try again
            if not self.is_stale(info):
                raise LockHeld(
                    f"{self.path.parent} is in use by {info.get('purpose', 'another privstudy')} "
                    f"(pid {info.get('pid', '?')} on {info.get('host', '?')}, "
                    f"since {info.get('started', '?')}, "
                    f"last seen {info['age_s']:.0f} s ago); wait for it to finish or stop it. A holder "
                    f"that died is ignored once it is gone (same host) or silent for "
                    f"{self.stale_after_s:.0f} s (another host)"
                )
            self._break(info)
        raise LockHeld(f"{self.path.parent}: could not take the lock (others are taking it); try again")

    def _break(self, stale: dict) -> None:
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError):
            moved = None
        if stale.get("token") is not None and moved != stale.get("token"):
            # We moved a fresh holder's lock (it replaced the stale one meanwhile): put it back.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the folder vanished or went read-only: the sweep itself reports that

    def release(self) -> None:
        """Give the lock up (only if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
