"""Opaque keyset cursors for the API's lists (ids in an order; a page resumes after the last one)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from agent.errors import ApiError
from agent.schemas import MAX_ID

MAX_LIMIT = 500


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"c:{value}".encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        kind, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if kind != "c" or not 0 <= int(value) <= MAX_ID:  # an id: a 63-bit SQL BIGINT
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, f"cursor {cursor!r} is not one this API returned; start again without a cursor") from None


def keyset_page(db: Session, query: Select, key: InstrumentedAttribute[int], *, cursor: str | None,
                limit: int, newest_first: bool = False) -> tuple[list[Any], str | None]:
    """One page of `query`'s rows in ascending `key` (unique; descending with `newest_first`), resuming
    after `cursor`, and the cursor of the next page (None on the last). One row more than the page is
    read, to know whether there is a next. A query of one entity gives its objects; of columns, rows
    (which must hold `key` by its name)."""
    query = query.order_by(key.desc() if newest_first else key).limit(limit + 1)
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(key < after if newest_first else key > after)
    result = db.execute(query)
    rows = list(result.scalars() if len(query.column_descriptions) == 1 else result)
    if len(rows) > limit:
        return rows[:limit], encode_cursor(getattr(rows[limit - 1], key.key))
    return rows, None
