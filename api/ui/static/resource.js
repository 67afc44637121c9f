// A resource's versions: who changed what, and the change between any two versions ($diff).
import { call, el, showError } from "./core.js";

export async function resourcePage(main, type, id) {
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
