// ChargeTwin operator dashboard: one page over the public HTTP API (/api/v1), no build step.
//
// Polls every REFRESH_MS while the tab is visible, backs off while the API is unreachable,
// and updates the DOM in place (keyed rows) so nothing jumps on refresh. Everything the API
// returns is rendered with textContent, never parsed as HTML.

const API = new URL("api/v1/", document.baseURI);
const TOKEN_KEY = "chargetwin.dashboard.token";
const REFRESH_MS = 5000;
const MAX_BACKOFF_MS = 60000;
const STALE_AFTER_MS = 2 * REFRESH_MS + 1000;
const PROBE_AGAIN_MS = 5 * 60 * 1000;
const FLEET_PAGE = 1000;
const STATUSES = [
  "Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
  "Finishing", "Reserved", "Unavailable", "Faulted",
];
const KNOWN_REPORTED = new Set([
  "chargePoint", "firmware", "config", "connectors", "connection", "availability", "refused",
]);

// --- small DOM helpers ------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

function setAttr(el, name, value) {
  if (value === null || value === undefined || value === false) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else if (el.getAttribute(name) !== String(value)) {
    el.setAttribute(name, String(value));
  }
}

/** Replace an element's children only when their signature changed (no flicker). */
function replaceIfChanged(el, signature, build) {
  if (el.dataset.sig === signature) return;
  el.dataset.sig = signature;
  el.replaceChildren(...build());
}

/** Keyed reconciliation of a list's children: rows are created once, then updated in place. */
function syncChildren(parent, items, keyOf, create, update) {
  const existing = new Map();
  for (const child of parent.children) existing.set(child.dataset.key, child);
  let previous = null;
  for (const item of items) {
    const key = String(keyOf(item));
    let el = existing.get(key);
    if (el) existing.delete(key);
    else {
      el = create(item);
      el.dataset.key = key;
    }
    update(el, item);
    const wanted = previous ? previous.nextElementSibling : parent.firstElementChild;
    if (el !== wanted) parent.insertBefore(el, wanted);
    previous = el;
  }
  for (const el of existing.values()) el.remove();
}

// --- time -------------------------------------------------------------------------------

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const stamp = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

function epochAgo(seconds) {
  return typeof seconds === "number" ? ago(Date.now() - seconds * 1000) : "–";
}

function epochTitle(seconds, what = "") {
  if (typeof seconds !== "number") return null;
  const when = stamp.format(new Date(seconds * 1000));
  return `${what ? what + " " : ""}${when} (${ago(Date.now() - seconds * 1000)})`;
}

// --- the API client ---------------------------------------------------------------------

class ApiError extends Error {
  /** An answer from the API that is not a success; `problem` is its RFC 9457 body. */
  constructor(status, problem, headers) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || { title: `HTTP ${status}`, status };
    this.headers = headers;
  }

  /** A 404 for a path no route serves (the feature is absent), not for a missing thing. */
  get noRoute() {
    return this.status === 404 && (this.problem.type ?? "about:blank") === "about:blank";
  }
}

class Unreachable extends Error {}

let token = null;

