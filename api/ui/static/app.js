// The operator page: every figure comes from the API, called with the user's token (kept in sessionStorage only).
// No inline script, no innerHTML: text goes in with textContent, so nothing from the API is ever run as markup.
"use strict";

const store = window.sessionStorage;
const TOKEN = "fhir-patch.token";
const COMMUNITY = "fhir-patch.community";
const SLOW = 10000; // ms between polls when nothing moves
const FAST = 1000; // ms between polls while entries end
const FAILURES_EVERY = 15000; // ms between reads of a running feed's failed lines (each costs the server ~1 ms a line)
const FAILED_SHOWN = 100; // failed lines in the table (the results download has them all)
let config = { authDisabled: false, communityParameter: null, communities: [], requiredHeaders: [] };

class ApiError extends Error {
  constructor(status, outcome) {
    const issues = (outcome && outcome.issue) || [];
    const said = issues.map((i) => `${i.diagnostics || i.code}${i.expression ? ` (at ${i.expression.join(", ")})` : ""}`);
    super(`${status}: ${said.join("; ") || "the API refused the call"}`);
    this.status = status;
  }
}

function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showError(error) {
  const box = document.getElementById("error");
  box.hidden = !error;
  box.textContent = error ? error.message : "";
}

async function call(path, { method = "GET", accept = "application/fhir+json", text = false } = {}) {
  const url = new URL(path, window.location.origin);
  const community = store.getItem(COMMUNITY);
  if (config.communityParameter && community && url.pathname.startsWith("/fhir")) {
    url.searchParams.set(config.communityParameter, community);
  }
  const headers = { Accept: accept };
  const token = store.getItem(TOKEN);
  if (token && !config.authDisabled) headers.Authorization = `Bearer ${token}`;
  for (const name of config.requiredHeaders) {
    const value = store.getItem(`fhir-patch.header.${name}`);
    if (value) headers[name] = value;
  }
  const response = await fetch(url, { method, headers, cache: "no-store" });
  const body = text ? await response.text() : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, text ? null : body);
  return { status: response.status, body, headers: response.headers };
}

// ---- access: token, community, required headers ----

function setUpAccess() {
  const form = document.getElementById("access");
  const tokenField = document.getElementById("token-field");
  const note = document.getElementById("access-note");
  if (config.authDisabled) {
    tokenField.hidden = true;
    note.textContent = "Authentication is disabled on this service: no token is asked for.";
  } else {
    note.textContent = store.getItem(TOKEN) ? "Token in use (this tab only)." : "Paste a token to begin.";
  }
  if (config.communityParameter) {
    const select = document.getElementById("community");
    select.append(...config.communities.map((c) => el("option", { value: c }, c)));
    select.value = store.getItem(COMMUNITY) || config.communities[0] || "";
    document.getElementById("community-field").hidden = false;
  }
  const fields = document.getElementById("header-fields");
  for (const name of config.requiredHeaders) {
    fields.append(el("label", {}, `${name} `, el("input", { "data-header": name, value: store.getItem(`fhir-patch.header.${name}`) || "" })));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    if (token) store.setItem(TOKEN, token);
    if (config.communityParameter) store.setItem(COMMUNITY, document.getElementById("community").value);
    for (const input of fields.querySelectorAll("input")) store.setItem(`fhir-patch.header.${input.dataset.header}`, input.value.trim());
    window.location.reload();
  });
  document.getElementById("forget").addEventListener("click", () => {
    store.clear();
    window.location.reload();
  });
}

// ---- progress of a feed or a batch ----

function progressOf(parameters) {
  const value = {};
  for (const p of parameters.parameter || []) {
    value[p.name] = p.valueInteger ?? p.valueBoolean ?? p.valueString ?? p.valueCode ?? p.valueInstant ?? p.valueUrl;
  }
  const failed = (value.failed || 0) - (value.rejected || 0);
  return {
    id: value.group, kind: value.kind, created: value.created, total: value.total ?? null, ended: value.ended || 0,
    done: value.done === true,
    counts: {
      applied: (value.applied || 0) - (value.unchanged || 0), unchanged: value.unchanged || 0,
      refused: value.rejected || 0, failed, cancelled: value.cancelled || 0,
    },
  };
}

