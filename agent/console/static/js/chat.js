// Chat: the agent's sessions (new, or resume one with its whole history), replies streamed as they
// are sampled, a stop button, and under each reply what the agent's memory recalls for the message.

import { get, post, streamEvents } from "./api.js";
import { el, clear, notice, provenance, replace } from "./dom.js";

const RECALLED = 5; // memories shown under a reply

export function render(container, context) {
  const agentId = context.agentId;
  const sessions = el("ul", { id: "sessions", class: "sessions" });
  const transcript = el("div", { id: "transcript", class: "transcript", "aria-live": "polite" });
  const input = el("textarea", { id: "message", name: "message", rows: "3", placeholder: "Write to the agent…",
    "aria-label": "message" });
  const send = el("button", { type: "submit", id: "send", text: "Send" });
  const stop = el("button", { type: "button", id: "stop", class: "danger", text: "Stop", disabled: true });
  const status = el("div", { id: "chat-status", "aria-live": "polite" });
  const form = el("form", { class: "composer" }, input, el("div", { class: "actions" }, send, stop), status);
  let sessionId = null;
  let controller = null;

  container.append(el("div", { class: "columns chat" },
    el("section", { class: "panel" }, el("h2", { text: "Sessions" }),
      el("button", { type: "button", id: "new-session", text: "New session", onclick: () => newSession() }),
      sessions),
    el("section", { class: "panel" }, el("h2", { id: "session-title", text: "No session yet" }), transcript, form)));

  async function listSessions() {
    try {
      const page = await get(`/v1/agents/${agentId}/sessions`, { limit: 500 });
      replace(sessions, page.data.slice().reverse().map((session) => el("li", {},
        el("button", { type: "button", class: session.id === sessionId ? "quiet current" : "quiet",
          text: `session ${session.id} · ${session.events} messages`, onclick: () => open(session.id) }))));
      return page.data;
    } catch (error) {
      replace(sessions, notice(error.message));
      return [];
    }
  }

  async function newSession() {
    try {
      const session = await post(`/v1/agents/${agentId}/sessions`);
      await open(session.id);
    } catch (error) {
      replace(status, notice(error.message));
    }
  }

  async function open(id) {
    sessionId = id;
    document.getElementById("session-title").textContent = `Session ${id}`;
    clear(transcript);
    try {
      let cursor = null;
      do {
        const page = await get(`/v1/sessions/${id}/messages`, { limit: 500, cursor });
        for (const message of page.data) transcript.append(bubble(message.role, message.content));
        cursor = page.next_cursor;
      } while (cursor);
    } catch (error) {
      transcript.append(notice(error.message));
    }
    await listSessions();
    input.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value;
    if (!content.trim() || controller) return;
    if (!sessionId) await newSession();
    if (!sessionId) return;
    input.value = "";
    clear(status);
    transcript.append(bubble("user", content));
    const reply = bubble("assistant", "");
    reply.classList.add("streaming");
    transcript.append(reply);
    const text = reply.querySelector(".text");
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      await streamEvents(`/v1/sessions/${sessionId}/messages`, { content, stream: true }, (name, data) => {
        if (name === "piece") text.textContent += data.text;
        else if (name === "done") reply.append(turnFooter(data, agentId, content));
        else if (name === "error") reply.append(notice(data.message));
        transcript.scrollTop = transcript.scrollHeight;
      }, controller.signal);
    } catch (error) {
      if (error.name === "AbortError") {
        reply.append(notice("Stopped. The agent still finishes this turn on the server and logs it; " +
          "reopen the session to read the whole reply.", "info"));
      } else {
        reply.append(notice(error.message));
      }
    } finally {
      reply.classList.remove("streaming");
      controller = null;
      send.disabled = false;
      stop.disabled = true;
      listSessions();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  listSessions().then((list) => {
    if (list.length) open(list[list.length - 1].id);
  });
  return () => controller?.abort();
}

function bubble(role, content) {
  return el("div", { class: `message ${role}` },
    el("span", { class: "role", text: role }), el("div", { class: "text", text: content }));
}

function turnFooter(done, agentId, message) {
  const recalled = el("div", { class: "recalled" });
  const show = el("button", { type: "button", class: "quiet", text: "What memory recalls for this message",
    onclick: async () => {
      show.disabled = true;
      try {
        const hits = await post(`/v1/agents/${agentId}/memories/recall`, { query: message, top_k: RECALLED });
        replace(recalled, hits.length === 0 ? el("p", { class: "muted", text: "Nothing in memory yet." })
          : el("ol", {}, hits.map((hit) => el("li", {},
            el("span", { class: "score", text: hit.score.toFixed(3) }), " ",
            el("q", { text: hit.text }), " ",
            el("span", { class: "muted", text: `memory ${hit.memory_id} · ${provenance(hit)}` })))));
      } catch (error) {
        replace(recalled, notice(error.message));
      } finally {
        show.disabled = false;
      }
    } });
  return el("div", { class: "turn-footer" },
    el("span", { class: "muted", text: `${done.stop_reason} · ${done.bytes_out} bytes · weights v${done.weight_version} · ` +
      `first byte ${Math.round(done.first_byte_ms)} ms` }),
    show, recalled);
}
