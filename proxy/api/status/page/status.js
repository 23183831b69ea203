// The status page: reads /internal-backstage/status every few seconds and shows it. Every figure is
// written with textContent (nothing from the document becomes markup); the admin token stays in this
// tab's session storage and is only ever sent to this proxy, never shown.
"use strict";

const REFRESH_SECONDS = 5;
const TOKEN_KEY = "metrics-proxy.admin-token";
const STATUS_URL = "/internal-backstage/status";
const STATE_WORDS = {
  healthy: "✓ healthy", failing: "✗ failing", paused: "⏸ paused", local: "– no upstream",
};
// Shapes of secrets, masked should one ever appear in an upstream's error text: Unleash tokens
// (project:environment.secret) and LaunchDarkly keys (sdk-…, mob-…, api-…).
const SECRET_SHAPES = [/\b[\w*-]+:[\w*-]+\.[A-Za-z0-9_-]{6,}/g, /\b(sdk|mob|api)-[A-Za-z0-9-]{8,}/g];

let lastSuccess = null;
let timer = null;

function $(id) { return document.getElementById(id); }

function redact(text) {
  let out = String(text);
  for (const shape of SECRET_SHAPES) out = out.replace(shape, "[redacted]");
  return out;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = redact(value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function number(n) { return Number(n).toLocaleString("en"); }

function bytes(n) {
  if (n === null || n === undefined) return "unbounded";
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [unit, size] of units) if (n >= size) return (n / size).toFixed(1) + " " + unit;
  return n + " B";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const units = [["d", 86400], ["h", 3600], ["min", 60]];
  for (const [unit, size] of units) if (seconds >= size) return (seconds / size).toFixed(1) + " " + unit;
  return Math.round(seconds) + " s";
}

function clockTime(epochSeconds) { return new Date(epochSeconds * 1000).toLocaleTimeString("en-GB"); }

function setField(name, value) {
  for (const node of document.querySelectorAll(`[data-field="${name}"]`)) node.textContent = value;
}

// --- the token ------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function askForToken(reason) {
  $("content").hidden = true;
  $("login").hidden = false;
  $("login-reason").textContent = reason;
  $("overall").textContent = "Token needed";
  $("overall").dataset.status = "unknown";
  $("token").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("login").hidden = true;
  refresh();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  askForToken("The token was forgotten. Enter an admin token to show the status.");
});

// --- reading the document -------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  const headers = {};
  if (token()) headers.Authorization = token();
  try {
    const response = await fetch(STATUS_URL, { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken(response.status === 401
        ? "This proxy needs an admin token to show its status. It is kept in this tab only (session storage) and sent to this proxy alone."
        : "That token is not one of this proxy's admin tokens. Enter an admin token.");
      return;
    }
    if (!response.ok) throw new Error("the proxy answered " + response.status);
    const doc = await response.json();
    lastSuccess = Date.now();
    $("unreachable").hidden = true;
    render(doc);
  } catch (error) {
    const banner = $("unreachable");
    banner.hidden = false;
    banner.textContent = lastSuccess === null
      ? "Cannot reach the proxy (" + error.message + "). Trying again every " + REFRESH_SECONDS + " seconds."
      : "Cannot reach the proxy since " + new Date(lastSuccess).toLocaleTimeString("en-GB") +
        " (" + error.message + "). The figures below are from then; trying again every " + REFRESH_SECONDS + " seconds.";
    $("overall").textContent = "Unreachable";
    $("overall").dataset.status = "degraded";
  }
  timer = setTimeout(refresh, REFRESH_SECONDS * 1000);
}

// --- showing it -----------------------------------------------------------------------------

function render(doc) {
  $("content").hidden = false;
  $("forget").hidden = !token();
  $("interval").textContent = REFRESH_SECONDS;
  const overall = $("overall");
  overall.dataset.status = doc.status;
  overall.textContent = doc.status === "healthy" ? "✓ Healthy" : "✗ Degraded";
  $("updated").textContent = "as of " + clockTime(doc.generatedAt) + " · metrics-proxy " + doc.version;

  const causes = $("causes");
  causes.replaceChildren(...doc.degradations.map((d) => el("li", { "data-cause": d.cause },
    el("strong", { text: [d.vendor, d.queue].filter(Boolean).join(" / ") || "store" }),
    document.createTextNode(": " + redact(d.message)))));
  $("causes-card").hidden = doc.degradations.length === 0;

  renderStore(doc.store, doc.thresholds);
  renderIngest(doc.ingestPerMinute);
  $("vendors").replaceChildren(...doc.vendors.map((v) => renderVendor(v, doc.generatedAt)));
}

function renderStore(store, thresholds) {
  setField("store.size", bytes(store.sizeBytes));
  setField("store.limit", bytes(store.limitBytes));
  const percent = store.fraction === null ? null : store.fraction * 100;
  setField("store.percent", percent === null ? "no limit" : percent.toFixed(1) + " %");
  $("store-fill").style.width = Math.min(100, percent || 0) + "%";
  $("store-bar").classList.toggle("full", store.fraction !== null && store.fraction > thresholds.storeFraction);
  const notes = [];
  if (store.refusingIngest) notes.push("Full: new ingest is refused.");
  for (const [reason, n] of Object.entries(store.droppedRows)) notes.push("Dropped rows (" + reason + "): " + number(n));
  for (const [reason, n] of Object.entries(store.droppedCounts)) notes.push("Dropped counts (" + reason + "): " + number(n));
  notes.push("Degraded above " + (thresholds.storeFraction * 100).toFixed(0) + " % of the limit.");
  $("store-notes").textContent = notes.join(" ");
}

