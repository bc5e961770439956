"""Serves the console's files, each with a strict Content-Security-Policy.

The page shows texts the API returns (memories, document names, replies), which anyone who can send the agent a
document can write. The page only ever sets them as text; the policy is the second wall: scripts and styles from
this origin's files only (no inline script, no eval), nothing framed, nothing fetched elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from agent.errors import ApiError

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Cache-Control": "no-cache",  # revalidate: a new version of the server serves a new page at once
}

router = APIRouter(include_in_schema=False)


def console_file(name: str) -> FileResponse:
    """One of the shipped files by name; anything else (other paths, other types) is a 404."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in CONTENT_TYPES:
        raise ApiError(404, f"the console has no file {name!r}; open / for the console")
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
def console_page() -> FileResponse:
    return console_file("index.html")


@router.get("/console")
def console_redirect() -> RedirectResponse:
    return RedirectResponse("/", status_code=308)


@router.get("/console/{name:path}")
def console_asset(name: str) -> FileResponse:
    return console_file(name)
