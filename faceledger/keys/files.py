"""Secret keys kept *outside* the database: a 0600 file in the data directory, or an environment
variable (base64) for deployments that inject secrets. A copy of the database alone never holds
them."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from faceledger.errors import InternalServerError

KEY_BYTES = 32


def write_private_file(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or pieces of it written one after the other) to ``path`` with mode
    0600, atomically (a crash leaves the old file): keys, and anything else in the data directory
    that only its owner may read."""
    partial = _written_beside(path, data)
    try:
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def create_once(path: Path, data: bytes) -> bytes:
    """Create the private file ``path`` holding ``data`` unless it exists, and return what it
    holds: processes creating it together (opening a new data directory at once) all get the
    first one's bytes, never a file replaced after another used it (a key, for example)."""
    partial = _written_beside(path, data)
    try:
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return path.read_bytes()


def _written_beside(path: Path, data: bytes | Iterable[bytes]) -> Path:
    """``data`` in a new 0600 file of its own beside ``path`` (two writers never share one)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def load_or_create_key(path: Path, env_name: str) -> bytes:
    """``$env_name`` (base64 of 32 bytes) if set, else the key file, created on first use."""
    configured = os.environ.get(env_name)
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise InternalServerError(f"{env_name} must be the base64 of {KEY_BYTES} random bytes.")
        return key
    key = create_once(path, os.urandom(KEY_BYTES)) if not path.exists() else path.read_bytes()
    if len(key) != KEY_BYTES:
        raise InternalServerError(f"{path} is not a {KEY_BYTES}-byte key.")
    return key
