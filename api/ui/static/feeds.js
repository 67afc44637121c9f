// The feeds and batches: the caller's list with the service's health, and one feed live with its failed lines.
import { call, el, poll, seconds, showError } from "./core.js";

const FAILURES_EVERY = 15000; // ms between reads of a running feed's failed lines (each costs the server ~1 ms a line)
const FAILED_SHOWN = 100; // failed lines in the table (the results download has them all)

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

export async function listPage(main) {
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

// ---- one feed or batch ----

export async function feedPage(main, id) {
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
