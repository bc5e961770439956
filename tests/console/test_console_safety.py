"""Hostile content is shown as text and runs nothing; the page works only with a valid key; its policy
refuses inline script (that it allows no eval is checked on its header, tests/console/test_routes.py)."""

from __future__ import annotations

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.console.conftest import sign_in, wait_learned

# Each payload would set window.pwned (or open a dialog) if the page ever parsed it as HTML.
NAME = "<img src=x onerror=\"window.pwned='name';alert('name')\">.txt"
PAYLOAD = ("<script>window.pwned='script';alert('script')</script>\n"
           "<img src=x onerror=\"window.pwned='img';alert('img')\">\n") * 4


def hostile_document(server) -> tuple[int, int]:
    """A new agent with a document whose name and text are markup, after a chat turn; (agent id, document id)."""
    with server.client(server.admin_key) as client:
        count = len(client.get("/v1/agents", params={"limit": 500}).json()["data"])
        agent = client.post("/v1/agents", json={"name": f"mallory-target-{count}"}).json()
        session = client.post(f"/v1/agents/{agent['id']}/sessions").json()
        turn = client.post(f"/v1/sessions/{session['id']}/messages", json={"content": PAYLOAD, "max_tokens": 16})
        assert turn.status_code == 200, turn.text
        document = client.post(f"/v1/agents/{agent['id']}/documents", params={"name": NAME},
                               content=PAYLOAD.encode(), headers={"Content-Type": "text/plain"}).json()
    return agent["id"], document["id"]


def test_markup_in_a_document_name_memories_and_chat_is_shown_as_text_and_runs_nothing(page, server):
    agent_id, document_id = hostile_document(server)
    sign_in(page, server.admin_key)
    page.goto(f"/#/documents/{agent_id}")
    name_cell = page.locator(f"#documents-list tr[data-document-id='{document_id}'] .document-name")
    assert name_cell.text_content() == NAME
    page.locator(f"#documents-list tr[data-document-id='{document_id}'] .status", has_text="learned").wait_for()

    page.goto(f"/#/memories/{agent_id}")
    page.fill("#filter-document", str(document_id))
    page.click("#apply-filters")
    page.wait_for_function("""() => {
        const cells = [...document.querySelectorAll('#memories-list .memory-text')];
        return cells.length > 0 && cells.some(cell => cell.textContent.includes('onerror'));
    }""")
    texts = page.locator("#memories-list .memory-text").all_text_contents()
    assert any("<script>" in text or "<img" in text for text in texts)
    page.locator("#memories-list button").first.click()
    page.locator("#memory-full-text").wait_for()
    assert "<" in page.locator("#memory-full-text").text_content()
    page.fill("#recall-query", PAYLOAD[:80])
    page.click("#recall")
    page.locator("#recall-results tr[data-memory-id]").first.wait_for()

    page.goto(f"/#/chat/{agent_id}")
    page.locator(".message.user .text").first.wait_for()
    assert page.locator(".message.user .text").first.text_content() == PAYLOAD

    # Nothing of it became an element, ran, or opened a dialog.
    assert page.locator("img, script:not([src])").count() == 0
    assert page.evaluate("window.pwned") is None
    assert list(page.problems) == []


def test_a_document_is_forgotten_from_memory_and_weights_with_the_forget_job_followed_to_its_end(page, server):
    agent_id, document_id = hostile_document(server)
    with server.client(server.admin_key) as client:
        wait_learned(client, document_id)
        assert client.get(f"/v1/agents/{agent_id}/scores", params={"document_id": document_id}).json()["data"]
    sign_in(page, server.admin_key)
    page.goto(f"/#/memories/{agent_id}")
    page.locator("#memories-list tr[data-memory-id]").first.wait_for()
    page.select_option("#bulk-kind", "document_id")
    page.fill("#bulk-id", str(document_id))
    assert page.locator("#bulk-weights").is_checked()  # the API's default, shown as it is
    page.click("text=Delete them")
    page.click("text=Really delete them all?")
    page.locator("#delete-status", has_text="memories deleted.").wait_for()
    page.locator("#forget-status", has_text="done: the weights are now v").wait_for()
    page.fill("#filter-document", str(document_id))
    page.click("#apply-filters")
    page.locator("#memories-list", has_text="No memories match.").wait_for()
    with server.client(server.admin_key) as client:
        assert client.get(f"/v1/agents/{agent_id}/memories", params={"document_id": document_id}).json()["data"] == []
        # Out of the agent's history: the learning curve no longer counts what it paid to read it.
        assert client.get(f"/v1/agents/{agent_id}/scores", params={"document_id": document_id}).json()["data"] == []
    assert list(page.problems) == []


def test_a_wrong_key_is_told_clearly_and_opens_nothing(page, server):
    page.goto("/")
    page.fill("#api-key", "ll_not-a-key-of-this-server")
    page.click("text=Open the console")
    message = page.locator(".key-form [role=alert]")
    message.wait_for()
    assert "did not accept this key" in message.text_content()
    assert "not valid" in message.text_content()  # the API's own sentence
    assert page.locator("#agent-picker").count() == 0 and page.locator("#view").count() == 0
    assert page.evaluate("sessionStorage.getItem('lifelong.apiKey')") is None
    # A view asked for by its address waits behind the key form too.
    page.goto("/#/memories/1")
    page.locator("#api-key").wait_for()
    assert page.locator("#view").count() == 0
    assert list(page.problems) == []


def test_a_revoked_key_mid_session_brings_back_the_key_form(page, server):
    with server.client(server.admin_key) as client:
        # An agent, so that the documents view has something to ask for (whatever ran before in this module).
        assert client.post("/v1/agents", json={"name": "seen-by-a-revoked-key", "base_checkpoint": "preset:tiny"}
                           ).status_code == 201
        created = client.post("/v1/keys", json={"name": "revoked-in-the-console-test"}).json()
    sign_in(page, created["key"])
    with server.client(server.admin_key) as client:
        assert client.delete(f"/v1/keys/{created['id']}").status_code == 204
    refused = page.locator(".key-form [role=alert]", has_text="did not accept this key")
    try:
        page.click(".tabs >> text=Documents", timeout=10_000)  # its first request is refused
    except PlaywrightTimeoutError:
        # The agents view refreshes itself: under load its refresh can be refused first, and the key form has
        # then replaced the tabs the click waited for.
        assert refused.is_visible()
    refused.wait_for()
    assert page.evaluate("sessionStorage.getItem('lifelong.apiKey')") is None


def test_the_page_policy_refuses_an_inline_script_even_one_added_to_the_page(page, server):
    sign_in(page, server.admin_key)
    page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = "window.inlineRan = true";
        document.body.append(script);
    }""")
    assert page.evaluate("window.inlineRan") is None
    assert any("Content Security Policy" in problem for problem in page.problems)  # the browser says it refused