async function api(path, { method = "GET", body, headers = {}, signal, auth = true } = {}) {
  const init = { method, signal, cache: "no-store", headers: { Accept: "application/json", ...headers } };
  if (auth) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] ??= "application/json";
  }
  let response;
  try {
    response = await fetch(new URL(path, API), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Unreachable("the API cannot be reached");
  }
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (response.status !== 204 && response.status !== 304) {
    data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  }
  if (!response.ok) {
    const isProblem = type.includes("json") && data && typeof data === "object";
    // A gateway's 502/503/504 page means the API itself is away.
    if ([502, 503, 504].includes(response.status) && !isProblem) {
      throw new Unreachable(`the API's gateway answered ${response.status}`);
    }
    throw new ApiError(response.status, isProblem ? data : null, response.headers);
  }
  return { data, headers: response.headers, status: response.status };
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// --- state ------------------------------------------------------------------------------

const state = {
  filters: { q: "", online: "", status: "", vendor: "", model: "", firmwareVersion: "", hasDelta: "" },
  offset: 0,
  limit: 50,
  page: { items: [], total: 0 },
  tableFetchedAt: 0,
  fleet: null, // { items, total, fetchedAt }
  fleetTick: 0,
  selected: null, // charger id
  detail: null, // { charger, doc, etag, fetchedAt }
  lastSuccess: 0,
  lastAttempt: 0,
  failures: 0,
  nextRetryAt: 0,
  timer: null,
  inflight: null,
  features: { alerts: null, alertsProbedAt: 0 },
  cfgShowAll: false,
  view: "chargers", // or "usage": the charts
  charts: { scope: "", days: 30, fetchedAt: 0, running: null, generation: 0 }, // scope: "", "site:NAME" or "charger:ID"
  detailUsage: { id: null, fetchedAt: 0 },
};

// --- sign in / out ----------------------------------------------------------------------

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("token");
  if (!fromUrl) return;
  localStorage.setItem(TOKEN_KEY, fromUrl);
  params.delete("token");
  const rest = params.toString();
  // Out of the address bar and history, so it is not shared with a copied link.
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

function showSignIn(message) {
  stopPolling();
  token = null;
  $("app").hidden = true;
  $("session-controls").hidden = true;
  $("banner-error").hidden = true;
  $("banner-warn").hidden = true;
  $("signin").hidden = false;
  const error = $("signin-error");
  error.hidden = !message;
  setText(error, message || "");
  $("token-input").focus();
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.fleet = null;
  state.page = { items: [], total: 0 };
  closeDetail();
  $("fleet-rows").replaceChildren();
  showSignIn(message);
}

async function signIn(secret) {
  token = secret;
  try {
    await api(`chargers${query({ limit: 1 })}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showSignIn("That token is unknown or revoked.");
      return;
    }
    // Unreachable or other: keep the token, the banner will tell.
  }
  localStorage.setItem(TOKEN_KEY, secret);
  startApp();
}

function startApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("session-controls").hidden = false;
  refreshNow();
}

// --- polling ----------------------------------------------------------------------------

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
  state.inflight?.abort();
  state.inflight = null;
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(tick, ms);
}

function refreshNow() {
  schedule(0);
}

async function tick() {
  if (!token || document.hidden) return; // visibilitychange starts us again
  state.inflight?.abort();
  const controller = new AbortController();
  state.inflight = controller;
  const { signal } = controller;
  state.lastAttempt = Date.now();
  try {
    const health = refreshHealth(signal);
    await Promise.all([refreshFleet(signal), refreshTable(signal)]);
    await Promise.all([health, refreshDetail(signal), refreshAlerts(signal), refreshDetailUsage(signal)]);
    chartsInBackground();
    state.failures = 0;
    state.lastSuccess = Date.now();
    $("banner-error").hidden = true;
    schedule(REFRESH_MS);
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && error.status === 401) {
      signOut("The token was refused (unknown or revoked). Sign in again.");
      return;
    }
    state.failures += 1;
    const backoff = Math.min(REFRESH_MS * 2 ** (state.failures - 1), MAX_BACKOFF_MS);
    const delay = backoff * (0.85 + Math.random() * 0.3);
    state.nextRetryAt = Date.now() + delay;
    showFailure(error);
    schedule(delay);
  } finally {
    if (state.inflight === controller) state.inflight = null;
    renderFreshness();
  }
}

function showFailure(error) {
  const since = state.lastSuccess ? `Showing data from ${clock.format(state.lastSuccess)}.` : "No data yet.";
  let what;
  if (error instanceof Unreachable) what = `Cannot reach the ChargeTwin API (${error.message}).`;
  else if (error instanceof ApiError) what = `The API answered ${error.status}: ${error.problem.detail || error.problem.title}.`;
  else what = `Refresh failed: ${error.message}.`;
  $("banner-error").dataset.what = `${what} ${since}`;
  $("banner-error").hidden = false;
  renderRetryCountdown();
}

function renderRetryCountdown() {
  const banner = $("banner-error");
  if (banner.hidden) return;
  const seconds = Math.max(0, Math.ceil((state.nextRetryAt - Date.now()) / 1000));
  setText($("banner-error-text"), `${banner.dataset.what} Retrying in ${seconds} s.`);
}

async function refreshHealth(signal) {
  // No token needed; says whether online states can be trusted (MQTT) and the store answers.
  let body = null;
  try {
    body = (await api("health", { signal, auth: false })).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 503) body = error.problem;
    else if (error instanceof ApiError) body = null;
    else throw error;
  }
  const warn = $("banner-warn");
  const problems = [];
  if (body && body.mqtt === false) problems.push("the API has lost its MQTT connection, so online states and changes may lag");
  if (body && body.database === false) problems.push("the database is not answering");
  warn.hidden = problems.length === 0;
  if (problems.length) setText($("banner-warn-text"), `Degraded: ${problems.join("; ")}.`);
}

// Fleet-wide figures need every charger: one request per 1000, less often for big fleets.
async function refreshFleet(signal) {
  const pages = state.fleet ? Math.ceil(state.fleet.total / FLEET_PAGE) : 1;
  state.fleetTick += 1;
  if (state.fleet && state.fleetTick % Math.max(1, pages) !== 0) return;
  const items = await fetchAll({}, signal);
  state.fleet = { items, total: items.length, fetchedAt: Date.now() };
  renderFleet();
}

async function fetchAll(filters, signal) {
  const items = [];
  for (let offset = 0; ; offset += FLEET_PAGE) {
    const { data } = await api(`chargers${query({ ...filters, limit: FLEET_PAGE, offset })}`, { signal });
    items.push(...data.items);
    if (items.length >= data.total || data.items.length === 0) return items;
  }
}

function apiFilters() {
  const { q, ...rest } = state.filters;
  return rest;
}

async function refreshTable(signal) {
  const needle = state.filters.q.trim().toLowerCase();
  if (needle) {
    // The API has no id search: filter server-side by the rest, then by id here.
    const all = (await fetchAll(apiFilters(), signal)).filter((c) => c.id.toLowerCase().includes(needle));
    state.page = { items: all.slice(state.offset, state.offset + state.limit), total: all.length };
  } else {
    const { data } = await api(`chargers${query({ ...apiFilters(), limit: state.limit, offset: state.offset })}`, { signal });
    state.page = { items: data.items, total: data.total };
  }
  if (state.offset > 0 && state.offset >= state.page.total) {
    state.offset = Math.max(0, Math.floor((state.page.total - 1) / state.limit) * state.limit);
    return refreshTable(signal);
  }
  state.tableFetchedAt = Date.now();
  renderTable();
}

// --- fleet header -----------------------------------------------------------------------

function statusClass(status) {
  return `st-${(status || "unknown").toLowerCase()}`;
}

function renderFleet() {
  const items = state.fleet.items;
  const online = items.filter((c) => c.online).length;
  setText($("kpi-total"), items.length);
  setText($("kpi-online"), online);
  setText($("kpi-offline"), items.length - online);
  const pending = items.filter((c) => c.hasDelta).length;
  setText($("kpi-delta"), pending);
  const kinds = new Set(items.map((c) => [c.vendor, c.model].join(" ")).filter((m) => m.trim()));
  setText($("kpi-total-sub"), items.length ? `${kinds.size} model${kinds.size === 1 ? "" : "s"}` : "none registered");
  setText($("kpi-online-sub"), items.length ? `${Math.round((100 * online) / items.length)}% of the fleet` : "");
  setText($("kpi-offline-sub"), items.length - online ? "not connected now" : "all connected");
  setText($("kpi-delta-sub"), pending ? "desired ≠ reported" : "all in sync");
  $("kpi-offline").closest(".kpi").classList.toggle("alarm", items.length - online > 0);

  // Connectors of offline chargers are not counted: their last status is not their status
  // now (the table greys them out); the tile says how many it left aside.
  const counts = new Map();
  let unseen = 0;
  for (const c of items) {
    for (const [id, status] of Object.entries(c.connectors || {})) {
      if (id === "0") continue; // connector 0 is the charger itself
      if (!c.online) {
        unseen += 1;
        continue;
      }
      const key = status || "Unknown";
      counts.set(key, (counts.get(key) || 0) + 1);
    }
  }
  const order = [...STATUSES, ...[...counts.keys()].filter((s) => !STATUSES.includes(s)).sort()];
  const present = order.filter((s) => counts.get(s));
  const total = present.reduce((sum, s) => sum + counts.get(s), 0);
  setText($("kpi-connectors-sub"), unseen ? `${unseen} of offline chargers not counted` : "");
  const bar = $("status-bar");
  replaceIfChanged(bar, present.map((s) => `${s}:${counts.get(s)}`).join(","), () =>
    present.map((s) => {
      const seg = h("span", { class: `seg ${statusClass(s)}`, title: `${s}: ${counts.get(s)}` });
      seg.style.flexGrow = String(counts.get(s));
      return seg;
    }),
  );
  syncChildren(
    $("status-legend"),
    order.filter((s) => counts.get(s) || ["Available", "Charging", "Faulted", "Unavailable"].includes(s)),
    (s) => s,
    (s) =>
      h("button", { type: "button", class: `legend ${statusClass(s)}`, title: `Show chargers with a ${s} connector`, onclick: () => applyFilters({ status: s === "Unknown" ? "" : s }) },
        h("span", { class: "legend-dot", "aria-hidden": "true" }), h("span", { class: "legend-name", text: s }), h("span", { class: "legend-count" })),
    (el, s) => {
      setText(el.querySelector(".legend-count"), counts.get(s) || 0);
      el.classList.toggle("zero", !counts.get(s));
      setAttr(el, "aria-label", `${counts.get(s) || 0} connectors ${s}`);
      setAttr(el, "title", total ? `${s}: ${counts.get(s) || 0} of ${total} connectors — show these chargers` : s);
    },
  );
  updateFilterOptions();
  fillScopeSelect();
}

function updateFilterOptions() {
  const items = state.fleet?.items || [];
  const uniq = (field) => [...new Set(items.map((c) => c[field]).filter((v) => v))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  fillSelect($("f-status"), STATUSES, state.filters.status);
  fillSelect($("f-vendor"), uniq("vendor"), state.filters.vendor);
  fillSelect($("f-model"), uniq("model"), state.filters.model);
  fillSelect($("f-firmware"), uniq("firmwareVersion"), state.filters.firmwareVersion);
}

function fillSelect(select, values, current) {
  const wanted = current && !values.includes(current) ? [...values, current] : values;
  const signature = wanted.join("\u0000");
  if (select.dataset.sig !== signature) {
    select.dataset.sig = signature;
    select.replaceChildren(h("option", { value: "", text: "Any" }), ...wanted.map((v) => h("option", { value: v, text: v })));
  }
  if (select.value !== current) select.value = current;
}

// --- the table --------------------------------------------------------------------------

function connectorChips(connectors) {
  const ids = Object.keys(connectors || {}).sort((a, b) => Number(a) - Number(b));
  const shown = ids.filter((id) => id !== "0" || !["Available", null].includes(connectors[id]));
  return shown.map((id) =>
    h("span", { class: `chip ${statusClass(connectors[id])}`, title: `${id === "0" ? "Charger (connector 0)" : `Connector ${id}`}: ${connectors[id] || "unknown"}` },
      h("span", { class: "chip-id", text: id === "0" ? "CP" : id }), h("span", { class: "chip-status", text: connectors[id] || "Unknown" })),
  );
}

function renderTable() {
  const tbody = $("fleet-rows");
  syncChildren(tbody, state.page.items, (c) => c.id, createRow, updateRow);
  const { total } = state.page;
  const first = total ? state.offset + 1 : 0;
  const last = Math.min(state.offset + state.limit, total);
  setText($("page-info"), total ? `${first}–${last} of ${total}` : "0 of 0");
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = state.offset + state.limit >= total;
  setText($("result-count"), filtersActive() ? `${total} match${total === 1 ? "" : "es"}` : "");
  const empty = $("fleet-empty");
  empty.hidden = total > 0;
  if (!total) {
    setText(empty, filtersActive() ? "No charger matches these filters." : "No charger is registered yet. Register one with POST /api/v1/chargers, or turn on auto-registration.");
  }
  renderStaleness();
}

function createRow(charger) {
  const open = () => openDetail(charger.id);
  const tr = h("tr", { class: "row", onclick: (e) => { if (!e.target.closest("button")) open(); } },
    h("td", {}, h("span", { class: "pill" })),
    h("td", { class: "cell-id" }, h("button", { type: "button", class: "link id", onclick: open }), h("span", { class: "site muted small" })),
    h("td", { class: "col-vendor" }),
    h("td", { class: "cell-fw" }),
    h("td", { class: "cell-conn" }),
    h("td", {}, h("span", { class: "badge" })),
    h("td", { class: "col-updated muted" }),
  );
  return tr;
}

function updateRow(tr, c) {
  const [stateCell, idCell, vendorCell, fwCell, connCell, deltaCell, updatedCell] = tr.children;
  const pill = stateCell.firstElementChild;
  pill.className = `pill ${c.online ? "online" : "offline"}`;
  setText(pill, c.online ? "Online" : "Offline");
  setText(idCell.firstElementChild, c.id);
  setAttr(idCell.firstElementChild, "aria-label", `Open details of ${c.id}`);
  setText(idCell.lastElementChild, c.site || "");
  setText(vendorCell, [c.vendor, c.model].filter(Boolean).join(" · ") || "–");
  setText(fwCell, c.firmwareVersion || "–");
  replaceIfChanged(connCell, JSON.stringify(c.connectors || {}), () => connectorChips(c.connectors));
  const badge = deltaCell.firstElementChild;
  badge.className = `badge ${c.hasDelta ? "pending" : "synced"}`;
  setText(badge, c.hasDelta ? "Pending" : "In sync");
  setAttr(badge, "title", c.hasDelta ? "Desired state differs from what the charger reports" : "Reported state matches desired state");
  setText(updatedCell, epochAgo(c.updatedAt));
  updatedCell.dataset.at = c.updatedAt ?? "";
  setAttr(updatedCell, "title", epochTitle(c.updatedAt, "Shadow last changed"));
  tr.classList.toggle("is-offline", !c.online);
  setAttr(connCell, "title", c.online ? null : "Offline: last known connector states");
  tr.classList.toggle("selected", state.selected === c.id);
  setAttr(tr, "aria-current", state.selected === c.id ? "true" : null);
}

function renderStaleness() {
  const stale = state.tableFetchedAt && Date.now() - state.tableFetchedAt > STALE_AFTER_MS;
  const table = $("fleet-table");
  table.classList.toggle("stale", Boolean(stale));
  setAttr(table, "title", stale ? `Not refreshed since ${clock.format(state.tableFetchedAt)}` : null);
  for (const cell of document.querySelectorAll("#fleet-rows .col-updated")) {
    const at = Number(cell.dataset.at);
    if (at) setText(cell, epochAgo(at));
  }
  if (state.detail) {
    const detailStale = Date.now() - state.detail.fetchedAt > STALE_AFTER_MS;
    $("detail").classList.toggle("stale", detailStale);
    $("detail-stale").hidden = !detailStale;
    if (detailStale) setText($("detail-stale"), `Not refreshed since ${clock.format(state.detail.fetchedAt)}.`);
  }
}

function renderFreshness() {
  const dot = document.querySelector(".freshness-dot");
  const text = $("freshness-text");
  if (document.hidden) {
    setText(text, "Paused (tab hidden)");
    dot.className = "freshness-dot paused";
    return;
  }
  if (!state.lastSuccess) {
    setText(text, state.failures ? "Not connected" : "Connecting…");
    dot.className = `freshness-dot ${state.failures ? "down" : ""}`;
    return;
  }
  const age = Date.now() - state.lastSuccess;
  dot.className = `freshness-dot ${state.failures ? "down" : age > STALE_AFTER_MS ? "late" : "live"}`;
  setText(text, `Updated ${clock.format(state.lastSuccess)} · ${ago(age)}`);
}

// --- filters and paging -----------------------------------------------------------------

function filtersActive() {
  return Object.values(state.filters).some((v) => v !== "");
}

function applyFilters(changes) {
  Object.assign(state.filters, changes);
  state.offset = 0;
  syncFilterForm();
  writeUrl();
  refreshNow();
}

function syncFilterForm() {
  const form = $("filters");
  for (const [name, value] of Object.entries(state.filters)) {
    const field = form.elements.namedItem(name);
    if (field && field.value !== value && document.activeElement !== field) {
      if (field.tagName === "SELECT" && value && ![...field.options].some((o) => o.value === value)) {
        field.append(h("option", { value, text: value }));
      }
      field.value = value;
    }
  }
  $("clear-filters").disabled = !filtersActive();
  for (const kpi of document.querySelectorAll(".kpi[data-filter]")) {
    const f = kpi.dataset.filter;
    const on =
      (f === "online" && state.filters.online === "true") ||
      (f === "offline" && state.filters.online === "false") ||
      (f === "delta" && state.filters.hasDelta === "true");
    kpi.classList.toggle("active", on);
    setAttr(kpi, "aria-pressed", f === "all" ? null : String(on));
  }
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const key of Object.keys(state.filters)) state.filters[key] = params.get(key) || "";
  state.offset = Math.max(0, Number(params.get("offset")) || 0);
  const limit = Number(params.get("limit"));
  if ([25, 50, 100].includes(limit)) state.limit = limit;
  state.selected = params.get("charger") || null;
  state.view = params.get("view") === "usage" ? "usage" : "chargers";
  state.charts.scope = params.get("scope") || "";
  const days = Number(params.get("days"));
  if (PERIODS.includes(days)) state.charts.days = days;
}

function writeUrl() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(state.filters)) if (v) params.set(k, v);
  if (state.offset) params.set("offset", state.offset);
  if (state.limit !== 50) params.set("limit", state.limit);
  if (state.selected) params.set("charger", state.selected);
  if (state.view === "usage") params.set("view", "usage");
  if (state.charts.scope) params.set("scope", state.charts.scope);
  if (state.charts.days !== 30) params.set("days", state.charts.days);
  const search = params.toString();
  history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}${location.hash}`);
}

// --- the charger detail panel -----------------------------------------------------------

function openDetail(id) {
  if (state.view === "usage") showView("chargers");
  if (state.selected !== id) {
    state.selected = id;
    state.detail = null;
    state.cfgShowAll = false;
    for (const el of ["avail-result", "cfg-result", "cmd-result"]) $(el).hidden = true;
    $("cfg-form").reset();
    $("conn-rows").replaceChildren();
    $("cfg-rows").replaceChildren();
    setText($("detail-title"), id);
    setText($("detail-sub"), "Loading…");
    setText($("detail-meta"), "");
    setText($("detail-energy-note"), "Loading…");
  }
  $("detail").hidden = false;
  $("detail-backdrop").hidden = false;
  $("workspace").classList.add("with-detail");
  for (const tr of $("fleet-rows").children) {
    tr.classList.toggle("selected", tr.dataset.key === id);
    setAttr(tr, "aria-current", tr.dataset.key === id ? "true" : null);
  }
  writeUrl();
  $("detail").focus({ preventScroll: true });
  loadDetail();
}

function closeDetail() {
  const previous = state.selected;
  state.selected = null;
  state.detail = null;
  $("detail").hidden = true;
  $("detail-backdrop").hidden = true;
  $("workspace").classList.remove("with-detail");
  for (const tr of $("fleet-rows").children) {
    tr.classList.remove("selected");
    tr.removeAttribute("aria-current");
  }
  writeUrl();
  if (previous) {
    const row = [...$("fleet-rows").children].find((tr) => tr.dataset.key === previous);
    row?.querySelector("button.id")?.focus({ preventScroll: true });
  }
}

async function loadDetail() {
  try {
    await Promise.all([refreshDetail(), refreshDetailUsage(undefined, true)]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) signOut("The token was refused. Sign in again.");
    else if (!(error instanceof ApiError) && error.name !== "AbortError") showFailure(error);
  }
}

async function refreshDetail(signal) {
  const id = state.selected;
  if (!id) return;
  let charger, shadow;
  try {
    [charger, shadow] = await Promise.all([
      api(`chargers/${encodeURIComponent(id)}`, { signal }),
      api(`chargers/${encodeURIComponent(id)}/shadow`, { signal }),
    ]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && state.selected === id) {
      setText($("detail-sub"), `${id} is not registered (any more).`);
      return;
    }
    throw error;
  }
  if (state.selected !== id) return;
  state.detail = { charger: charger.data, doc: shadow.data, etag: shadow.headers.get("ETag"), fetchedAt: Date.now() };
  renderDetail();
  showCommands();
}

function leafTime(doc, section, ...path) {
  let node = doc.metadata?.[section];
  for (const key of path) node = node?.[key];
  return typeof node?.timestamp === "number" ? node.timestamp : null;
}

function renderDetail() {
  const { charger, doc } = state.detail;
  const reported = doc.state?.reported || {};
  const desired = doc.state?.desired || {};
  const delta = doc.state?.delta || {};
  const refused = reported.refused || {};
  const conn = reported.connection || {};

  setText($("detail-title"), charger.id);
  const pill = $("detail-online");
  pill.className = `pill ${charger.online ? "online" : "offline"}`;
  setText(pill, charger.online ? "Online" : "Offline");
  setAttr(pill, "title", conn.since ? `${charger.online ? "Connected" : "Disconnected"} since ${stamp.format(new Date(conn.since * 1000))}` : null);

  const cp = reported.chargePoint || {};
  setText($("detail-sub"), [cp.vendor || charger.vendor, cp.model || charger.model].filter(Boolean).join(" ") || "Never booted");
  const meta = [];
  if (conn.since) meta.push(`${charger.online ? "online" : "offline"} ${epochAgo(conn.since)}`);
  if (conn.ocppVersion) meta.push(`OCPP ${conn.ocppVersion}`);
  if (cp.serialNumber || cp.chargeBoxSerialNumber) meta.push(`serial ${cp.serialNumber || cp.chargeBoxSerialNumber}`);
  if (charger.site) meta.push(`site ${charger.site}`);
  if (charger.tags?.length) meta.push(charger.tags.join(", "));
  meta.push(`shadow v${doc.version}`);
  setText($("detail-meta"), meta.join(" · "));

  renderConnectors(doc, reported, desired, delta, refused);
  renderConfig(doc, reported, desired, delta, refused);
  renderFirmware(doc, reported, desired, delta);
  renderOther(doc, reported);
  renderCommandChoices(conn.ocppVersion === "2.0.1");
  const busy = $("cmd-result").classList.contains("busy") && !$("cmd-result").hidden;
  for (const b of document.querySelectorAll("#commands button")) {
    b.disabled = busy || !charger.online;
    setAttr(b, "title", charger.online ? null : "The charger is offline");
  }
  const raw = JSON.stringify(doc, null, 2);
  if ($("raw-json").textContent !== raw) $("raw-json").textContent = raw;
  renderStaleness();
}

function renderConnectors(doc, reported, desired, delta, refused) {
  const ids = new Set([
    ...Object.keys(reported.connectors || {}),
    ...Object.keys(reported.availability || {}),
    ...Object.keys(desired.availability || {}),
  ]);
  const rows = [...ids].sort((a, b) => Number(a) - Number(b));
  syncChildren($("conn-rows"), rows, (id) => id, createConnectorRow, (tr, id) => {
    const c = reported.connectors?.[id] || {};
    const [idCell, statusCell, availCell, desiredCell] = tr.children;
    setText(idCell.firstChild, id);
    idCell.lastChild.hidden = id !== "0";
    setAttr(idCell, "title", id === "0" ? "Connector 0: the charger as a whole" : null);
    const error = [c.errorCode && c.errorCode !== "NoError" ? c.errorCode : null, c.info, c.vendorErrorCode].filter(Boolean).join(" · ");
    replaceIfChanged(statusCell, `${c.status}|${error}`, () => [
      h("span", { class: `chip ${statusClass(c.status)}` }, h("span", { class: "chip-status", text: c.status || "Unknown" })),
      error ? h("span", { class: "conn-error error-text", text: error }) : null,
    ].filter(Boolean));
    setAttr(statusCell, "title", epochTitle(leafTime(doc, "reported", "connectors", id, "status") ?? c.timestamp, "Status reported"));
    const avail = reported.availability?.[id];
    setText(availCell, avail || "–");
    setAttr(availCell, "title", epochTitle(leafTime(doc, "reported", "availability", id), "Reported"));

    const select = desiredCell.querySelector("select");
    const current = desired.availability?.[id] || "";
    if (!select.dataset.dirty && select.value !== current) select.value = current;
    select.dataset.current = current;
    setAttr(select, "title", epochTitle(leafTime(doc, "desired", "availability", id), "Desired since"));
    const note = desiredCell.querySelector(".note");
    const refusal = refused.availability?.[id];
    const pending = delta.availability?.[id] !== undefined;
    note.className = `note small ${refusal ? "refused" : pending ? "pending" : ""}`;
    setText(note, refusal ? `Refused: ${refusalText(refusal)}` : pending ? "Pending: waiting for the charger" : "");
    setAttr(note, "title", refusal ? epochTitle(refusal.at, "Refused") : null);
    desiredCell.querySelector("button").hidden = !select.dataset.dirty;
  });
  fillConnectorSelect(rows.filter((id) => id !== "0"));
}

function createConnectorRow(id) {
  const select = h("select", { "aria-label": `Desired availability of connector ${id}` },
    h("option", { value: "", text: "Not set" }), h("option", { value: "Operative", text: "Operative" }), h("option", { value: "Inoperative", text: "Inoperative" }));
  const apply = h("button", { type: "button", class: "btn btn-small btn-primary", hidden: true, text: "Apply" });
  select.addEventListener("change", () => {
    if (select.value === select.dataset.current) delete select.dataset.dirty;
    else select.dataset.dirty = "1";
    apply.hidden = !select.dataset.dirty;
  });
  apply.addEventListener("click", async () => {
    const ok = await patchDesired({ availability: { [id]: select.value || null } }, $("avail-result"), apply,
      select.value ? `Connector ${id} should become ${select.value}.` : `Desired availability of connector ${id} removed.`);
    if (ok) {
      delete select.dataset.dirty;
      apply.hidden = true;
    }
  });
  return h("tr", {}, h("th", { scope: "row" }, document.createTextNode(""), h("span", { class: "conn-id-cp", text: "CP" })), h("td", {}), h("td", {}),
    h("td", { class: "desired-cell" }, h("div", { class: "desired-controls" }, select, apply), h("div", { class: "note small" })));
}

// What the command buttons offer differs by OCPP version: 2.0.1 resets Immediate or OnIdle,
// and its log upload reports LogStatusNotification (there is no DiagnosticsStatusNotification).
function renderCommandChoices(v201) {
  for (const button of document.querySelectorAll('#commands button[data-command="reset"]')) {
    const text = v201 ? (button.dataset.type === "Hard" ? "Immediate reset" : "Reset when idle") : `${button.dataset.type} reset`;
    setText(button, text);
  }
  for (const option of $("cmd-trigger-message").options) {
    const original = option.dataset.v16 || option.value;
    option.dataset.v16 = original;
    const shown = v201 ? TRIGGER_201[original] || original : original;
    if (option.textContent !== shown) option.textContent = shown;
  }
}

function fillConnectorSelect(ids) {
  for (const select of [$("cmd-unlock-connector"), $("cmd-schedule-connector")]) {
    const signature = ids.join(",");
    if (select.dataset.sig === signature) continue;
    select.dataset.sig = signature;
    const value = select.value;
    select.replaceChildren(...(ids.length ? ids : ["1"]).map((id) => h("option", { value: id, text: `Connector ${id}` })));
    if (ids.includes(value)) select.value = value;
  }
}

function refusalText(refusal) {
  if (!refusal || typeof refusal !== "object") return String(refusal);
  const parts = [refusal.status || "refused"];
  if (refusal.reason) parts.push(refusal.reason);
  const value = refusal.value !== undefined ? `${JSON.stringify(refusal.value)} ` : "";
  return `${value}${parts.join(" — ")}${refusal.at ? ` (${epochAgo(refusal.at)})` : ""}`;
}

function renderConfig(doc, reported, desired, delta, refused) {
  const rep = reported.config || {};
  const des = desired.config || {};
  const ref = refused.config || {};
  const keys = [...new Set([...Object.keys(rep), ...Object.keys(des), ...Object.keys(ref)])];
  const important = (k) => k in des || k in ref;
  keys.sort((a, b) => Number(important(b)) - Number(important(a)) || a.localeCompare(b));
  const pendingCount = Object.keys(delta.config || {}).filter((k) => !(k in ref)).length;
  const refusedCount = Object.keys(ref).length;
  const summary = [`${Object.keys(rep).length} reported`, `${Object.keys(des).length} desired`];
  if (pendingCount) summary.push(`${pendingCount} pending`);
  if (refusedCount) summary.push(`${refusedCount} refused`);
  setText($("cfg-summary"), summary.join(" · "));

  const COLLAPSED = 8;
  const visible = state.cfgShowAll ? keys : keys.filter((k, i) => important(k) || i < COLLAPSED);
  const toggle = $("cfg-toggle");
  toggle.hidden = visible.length === keys.length && !state.cfgShowAll;
  setText(toggle, state.cfgShowAll ? "Show fewer keys" : `Show all ${keys.length} keys`);
  setAttr(toggle, "aria-expanded", String(state.cfgShowAll));

  syncChildren($("cfg-rows"), visible, (k) => k, createConfigRow, (tr, key) => {
    const [keyCell, repCell, desCell] = tr.children;
    setText(keyCell.firstElementChild, key);
    setText(repCell, key in rep ? rep[key] : "–");
    setAttr(repCell, "title", epochTitle(leafTime(doc, "reported", "config", key), "Reported"));
    const refusal = ref[key];
    const pending = delta.config?.[key] !== undefined;
    tr.className = refusal ? "refused" : pending ? "pending" : "";
    const value = desCell;
    const note = keyCell.lastElementChild;
    setText(value, key in des ? des[key] : "");
    setAttr(desCell, "title", epochTitle(leafTime(doc, "desired", "config", key), "Desired since"));
    setText(note, refusal ? `Refused: ${refusalText(refusal)}` : pending ? "Pending" : "");
    note.className = `note small ${refusal ? "refused" : pending ? "pending" : ""}`;
    tr.querySelector(".cfg-clear").hidden = !(key in des);
  });

  const list = $("cfg-keys");
  replaceIfChanged(list, Object.keys(rep).sort().join(","), () => Object.keys(rep).sort().map((k) => h("option", { value: k })));
}

function createConfigRow(key) {
  const edit = h("button", { type: "button", class: "btn btn-small btn-quiet", text: "Edit", "aria-label": `Set desired value of ${key}`, onclick: () => {
    $("cfg-key").value = key;
    const current = state.detail?.doc.state?.desired?.config?.[key] ?? state.detail?.doc.state?.reported?.config?.[key] ?? "";
    $("cfg-value").value = current;
    $("cfg-value").focus();
    $("cfg-value").select();
  } });
  const clear = h("button", { type: "button", class: "btn btn-small btn-quiet cfg-clear", text: "Unset", "aria-label": `Remove the desired value of ${key}`, onclick: () =>
    patchDesired({ config: { [key]: null } }, $("cfg-result"), clear, `Desired value of ${key} removed.`) });
  return h("tr", {},
    h("th", { scope: "row" }, h("code", {}), h("span", { class: "note small" })),
    h("td", { class: "value" }),
    h("td", { class: "value" }),
    h("td", { class: "actions" }, edit, clear));
}

function renderFirmware(doc, reported, desired, delta) {
  const fw = reported.firmware || {};
  const facts = [
    ["Reported version", fw.version ?? "–", leafTime(doc, "reported", "firmware", "version")],
    fw.status
      ? ["Update status", `${fw.status}${fw.updatedAt ? ` (${epochAgo(fw.updatedAt)})` : ""}`, leafTime(doc, "reported", "firmware", "status")]
      : ["Update status", "No update reported", null],
    ["Desired version", desired.firmware?.version ?? "Not set", leafTime(doc, "desired", "firmware", "version")],
  ];
  if (delta.firmware) facts.push(["Rollout", "Pending: the charger runs another version", null]);
  renderFacts($("fw-facts"), facts);
}

function renderOther(doc, reported) {
  const other = Object.entries(reported).filter(([k]) => !KNOWN_REPORTED.has(k));
  $("other-card").hidden = other.length === 0;
  renderFacts($("other-facts"), other.map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v), leafTime(doc, "reported", k)]));
}

