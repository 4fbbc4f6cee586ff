"""Files that appear complete or not at all: written beside their destination, then renamed."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file"]


@contextlib.contextmanager
def atomic_file(out: Path, binary: bool = True, *, durable: bool = False) -> Iterator[IO[Any]]:
    """A new file that appears as ``out`` only once the block ends without error.

    Missing parent directories are created. The temporary file (``.<name>.<random>.tmp``
    in the same directory, so the rename is atomic) is removed on any failure, and an
    existing ``out`` stays as it was. With ``durable`` the content is flushed to disk
    before the rename (for a file whose presence says a directory is complete).
    OSError propagates for the caller to name.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        f: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
