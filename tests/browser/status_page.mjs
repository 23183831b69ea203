// Drives the status page in Debian's chromium for tests/test_status_page_browser.py, which starts the
// proxy and the switchable upstream and reads this script's JSON report from stdout.
//
// Input (environment): PROXY_URL, ADMIN_TOKEN, CLIENT_TOKEN, CONTROL_URL (POST .../fail switches the
// upstream to 503s), SCREENSHOTS (folder), REFRESH_SECONDS (the page's interval).
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const { PROXY_URL, ADMIN_TOKEN, CLIENT_TOKEN, CONTROL_URL, SCREENSHOTS } = process.env;
const REFRESH_SECONDS = Number(process.env.REFRESH_SECONDS);
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

const report = { requests: [], offLoopback: [], checks: [], axe: {}, errors: [] };
let proxyCutOff = false;  // set last: the page's reads fail as if the proxy were gone

function check(what, ok, detail) {
  report.checks.push({ what, ok: Boolean(ok), detail: detail === undefined ? null : detail });
}

async function statusJson() {
  const response = await fetch(PROXY_URL + "/internal-backstage/status", { headers: { Authorization: ADMIN_TOKEN } });
  return response.json();
}

// The figures the page shows against the document the page itself was answered.
async function compareWithDocument(page, doc, label) {
  const shown = await page.evaluate(() => {
    const text = (selector) => document.querySelector(selector)?.textContent ?? null;
    const rows = {};
    for (const row of document.querySelectorAll("tr[data-queue]")) {
      const cells = {};
      for (const cell of row.querySelectorAll("[data-field]")) cells[cell.dataset.field] = cell.textContent;
      rows[row.dataset.queue] = { ...cells, state: row.dataset.state, stateWords: cells.state };
    }
    const tops = {};
    for (const section of document.querySelectorAll("[data-vendor]")) {
      for (const list of section.querySelectorAll("ol[data-top]")) {
        tops[section.dataset.vendor + "/" + list.dataset.top] = [...list.querySelectorAll("li")].map(
          (li) => [li.dataset.name, li.querySelector("span").textContent]);
      }
    }
    return {
      status: document.getElementById("overall").dataset.status,
      total: text('[data-field="ingest.total"]'), bars: document.querySelectorAll("#chart rect.minute").length,
      size: text('[data-field="store.size"]'), rows, tops,
      causes: [...document.querySelectorAll("#causes li")].map((li) => li.dataset.cause),
    };
  });
  const num = (n) => Number(n).toLocaleString("en");
  check(`${label}: overall status`, shown.status === doc.status, [shown.status, doc.status]);
  const total = doc.ingestPerMinute.reduce((a, m) => a + m.evaluations, 0);
  check(`${label}: ingest total`, shown.total === num(total), [shown.total, total]);
  check(`${label}: one bar per minute`, shown.bars === doc.ingestPerMinute.length, shown.bars);
  check(`${label}: causes`, JSON.stringify(shown.causes) === JSON.stringify(doc.degradations.map((d) => d.cause)),
    [shown.causes, doc.degradations]);
  for (const vendor of doc.vendors) {
    for (const q of vendor.queues) {
      const row = shown.rows[vendor.vendor + "/" + q.name];
      check(`${label}: row ${vendor.vendor}/${q.name}`, row !== undefined, Object.keys(shown.rows));
      if (!row) continue;
      check(`${label}: ${q.name} state`, row.state === q.state && row.stateWords.includes(q.state === "local"
        ? "no upstream" : q.state), [row.state, row.stateWords, q.state]);
      for (const field of ["pendingRows", "pendingCount", "pendingPayloads", "deadLetters", "inFlight"]) {
        check(`${label}: ${q.name} ${field}`, row[field] === num(q[field]), [row[field], q[field]]);
      }
    }
    for (const [kind, entries] of [["flags", vendor.topFlags], ["apps", vendor.topApps]]) {
      if (!entries.length) continue;
      const expected = entries.map((e) => [e.name, "(" + num(e.evaluations) + ")"]);
      const listed = shown.tops[vendor.vendor + "/" + kind];
      check(`${label}: top ${kind} of ${vendor.vendor}`, JSON.stringify(listed) === JSON.stringify(expected),
        [listed, expected]);
    }
  }
}

// The next document the page reads, and the page once it has drawn it.
async function nextRender(page) {
  const response = await page.waitForResponse((r) => r.url().endsWith("/internal-backstage/status") && r.ok(),
    { timeout: (REFRESH_SECONDS + 5) * 1000 });
  const doc = await response.json();
  await page.waitForFunction((at) => document.getElementById("updated").textContent.includes(at),
    new Date(doc.generatedAt * 1000).toLocaleTimeString("en-GB"), { timeout: 5000 }).catch(() => {});
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));
  return doc;
}

async function runAxe(page, label) {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const violations = result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  report.axe[label] = violations;
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(`${label}: no serious accessibility violations`, serious.length === 0, serious);
}