function renderFacts(dl, facts) {
  replaceIfChanged(dl, JSON.stringify(facts.map(([a, b]) => [a, b])), () =>
    facts.flatMap(([label, value, at]) => [h("dt", { text: label }), h("dd", { text: value, title: epochTitle(at, "Since") })]),
  );
  // Titles move with time ("3 min ago"): refresh them without rebuilding.
  [...dl.querySelectorAll("dd")].forEach((dd, i) => setAttr(dd, "title", epochTitle(facts[i]?.[2], "Since")));
}

// --- desired-state changes --------------------------------------------------------------

async function patchDesired(patch, resultEl, button, successText) {
  const detail = state.detail;
  if (!detail) return false;
  const id = detail.charger.id;
  if (button) button.disabled = true;
  showResult(resultEl, "busy", "Sending…");
  try {
    const { data } = await api(`chargers/${encodeURIComponent(id)}/shadow/desired`, {
      method: "PATCH",
      body: patch,
      headers: { "Content-Type": "application/merge-patch+json", ...(detail.etag ? { "If-Match": detail.etag } : {}) },
    });
    showResult(resultEl, "ok", `${successText} Accepted as shadow version ${data.version}; the platform now drives the charger toward it.`);
    await refreshDetail().catch(() => {});
    return true;
  } catch (error) {
    showProblem(resultEl, error);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

function showResult(el, kind, text, extra = []) {
  el.hidden = false;
  el.className = `result ${kind}`;
  el.replaceChildren(h("span", { text }), ...extra);
}

function showProblem(el, error) {
  if (error instanceof Unreachable) {
    showResult(el, "error", "The API cannot be reached; nothing was changed. Try again when the banner clears.");
    return;
  }
  if (!(error instanceof ApiError)) {
    showResult(el, "error", `Failed: ${error.message}`);
    return;
  }
  const p = error.problem;
  if (error.status === 401) {
    signOut("The token was refused (unknown or revoked). Sign in again.");
    return;
  }
  if (error.status === 412) {
    const reload = h("button", { type: "button", class: "btn btn-small", text: "Reload the shadow", onclick: async () => {
      await refreshDetail().catch(() => {});
      showResult(el, "info", "Reloaded. Review the current values, then apply your change again.");
    } });
    showResult(el, "conflict", `Conflict: the shadow changed since you loaded it${error.headers?.get("ETag") ? ` (now version ${error.headers.get("ETag").replaceAll('"', "")})` : ""}. Nothing was changed.`, [" ", reload]);
    return;
  }
  const list = (p.errors || []).map((e) =>
    h("li", {}, h("code", { text: e.pointer ?? e.parameter ?? e.header ?? "" }), " ", e.message || ""));
  const head = `${p.title || `HTTP ${error.status}`} (${error.status})${p.detail ? `: ${p.detail}` : ""}`;
  showResult(el, "error", head, list.length ? [h("ul", { class: "problem-errors" }, list)] : []);
}

// --- remote operations (feature-detected) ------------------------------------------------

// The API that serves this page has every command route, so there is nothing to probe
// (a GET on a POST-only route to find out logged a 405 in the console); a viewer's try is
// answered 403 and shown like any other refusal.
function showCommands() {
  $("commands").hidden = false;
}

// Each command's body in the charger's OCPP version: the API takes the same names for
// both, with the request of the charger's version (docs/ocpp201.md, Commands).
const RESET_201 = { Soft: "OnIdle", Hard: "Immediate" };
const TRIGGER_201 = { DiagnosticsStatusNotification: "LogStatusNotification" };

function isOcpp201() {
  return state.detail?.doc?.state?.reported?.connection?.ocppVersion === "2.0.1";
}

const COMMANDS = {
  reset: (button, v201) => ({
    payload: v201 ? { type: RESET_201[button.dataset.type] } : { type: button.dataset.type },
    confirm: button.dataset.type === "Hard"
      ? "Hard reset: the charger reboots at once and any charging session on it stops."
      : v201
        ? "Reset when idle: the station reboots once its charging sessions have ended."
        : "Soft reset: the charger stops its sessions gracefully, then reboots.",
    label: v201 ? (button.dataset.type === "Hard" ? "Immediate reset" : "Reset when idle") : `${button.dataset.type} reset`,
  }),
  unlock: (button, v201) => {
    const connectorId = Number($("cmd-unlock-connector").value || 1);
    return {
      // A 2.0.1 port is an EVSE: its (first) connector is unlocked.
      payload: v201 ? { evseId: connectorId, connectorId: 1 } : { connectorId },
      confirm: `Unlock connector ${connectorId}: a cable plugged in there is released and its session stops.`,
      label: `Unlock connector ${connectorId}`,
    };
  },
  trigger: (button, v201) => {
    const chosen = $("cmd-trigger-message").value;
    const requestedMessage = v201 ? TRIGGER_201[chosen] || chosen : chosen;
    return { payload: { requestedMessage }, confirm: `Ask the charger to send ${requestedMessage} now.`, label: `Trigger ${requestedMessage}` };
  },
  "get-diagnostics": () => {
    const protocol = $("cmd-diagnostics-protocol").value;
    return {
      payload: protocol ? { protocol } : {},
      confirm: "The charger uploads its diagnostics file to this platform (one-time grant); it appears under Diagnostics.",
      label: "Get diagnostics",
    };
  },
  "get-composite-schedule": (button, v201) => {
    const connectorId = Number($("cmd-schedule-connector").value || 1);
    return {
      payload: v201 ? { evseId: connectorId, duration: 86400, chargingRateUnit: "A" } : { connectorId, duration: 86400, chargingRateUnit: "A" },
      confirm: `Read the charging schedule connector ${connectorId} follows for the next 24 hours.`,
      label: `Schedule of connector ${connectorId}`,
    };
  },
  "clear-charging-profile": (button, v201) => {
    const connectorId = Number($("cmd-schedule-connector").value || 1);
    return {
      payload: v201 ? { chargingProfileCriteria: { evseId: connectorId } } : { connectorId },
      confirm: `Remove every charging profile of connector ${connectorId}: it charges at its full rate until a new limit is set.`,
      label: `Clear profiles of connector ${connectorId}`,
    };
  },
  "cancel-reservation": () => {
    const reservationId = Number($("cmd-reservation-id").value);
    return {
      payload: { reservationId },
      confirm: `Cancel reservation ${reservationId}: its connector is free again for anyone.`,
      label: `Cancel reservation ${reservationId}`,
    };
  },
  "get-local-list-version": () => ({
    payload: {},
    confirm: "Read the version of the charger's local authorization list.",
    label: "Local list version",
  }),
  "clear-cache": () => ({
    payload: {},
    confirm: "Clear the charger's authorization cache: idTags are checked online again.",
    label: "Clear cache",
  }),
};

async function runCommand(button) {
  const name = button.dataset.command;
  const id = state.selected;
  if (!id || !COMMANDS[name]) return;
  const { payload, confirm, label } = COMMANDS[name](button, isOcpp201());
  if (!(await confirmDialog(`${label} on ${id}?`, confirm, label))) return;
  const el = $("cmd-result");
  for (const b of document.querySelectorAll("#commands button")) b.disabled = true;
  showResult(el, "busy", `${label}: waiting for the charger's answer…`);
  try {
    const { data } = await api(`chargers/${encodeURIComponent(id)}/commands/${name}`, { method: "POST", body: payload });
    const response = data?.response;
    const answer = response?.status ?? data?.status ?? (response ? JSON.stringify(response) : data ? JSON.stringify(data) : "done");
    showResult(el, String(answer).match(/Rejected|NotSupported|Failed/) ? "error" : "ok", `${label}: the charger answered ${answer}.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) showResult(el, "error", `${label}: the charger is offline, nothing was sent.`);
    else if (error instanceof ApiError && error.status === 504) showResult(el, "error", `${label}: no answer from the charger in time; it may still act on it.`);
    else showProblem(el, error);
  } finally {
    const online = Boolean(state.detail?.charger.online);
    for (const b of document.querySelectorAll("#commands button")) b.disabled = !online;
  }
}

function confirmDialog(title, text, action) {
  const dialog = $("confirm");
  setText($("confirm-title"), title);
  setText($("confirm-text"), text);
  setText($("confirm-ok"), action);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    // Cancel is the safe default. Focused here, not by an autofocus attribute, which the
    // page would process at load (logging that another element already has focus).
    dialog.querySelector('button[value="cancel"]').focus();
  });
}

// --- alerts (feature-detected) ------------------------------------------------------------

async function refreshAlerts(signal) {
  const f = state.features;
  if (f.alerts === false && Date.now() - f.alertsProbedAt < PROBE_AGAIN_MS) return;
  let data;
  try {
    // Open alerts only (pending and firing); fall back to everything if the filter is refused.
    ({ data } = await api("alerts?state=firing&state=pending&limit=100", { signal }).catch((error) => {
      if (error instanceof ApiError && error.status === 422) return api(`alerts${query({ limit: 50 })}`, { signal });
      throw error;
    }));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    f.alertsProbedAt = Date.now();
    if (error.noRoute) {
      f.alerts = false;
      $("alerts").hidden = true;
      return;
    }
    f.alerts = true;
    $("alerts").hidden = false;
    setText($("alerts-note"), `Alerts unavailable: ${error.problem.detail || error.problem.title}`);
    return;
  }
  f.alerts = true;
  f.alertsProbedAt = Date.now();
  $("alerts").hidden = false;
  renderAlerts(Array.isArray(data) ? data : data?.items || []);
}

const pick = (obj, ...names) =>
  names.map((n) => n.split(".").reduce((o, k) => o?.[k], obj)).find((v) => v !== undefined && v !== null && v !== "");
const SEVERITY_RANK = { critical: 0, error: 1, major: 1, warning: 2, minor: 2, info: 3 };
const STATE_RANK = { firing: 0, pending: 1 };

function renderAlerts(alerts) {
  const stateOf = (a) => String(pick(a, "state", "status") || "").toLowerCase();
  const active = (a) => !["resolved", "closed", "cleared", "inactive"].includes(stateOf(a));
  const firedAt = (a) => {
    const at = pick(a, "firedAt", "activeAt", "startsAt", "raisedAt", "createdAt", "at", "timestamp");
    return typeof at === "number" ? at : at ? Date.parse(at) / 1000 : null;
  };
  const rows = alerts
    .map((a, i) => ({ a, i, sev: String(pick(a, "severity", "labels.severity", "level") || "info").toLowerCase() }))
    .sort((x, y) =>
      Number(active(y.a)) - Number(active(x.a)) ||
      (STATE_RANK[stateOf(x.a)] ?? 2) - (STATE_RANK[stateOf(y.a)] ?? 2) ||
      (SEVERITY_RANK[x.sev] ?? 4) - (SEVERITY_RANK[y.sev] ?? 4) ||
      (firedAt(y.a) ?? 0) - (firedAt(x.a) ?? 0) || x.i - y.i);
  const activeCount = alerts.filter(active).length;
  setText($("alerts-count"), activeCount ? String(activeCount) : "");
  $("alerts-count").classList.toggle("hot", alerts.some((a) => stateOf(a) === "firing"));
  setText($("alerts-note"), activeCount ? `${alerts.filter((a) => stateOf(a) === "firing").length} firing · ${alerts.filter((a) => stateOf(a) === "pending").length} pending` : "No open alerts. All quiet.");
  syncChildren($("alert-list"), rows, ({ a, i }) => pick(a, "id", "alertId", "fingerprint") ?? `i${i}`,
    () => h("li", { class: "alert" }, h("span", { class: "sev" }), h("span", { class: "alert-title" }), h("button", { type: "button", class: "link alert-charger" }), h("span", { class: "alert-state small muted" }), h("span", { class: "alert-time small muted" })),
    (li, { a, sev }) => {
      const [sevEl, titleEl, chargerEl, stateEl, timeEl] = li.children;
      li.className = `alert sev-${sev} state-${stateOf(a) || "unknown"} ${active(a) ? "active" : "resolved"}`;
      setText(sevEl, sev);
      setText(titleEl, pick(a, "annotations.summary", "annotations.title", "summary", "title", "message", "rule", "name") || "Alert");
      setAttr(titleEl, "title", pick(a, "annotations.description", "description", "message") || null);
      const charger = pick(a, "labels.charger", "chargerId", "charger_id", "charger");
      setText(chargerEl, charger || "");
      chargerEl.hidden = !charger;
      setAttr(chargerEl, "aria-label", charger ? `Open charger ${charger}` : null);
      chargerEl.onclick = charger ? () => openDetail(String(charger)) : null;
      const flags = [stateOf(a), a.acknowledged ? "acknowledged" : null, a.silenced ? "silenced" : null].filter(Boolean);
      setText(stateEl, flags.join(" · "));
      const seconds = firedAt(a);
      setText(timeEl, seconds ? epochAgo(seconds) : "");
      setAttr(timeEl, "title", epochTitle(seconds, "Since"));
    });
}

// --- charts: the "Usage & health" view and the detail panel's energy ---------------------
//
// Drawn by uPlot (vendored: dashboard/uplot.iife.min.js); the heatmap and the bar lists are
// plain elements. Charts refresh every CHARTS_REFRESH_MS while shown, not at every poll.

const CHARTS_REFRESH_MS = 60000;
const UPTIME_MONTHS = 6;
const UPTIME_TARGET = 97;
const PERIODS = [7, 30, 90, 365];
const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const HOT_SEVERITIES = new Set(["critical", "error", "major"]);
const plots = new Map(); // element id -> { u, shape }
const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const tickDay = new Intl.DateTimeFormat(undefined, { month: "numeric", day: "numeric" });
const DAY = 86400;
// Ticks of a per-day axis fall on days only; counts on whole numbers only.
const DAY_AXIS = {
  space: 44,
  incrs: [DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY, 91 * DAY],
  values: (u, ticks) => ticks.map((t) => tickDay.format(new Date(t * 1000))),
};
const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function palette() {
  return [cssVar("--accent", "#1f6feb"), cssVar("--ok", "#1a7f37"), cssVar("--st-suspendedev", "#8250df"),
    cssVar("--st-reserved", "#bc4c00"), cssVar("--st-preparing", "#0f7b8a"), cssVar("--st-unavailable", "#6e7781")];
}

function splitScope(scope) {
  const at = scope.indexOf(":");
  return at < 0 ? ["fleet", null] : [scope.slice(0, at), scope.slice(at + 1)];
}

function scopeParams(scope) {
  const [kind, id] = splitScope(scope);
  return kind === "site" ? { site: id } : kind === "charger" ? { chargerId: id } : {};
}

function scopeName(scope) {
  const [kind, id] = splitScope(scope);
  return kind === "site" ? `site ${id}` : kind === "charger" ? `charger ${id}` : "the whole fleet";
}

/** Local midnight `days - 1` days ago: the period covers `days` calendar days, today included. */
function periodStart(days) {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() - (days - 1));
  return d;
}

function dayEpoch(isoDate) {
  const [y, m, d] = isoDate.split("-").map(Number);
  return new Date(y, m - 1, d).getTime() / 1000;
}

function localDate(date) {
  return `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;
}

/** One uPlot per element, rebuilt when the series change, else given the new data. */
function plot(el, opts, data, height = 220) {
  const shape = JSON.stringify(opts.series.map((s) => s.label || ""));
  const width = el.clientWidth || el.parentElement?.clientWidth || 400;
  const entry = plots.get(el.id);
  el.classList.remove("is-empty");
  if (entry && entry.shape === shape) {
    entry.u.setData(data);
    return entry.u;
  }
  entry?.u.destroy();
  const muted = cssVar("--muted", "#5a6676");
  const grid = cssVar("--border", "#d5dbe3");
  const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const u = new uPlot({
    width, height, ...opts,
    axes: (opts.axes || [{}, {}]).map((a) => ({ ...axis, ...a })),
  }, data, el);
  plots.set(el.id, { u, shape });
  chartResizer.observe(el);
  return u;
}

const chartResizer = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    const entry = plots.get(target.id);
    const width = target.clientWidth;
    if (entry && width > 0 && Math.abs(entry.u.width - width) > 2) entry.u.setSize({ width, height: entry.u.height });
  }
});

function emptyChart(el, text) {
  plots.get(el.id)?.u.destroy();
  plots.delete(el.id);
  el.replaceChildren();
  el.classList.add("is-empty");
  el.dataset.empty = text;
}

/** A #rrggbb colour at 75% opacity (what the canvas fills bars with). */
function translucent(color) {
  return /^#[0-9a-f]{6}$/i.test(color) ? `${color}bf` : color;
}

function barSeries(label, stroke, unit, digits = 0) {
  return {
    label, stroke, fill: translucent(stroke), width: 1,
    paths: uPlot.paths.bars({ size: [0.7, 48], align: 0 }),
    points: { show: false },
    value: (u, v) => (v === null || v === undefined ? "–" : `${v.toFixed(digits)}${unit}`),
  };
}

function dayBars(el, days, field, label, unit, digits, height) {
  const xs = days.map((d) => dayEpoch(d.date));
  const ys = days.map((d) => d[field]);
  el.dataset.points = String(xs.length);
  el.dataset.total = String(Math.round(ys.reduce((a, b) => a + b, 0) * 1000) / 1000);
  plot(el, {
    legend: { show: height > 180 },
    scales: { x: { time: true, range: (u, lo, hi) => [lo - 43200, hi + 43200] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [{ value: (u, v) => (v ? dayFormat.format(new Date(v * 1000)) : "–") }, barSeries(label, cssVar("--accent", "#1f6feb"), unit, digits)],
    axes: [DAY_AXIS, { size: 48, ...(digits === 0 ? { incrs: COUNT_INCRS } : {}) }],
  }, [xs, ys], height);
}

function chartNote(id, text, error = false) {
  const el = $(id);
  setText(el, text);
  el.classList.toggle("chart-error", error);
}

/** Run one chart's part; its failure shows on its card, not as the page's failure. */
async function part(noteIds, work) {
  try {
    await work();
  } catch (error) {
    if (error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) throw error;
    const what = error instanceof ApiError ? error.problem.detail || error.problem.title : error.message;
    for (const id of noteIds) chartNote(id, `Unavailable: ${what}`, true);
  }
}

function chartsReady() {
  if (typeof uPlot === "function") return true;
  setText($("charts-summary"), "The charting library did not load; reload the page.");
  return false;
}

async function refreshCharts(signal, force = false) {
  const c = state.charts;
  if (state.view !== "usage" || !chartsReady()) return;
  if (!force && Date.now() - c.fetchedAt < CHARTS_REFRESH_MS) return;
  c.fetchedAt = Date.now();
  const gen = ++c.generation;
  fillScopeSelect();
  const scope = c.scope;
  await Promise.all([
    part(["energy-note", "sessions-note", "heatmap-note", "util-note"], () => refreshUsage(scope, signal, gen)),
    part(["uptime-note"], () => refreshUptime(scope, signal, gen)),
    part(["fwshare-note"], () => refreshFirmwareShare(scope, signal, gen)),
    part(["alerts-chart-note"], () => refreshAlertChart(scope, signal, gen)),
    part(["site-load-note"], () => refreshSiteLoad(scope, signal, gen)),
  ]);
}

/** A site's load (kW per step, from its meter values) against its limit, with the
 * allocator's last report: shown when the charts show one site. */
async function refreshSiteLoad(scope, signal, gen) {
  const [kind, id] = splitScope(scope);
  const card = $("site-load-card");
  card.hidden = kind !== "site";
  if (kind !== "site") return;
  const { days } = state.charts;
  const step = days <= 30 ? "15m" : days <= 90 ? "1h" : "6h";
  const site = encodeURIComponent(id);
  const [{ data: twin }, { data: load }] = await Promise.all([
    api(`sites/${site}`, { signal }),
    api(`sites/${site}/load${query({ from: periodStart(days).toISOString(), step })}`, { signal }),
  ]);
  if (gen !== state.charts.generation) return; // a newer refresh has begun
  const reported = twin.reported || {};
  const desired = twin.desired || {};
  const phases = desired.phases || 3;
  const voltage = desired.voltage || 230;
  const limitA = twin.limitNow?.limitA ?? null;
  const limitKw = limitA === null ? null : (limitA * voltage * phases) / 1000;
  const peak = load.peak ? `peak ${number.format(load.peak.kW)} kW at ${new Date(load.peak.at).toLocaleString()}` : "no load recorded";
  const now = reported.loadA === undefined ? "not allocated yet" : `now ${number.format(reported.loadA)} A of ${number.format(reported.limitA)} A, headroom ${number.format(reported.headroomA)} A`;
  const breach = reported.lastBreach ? ` · last over its limit ${new Date(reported.lastBreach.at * 1000).toLocaleString()} by ${number.format(reported.lastBreach.amountA)} A` : "";
  chartNote("site-load-note", `${step} steps · ${peak} · ${now}${breach}`, Boolean(reported.lastBreach));
  const el = $("chart-site-load");
  el.dataset.points = String(load.steps.length);
  if (!load.steps.length) {
    emptyChart(el, "No load recorded");
    return;
  }
  const xs = load.steps.map((s) => Date.parse(s.at) / 1000);
  const ys = load.steps.map((s) => s.kW);
  const fmt = (u, v) => (v === null || v === undefined ? "–" : `${number.format(v)} kW`);
  plot(el, {
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi, limitKw || 0) * 1.1] } },
    series: [
      { value: (u, v) => (v ? new Date(v * 1000).toLocaleString() : "–") },
      { label: "Load", stroke: cssVar("--accent", "#1f6feb"), width: 2, value: fmt, points: { show: false } },
      { label: "Limit now", stroke: cssVar("--bad", "#cf222e"), width: 1.5, dash: [6, 4], value: fmt, points: { show: false } },
    ],
  }, [xs, ys, xs.map(() => limitKw)], 220);
}

