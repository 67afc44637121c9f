// The operator page: every figure comes from the API, called with the user's token (kept in sessionStorage only).
// This module sets up access (token, community, required headers) and shows the view the path names.
import { COMMUNITY, TOKEN, config, el, showError, store } from "./core.js";
import { feedPage, listPage } from "./feeds.js";
import { resourcePage } from "./resource.js";

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

// ---- start ----

async function start() {
  const answer = await fetch("/ui/config.json");
  Object.assign(config, await answer.json());
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
