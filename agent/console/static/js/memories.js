// The memory inspector: the agent's memories with filters and paging, one memory's whole text with
// its provenance, what would be recalled for a typed query (with scores), and deleting.

import { get, post, del } from "./api.js";
import { el, clear, notice, table, confirmButton, provenance, formatTime, replace } from "./dom.js";

const PAGE = 20;
const PREVIEW = 160; // characters of a memory shown in the list; the rest in its detail

const short = (text) => (text.length > PREVIEW ? `${text.slice(0, PREVIEW)}…` : text);

export function render(container, context) {
  const agentId = context.agentId;
  const filters = {
    text: el("input", { id: "filter-text", type: "search", maxlength: "1000", placeholder: "text contains…" }),
    document_id: el("input", { id: "filter-document", type: "number", min: "1", placeholder: "document id" }),
    session_id: el("input", { id: "filter-session", type: "number", min: "1", placeholder: "session id" }),
    event_id: el("input", { id: "filter-event", type: "number", min: "1", placeholder: "event id" }),
  };
  const listBody = el("div", { id: "memories-list" });
  const pager = el("div", { class: "actions" });
  const detail = el("section", { class: "panel", id: "memory-detail" },
    el("p", { class: "muted", text: "Pick a memory to read it whole." }));
  const filterForm = el("form", { class: "filters" }, ...Object.values(filters),
    el("button", { type: "submit", id: "apply-filters", text: "Filter" }));
  const deleteStatus = el("div", { id: "delete-status", "aria-live": "polite" });
  const cursors = [null]; // the cursor of each page read so far: paging back re-reads one
  const timers = [];
  let pageIndex = 0;

  container.append(el("div", { class: "columns" },
    el("div", {},
      el("section", { class: "panel" }, el("h2", { text: "Memories" }), filterForm, listBody, pager, deleteStatus,
        bulkDelete()),
      recallPanel()),
    detail));

  function query() {
    const values = Object.fromEntries(Object.entries(filters).map(([name, input]) => [name, input.value.trim()]));
    return { ...values, limit: PAGE, cursor: cursors[pageIndex] };
  }

  async function load() {
    try {
      const page = await get(`/v1/agents/${agentId}/memories`, query());
      cursors[pageIndex + 1] = page.next_cursor;
      replace(listBody, page.data.length === 0 ? el("p", { class: "muted", text: "No memories match." })
        : table(["id", "text", "source", ""], page.data.map((memory) => el("tr", { dataset: { memoryId: memory.id } },
          el("td", {}, el("button", { type: "button", class: "quiet", text: `#${memory.id}`,
            onclick: () => showDetail(memory.id) })),
          el("td", {}, el("div", { class: "memory-text clamp", text: short(memory.text) })),
          el("td", { class: "muted", text: provenance(memory) }),
          el("td", {}, confirmButton("Delete", "Really delete?", () => deleteOne(memory.id)))))));
      replace(pager, 
        el("button", { type: "button", text: "← Newer", disabled: pageIndex === 0,
          onclick: () => { pageIndex -= 1; load(); } }),
        el("span", { class: "muted", text: `page ${pageIndex + 1}` }),
        el("button", { type: "button", text: "Older →", disabled: !page.next_cursor,
          onclick: () => { pageIndex += 1; load(); } }));
    } catch (error) {
      replace(listBody, notice(error.message));
    }
  }

  async function showDetail(id) {
    try {
      const memory = await get(`/v1/memories/${id}`);
      replace(detail, 
        el("h2", { text: `Memory ${memory.id}` }),
        el("pre", { class: "memory-full", id: "memory-full-text", text: memory.text }),
        el("dl", {}, ...[
          ["source", provenance(memory)],
          ["bytes", `${memory.byte_start}–${memory.byte_end} of its source`],
          ["tokens", memory.num_tokens],
          ["written by weights", `v${memory.weight_version}`],
          ["hits", `${memory.hit_count} (last ${formatTime(memory.last_hit_at)})`],
          ["stored", formatTime(memory.created_at)],
        ].flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })])),
        confirmButton("Delete this memory", "Really delete it?", () => deleteOne(memory.id)));
    } catch (error) {
      replace(detail, notice(error.message));
    }
  }

  async function deleteOne(id) {
    try {
      await del(`/v1/memories/${id}`);
      replace(deleteStatus, notice(`Memory ${id} deleted.`, "ok"));
      replace(detail, el("p", { class: "muted", text: `Memory ${id} is deleted.` }));
    } catch (error) {
      replace(deleteStatus, notice(error.message));
    }
    load();
  }

  function bulkDelete() {
    const which = el("select", { id: "bulk-kind", "aria-label": "delete by" },
      el("option", { value: "document_id", text: "document" }),
      el("option", { value: "session_id", text: "session" }));
    const id = el("input", { id: "bulk-id", type: "number", min: "1", placeholder: "id", "aria-label": "id" });
    // The API's default: a delete whose content stays in the weights is not a delete (docs/API.md).
    const weights = el("input", { type: "checkbox", id: "bulk-weights", checked: true });
    const job = el("div", { id: "forget-job", "aria-live": "polite" });
    return el("div", { class: "bulk" }, el("span", { text: "Delete every memory of a " }), which, id,
      el("label", { class: "check" }, weights,
        " forget from the weights too (a forget job re-learns what came after it)"),
      confirmButton("Delete them", "Really delete them all?", async () => {
        clear(deleteStatus);
        clear(job);
        if (!id.value) return deleteStatus.append(notice("Give the id of the document or session first."));
        try {
          const result = await del(`/v1/agents/${agentId}/memories`,
            { [which.value]: id.value, weights: String(weights.checked) });
          deleteStatus.append(notice(`${result.deleted} memories deleted.`, "ok"));
          if (result.job) followForgetJob(result.job, job);
        } catch (error) {
          deleteStatus.append(notice(error.message));
        }
        load();
      }), job);
  }

  // A forget job replays the agent's later events on weights from before the source: follow it to the end.
  function followForgetJob(first, area) {
    const bar = el("progress", { id: "forget-progress", max: "1", value: "0" });
    const label = el("span", { id: "forget-status" });
    replace(area, el("div", { class: "progress" }, el("span", { text: `forget job ${first.id} ` }), bar, label));
    const show = (state) => {
      bar.max = Math.max(state.events_total, 1);
      bar.value = state.status === "done" ? bar.max : state.events_done;
      label.textContent = state.status === "done"
        ? `done: the weights are now v${state.result_version}, as if the agent had never read it`
        : state.status === "failed" ? `failed: ${state.failed_reason}`
          : `${state.status}: ${state.events_done} of ${state.events_total} events re-learned`;
    };
    show(first);
    const timer = setInterval(async () => {
      try {
        const state = await get(`/v1/agents/${agentId}/forget-jobs/${first.id}`);
        show(state);
        if (state.status === "done" || state.status === "failed") clearInterval(timer);
      } catch (error) {
        clearInterval(timer);
        area.append(notice(error.message));
      }
    }, 1000);
    timers.push(timer);
  }

  // A signal's score, or a dash where that signal did not find the memory (the ranking fuses both).
  function signal(score) {
    return score === null || score === undefined ? "–" : score.toFixed(3);
  }

  function recallPanel() {
    const input = el("input", { id: "recall-query", type: "search", placeholder: "a query, as a message would say it",
      "aria-label": "recall query" });
    const topK = el("input", { id: "recall-top-k", type: "number", min: "1", max: "500", value: "10",
      "aria-label": "how many" });
    const results = el("div", { id: "recall-results" });
    const form = el("form", { class: "panel" },
      el("h2", { text: "What would be recalled" }),
      el("p", { class: "muted", text: "The memories the model's memory search fetches while reading this text." }),
      el("div", { class: "filters" }, input, topK, el("button", { type: "submit", id: "recall", text: "Recall" })),
      results);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      try {
        const hits = await post(`/v1/agents/${agentId}/memories/recall`,
          { query: input.value, top_k: Number(topK.value) || 10 });
        replace(results, hits.length === 0 ? el("p", { class: "muted", text: "Nothing would be recalled." })
          : table(["rank", "model", "words", "pairs", "text", "source"], hits.map((hit, rank) => el("tr", { dataset: { memoryId: hit.memory_id } },
            el("td", { class: "score", title: `fused score ${hit.score.toFixed(4)}`, text: String(rank + 1) }),
            el("td", { class: "model-score", text: signal(hit.model_score) }),
            el("td", { class: "lexical-score", text: signal(hit.lexical_score) }),
            el("td", { text: hit.token_hits }),
            el("td", {}, el("button", { type: "button", class: "quiet", text: `#${hit.memory_id}`,
              onclick: () => showDetail(hit.memory_id) }), el("div", { class: "memory-text clamp", text: short(hit.text) })),
            el("td", { class: "muted", text: provenance(hit) })))));
      } catch (error) {
        replace(results, notice(error.message));
      }
    });
    return form;
  }

  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    cursors.length = 1;
    pageIndex = 0;
    load();
  });
  load();
  return () => timers.forEach(clearInterval);
}
