// Learning: the agent's prequential bits per byte over what it has read (each event scored before
// the agent learned from it), and its weight versions as a timeline with rollback.

import { get, post } from "./api.js";
import { el, svg, notice, confirmButton, formatBytes, formatTime, replace } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { left: 44, right: 12, top: 12, bottom: 34 };

export function render(container, context) {
  const agentId = context.agentId;
  const curve = el("section", { class: "panel", id: "learning-curve" }, el("h2", { text: "Bits per byte" }));
  const versions = el("section", { class: "panel", id: "weight-versions" }, el("h2", { text: "Weight versions" }));
  container.append(el("div", { class: "columns" }, curve, versions));
  loadCurve(curve, agentId);
  loadVersions(versions, agentId);
}

async function allScores(agentId) {
  const scores = [];
  let cursor = null;
  do {
    const page = await get(`/v1/agents/${agentId}/scores`, { limit: 500, cursor });
    scores.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && scores.length < 20000);
  return scores;
}

async function loadCurve(panel, agentId) {
  panel.append(el("p", { class: "muted", text: "What the agent paid to read each event before learning from it: " +
    "8 bits per byte is a uniform guess; the line falls as the agent learns what it reads." }));
  try {
    const scores = await allScores(agentId);
    if (scores.length === 0) {
      panel.append(el("p", { class: "muted", id: "no-scores", text: "Nothing learned yet." }));
      return;
    }
    panel.append(chart(scores));
    const totalBits = scores.reduce((sum, score) => sum + score.bits, 0);
    const totalBytes = scores.reduce((sum, score) => sum + score.bytes, 0);
    panel.append(el("p", { id: "scores-summary", text: `${scores.length} events, ${formatBytes(totalBytes)} read: ` +
      `${(totalBits / Math.max(totalBytes, 1)).toFixed(3)} bits per byte overall, ` +
      `${scores.at(-1).bits_per_byte.toFixed(3)} on the last (${scores.at(-1).role}).` }));
  } catch (error) {
    panel.append(notice(error.message));
  }
}

// An SVG line of bits per byte against the bytes read so far, built node by node; each event's point
// sits at the middle of its bytes.
function chart(scores) {
  let read = 0;
  const points = scores.map((score) => {
    read += score.bytes;
    return [read - score.bytes / 2, score.bits_per_byte];
  });
  const maxX = Math.max(read, 1);
  const maxY = Math.max(8, ...points.map(([, y]) => y));
  const x = (value) => MARGIN.left + (value / maxX) * (WIDTH - MARGIN.left - MARGIN.right);
  const y = (value) => HEIGHT - MARGIN.bottom - (value / maxY) * (HEIGHT - MARGIN.top - MARGIN.bottom);
  const axis = svg("g", { class: "axis" },
    svg("line", { x1: x(0), y1: y(0), x2: x(maxX), y2: y(0) }),
    svg("line", { x1: x(0), y1: y(0), x2: x(0), y2: y(maxY) }),
    ...[0, 2, 4, 6, 8].filter((tick) => tick <= maxY).flatMap((tick) => [
      svg("line", { class: "grid", x1: x(0), y1: y(tick), x2: x(maxX), y2: y(tick) }),
      svg("text", { x: MARGIN.left - 6, y: y(tick) + 4, "text-anchor": "end" }, String(tick))]),
    svg("text", { x: x(maxX), y: HEIGHT - 6, "text-anchor": "end" }, `${formatBytes(maxX)} read`),
    svg("text", { x: MARGIN.left, y: HEIGHT - 6 }, "0"));
  const line = svg("polyline", { class: "curve", points: points.map(([px, py]) => `${x(px)},${y(py)}`).join(" ") });
  const dots = points.map(([px, py], index) => svg("circle", { cx: x(px), cy: y(py), r: 2.5 },
    svg("title", {}, `event ${scores[index].event_id} (${scores[index].role}): ${py.toFixed(3)} bits per byte`)));
  return svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
    "aria-label": "bits per byte against bytes read" }, axis, line, ...dots);
}

async function loadVersions(panel, agentId) {
  const body = el("div", { id: "versions-list" });
  const status = el("div", { "aria-live": "polite" });
  panel.append(el("p", { class: "muted", text: "Each learned batch publishes a version. Rolling back makes a new " +
    "version that carries an older one's weights; learning goes on from it." }), status, body);

  async function refresh() {
    try {
      const [agent, page] = await Promise.all([get(`/v1/agents/${agentId}`), get(`/v1/agents/${agentId}/weights`, { limit: 100 })]);
      const rows = [...page.data, { version: 0, parent_version: null, events_learned_through: 0, tag: "base",
        created_at: agent.created_at }];
      replace(body, el("ol", { class: "timeline" }, rows.map((version) => el("li", {
        class: version.version === agent.weight_version ? "current" : "", dataset: { version: version.version } },
      el("strong", { text: `v${version.version}` }),
      el("span", { class: "muted", text: [
        version.version === agent.weight_version ? "current" : null,
        version.parent_version !== null ? `from v${version.parent_version}` : null,
        version.version ? `events through ${version.events_learned_through}` : "the base model",
        version.tag && version.version ? `tag ${version.tag}` : null,
        version.gate && version.gate.passed ? "gate passed" : null,
        formatTime(version.created_at)].filter(Boolean).join(" · ") }),
      version.gate && !version.gate.passed
        ? el("p", { class: "gate-refused", text: `Refused by the gate, serves the last good weights: ${version.gate.reason}` })
        : null,
      version.version === agent.weight_version ? null
        : confirmButton("Roll back to this", `Roll back to v${version.version}?`, async () => {
          try {
            const created = await post(`/v1/agents/${agentId}/weights/rollback`, { version: version.version });
            replace(status, notice(`Now at v${created.version}, carrying v${version.version}'s weights.`, "ok"));
          } catch (error) {
            replace(status, notice(error.message));
          }
          refresh();
        })))),
      page.next_cursor ? el("p", { class: "muted", text: "Older versions were pruned or are on later pages." }) : null);
    } catch (error) {
      replace(body, notice(error.message));
    }
  }
  refresh();
}
