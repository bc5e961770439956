// Agents: the list with each one's figures, creating one on a chosen base model, and the current
// agent's figures kept fresh while the view is open (queue lag falls as the worker learns).

import { get, post } from "./api.js";
import { el, clear, notice, table, formatBytes, formatTime, replace } from "./dom.js";

const REFRESH_MS = 2000;

export function render(container, context) {
  const list = el("section", { class: "panel" }, el("h2", { text: "Agents" }));
  const listBody = el("div", { id: "agents-list" });
  list.append(listBody);
  const inspect = el("section", { class: "panel", id: "agent-inspect" });
  container.append(el("div", { class: "columns" }, el("div", {}, createForm(context, () => refresh()), list), inspect));

  async function refresh() {
    try {
      const agents = (await get("/v1/agents", { limit: 500 })).data;
      replace(listBody, agents.length === 0
        ? notice("No agents yet: create one.", "info")
        : table(["", "name", "base", "weights", "memories", "learned", "queue"], agents.map((agent) =>
          el("tr", { class: agent.id === context.agentId ? "current" : "" },
            el("td", {}, el("button", { type: "button", class: "quiet", text: `#${agent.id}`,
              onclick: () => context.open("agents", agent.id) })),
            el("td", { text: agent.name }),
            el("td", { text: agent.base_checkpoint }),
            el("td", { text: `v${agent.weight_version}` }),
            el("td", { text: agent.memory_count }),
            el("td", { text: formatBytes(agent.bytes_learned) }),
            el("td", { text: agent.queue_lag })))));
      const current = agents.find((agent) => agent.id === context.agentId);
      replace(inspect, current ? details(current, context) : el("p", { text: "Pick or create an agent." }));
    } catch (error) {
      replace(listBody, notice(error.message));
    }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function details(agent, context) {
  const figure = (label, value, id) => el("div", { class: "figure" },
    el("span", { class: "value", id, text: value }), el("span", { class: "label", text: label }));
  return el("div", {},
    el("h2", { text: agent.name }),
    el("p", { class: "muted", text: `agent #${agent.id} · base ${agent.base_checkpoint} · created ${formatTime(agent.created_at)}` }),
    el("div", { class: "figures" },
      figure("weight version", `v${agent.weight_version}`, "agent-weight-version"),
      figure("memories", agent.memory_count, "agent-memory-count"),
      figure("bytes learned", formatBytes(agent.bytes_learned), "agent-bytes-learned"),
      figure("queue lag (events not yet learned)", agent.queue_lag, "agent-queue-lag")),
    el("p", { class: "muted", text: `learning settings: ${JSON.stringify(agent.learning)}` }),
    el("div", { class: "actions" },
      ...[["chat", "Chat"], ["documents", "Documents"], ["memories", "Memories"], ["learning", "Learning"]].map(
        ([view, label]) => el("button", { type: "button", text: label, onclick: () => context.open(view, agent.id) }))));
}

function createForm(context, refresh) {
  const name = el("input", { id: "new-agent-name", name: "name", required: true, maxlength: "200",
    pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*", placeholder: "ada" });
  const base = el("select", { id: "new-agent-base", name: "base" });
  const message = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "panel" },
    el("h2", { text: "New agent" }),
    el("label", { for: "new-agent-name", text: "Name (letters, digits, _ . -)" }), name,
    el("label", { for: "new-agent-base", text: "Base model" }), base,
    el("button", { type: "submit", text: "Create agent" }), message);

  get("/v1/base-models").then((models) => {
    base.append(el("option", { value: "", text: `server default (${models.default})` }),
      ...models.data.map((model) => el("option", {
        value: model.name, disabled: !model.installed,
        text: `${model.name}${model.installed ? "" : " (not installed)"} · ${model.chat ? "converses" : "continues text"}`,
        title: model.installed ? model.description : `install with: ${model.install}` })));
  }, (error) => message.append(notice(`The base models could not be listed: ${error.message}`)));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    try {
      const agent = await post("/v1/agents", { name: name.value.trim(), base_checkpoint: base.value || null });
      message.append(notice(`Created agent #${agent.id} (${agent.name}).`, "ok"));
      name.value = "";
      await context.agentsChanged(agent.id);
      context.select(agent.id);
      await refresh();
    } catch (error) {
      message.append(notice(error.message));
    }
  });
  return form;
}