async function refreshUsage(scope, signal, gen) {
  const { days } = state.charts;
  const { data } = await api(`usage${query({ ...scopeParams(scope), from: periodStart(days).toISOString(), timezone: TIME_ZONE })}`, { signal });
  if (gen !== state.charts.generation) return; // a newer refresh has begun
  setText($("charts-summary"), `${scopeName(scope)}: ${data.sessions} sessions · ${number.format(data.energyKwh)} kWh · utilization ${data.utilization === null ? "–" : percent.format(data.utilization)}`);
  chartNote("energy-note", `${number.format(data.energyKwh)} kWh in ${data.days.length} days`);
  chartNote("sessions-note", `${data.sessions} started`);
  dayBars($("chart-energy"), data.days, "energyKwh", "Energy", " kWh", 1, 220);
  dayBars($("chart-sessions"), data.days, "sessions", "Sessions", "", 0, 220);
  renderHeatmap(data.hourOfWeek.sessionsStarted);
  renderUtilization(data.chargers);
}

function renderHeatmap(matrix) {
  const max = Math.max(0, ...matrix.flat());
  let peak = null;
  matrix.forEach((row, d) => row.forEach((n, hour) => { if (n && n === max && !peak) peak = [d, hour]; }));
  const busiest = peak ? `Busiest: ${DAY_NAMES[peak[0]]} ${String(peak[1]).padStart(2, "0")}:00 (${max})` : "No session started in this period";
  chartNote("heatmap-note", busiest);
  setAttr($("heatmap"), "aria-label", `Sessions started by day of week and hour. ${busiest}.`);
  const el = $("heatmap");
  replaceIfChanged(el, JSON.stringify(matrix), () => {
    const cells = [h("span")];
    for (let hour = 0; hour < 24; hour++) cells.push(h("span", { class: "hm-head", text: hour % 3 === 0 ? String(hour).padStart(2, "0") : "" }));
    matrix.forEach((row, d) => {
      cells.push(h("span", { class: "hm-day", text: DAY_NAMES[d] }));
      row.forEach((n, hour) => {
        const level = n === 0 ? 0 : Math.max(1, Math.ceil((5 * n) / max));
        const isPeak = peak && peak[0] === d && peak[1] === hour;
        const label = `${DAY_NAMES[d]} ${String(hour).padStart(2, "0")}:00–${String(hour + 1).padStart(2, "0")}:00: ${n} session${n === 1 ? "" : "s"} started`;
        cells.push(h("span", { class: `hm-cell l${level}${isPeak ? " peak" : ""}`, title: label, dataset: { count: String(n) } }));
      });
    });
    return cells;
  });
}