function progressOfBatch(id, bundle) {
  const entries = bundle.entry || [];
  const statuses = entries.map((e) => String((e.response || {}).status || ""));
  const failed = statuses.filter((s) => Number.parseInt(s, 10) >= 400).length;
  const cancelled = statuses.filter((s) => s === "cancelled").length;
  return {
    id, kind: "batch", created: null, total: entries.length, ended: entries.length, done: true,
    counts: { applied: entries.length - failed - cancelled, unchanged: 0, refused: 0, failed, cancelled },
  };
}

// The rate of a group from successive polls: lines ended per second, smoothed.
class Rate {
  constructor() { this.seen = null; this.perSecond = null; }
  update(ended, now = Date.now()) {
    if (this.seen && now > this.seen.at && ended >= this.seen.ended) {
      const recent = ((ended - this.seen.ended) * 1000) / (now - this.seen.at);
      this.perSecond = this.perSecond === null ? recent : 0.6 * this.perSecond + 0.4 * recent;
    }
    this.seen = { ended, at: now };
  }
  left(progress) {
    if (progress.done || progress.total === null || !this.perSecond) return null;
    return (progress.total - progress.ended) / this.perSecond;
  }
}

const LABELS = { applied: "applied", unchanged: "no-op", refused: "refused at intake", failed: "failed in the worker", cancelled: "cancelled" };

function countsView(progress) {
  return el("div", { class: "counts" }, Object.entries(LABELS).map(([name, label]) =>
    el("div", { class: `count ${name}`, "data-count": name }, el("b", {}, progress.counts[name]), label)));
}

