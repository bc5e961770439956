"""A real `lifelong serve` on the embedded defaults (SQLite, the worker inside serve) with the tests' tiny
model, and a headless browser whose pages fail the test on any script error."""

from __future__ import annotations

import time

import pytest

from tests.agent.server import WAIT_S, Deployment
from tests.console.browser import chromium_or_skip, launch

SERVER_ENV = {"LIFELONG_BASE_CHECKPOINT": "preset:tiny", "LIFELONG_CHUNK_BYTES": "1024",
              "LIFELONG_MAX_REPLY_BYTES": "256"}


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-serve")
    deployment = Deployment("embedded", {"LIFELONG_DATA_DIR": str(root / "data"), **SERVER_ENV}, logs=root)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.shutdown()


@pytest.fixture(scope="package")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


class PageProblems(list):
    """What went wrong in a page: uncaught script errors, console errors, dialogs opened."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed  # the page fixture keeps a screenshot of a failed test's page
    return report


@pytest.fixture
def page(browser, server, request, tmp_path):
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    problems = PageProblems()
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    # A refused request (a 401, a 404) is logged by the browser as an error too: only others are problems.
    page.on("console", lambda message: problems.append(f"console error: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.problems = problems
    page.set_default_timeout(60_000)  # the worker learns on a shared CPU; a wait ending here is a failure
    yield page
    if getattr(request.node, "call_failed", False):
        page.screenshot(path=tmp_path / "failed.png", full_page=True)
        print(f"the page at failure: {tmp_path / 'failed.png'}; its problems: {list(problems)}")
    context.close()


def sign_in(page, key: str) -> None:
    page.goto("/")
    page.fill("#api-key", key)
    page.click("text=Open the console")
    page.wait_for_selector("#agent-picker")


def assert_no_stray_values(page) -> None:
    """No value rendered as JavaScript's names for it ('[object …]', 'undefined', 'NaN') instead of its text."""
    text = page.locator("#view").inner_text()
    for stray in ("[object ", "undefined", "NaN"):
        assert stray not in text, f"{stray!r} on the page: {text[:2000]}"


def wait_learned(client, document_id: int) -> dict:
    deadline = time.monotonic() + WAIT_S
    while (document := client.get(f"/v1/documents/{document_id}").json())["status"] != "learned":
        assert document["status"] != "failed" and time.monotonic() < deadline, document
        time.sleep(0.3)
    return document
