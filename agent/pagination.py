"""Opaque keyset cursors for the API's lists (ids in an order; a page resumes after the last one)."""

from __future__ import annotations

import base64
import binascii

from agent.errors import ApiError

MAX_LIMIT = 500


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"c:{value}".encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        kind, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if kind != "c":
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, f"cursor {cursor!r} is not one this API returned; start again without a cursor") from None


def page_of(rows: list, limit: int, key) -> tuple[list, str | None]:
    """`rows` fetched with limit + 1: the page and the cursor of the next one (None on the last)."""
    if len(rows) > limit:
        return rows[:limit], encode_cursor(key(rows[limit - 1]))
    return rows, None