async function main() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Every request the page makes is logged; one to anywhere but loopback is refused and reported.
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      report.requests.push(url.href);
      if (url.protocol !== "data:" && !LOOPBACK.has(url.hostname)) {
        report.offLoopback.push(url.href);
        return route.abort();
      }
      if (proxyCutOff) return route.abort("connectionrefused");
      return route.continue();
    });
    const page = await context.newPage();
    // The body of the newest document the page was answered (what it shows once it has drawn it).
    let newestDocument = null;
    page.on("response", (r) => {
      if (r.url().endsWith("/internal-backstage/status") && r.ok()) newestDocument = r.json();
    });
    page.on("pageerror", (error) => report.errors.push(String(error)));
    // The first read goes without a token to learn whether one is needed: its 401 is expected.
    page.on("console", (message) => {
      if (message.type() === "error" && !message.text().includes("status of 401")) report.errors.push(message.text());
    });

    await page.goto(PROXY_URL + "/");
    await page.locator("#token").waitFor({ state: "visible" });
    check("asks for the token", await page.locator("#login").isVisible());
    // Keyboard only: the token field has the focus; Enter submits.
    check("the token field has the focus", await page.evaluate(() => document.activeElement.id === "token"));
    await runAxe(page, "login");
    await page.keyboard.type(ADMIN_TOKEN);
    const firstRead = nextRender(page);
    await page.keyboard.press("Enter");
    let doc = await firstRead;
    check("the token is kept in session storage",
      await page.evaluate((key) => sessionStorage.getItem(key) !== null, "metrics-proxy.admin-token"));
    await page.waitForSelector('#overall[data-status="healthy"]', { timeout: 5000 });
    await compareWithDocument(page, doc, "healthy");
    const pageText = await page.evaluate(() => document.body.innerText + document.documentElement.outerHTML);
    check("no token is rendered", !pageText.includes(ADMIN_TOKEN) && !pageText.includes(CLIENT_TOKEN));
    await runAxe(page, "healthy");
    await page.screenshot({ path: `${SCREENSHOTS}/healthy.png`, fullPage: true });

    // A reload keeps the token (same tab): no question asked again.
    await page.reload();
    await page.waitForSelector('#overall[data-status="healthy"]', { timeout: (REFRESH_SECONDS + 5) * 1000 });
    check("a reload does not ask again", !(await page.locator("#login").isVisible()));

    // The upstream fails: new counts cannot be sent; the page must say degraded within its interval.
    await fetch(CONTROL_URL + "/fail", { method: "POST" });
    const now = Date.now() / 1000;
    const body = { appName: "checkout", instanceId: "i-9", bucket: {
      start: new Date((now - 60) * 1000).toISOString(), stop: new Date(now * 1000).toISOString(),
      toggles: { "late-flag": { yes: 3, no: 1 } } } };
    await fetch(PROXY_URL + "/api/client/metrics", { method: "POST", body: JSON.stringify(body),
      headers: { Authorization: CLIENT_TOKEN, "Content-Type": "application/json" } });
    let degradedAt = null;
    for (let i = 0; i < 200 && degradedAt === null; i++) {
      if ((await statusJson()).status === "degraded") degradedAt = Date.now();
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    check("the document turns degraded", degradedAt !== null);
    await page.waitForSelector('#overall[data-status="degraded"]', { timeout: (REFRESH_SECONDS + 1) * 1000 });
    report.pageDegradedAfter = (Date.now() - degradedAt) / 1000;
    check("the page turns degraded within its refresh interval", report.pageDegradedAfter <= REFRESH_SECONDS + 1,
      report.pageDegradedAfter);
    doc = await newestDocument;
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));
    await compareWithDocument(page, doc, "degraded");
    check("the failing queue is named in words", (await page.locator('tr[data-state="failing"] .state').first()
      .textContent()).includes("failing"));
    await runAxe(page, "degraded");
    await page.screenshot({ path: `${SCREENSHOTS}/degraded.png`, fullPage: true });

    // A phone's width: nothing wider than the screen but the tables' own scrolling regions.
    await page.setViewportSize({ width: 375, height: 800 });
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check("no sideways scrolling at 375 px", overflow <= 0, overflow);
    await runAxe(page, "narrow");
    await page.screenshot({ path: `${SCREENSHOTS}/narrow.png`, fullPage: true });

    // The proxy cannot be reached: the page says so within its interval, keeping the last figures.
    proxyCutOff = true;
    await page.waitForSelector("#unreachable:not([hidden])", { timeout: (REFRESH_SECONDS + 1) * 1000 });
    check("says the proxy cannot be reached", (await page.locator("#unreachable").textContent())
      .startsWith("Cannot reach the proxy since"));
    check("the verdict says unreachable", (await page.locator("#overall").textContent()) === "Unreachable");
    check("the last figures stay", await page.locator("tr[data-queue]").count() > 0);
    const unexpected = report.errors.filter((e) => !e.includes("ERR_CONNECTION_REFUSED"));
    check("no script errors", unexpected.length === 0, report.errors);
  } finally {
    await browser.close();
  }
}

main().then(
  () => { process.stdout.write(JSON.stringify(report)); },
  (error) => { report.fatal = String(error && error.stack || error); process.stdout.write(JSON.stringify(report)); },
);
