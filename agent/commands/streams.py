"""Reading a file or stdin in pieces, so uploads stream instead of sitting in memory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

PIECE_BYTES = 64 * 1024


def open_source(name: str) -> tuple[BinaryIO, int | None]:
    """The binary stream named by `name` ('-' is stdin) and its size when known (for a progress total)."""
    if name == "-":
        return sys.stdin.buffer, None
    path = Path(name)
    stream = path.open("rb")  # OSError (missing, unreadable) becomes the CLI's one-line error
    return stream, path.stat().st_size if path.is_file() else None


def pieces(stream: BinaryIO, on_piece: Callable[[int], object] = lambda n: None) -> Iterator[bytes]:
    while piece := stream.read(PIECE_BYTES):
        on_piece(len(piece))
        yield piece
