"""Document bodies as they arrive: plain bytes kept exactly, or NDJSON lines of {"text": ...} pieces."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from agent.errors import ApiError

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
# An NDJSON line is held whole while it is parsed; longer lines are refused rather than buffered.
MAX_NDJSON_LINE = 1 << 20


def is_ndjson(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in NDJSON_TYPES


def _ndjson_text(line: bytes, number: int) -> bytes:
    try:
        item = json.loads(line)
        text = item["text"]
        if not isinstance(text, str):
            raise TypeError("'text' must be a string")
        return text.encode("utf-8")
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(422, f'NDJSON line {number} is not {{"text": "..."}} ({exc}); '
                            "fix that line, or send the document as text/plain") from None


async def ndjson_lines(chunks: AsyncIterator[bytes], *, max_line: int = MAX_NDJSON_LINE
                       ) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of each non-blank line as it arrives; a line past `max_line` bytes is a 413."""
    buffer, number = bytearray(), 0
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = bytes(buffer[:end]), buffer[end + 1 :]
            number += 1
            if line.strip():
                yield number, line
        if len(buffer) > max_line:
            raise ApiError(413, f"NDJSON line {number + 1} is longer than {max_line:,} bytes; split it")
    if bytes(buffer).strip():
        yield number + 1, bytes(buffer)


async def ndjson_pieces(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The text of each {"text": ...} line, as UTF-8 bytes; blank lines are skipped."""
    async for number, line in ndjson_lines(chunks):
        yield _ndjson_text(line, number)
