"""The data directory: the owner's alone, and known to be open.

It is created 0700 (its files are made 0600 where faceledger creates them). Every service that
opens it holds a shared advisory lock on ``faceledger.lock`` for as long as it is open; a step
that must be alone — re-encrypting every template under a new key, which a running server would
not see — takes the lock exclusively, and is refused while any other process (a server, another
command) has the directory open.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "faceledger.lock"


class DataDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_SH)  # waits only while a rotation runs

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Try to hold the directory alone for the enclosed block; yields whether it is (no other
        process has it open). The shared hold is restored after."""
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            yield alone
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def loose_modes(self) -> list[str]:
        """Problems with who may read the directory and its files (anyone but the owner)."""
        problems = []
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{self.path} is mode {mode:o}: others may enter it (chmod 700)")
        for item in sorted(self.path.rglob("*")):
            if item.is_file() and stat.S_IMODE(item.stat().st_mode) & 0o077:
                problems.append(f"{item} is mode {stat.S_IMODE(item.stat().st_mode):o}: others may read it (chmod 600)")
        return problems

    def close(self) -> None:
        os.close(self._lock)