function barRow(label, share, valueText, title, kind = "", onclick = null) {
  const fill = h("span", { class: `bar-fill ${kind}` });
  fill.style.width = `${Math.max(0, Math.min(100, share * 100)).toFixed(2)}%`;
  const name = onclick
    ? h("button", { type: "button", class: "link bar-label", text: label, onclick, title: `Show the charts of ${label}` })
    : h("span", { class: "bar-label", text: label, title: label });
  return h("li", { class: "bar-row", title }, name, h("span", { class: "bar-track", "aria-hidden": "true" }, fill), h("span", { class: "bar-value", text: valueText }));
}

function renderUtilization(chargers) {
  const rows = [...chargers].sort((a, b) => (b.utilization ?? 0) - (a.utilization ?? 0) || a.chargerId.localeCompare(b.chargerId));
  const top = Math.max(0.0001, ...rows.map((r) => r.utilization ?? 0));
  chartNote("util-note", rows.length ? `charging time ÷ (ports × period) · ${rows.length} charger${rows.length === 1 ? "" : "s"}` : "");
  replaceIfChanged($("util-bars"), JSON.stringify(rows), () => rows.length
    ? rows.map((r) => barRow(r.chargerId, (r.utilization ?? 0) / top, r.utilization === null ? "–" : percent.format(r.utilization),
      `${r.chargerId}: ${r.sessions} sessions, ${number.format(r.chargingHours)} h charging on ${r.ports} port${r.ports === 1 ? "" : "s"}, ${number.format(r.energyKwh)} kWh`,
      "", state.charts.scope === `charger:${r.chargerId}` ? null : () => setChartsScope(`charger:${r.chargerId}`)))
    : [h("li", { class: "bars-empty", text: "No charger in scope." })]);
}