function seconds(value) {
  if (value === null || !Number.isFinite(value)) return "–";
  return value < 90 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`;
}

function progressCells(progress, rate) {
  const bar = el("progress", { max: progress.total ?? 1, value: progress.total === null ? null : progress.ended });
  const of = progress.total === null ? `${progress.ended} (intake running)` : `${progress.ended} / ${progress.total}`;
  return [
    el("td", {}, bar, " ", of),
    el("td", { "data-rate": "" }, rate.perSecond === null || (progress.done && !rate.perSecond) ? "–" : `${rate.perSecond.toFixed(0)}/s`),
    el("td", {}, progress.done ? "done" : seconds(rate.left(progress))),
  ];
}

// ---- the list of the caller's feeds and batches, and the service's health ----

async function listPage(main) {
  const groups = el("tbody");
  const health = healthSection();
  const open = el("form", { id: "open-resource" },
    el("input", { name: "type", placeholder: "Organization", required: true }), " / ",
    el("input", { name: "id", placeholder: "id", required: true }), " ", el("button", {}, "Show versions"));
  open.addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(open);
    window.location.assign(`/ui/resources/${encodeURIComponent(form.get("type"))}/${encodeURIComponent(form.get("id"))}`);
  });
  main.replaceChildren(
    el("h1", {}, "Feeds and batches"),
    el("section", {}, el("table", { id: "groups" },
      el("thead", {}, el("tr", {}, ["Group", "Kind", "Created", "Progress", "Rate", "Time left", "Outcomes"].map((h) => el("th", {}, h)))),
      groups)),
    health.section,
    el("section", {}, el("h2", {}, "A resource's versions"), open));
  const rates = new Map();
  const refresh = async () => {
    const { body } = await call("/fhir/_async");
    let moving = false;
    const rows = (body.entry || []).map((entry) => {
      const progress = progressOf(entry.resource);
      moving = moving || !progress.done;
      if (!rates.has(progress.id)) rates.set(progress.id, new Rate());
      rates.get(progress.id).update(progress.ended);
      const outcomes = Object.entries(LABELS).filter(([name]) => progress.counts[name]).map(([name, label]) => `${progress.counts[name]} ${label}`);
      return el("tr", { "data-group": progress.id },
        el("td", {}, el("a", { href: `/ui/feeds/${progress.id}` }, progress.id)), el("td", {}, progress.kind),
        el("td", {}, progress.created ? new Date(progress.created).toLocaleString() : ""),
        ...progressCells(progress, rates.get(progress.id)), el("td", {}, outcomes.join(", ") || "–"));
    });
    groups.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "note" }, "No feed or batch of yours yet."))]));
    return moving;
  };
  poll(refresh, () => false);
  poll(health.refresh, () => false, 5000);
}

function healthSection() {
  const samples = [];
  const depth = chart("Queue depth (jobs waiting)");
  const applied = chart("Applied per second");
  const note = el("p", { class: "note" }, "Read from /metrics every 5 s while this page is open (last 10 minutes).");
  const section = el("section", { id: "health" }, el("h2", {}, "Service health"), el("div", { class: "charts" }, depth.node, applied.node), note);
  const refresh = async () => {
    let text;
    try {
      ({ body: text } = await call("/metrics", { accept: "text/plain", text: true }));
    } catch (error) {
      if (error.status === 403 || error.status === 401) {
        note.textContent = "Service health needs the scope system/metrics.read.";
        return false;
      }
      throw error;
    }
    const metric = (name) => Number((text.match(new RegExp(`^${name} ([0-9.e+]+)$`, "m")) || [])[1] || 0);
    samples.push({ at: Date.now(), depth: metric("fhir_patch_queue_depth"), applied: metric("fhir_patch_jobs_applied_total") });
    while (samples.length > 120) samples.shift();
    const rates = samples.slice(1).map((s, i) => (s.applied - samples[i].applied) / Math.max(0.001, (s.at - samples[i].at) / 1000));
    depth.draw(samples.map((s) => s.depth));
    applied.draw(rates);
    return true;
  };
  return { section, refresh };
}

function chart(title) {
  const line = el("svg:polyline", { points: "" });
  const svg = el("svg:svg", { width: 320, height: 90, viewBox: "0 0 320 90" }, line);
  const last = el("span", { class: "note" }, "–");
  const node = el("div", { class: "chart" }, el("div", {}, `${title}: `, last), svg);
  const draw = (values) => {
    if (!values.length) return;
    const top = Math.max(1, ...values);
    const step = 320 / Math.max(1, values.length - 1);
    line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(86 - (v / top) * 80).toFixed(1)}`).join(" "));
    last.textContent = `${Math.round(values[values.length - 1])} now (peak ${Math.round(top)})`;
  };
  return { node, draw };
}

// Poll `refresh` with backoff: soon while it says things move (true), slower up to SLOW while they do not.
function poll(refresh, finished, steady = null) {
  let wait = steady || FAST;
  const turn = async () => {
    let moving = false;
    try {
      moving = await refresh();
      showError(null);
    } catch (error) {
      showError(error);
    }
    if (finished()) return;
    wait = steady || (moving ? FAST : Math.min(SLOW, wait * 1.5));
    window.setTimeout(turn, wait);
  };
  turn();
}

// ---- one feed or batch ----

