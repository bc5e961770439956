// The console's frame: the key gate, the agent picker, the views' tabs. Views are modules with one
// `render(container, context)` each, returning a function that stops their timers when left.

import { key, get, whenUnauthorized } from "./api.js";
import { el, clear, notice, replace } from "./dom.js";
import * as agentsView from "./agents.js";
import * as chatView from "./chat.js";
import * as documentsView from "./documents.js";
import * as memoriesView from "./memories.js";
import * as learningView from "./learning.js";

const VIEWS = [
  ["agents", "Agents", agentsView],
  ["chat", "Chat", chatView],
  ["documents", "Documents", documentsView],
  ["memories", "Memories", memoriesView],
  ["learning", "Learning", learningView],
];

const state = { view: "agents", agentId: null, leave: () => {} };

function fromHash() {
  const [view, agent] = window.location.hash.replace(/^#\/?/, "").split("/");
  if (VIEWS.some(([name]) => name === view)) state.view = view;
  const id = Number.parseInt(agent, 10);
  if (Number.isSafeInteger(id) && id > 0) state.agentId = id;
}

function toHash() {
  // Only the view and the agent's id: the key never goes in a URL.
  const hash = `#/${state.view}${state.agentId ? `/${state.agentId}` : ""}`;
  if (window.location.hash !== hash) history.replaceState(null, "", hash);
}

function keyGate(message) {
  state.leave();
  state.leave = () => {};
  const input = el("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off",
    placeholder: "ll_...", required: true, "aria-label": "API key" });
  const form = el("form", { class: "key-form" },
    el("h1", { text: "lifelong console" }),
    el("p", { text: "Enter an API key: the admin key (lifelong-data/admin.key, printed by lifelong serve) or an " +
      "agent's key (lifelong keys create). It is kept in this tab only and sent to this server only." }),
    el("label", { for: "api-key", text: "API key" }),
    input,
    el("button", { type: "submit", text: "Open the console" }),
    message ? notice(message) : null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    key.set(input.value.trim());
    await start();
  });
  replace(document.body, el("main", { class: "gate" }, form));
  input.focus();
}

whenUnauthorized((message) => {
  key.forget();
  keyGate(`The server did not accept this key: ${message}. Check it and enter it again.`);
});

async function start() {
  if (!key.get()) return keyGate();
  let agents;
  try {
    agents = (await get("/v1/agents", { limit: 500 })).data;
  } catch (error) {
    if (error.status !== 401) keyGate(`The server could not be reached or refused: ${error.message}`);
    return; // a 401 has already brought the key form back with its message
  }
  if (!agents.some((agent) => agent.id === state.agentId)) state.agentId = agents[0]?.id ?? null;
  frame(agents);
}

function frame(agents) {
  const picker = el("select", { id: "agent-picker", "aria-label": "agent" });
  fillPicker(picker, agents);
  picker.addEventListener("change", () => {
    state.agentId = Number(picker.value) || null;
    show();
  });
  const tabs = el("nav", { class: "tabs" }, VIEWS.map(([name, label]) =>
    el("a", { href: `#/${name}`, dataset: { view: name }, text: label })));
  const signOut = el("button", { type: "button", class: "quiet", text: "Forget key", onclick: () => {
    key.forget();
    keyGate("The key is forgotten in this tab.");
  } });
  const header = el("header", {},
    el("span", { class: "brand", text: "lifelong" }),
    el("label", { class: "picker" }, "Agent ", picker),
    tabs, signOut);
  const main = el("main", { id: "view" });
  replace(document.body, header, main);
  show();
}

function fillPicker(picker, agents) {
  replace(picker, agents.length === 0 ? el("option", { value: "", text: "no agents yet" }) : null,
    ...agents.map((agent) => el("option", { value: String(agent.id), text: `${agent.name} (#${agent.id})` })));
  if (state.agentId) picker.value = String(state.agentId);
}

// Views call this after creating an agent, so the picker lists it and it becomes the current one.
async function agentsChanged(selectId) {
  const agents = (await get("/v1/agents", { limit: 500 })).data;
  if (selectId) state.agentId = selectId;
  fillPicker(document.getElementById("agent-picker"), agents);
  return agents;
}

function show() {
  state.leave();
  toHash();
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === state.view);
  }
  const main = clear(document.getElementById("view"));
  const [, , view] = VIEWS.find(([name]) => name === state.view);
  const context = {
    agentId: state.agentId,
    agentsChanged,
    // Makes another agent the current one without leaving the view (which may show a message about it).
    select: (agentId) => {
      state.agentId = context.agentId = agentId;
      document.getElementById("agent-picker").value = String(agentId);
      toHash();
    },
    open: (viewName, agentId) => {
      if (agentId) state.agentId = agentId;
      state.view = viewName;
      document.getElementById("agent-picker").value = String(state.agentId);
      show();
    },
  };
  if (view !== agentsView && !state.agentId) {
    main.append(notice("Create an agent first (Agents), or pick one above.", "info"));
    state.leave = () => {};
    return;
  }
  state.leave = view.render(main, context) ?? (() => {});
}

window.addEventListener("hashchange", () => {
  if (!document.getElementById("view")) return;
  fromHash();
  show();
});

fromHash();
start();