function renderIngest(minutes) {
  const counts = minutes.map((m) => m.evaluations);
  const total = counts.reduce((a, b) => a + b, 0);
  const peak = Math.max(0, ...counts);
  setField("ingest.total", number(total));
  setField("ingest.current", number(counts.length ? counts[counts.length - 1] : 0));
  setField("ingest.peak", number(peak));
  const width = 600, height = 120, bottom = 16, slot = width / Math.max(1, counts.length);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `Evaluations per minute over the last hour: ${number(total)} in all, busiest minute ${number(peak)}`,
  });
  chart.append(svg("line", { x1: 0, y1: height - bottom, x2: width, y2: height - bottom }));
  counts.forEach((count, i) => {
    const h = peak ? (count / peak) * (height - bottom - 4) : 0;
    const bar = svg("rect", {
      class: "minute", x: (i * slot + 1).toFixed(1), y: (height - bottom - h).toFixed(1),
      width: Math.max(1, slot - 2).toFixed(1), height: h.toFixed(1),
    });
    const title = svg("title");
    title.textContent = clockTime(minutes[i].minute) + ": " + number(count);
    bar.append(title);
    chart.append(bar);
  });
  for (const [x, y, label, anchor] of [[0, height - 3, "60 min ago", "start"], [width, height - 3, "now", "end"],
                                       [0, 10, peak ? number(peak) + " / min" : "", "start"]]) {
    const text = svg("text", { x, y, "text-anchor": anchor });
    text.textContent = label;
    chart.append(text);
  }
  $("chart").replaceChildren(chart);
}

const COLUMNS = [
  ["Queue", (q) => q.name],
  ["State", null],
  ["Pending rows", (q) => number(q.pendingRows), "pendingRows"],
  ["Pending count", (q) => number(q.pendingCount), "pendingCount"],
  ["Payloads", (q) => number(q.pendingPayloads), "pendingPayloads"],
  ["In flight", (q) => number(q.inFlight), "inFlight"],
  ["Oldest pending", (q) => age(q.oldestPendingAge), "oldestPendingAge"],
  ["Last sent", null, "lastSuccess"],
  ["Dead letters", (q) => number(q.deadLetters), "deadLetters"],
  ["Details", null],
];

function stateCell(q, now) {
  const words = STATE_WORDS[q.state] || q.state;
  const since = q.stateSince ? " for " + age(now - q.stateSince) : "";
  return el("td", { "data-field": "state" }, el("span", { class: "state state-" + q.state, text: words + since }));
}

function details(q) {
  const parts = [];
  const sentence = (text) => (/[.!?]$/.test(text) ? text : text + ".");
  if (q.pausedReason) parts.push(sentence("Paused: " + q.pausedReason));
  if (q.nextAttempt) parts.push("Next attempt " + clockTime(q.nextAttempt) + ".");
  if (q.lastError && !q.pausedReason) parts.push(sentence("Last error: " + q.lastError));
  if (q.attempts) parts.push(q.attempts + " failed attempts of the oldest payload.");
  if (q.newestDeadLetterReason) parts.push(sentence("Newest dead letter: " + q.newestDeadLetterReason));
  return parts.join(" ") || "–";
}

function renderVendor(vendor, now) {
  const id = "vendor-" + vendor.vendor;
  const card = el("section", { class: "card", "aria-labelledby": id + "-title", "data-vendor": vendor.vendor },
    el("h2", { id: id + "-title", text: vendor.vendor === "launchdarkly" ? "LaunchDarkly" : vendor.vendor === "unleash" ? "Unleash" : vendor.vendor }),
    el("p", { class: "muted", text: vendor.upstream ? "Sends to " + vendor.upstream : "No upstream configured: nothing is sent." }));
  if (vendor.queues.length === 0) {
    card.append(el("p", { text: "Nothing pending." }));
  } else {
    const head = el("tr", {}, ...COLUMNS.map(([title, , field]) => el("th", { scope: "col", class: field && field !== "lastSuccess" ? "num" : "", text: title })));
    const rows = vendor.queues.map((q) => {
      const row = el("tr", { "data-queue": vendor.vendor + "/" + q.name, "data-state": q.state });
      for (const [title, value, field] of COLUMNS) {
        if (title === "Queue") row.append(el("th", { scope: "row", text: q.name }));
        else if (title === "State") row.append(stateCell(q, now));
        else if (title === "Last sent") row.append(el("td", { "data-field": field, text: q.lastSuccess ? age(now - q.lastSuccess) + " ago" : "never" }));
        else if (title === "Details") row.append(el("td", { class: "note", text: details(q) }));
        else row.append(el("td", { class: "num", "data-field": field, text: value(q) }));
      }
      return row;
    });
    const table = el("table", {}, el("caption", { class: "muted", text: "What waits to be sent, per " + (vendor.queues[0].kind) }),
      el("thead", {}, head), el("tbody", {}, ...rows));
    card.append(el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": vendor.vendor + " queues" }, table));
  }
  if (vendor.topFlags.length || vendor.topApps.length) {
    const list = (title, entries, kind) => el("div", {},
      el("h3", { text: title }),
      el("ol", { "data-top": kind }, ...entries.map((e) => el("li", { "data-name": e.name },
        document.createTextNode(redact(e.name) + " "), el("span", { text: "(" + number(e.evaluations) + ")" })))));
    card.append(el("div", { class: "tops" },
      list("Most evaluated flags, last hour", vendor.topFlags, "flags"),
      list("Busiest apps, last hour", vendor.topApps, "apps")));
  }
  return card;
}

refresh();
