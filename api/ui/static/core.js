// What every view of the operator page shares: the API call (with the user's token, kept in sessionStorage
// only), DOM building (textContent only: nothing from the API is ever run as markup), polling with backoff.
export const store = window.sessionStorage;
export const TOKEN = "fhir-patch.token";
export const COMMUNITY = "fhir-patch.community";
const SLOW = 10000; // ms between polls when nothing moves
const FAST = 1000; // ms between polls while entries end
export const config = { authDisabled: false, communityParameter: null, communities: [], requiredHeaders: [] };

export class ApiError extends Error {
  constructor(status, outcome) {
    const issues = (outcome && outcome.issue) || [];
    const said = issues.map((i) => `${i.diagnostics || i.code}${i.expression ? ` (at ${i.expression.join(", ")})` : ""}`);
    super(`${status}: ${said.join("; ") || "the API refused the call"}`);
    this.status = status;
  }
}

export function el(tag, attributes = {}, ...children) {
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

export function showError(error) {
  const box = document.getElementById("error");
  box.hidden = !error;
  box.textContent = error ? error.message : "";
}

export async function call(path, { method = "GET", accept = "application/fhir+json", text = false } = {}) {
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

export function seconds(value) {
  if (value === null || !Number.isFinite(value)) return "–";
  return value < 90 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`;
}

// Poll `refresh` with backoff: soon while it says things move (true), slower up to SLOW while they do not.
export function poll(refresh, finished, steady = null) {
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