function lastMonths(count) {
  const now = new Date();
  const months = [];
  for (let i = count - 1; i >= 0; i--) {
    const d = new Date(now.getFullYear(), now.getMonth() - i, 1);
    months.push({ key: `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`, x: d.getTime() / 1000 });
  }
  return months;
}

async function refreshUptime(scope, signal, gen) {
  const [kind, id] = splitScope(scope);
  const months = lastMonths(UPTIME_MONTHS);
  // One request per month, sequentially: each one works through a year of status points.
  const answers = [];
  for (const m of months) answers.push((await api(`uptime${query({ month: m.key, ...scopeParams(scope) })}`, { signal })).data);
  if (gen !== state.charts.generation) return; // a newer refresh has begun
  const siteOf = new Map((state.fleet?.items || []).map((c) => [c.id, c.site || "no site"]));
  // Per port for one charger; otherwise the mean of the ports' uptimes per site.
  const groupOf = kind === "charger" ? (p) => p.port_id : (p) => (kind === "site" ? id : siteOf.get(p.charger_id) || "no site");
  const groups = new Map();
  answers.forEach((answer, i) => {
    for (const port of answer.ports) {
      const key = groupOf(port);
      if (!groups.has(key)) groups.set(key, months.map(() => []));
      groups.get(key)[i].push(port.uptime);
    }
  });
  const names = [...groups.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const el = $("chart-uptime");
  if (!names.length) {
    chartNote("uptime-note", "");
    emptyChart(el, "No port to report yet");
    return;
  }
  const series = names.map((name) => groups.get(name).map((list) => (list.length ? list.reduce((a, b) => a + b, 0) / list.length : null)));
  const values = series.flat().filter((v) => v !== null);
  const low = Math.min(UPTIME_TARGET, ...values);
  const below = names.filter((name, i) => (series[i].at(-1) ?? 100) < UPTIME_TARGET);
  chartNote("uptime-note", `${kind === "charger" ? "per port" : "mean of ports, per site"} · 12 months ending each month · ${below.length ? `below 97%: ${below.join(", ")}` : "all at or above 97%"}`, below.length > 0);
  el.dataset.points = String(months.length);
  el.dataset.series = names.join("|");
  const colors = palette();
  const fmt = (u, v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)}%`);
  plot(el, {
    scales: { x: { time: true }, y: { range: () => [Math.max(0, Math.floor(low) - 1), 100.5] } },
    series: [
      { value: (u, v) => (v ? new Date(v * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short" }) : "–") },
      ...names.map((name, i) => ({ label: name, stroke: colors[i % colors.length], width: 2, value: fmt, points: { size: 6 } })),
      { label: "97% target", stroke: cssVar("--bad", "#cf222e"), width: 1.5, dash: [6, 4], points: { show: false }, value: fmt },
    ],
    axes: [{ space: 60 }, { size: 56, values: (u, ticks) => ticks.map((t) => `${t}%`) }],
  }, [months.map((m) => m.x), ...series, months.map(() => UPTIME_TARGET)]);
}

async function refreshFirmwareShare(scope, signal, gen) {
  const [kind, id] = splitScope(scope);
  const { data: catalog } = await api("firmware", { signal });
  if (gen !== state.charts.generation) return; // a newer refresh has begun
  const newest = new Map();
  for (const image of catalog) {
    const key = `${image.vendor}\u0000${image.model}`;
    if (!newest.has(key)) newest.set(key, image.version); // the catalog lists newest first
  }
  const chargers = (state.fleet?.items || []).filter((c) => kind === "fleet" || (kind === "site" ? c.site === id : c.id === id));
  const models = new Map();
  for (const c of chargers) {
    if (!c.vendor && !c.model) continue;
    const key = `${c.vendor || ""}\u0000${c.model || ""}`;
    if (!models.has(key)) models.set(key, { vendor: c.vendor, model: c.model, total: 0, current: 0, versions: new Map() });
    const m = models.get(key);
    m.total += 1;
    if (c.firmwareVersion && c.firmwareVersion === newest.get(key)) m.current += 1;
    m.versions.set(c.firmwareVersion || "unknown", (m.versions.get(c.firmwareVersion || "unknown") || 0) + 1);
  }
  const rows = [...models.entries()].map(([key, m]) => ({ ...m, latest: newest.get(key) ?? null }))
    .sort((a, b) => a.current / a.total - b.current / b.total || `${a.vendor}${a.model}`.localeCompare(`${b.vendor}${b.model}`));
  const all = rows.reduce((s, r) => s + r.total, 0);
  const current = rows.reduce((s, r) => s + (r.latest ? r.current : 0), 0);
  const known = rows.filter((r) => r.latest).reduce((s, r) => s + r.total, 0);
  chartNote("fwshare-note", all ? `${current} of ${known} chargers with a catalog image are up to date${known < all ? ` · ${all - known} of models not in the catalog` : ""}` : "");
  replaceIfChanged($("fw-bars"), JSON.stringify(rows.map((r) => [r.vendor, r.model, r.total, r.current, r.latest])), () => rows.length
    ? rows.map((r) => {
      const name = [r.vendor, r.model].filter(Boolean).join(" · ");
      const others = [...r.versions.entries()].map(([v, n]) => `${v}: ${n}`).join(", ");
      return r.latest
        ? barRow(name, r.current / r.total, `${r.current} of ${r.total}`, `${name}: newest in the catalog is ${r.latest}; running ${others}`, r.current === r.total ? "ok" : "behind")
        : barRow(name, 0, `${r.total}`, `${name}: no image of this model in the catalog; running ${others}`);
    })
    : [h("li", { class: "bars-empty", text: "No charger in scope has booted yet (vendor and model unknown)." })]);
}

async function refreshAlertChart(scope, signal, gen) {
  const [kind, id] = splitScope(scope);
  const { days } = state.charts;
  const { data } = await api(`alerts${query({ limit: 1000, ...(kind === "charger" ? { chargerId: id } : {}) })}`, { signal });
  if (gen !== state.charts.generation) return; // a newer refresh has begun
  const siteChargers = kind === "site" ? new Set((state.fleet?.items || []).filter((c) => c.site === id).map((c) => c.id)) : null;
  const start = periodStart(days);
  const dates = [];
  for (let d = new Date(start); d <= new Date(); d.setDate(d.getDate() + 1)) dates.push(localDate(d));
  const index = new Map(dates.map((d, i) => [d, i]));
  const total = dates.map(() => 0);
  const hot = dates.map(() => 0);
  for (const alert of Array.isArray(data) ? data : []) {
    if (siteChargers && !siteChargers.has(alert.labels?.charger)) continue;
    const i = index.get(localDate(new Date(alert.activeAt * 1000)));
    if (i === undefined) continue;
    total[i] += 1;
    if (HOT_SEVERITIES.has(String(alert.severity).toLowerCase())) hot[i] += 1;
  }
  const sum = total.reduce((a, b) => a + b, 0);
  const el = $("chart-alerts");
  el.dataset.points = String(dates.length);
  el.dataset.total = String(sum);
  chartNote("alerts-chart-note", `${sum} raised · ${hot.reduce((a, b) => a + b, 0)} critical${data.length >= 1000 ? " · the newest 1000 alerts only" : ""}`);
  const xs = dates.map(dayEpoch);
  plot(el, {
    scales: { x: { time: true, range: (u, lo, hi) => [lo - 43200, hi + 43200] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [
      { value: (u, v) => (v ? dayFormat.format(new Date(v * 1000)) : "–") },
      barSeries("All alerts", cssVar("--warn", "#9a6700"), ""),
      barSeries("Critical", cssVar("--bad", "#cf222e"), ""),
    ],
    axes: [DAY_AXIS, { size: 48, incrs: COUNT_INCRS }],
  }, [xs, total, hot], 200);
}

function fillScopeSelect() {
  const select = $("charts-scope");
  const sites = [...new Set((state.fleet?.items || []).map((c) => c.site).filter(Boolean))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const scope = state.charts.scope;
  const [kind, id] = splitScope(scope);
  const chargers = (state.fleet?.items || []).map((c) => c.id);
  if (kind === "site" && !sites.includes(id)) sites.push(id);
  const signature = JSON.stringify([sites, chargers]);
  if (select.dataset.sig !== signature) {
    select.dataset.sig = signature;
    const groups = [h("option", { value: "", text: "Whole fleet" })];
    if (sites.length) groups.push(h("optgroup", { label: "Sites" }, sites.map((s) => h("option", { value: `site:${s}`, text: s }))));
    if (chargers.length) groups.push(h("optgroup", { label: "Chargers" }, chargers.map((c) => h("option", { value: `charger:${c}`, text: c }))));
    select.replaceChildren(...groups);
  }
  if (kind === "charger" && ![...select.options].some((o) => o.value === scope)) select.append(h("option", { value: scope, text: id }));
  if (select.value !== scope) select.value = scope;
  $("charts-days").value = String(state.charts.days);
}

function setChartsScope(scope) {
  state.charts.scope = scope;
  writeUrl();
  showView("usage");
}

function showView(view) {
  state.view = view;
  $("charts").hidden = view !== "usage";
  $("workspace").hidden = view === "usage";
  for (const tab of document.querySelectorAll(".view-tab")) setAttr(tab, "aria-pressed", String(tab.dataset.view === view));
  writeUrl();
  if (view === "usage" && token) {
    if (state.selected && window.matchMedia("(max-width: 1279px)").matches) closeDetail();
    refreshCharts(undefined, true).catch(chartsFailed);
  }
}

/** The charts on their own schedule: a slow uptime answer must not hold up the fleet's. */
function chartsInBackground() {
  const c = state.charts;
  if (c.running || state.view !== "usage" || Date.now() - c.fetchedAt < CHARTS_REFRESH_MS) return;
  c.running = refreshCharts().catch(chartsFailed).finally(() => { c.running = null; });
}

function chartsFailed(error) {
  if (error instanceof ApiError && error.status === 401) signOut("The token was refused (unknown or revoked). Sign in again.");
  else if (error.name !== "AbortError") setText($("charts-summary"), `Charts failed: ${error.message}`);
}

async function refreshDetailUsage(signal, force = false) {
  const id = state.selected;
  const d = state.detailUsage;
  if (!id || typeof uPlot !== "function") return;
  if (!force && d.id === id && Date.now() - d.fetchedAt < CHARTS_REFRESH_MS) return;
  Object.assign(d, { id, fetchedAt: Date.now() });
  try {
    const { data } = await api(`usage${query({ chargerId: id, from: periodStart(30).toISOString(), timezone: TIME_ZONE })}`, { signal });
    if (state.selected !== id) return;
    setText($("detail-energy-note"), `Last 30 days: ${number.format(data.energyKwh)} kWh in ${data.sessions} session${data.sessions === 1 ? "" : "s"}, utilization ${data.utilization === null ? "–" : percent.format(data.utilization)}.`);
    dayBars($("chart-detail-energy"), data.days, "energyKwh", "Energy", " kWh", 1, 160);
  } catch (error) {
    if (error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) throw error;
    d.fetchedAt = 0;
    setText($("detail-energy-note"), `Energy unavailable: ${error instanceof ApiError ? error.problem.detail || error.problem.title : error.message}`);
  }
}

// --- wiring -------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const secret = $("token-input").value.trim();
    if (!secret) {
      showSignIn("Paste a token first.");
      return;
    }
    $("token-input").value = "";
    signIn(secret);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("retry-now").addEventListener("click", () => refreshNow());

  const form = $("filters");
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", (event) => {
    const name = event.target.name;
    if (name && name !== "q") applyFilters({ [name]: event.target.value });
  });
  let searchTimer = null;
  $("f-search").addEventListener("input", (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => applyFilters({ q: event.target.value.trim() }), 250);
  });
  $("clear-filters").addEventListener("click", () => {
    $("f-search").value = "";
    applyFilters(Object.fromEntries(Object.keys(state.filters).map((k) => [k, ""])));
  });
  for (const kpi of document.querySelectorAll(".kpi[data-filter]")) {
    kpi.addEventListener("click", () => {
      const f = kpi.dataset.filter;
      if (f === "all") applyFilters(Object.fromEntries(Object.keys(state.filters).map((k) => [k, ""])));
      else if (f === "online") applyFilters({ online: state.filters.online === "true" ? "" : "true" });
      else if (f === "offline") applyFilters({ online: state.filters.online === "false" ? "" : "false" });
      else if (f === "delta") applyFilters({ hasDelta: state.filters.hasDelta === "true" ? "" : "true" });
    });
  }

  $("page-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    writeUrl();
    refreshNow();
  });
  $("page-next").addEventListener("click", () => {
    state.offset += state.limit;
    writeUrl();
    refreshNow();
  });
  $("page-size").addEventListener("change", (event) => {
    state.limit = Number(event.target.value);
    state.offset = 0;
    writeUrl();
    refreshNow();
  });

  for (const tab of document.querySelectorAll(".view-tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("charts-filters").addEventListener("submit", (event) => event.preventDefault());
  $("charts-scope").addEventListener("change", (event) => setChartsScope(event.target.value));
  $("charts-days").addEventListener("change", (event) => {
    state.charts.days = Number(event.target.value) || 30;
    writeUrl();
    refreshCharts(undefined, true).catch(chartsFailed);
  });
  $("detail-usage").addEventListener("click", () => state.selected && setChartsScope(`charger:${state.selected}`));
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-backdrop").addEventListener("click", closeDetail);
  $("cfg-toggle").addEventListener("click", () => {
    state.cfgShowAll = !state.cfgShowAll;
    if (state.detail) renderDetail();
  });
  $("cfg-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("cfg-key").value.trim();
    const value = $("cfg-value").value;
    if (!key) {
      showResult($("cfg-result"), "error", "Name the configuration key to change.");
      $("cfg-key").focus();
      return;
    }
    patchDesired({ config: { [key]: value } }, $("cfg-result"), event.submitter, `${key} should become ${JSON.stringify(value)}.`);
  });
  for (const button of document.querySelectorAll("#commands button[data-command]")) {
    button.addEventListener("click", () => runCommand(button));
  }

  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
    if (event.key === "/" && !typing && !$("app").hidden) {
      event.preventDefault();
      $("f-search").focus();
    } else if (event.key === "Escape" && state.selected && !$("confirm").open) {
      if (typing && document.activeElement.value) return;
      closeDetail();
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopPolling();
    else if (token) refreshNow();
    renderFreshness();
  });
  window.addEventListener("online", () => token && refreshNow());

  setInterval(() => {
    if (!token) return;
    renderFreshness();
    renderStaleness();
    renderRetryCountdown();
  }, 1000);
}

function main() {
  takeTokenFromFragment();
  readUrl();
  $("page-size").value = String(state.limit);
  syncFilterForm();
  $("f-search").value = state.filters.q;
  wire();
  showView(state.view);
  const saved = localStorage.getItem(TOKEN_KEY);
  if (!saved) {
    showSignIn();
    return;
  }
  token = saved;
  startApp();
  const selected = state.selected;
  state.selected = null;
  if (selected) openDetail(selected);
}

main();
