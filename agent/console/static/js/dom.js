// Building the page: every text the API returns goes in through textContent, never as HTML,
// so a memory or a document name that holds markup is shown as the characters it is.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, ...children);
  return node;
}

export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

export function formatBytes(count) {
  if (count === null || count === undefined) return "-";
  if (count < 1024) return `${count} B`;
  if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KB`;
  return `${(count / 1024 / 1024).toFixed(1)} MB`;
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "-";
}

// A message area that says what failed in the API's own words.
export function notice(text, kind = "error") {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", text });
}

// A button that asks once more before it acts: no window.confirm, whose dialog a page cannot style or test.
export function confirmButton(label, confirmLabel, action) {
  let armed = false;
  const button = el("button", { type: "button", class: "danger", text: label });
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      button.classList.add("armed");
      return;
    }
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      armed = false;
      button.textContent = label;
      button.classList.remove("armed");
    }
  });
  button.addEventListener("blur", () => {
    armed = false;
    button.textContent = label;
    button.classList.remove("armed");
  });
  return button;
}

export function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headings.map((heading) => el("th", { text: heading })))),
    el("tbody", {}, rows));
}

export function provenance(item) {
  const parts = [];
  if (item.document_id) parts.push(`document ${item.document_id}`);
  if (item.session_id) parts.push(`session ${item.session_id}`);
  if (item.event_id) parts.push(`event ${item.event_id}`);
  if (item.imported_from) parts.push(`imported from ${item.imported_from}`);
  return parts.length ? parts.join(" · ") : "no source recorded";
}

// Clears `node` and appends `children` (arrays flattened, null and false left out, unlike Node.append).
export function replace(node, ...children) {
  return append(clear(node), ...children);
}