async function feedPage(main, id) {
  const head = el("div");
  const failedRows = el("tbody");
  const message = el("p", { class: "note", id: "feed-message" });
  const download = el("button", { id: "download" }, "Download results (NDJSON)");
  const cancel = el("button", { id: "cancel" }, "Cancel what has not started");
  main.replaceChildren(
    el("h1", {}, `Group ${id}`),
    el("section", { id: "progress" }, head, el("div", { class: "actions" }, download, cancel), message),
    el("section", {}, el("h2", {}, "Failed lines"), el("table", { id: "failed" },
      el("thead", {}, el("tr", {}, ["Line", "Resource", "Status", "Diagnostics", "Expression"].map((h) => el("th", {}, h)))), failedRows)));
  download.addEventListener("click", () => downloadResults(id).catch(showError));
  cancel.addEventListener("click", async () => {
    try {
      const { body } = await call(`/fhir/_async/${id}`, { method: "DELETE" });
      message.textContent = ((body.issue || [])[0] || {}).diagnostics || "Cancelled.";
    } catch (error) {
      showError(error);
    }
  });
  const rate = new Rate();
  let failuresShown = -1;
  let failuresAt = 0;
  let done = false;
  const refresh = async () => {
    const { body } = await call(`/fhir/_async/${id}`);
    const progress = body.resourceType === "Bundle" ? progressOfBatch(id, body) : progressOf(body);
    const before = rate.seen ? rate.seen.ended : -1;
    rate.update(progress.ended);
    head.replaceChildren(
      el("table", {}, el("tbody", {}, el("tr", {}, el("th", {}, "Progress"), el("th", {}, "Rate"), el("th", {}, "Time left")),
        el("tr", {}, ...progressCells(progress, rate)))),
      countsView(progress));
    // The failed lines are read again when more have failed, at most every FAILURES_EVERY ms while the feed runs
    // (each read costs the server a lookup per line shown), and once at the end.
    const failures = progress.counts.failed + progress.counts.refused;
    if (failures !== failuresShown && (progress.done || Date.now() - failuresAt >= FAILURES_EVERY)) {
      failuresShown = failures;
      failuresAt = Date.now();
      failedRows.replaceChildren(...(body.resourceType === "Bundle" ? failedEntries(body) : await failedLines(id, failures)));
    }
    done = progress.done;
    cancel.disabled = progress.done;
    return progress.ended !== before;
  };
  poll(refresh, () => done);
}

function failedRow(line, resource, status, outcome) {
  const issues = (outcome && outcome.issue) || [];
  return el("tr", { "data-line": line }, el("td", {}, line), el("td", {}, resource || "–"), el("td", { class: "status-bad" }, status),
    el("td", {}, issues.map((i) => i.diagnostics || i.code).join("; ")),
    el("td", {}, issues.flatMap((i) => i.expression || []).join(", ")));
}

async function failedLines(id, failures) {
  const path = `/fhir/_async/${id}/results?outcome=failed&_count=${FAILED_SHOWN}`;
  const { body } = await call(path, { accept: "application/fhir+ndjson", text: true });
  const lines = body.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  if (!lines.length) return [el("tr", {}, el("td", { colspan: 5, class: "note" }, "No line has failed."))];
  const rows = lines.map((l) => failedRow(l.line, l.resource, l.status, l.outcome));
  if (failures > lines.length) {
    const more = `The first ${lines.length} of ${failures} failed lines; download the results for all of them.`;
    rows.push(el("tr", {}, el("td", { colspan: 5, class: "note" }, more)));
  }
  return rows;
}

function failedEntries(bundle) {
  return (bundle.entry || []).map((e, i) => [i + 1, e.response || {}])
    .filter(([, r]) => Number.parseInt(String(r.status), 10) >= 400)
    .map(([n, r]) => failedRow(n, null, r.status, r.outcome));
}

async function downloadResults(id) {
  const { body } = await call(`/fhir/_async/${id}/results`, { accept: "application/fhir+ndjson", text: true });
  const link = el("a", { href: URL.createObjectURL(new Blob([body], { type: "application/fhir+ndjson" })), download: `${id}-results.ndjson` });
  document.body.append(link);
  link.click();
  link.remove();
}

// ---- a resource's versions ----

