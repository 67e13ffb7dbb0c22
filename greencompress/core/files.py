"""Small file helpers: content hashes, writes that never leave half a file, and a log file for a block."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_utf8(path: Path, what: str, error: type[Exception]) -> str:
    """The text of `path`, or `error` with one line naming the file: unreadable, or not UTF-8 (with the byte offset)."""
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read {what}: {problem.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(
            f"{path}: {what} is not UTF-8 text: byte 0x{data[problem.start]:02x} at offset {problem.start} "
            f"cannot be decoded; save the file as UTF-8"
        ) from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file and a rename, so readers see the old or the new file whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a binary file through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@contextlib.contextmanager
def log_to_file(path: Path):
    """Within the block, every log record (DEBUG and up) is also written to `path`: a run's or search's log."""
    import logging

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
