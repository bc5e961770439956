"""The console in a real browser against a real server: an agent created, a chat reply streamed, a document
uploaded and learned, one of its memories found, recalled and deleted, the learning curve and a rollback."""

from __future__ import annotations

import re

from tests.console.conftest import assert_no_stray_values, sign_in

# The keeper's name recurs at many offsets, so some memory span (64 tokens) holds it whole.
LINES = [f"Entry {n}: the lighthouse keeper on the north cape is called Zebulon Marsh.\n" for n in range(40)]
DOCUMENT = "".join(LINES)


def test_an_agent_is_created_chatted_with_taught_a_document_and_its_memory_found_recalled_and_deleted(page, server):
    sign_in(page, server.admin_key)
    assert server.admin_key not in page.url
    assert page.evaluate("sessionStorage.getItem('lifelong.apiKey')") == server.admin_key

    # Agents: create one on the server's default base; it becomes the current agent and is inspected.
    page.fill("#new-agent-name", "ada")
    page.click("text=Create agent")
    page.wait_for_selector("text=Created agent")
    inspect = page.locator("#agent-inspect")
    inspect.locator("h2", has_text="ada").wait_for()
    assert inspect.locator("#agent-weight-version").text_content() == "v0"
    agent_id = int(page.url.rsplit("/", 1)[1])
    assert_no_stray_values(page)
    with server.client(server.admin_key) as client:
        agent = client.get(f"/v1/agents/{agent_id}").json()
    assert agent["name"] == "ada" and agent["base_checkpoint"] == "preset:tiny"

    # Chat: the reply arrives in pieces (the text node changes more than once) and is the one the server logged.
    page.click(".tabs >> text=Chat")
    page.fill("#message", "Hello, who keeps the lighthouse?")
    page.click("#send")
    page.wait_for_selector(".message.assistant .turn-footer")
    page.evaluate("""() => { window.pieces = 0; }""")  # reset before the second turn, observed from its start
    page.evaluate("""() => new MutationObserver(() => window.pieces++).observe(
        document.getElementById('transcript'), {subtree: true, characterData: true, childList: true})""")
    page.fill("#message", "And what does he see?")
    page.click("#send")
    page.wait_for_selector(".message.assistant >> nth=1 >> .turn-footer")
    shown = page.locator(".message.assistant .text").all_text_contents()
    session_id = int(re.search(r"\d+", page.locator("#session-title").text_content()).group())
    with server.client(server.admin_key) as client:
        logged = client.get(f"/v1/sessions/{session_id}/messages").json()["data"]
    assert [m["content"] for m in logged if m["role"] == "assistant"] == shown
    page.locator("#sessions button", has_text=f"session {session_id} · 4 messages").wait_for()
    assert_no_stray_values(page)
    assert shown[1] and page.evaluate("window.pieces") > 2  # user bubble, reply bubble, then its pieces

    # Documents: the upload's bytes are sent, then learned.
    page.click(".tabs >> text=Documents")
    page.set_input_files("#document-file", files=[{"name": "lighthouse.txt", "mimeType": "text/plain",
                                                   "buffer": DOCUMENT.encode()}])
    page.click("#upload")
    page.wait_for_selector("#upload-status >> text=is learned")
    assert page.locator("#bytes-sent").evaluate("p => [p.value, p.max]") == [len(DOCUMENT)] * 2
    assert page.locator("#bytes-learned").evaluate("p => [p.value, p.max]") == [len(DOCUMENT)] * 2
    row = page.locator("#documents-list tr", has_text="lighthouse.txt")
    row.locator(".status", has_text="learned").wait_for()
    document_id = int(row.get_attribute("data-document-id"))
    assert_no_stray_values(page)

    # Memories: found by its text, read whole with its provenance.
    page.click(".tabs >> text=Memories")
    page.fill("#filter-text", "Zebulon")
    page.click("#apply-filters")
    page.wait_for_function("""() => {
        const texts = [...document.querySelectorAll('#memories-list .memory-text')].map(cell => cell.textContent);
        return texts.length > 0 && texts.every(text => text.includes('Zebulon'));
    }""")  # the unfiltered page is replaced by the filtered one
    with server.client(server.admin_key) as client:
        matching = client.get(f"/v1/agents/{agent_id}/memories", params={"text": "Zebulon", "limit": 20}).json()["data"]
    assert page.locator("#memories-list tr[data-memory-id]").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.memoryId))") == [m["id"] for m in matching]

    # What would be recalled for the document's own words: memories of this document, with scores.
    page.fill("#recall-query", LINES[3])
    page.click("#recall")
    hits = page.locator("#recall-results tr[data-memory-id]", has_text=f"document {document_id}")
    hits.first.wait_for()
    memory_id = int(hits.first.get_attribute("data-memory-id"))
    # Its rank in the fused ranking, and each signal's score: the model's search and the words (both find it).
    assert hits.first.locator(".score").text_content() == "1"
    assert re.fullmatch(r"-?\d+\.\d{3}", hits.first.locator(".model-score").text_content())
    assert re.fullmatch(r"-?\d+\.\d{3}", hits.first.locator(".lexical-score").text_content())
    assert_no_stray_values(page)

    # Delete it from its detail; it is gone from the list, from what would be recalled, and from the API.
    hits.first.locator("button", has_text=f"#{memory_id}").click()
    detail = page.locator("#memory-detail")
    detail.locator("h2", has_text=f"Memory {memory_id}").wait_for()
    assert f"document {document_id}" in detail.text_content()
    detail.locator("button", has_text="Delete this memory").click()
    detail.locator("button", has_text="Really delete it?").click()
    page.wait_for_selector(f"#delete-status >> text=Memory {memory_id} deleted.")
    page.click("#recall")
    page.locator("#recall-results tr[data-memory-id]").first.wait_for()
    page.wait_for_function("id => !document.querySelector(`#recall-results tr[data-memory-id='${id}']`)", arg=memory_id)
    page.wait_for_function("id => !document.querySelector(`#memories-list tr[data-memory-id='${id}']`)", arg=memory_id)
    with server.client(server.admin_key) as client:
        assert client.get(f"/v1/memories/{memory_id}").status_code == 404

    # Learning: one point per learned event on the curve; a rollback to the base makes a new version.
    page.click(".tabs >> text=Learning")
    page.wait_for_selector("#scores-summary")
    with server.client(server.admin_key) as client:
        scores = client.get(f"/v1/agents/{agent_id}/scores", params={"limit": 500}).json()["data"]
        before = client.get(f"/v1/agents/{agent_id}").json()["weight_version"]
    assert page.locator("#learning-curve circle").count() == len(scores) > 0
    assert_no_stray_values(page)
    base = page.locator("#versions-list li[data-version='0']")
    base.locator("button").click()
    base.locator("button", has_text="Roll back to v0?").click()
    page.wait_for_selector("#weight-versions >> text=carrying v0's weights")
    page.locator(f"#versions-list li.current[data-version='{before + 1}']").wait_for()

    assert list(page.problems) == []


def test_stop_ends_a_reply_s_stream_in_the_page_and_the_next_message_streams(page, server):
    with server.client(server.admin_key) as client:
        agent_id = client.post("/v1/agents", json={"name": "interrupted"}).json()["id"]
        session_id = client.post(f"/v1/agents/{agent_id}/sessions").json()["id"]
    sign_in(page, server.admin_key)
    page.goto(f"/#/chat/{agent_id}")
    page.locator("#session-title", has_text=re.compile(rf"^Session {session_id}$")).wait_for()  # resumed
    page.fill("#message", "Tell me a long story.")
    # Send, then Stop in the same task: the stream is stopped before any of it can arrive, whatever the speed.
    page.evaluate("() => { document.getElementById('send').click(); document.getElementById('stop').click(); }")
    page.locator(".message.assistant [role=status]", has_text="Stopped").wait_for()
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_disabled()
    page.fill("#message", "Then a short one.")
    page.click("#send")
    page.wait_for_selector(".message.assistant >> nth=1 >> .turn-footer")
    assert list(page.problems) == []
