// Documents: upload a file (or pasted text) with progress of the bytes sent and then learned, and the
// agent's documents with their status and, for a failed one, why.

import { get, upload } from "./api.js";
import { el, clear, notice, table, formatBytes, formatTime, replace } from "./dom.js";

const POLL_MS = 1000;
const FINISHED = ["learned", "failed", "forgotten"]; // statuses that no longer change

function contentType(name) {
  // NDJSON lines are read as {"text": ...}; anything else is kept as the bytes sent.
  return /\.(ndjson|jsonl)$/i.test(name) ? "application/x-ndjson" : "text/plain";
}

export function render(container, context) {
  const agentId = context.agentId;
  const file = el("input", { type: "file", id: "document-file", name: "file" });
  const pasted = el("textarea", { id: "document-text", rows: "4", placeholder: "…or paste text here",
    "aria-label": "document text" });
  const name = el("input", { id: "document-name", name: "name", maxlength: "500", placeholder: "name (optional)" });
  const sent = el("progress", { id: "bytes-sent", max: "1", value: "0" });
  const learned = el("progress", { id: "bytes-learned", max: "1", value: "0" });
  const sentLabel = el("span", { id: "bytes-sent-label", text: "-" });
  const learnedLabel = el("span", { id: "bytes-learned-label", text: "-" });
  const uploadStatus = el("div", { id: "upload-status", "aria-live": "polite" });
  const form = el("form", { class: "panel" },
    el("h2", { text: "Upload a document" }),
    el("p", { class: "muted", text: "The agent stores it as memories and learns from it." }),
    file, pasted, name,
    el("button", { type: "submit", id: "upload", text: "Upload" }),
    el("div", { class: "progress" }, el("label", { text: "sent " }), sent, sentLabel),
    el("div", { class: "progress" }, el("label", { text: "learned " }), learned, learnedLabel),
    uploadStatus);
  const listBody = el("div", { id: "documents-list" });
  container.append(el("div", { class: "columns" }, form,
    el("section", { class: "panel" }, el("h2", { text: "Documents" }), listBody)));
  let polling = null;

  let following = null; // while a listed document is still being received or learned, the list refreshes

  async function refresh() {
    clearTimeout(following);
    try {
      const page = await get(`/v1/agents/${agentId}/documents`, { limit: 200 });
      if (page.data.some((doc) => !FINISHED.includes(doc.status))) following = setTimeout(refresh, POLL_MS);
      replace(listBody, page.data.length === 0 ? el("p", { class: "muted", text: "No documents yet." })
        : table(["id", "name", "status", "received", "learned", "updated"], page.data.map((doc) =>
          el("tr", { dataset: { documentId: doc.id } },
            el("td", { text: doc.id }),
            el("td", { class: "document-name", text: doc.name || "(no name)" }),
            el("td", {}, el("span", { class: `status ${doc.status}`, text: doc.status }),
              doc.failed_reason ? el("div", { class: "failure", text: doc.failed_reason }) : null),
            el("td", { text: formatBytes(doc.bytes_received) }),
            el("td", { text: formatBytes(doc.bytes_learned) }),
            el("td", { text: formatTime(doc.updated_at) })))));
    } catch (error) {
      replace(listBody, notice(error.message));
    }
  }

  function watch(created) {
    // Learned bytes come from the worker: follow the document until it is learned or failed.
    const show = (doc) => {
      learned.max = Math.max(doc.bytes_received, 1);
      learned.value = doc.bytes_learned;
      learnedLabel.textContent = `${formatBytes(doc.bytes_learned)} of ${formatBytes(doc.bytes_received)} · ${doc.status}`;
      if (doc.failed_reason) replace(uploadStatus, notice(`Failed: ${doc.failed_reason}`));
    };
    show(created);
    clearInterval(polling);
    polling = setInterval(async () => {
      try {
        const doc = await get(`/v1/documents/${created.id}`);
        show(doc);
        if (FINISHED.includes(doc.status)) {
          clearInterval(polling);
          if (doc.status === "learned") replace(uploadStatus, notice(`Document ${doc.id} is learned.`, "ok"));
          refresh();
        }
      } catch (error) {
        clearInterval(polling);
        replace(uploadStatus, notice(error.message));
      }
    }, POLL_MS);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(uploadStatus);
    const chosen = file.files[0];
    const body = chosen ?? (pasted.value ? new Blob([pasted.value]) : null);
    if (!body) return uploadStatus.append(notice("Choose a file or paste some text first."));
    const documentName = name.value || chosen?.name || "pasted text";
    const button = document.getElementById("upload");
    button.disabled = true;
    try {
      const created = await upload(`/v1/agents/${agentId}/documents?name=${encodeURIComponent(documentName)}`,
        body, contentType(documentName), (loaded, total) => {
          sent.max = Math.max(total, 1);
          sent.value = loaded;
          sentLabel.textContent = `${formatBytes(loaded)} of ${formatBytes(total)}`;
        });
      sent.max = Math.max(created.bytes_received, 1);
      sent.value = created.bytes_received;
      sentLabel.textContent = `${formatBytes(created.bytes_received)} received`;
      uploadStatus.append(notice(`Document ${created.id} received; the agent is learning it.`, "info"));
      file.value = "";
      pasted.value = "";
      watch(created);
      refresh();
    } catch (error) {
      uploadStatus.append(notice(error.message));
      refresh();
    } finally {
      button.disabled = false;
    }
  });

  refresh();
  return () => {
    clearInterval(polling);
    clearTimeout(following);
  };
}