async function resourcePage(main, type, id) {
  const key = `${type}/${id}`;
  const [history, provenance] = await Promise.all([
    call(`/fhir/${key}/_history?_count=100`),
    call(`/fhir/Provenance?target=${encodeURIComponent(key)}&_count=100`).catch(() => ({ body: { entry: [] } })),
  ]);
  const versions = (history.body.entry || []).map((e) => ({
    version: Number((e.resource && e.resource.meta && e.resource.meta.versionId) || String((e.response || {}).etag || "").replace(/\D/g, "")),
    resource: e.resource || null, method: (e.request || {}).method || "", when: (e.response || {}).lastModified || (e.resource && e.resource.meta.lastUpdated),
  })).sort((a, b) => b.version - a.version);
  const who = new Map();
  for (const entry of provenance.body.entry || []) {
    const p = entry.resource;
    const target = ((p.target || [])[0] || {}).reference || "";
    const version = Number((target.match(/_history\/(\d+)$/) || [])[1]);
    const agents = (p.agent || []).map((a) => (a.who && (a.who.display || a.who.reference || a.who.identifier?.value)) || "").filter(Boolean);
    const activity = ((p.activity || {}).coding || []).map((c) => c.display || c.code).join(", ");
    who.set(version, { agents: [...new Set(agents)].join(", "), activity });
  }
  const timeline = el("ul", { class: "timeline", id: "timeline" }, versions.map((v, i) => {
    const by = who.get(v.version) || {};
    const changed = changedElements((versions[i + 1] || {}).resource, v.resource);
    return el("li", { class: v.resource ? "" : "deleted", "data-version": v.version },
      el("b", {}, `version ${v.version}`), ` · ${v.when ? new Date(v.when).toLocaleString() : ""}`,
      ` · ${by.activity || v.method || (v.resource ? "written" : "deleted")}`, by.agents ? ` · by ${by.agents}` : "",
      changed.length ? el("div", { class: "note" }, `changed ${changed.join(", ")}`) : "");
  }));
  const choose = (name, chosen) => el("select", { name }, versions.map((v) => el("option", { value: v.version, selected: v.version === chosen }, `version ${v.version}`)));
  const from = choose("from", versions.length > 1 ? versions[1].version : versions[0]?.version);
  const to = choose("to", versions[0]?.version);
  const shown = el("div", { id: "diff" });
  const form = el("form", { id: "diff-form" }, "From ", from, " to ", to, " ", el("button", {}, "Show the change"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showDiff(key, versions, Number(from.value), Number(to.value), shown).catch(showError);
  });
  main.replaceChildren(el("h1", {}, `${key}`), el("section", {}, el("h2", {}, "Versions"), timeline),
    el("section", {}, el("h2", {}, "What changed"), form, shown));
  if (versions.length > 1) await showDiff(key, versions, Number(from.value), Number(to.value), shown);
}

// The top-level elements that differ between two versions (meta aside): what a version changed, at a glance.
function changedElements(before, after) {
  if (!before || !after) return [];
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  names.delete("meta");
  return [...names].filter((n) => JSON.stringify(before[n]) !== JSON.stringify(after[n])).sort();
}

async function showDiff(key, versions, from, to, shown) {
  const { body } = await call(`/fhir/$diff?from=${key}/_history/${from}&to=${key}/_history/${to}`, { accept: "application/json-patch+json" });
  const old = (versions.find((v) => v.version === from) || {}).resource || {};
  const operations = Array.isArray(body) ? body : [];
  shown.replaceChildren(...(operations.length ? operations.map((op) => {
    const before = op.op === "add" ? undefined : pointer(old, op.path);
    return el("div", { class: `diff-op op-${op.op}` }, el("span", { class: "op" }, op.op), el("code", {}, op.path), " ",
      before === undefined ? "" : el("del", { class: "value" }, JSON.stringify(before)), " ",
      op.value === undefined ? "" : el("ins", { class: "value" }, JSON.stringify(op.value)));
  }) : [el("p", { class: "note" }, `Versions ${from} and ${to} hold the same content.`)]));
}

function pointer(document_, path) {
  let at = document_;
  for (const raw of path.split("/").slice(1)) {
    if (at === null || typeof at !== "object") return undefined;
    at = at[raw.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return at;
}

// ---- start ----

async function start() {
  const answer = await fetch("/ui/config.json");
  config = await answer.json();
  setUpAccess();
  const main = document.getElementById("main");
  const path = window.location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (!config.authDisabled && !store.getItem(TOKEN)) {
    main.replaceChildren(el("p", { class: "note" }, "Paste a token above: the page shows what that token may see."));
    return;
  }
  const pages = { feeds: () => feedPage(main, path[2]), resources: () => resourcePage(main, path[2], path[3]) };
  await (pages[path[1]] || (() => listPage(main)))();
}

start().catch(showError);
