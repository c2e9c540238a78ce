// Drives Weft's dashboard in a real headless Chromium (Debian's), for
// tests/tests/dashboard.rs. Reads one JSON command per line on stdin and
// answers one JSON line per command on stdout:
//
//   {"op":"goto","url":"http://127.0.0.1:8084/#/","shot":"services"}
//        → open the view, wait until it drew from fresh data, screenshot it
//   {"op":"wait","selector":"[data-backend='web-v2.default'] [data-col=weight]",
//    "attr":"data-value","equals":"50","timeout_ms":30000,"shot":"canary-after"}
//        → wait until the element's attribute has that value (re-rendered views update it)
//   {"op":"quit"}
//
// Each answer carries what the page shows (`read()` below): table cells by
// row key and column, canary cards, topology edges, the newest point of
// each chart line, the tap lines. The browser is Debian's chromium; nothing
// is downloaded. playwright-core comes from the path in WEFT_PLAYWRIGHT
// (installed by .ci/run under /var/cache/weft/node).
"use strict";
const path = require("path");
const readline = require("readline");
const { chromium } = require(process.env.WEFT_PLAYWRIGHT || "/var/cache/weft/node/node_modules/playwright-core");

const outDir = process.argv[2];
const executablePath = process.env.WEFT_CHROMIUM || "/usr/bin/chromium";

function read() {
  const val = (n) => (n.getAttribute("data-value") === null ? n.textContent.trim() : n.getAttribute("data-value"));
  const rows = {};
  for (const tr of document.querySelectorAll("tr[data-key]")) {
    const key = tr.dataset.version ? `${tr.dataset.key}@${tr.dataset.version}` : tr.dataset.key;
    rows[key] = {};
    for (const td of tr.querySelectorAll("[data-col]")) rows[key][td.dataset.col] = val(td);
  }
  const cards = {};
  for (const c of document.querySelectorAll("[data-backend]")) {
    cards[c.dataset.backend] = { route: c.dataset.route };
    for (const d of c.querySelectorAll("[data-col]")) cards[c.dataset.backend][d.dataset.col] = val(d);
  }
  const edges = [...document.querySelectorAll("g.edge")].map((g) => ({
    src: g.dataset.src, dst: g.dataset.dst, success: g.dataset.success, rps: g.dataset.rps,
    p50_ms: g.dataset.p50Ms, p99_ms: g.dataset.p99Ms, secured: g.dataset.secured,
    label: [...g.querySelectorAll("text")].map((t) => t.textContent).join(" | "),
  }));
  const charts = {};
  for (const c of document.querySelectorAll("[data-chart]")) {
    charts[c.dataset.chart] = {};
    for (const s of c.querySelectorAll("[data-series]")) charts[c.dataset.chart][s.dataset.series] = s.dataset.value;
  }
  const tapCount = document.getElementById("tap-count");
  return {
    state: document.body.dataset.state,
    refreshes: Number(document.body.dataset.refreshes || 0),
    status: document.getElementById("status").textContent,
    heading: (document.querySelector("h1") || {}).textContent,
    empty: !!document.querySelector("[data-empty]"),
    rows, cards, edges, charts,
    tap: tapCount ? { count: Number(tapCount.dataset.value),
      lines: [...document.querySelectorAll("#tap-lines div")].map((d) => d.textContent) } : null,
  };
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const failedRequests = [];
  page.on("requestfailed", (r) => failedRequests.push(r.url()));
  const answer = (o) => process.stdout.write(JSON.stringify(o) + "\n");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    try {
      if (cmd.op === "quit") break;
      const timeout = cmd.timeout_ms || 30000;
      if (cmd.op === "goto") {
        const before = cmd.url.split("#")[0] === page.url().split("#")[0];
        await page.goto(cmd.url);
        if (before) await page.reload();
        if (cmd.wait_tap) {
          await page.waitForFunction((n) => Number(document.getElementById("tap-count")?.dataset.value || 0) >= n,
            cmd.wait_tap, { timeout });
        } else {
          await page.waitForFunction(() => document.body.dataset.state === "ready", null, { timeout });
        }
      } else if (cmd.op === "wait") {
        await page.waitForFunction(({ selector, attr, equals }) => {
          const n = document.querySelector(selector);
          return n && n.getAttribute(attr) === equals;
        }, cmd, { timeout });
      } else {
        throw new Error(`unknown op ${cmd.op}`);
      }
      if (cmd.shot) await page.screenshot({ path: path.join(outDir, `${cmd.shot}.png`), fullPage: true });
      answer({ ok: true, data: await page.evaluate(read), console_errors: consoleErrors.splice(0),
        failed_requests: failedRequests.splice(0) });
    } catch (e) {
      let data = null;
      try { data = await page.evaluate(read); } catch (_) { /* the page itself is gone */ }
      if (cmd.shot) await page.screenshot({ path: path.join(outDir, `${cmd.shot}-failed.png`), fullPage: true }).catch(() => {});
      answer({ ok: false, error: String(e.message || e), data, console_errors: consoleErrors.splice(0) });
    }
  }
  await browser.close();
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e.message || e) }) + "\n");
  process.exit(1);
});
