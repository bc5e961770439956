"""Screenshots of each console view for docs/console/, taken in headless Chromium against a real server on
the default base model (SmolLM2, so the chat reads as a conversation).

    .venv/bin/python -m tests.console.screenshots docs/console
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.agent.server import Deployment
from tests.console.browser import chromium_or_skip, launch

NOTES = """Harbour notes, autumn.

The lighthouse on the north cape is kept by Zebulon Marsh, who has lit its lamp every evening for thirty years.
The tide tables are posted at the harbour office every Monday. The ferry to the island leaves at seven and at four.
Fishing boats must be moored by the east pier during storms; the west pier floods at high tide.
The harbour master's name is Ada Quill, and her office is above the chandlery.
"""
# Read twice: the second reading costs the agent fewer bits per byte (its memory and its weights), which the
# learning view's curve shows.
DOCUMENT = NOTES + "".join(f"Log {day}: calm sea, ferry on time, lamp lit at dusk.\n" for day in range(1, 15)) + NOTES


def take(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="console-screens-"))
    server = Deployment("embedded", {"LIFELONG_DATA_DIR": str(root / "data"), "LIFELONG_MAX_REPLY_BYTES": "300",
                                     "LIFELONG_CHUNK_BYTES": "256"},
                        logs=root)
    server.start()
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium_or_skip())
            page = browser.new_page(base_url=server.url, viewport={"width": 1360, "height": 860})
            page.set_default_timeout(300_000)

            def shoot(name: str) -> None:
                page.evaluate("() => window.scrollTo(0, 0)")
                page.screenshot(path=out / f"{name}.png")

            page.goto("/")
            page.fill("#api-key", "ll_a-key-this-server-never-issued")
            page.click("text=Open the console")
            page.wait_for_selector(".key-form [role=alert]")
            shoot("key")

            page.fill("#api-key", server.admin_key)
            page.click("text=Open the console")
            page.fill("#new-agent-name", "ada")
            page.click("text=Create agent")
            page.wait_for_selector("#agent-inspect h2")

            page.click(".tabs >> text=Documents")
            page.set_input_files("#document-file", files=[{"name": "harbour-notes.txt", "mimeType": "text/plain",
                                                           "buffer": DOCUMENT.encode()}])
            page.click("#upload")
            page.wait_for_selector("#upload-status >> text=is learned")
            shoot("documents")

            page.click(".tabs >> text=Chat")
            page.fill("#message", "Who keeps the lighthouse on the north cape?")
            page.click("#send")
            page.wait_for_selector(".message.assistant .turn-footer")
            page.click("text=What memory recalls for this message")
            page.wait_for_selector(".recalled li")
            shoot("chat")

            page.click(".tabs >> text=Memories")
            page.fill("#filter-text", "lighthouse")
            page.click("#apply-filters")
            page.wait_for_function("""() => {
                const cells = [...document.querySelectorAll('#memories-list .memory-text')];
                return cells.length > 0 && cells.every(cell => cell.textContent.includes('lighthouse'));
            }""")
            page.locator("#memories-list tr[data-memory-id] button").first.click()
            page.wait_for_selector("#memory-full-text")
            page.fill("#recall-query", "Who keeps the lighthouse?")
            page.click("#recall")
            page.wait_for_selector("#recall-results tr[data-memory-id]")
            shoot("memories")

            page.click(".tabs >> text=Agents")
            page.wait_for_function("() => document.getElementById('agent-queue-lag')?.textContent === '0'")
            shoot("agents")

            page.click(".tabs >> text=Learning")
            page.wait_for_selector("#scores-summary")
            page.wait_for_selector("#versions-list li")
            shoot("learning")
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder for the PNGs (docs/console)")
    take(parser.parse_args().out)
