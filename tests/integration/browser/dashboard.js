#!/usr/bin/env node
// Drives headless Chromium (Debian's /usr/bin/chromium) through lastcall's live dashboard for
// tests/integration/test_dashboard.py, with playwright-core (no browser download: it only speaks
// the DevTools protocol to the Chromium given).
//
//   node dashboard.js BASE_URL
//
// Environment:
//   DASHBOARD_TOKENS   JSON object name -> JWT, e.g. {"operator": "...", "alice": "..."}; the
//                      commands name a token, so tokens never appear in argv or in the output
//   CHROMIUM           the browser (default /usr/bin/chromium)
//
// Protocol: one JSON command per line on stdin ({"seq": 1, "cmd": "open", ...}); one JSON answer
// per line on stdout ({"seq": 1, "ok": true, ...} or {"seq": 1, "ok": false, "error": "..."}).
// Before the first command it prints {"event": "ready", ...}. Diagnostics go to stderr.
"use strict";

const readline = require("readline");
const { chromium } = require("playwright-core");

const BASE = (process.argv[2] || "").replace(/\/+$/, "");
if (!BASE) {
  process.stderr.write("usage: node dashboard.js BASE_URL\n");
  process.exit(2);
}
const TOKENS = JSON.parse(process.env.DASHBOARD_TOKENS || "{}");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let browser = null;
let context = null;
let page = null;
const log = {
  consoleErrors: [],   // {text, url}
  pageErrors: [],      // uncaught exceptions
  failedRequests: [],  // network failures (not HTTP errors)
  httpErrors: [],      // {status, url}
  requests: [],        // {at, method, path}
  offOrigin: []        // any request that left the server under test
};

function out(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }
function err(text) { process.stderr.write("[dashboard.js] " + text + "\n"); }

function pathOf(url) {
  try { const u = new URL(url); return u.pathname + u.search; } catch (e) { return url; }
}

async function launch() {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1,
                                       locale: "en-GB", timezoneId: "UTC" });
  page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") log.consoleErrors.push({ text: m.text(), url: (m.location() || {}).url || "" });
  });
  page.on("pageerror", (e) => log.pageErrors.push(String(e && e.stack || e)));
  page.on("requestfailed", (r) => log.failedRequests.push({ url: r.url(), failure: (r.failure() || {}).errorText }));
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(BASE + "/") && !url.startsWith("data:")) log.offOrigin.push(url);
    log.requests.push({ at: Date.now(), method: r.method(), path: pathOf(url) });
  });
  page.on("response", (r) => { if (r.status() >= 400) log.httpErrors.push({ status: r.status(), url: pathOf(r.url()) }); });
  // Content-Security-Policy violations, seen from inside the page (init scripts are not subject
  // to the page's CSP, the page's own code is).
  await context.addInitScript(() => {
    // The row of a list ("inflight", "recent", "timeouts") that shows a coordination, or null.
    window.findRow = (section, id) => Array.from(document.querySelectorAll("#" + section + "-rows > tr"))
      .find((tr) => tr.getAttribute("data-coordination-id") === id) || null;
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__csp.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample });
    });
  });
}

function token(name) {
  if (!(name in TOKENS)) throw new Error("no token named " + JSON.stringify(name) + " in DASHBOARD_TOKENS");
  return TOKENS[name];
}

async function view() {
  return page.evaluate(() => document.body.getAttribute("data-view"));
}

// What a row of a list shows: its id, text, chips and countdown.
async function rowInfo(section, id) {
  return page.evaluate(({ section, id }) => {
    const tr = findRow(section, id);
    if (!tr) return null;
    const cd = tr.querySelector(".countdown");
    return {
      text: tr.innerText,
      chips: Array.from(tr.querySelectorAll(".chip")).map((c) => ({
        consumer: c.getAttribute("data-consumer"), state: c.getAttribute("data-state"), text: c.innerText })),
      countdown: cd ? { text: cd.textContent, leftMs: Number(cd.getAttribute("data-left-ms")), cls: cd.className } : null,
      visible: !!(tr.offsetWidth || tr.offsetHeight)
    };
  }, { section, id });
}

const commands = {
  async open() {
    await page.goto(BASE + "/dashboard", { waitUntil: "load" });
    await page.waitForFunction(() => document.body.hasAttribute("data-view"));
    return { view: await view(), title: await page.title() };
  },

  async reload() {
    await page.reload({ waitUntil: "load" });
    await page.waitForFunction(() => document.body.hasAttribute("data-view"));
    return { view: await view() };
  },

  // Types a token (by name, or a literal "raw" one) into the form and submits it.
  async signin(c) {
    const t = c.raw !== undefined ? c.raw : token(c.as);
    await page.fill("#token-input", t);
    await page.click("#signin-submit");
    await page.waitForFunction(() => document.body.getAttribute("data-view") === "board" ||
      !document.getElementById("signin-error").hidden, null, { timeout: c.timeoutMs || 10000 });
    if ((await view()) === "board") {
      // The first poll has answered when the live indicator says so.
      await page.waitForFunction(() => document.getElementById("live").getAttribute("data-mode") === "live",
        null, { timeout: c.timeoutMs || 10000 });
    }
    return page.evaluate(() => ({
      view: document.body.getAttribute("data-view"),
      error: document.getElementById("signin-error").hidden ? null : document.getElementById("signin-error").textContent,
      who: document.getElementById("who").hidden ? null : document.getElementById("who").textContent,
      scopeNote: document.getElementById("scope-note").hidden ? null : document.getElementById("scope-note").textContent,
      stored: sessionStorage.length > 0
    }));
  },

  async signout() {
    await page.click("#signout");
    await page.waitForFunction(() => document.body.getAttribute("data-view") === "signin");
    return { view: await view(), stored: await page.evaluate(() => sessionStorage.length) };
  },

  // Waits until the page has gone back to the sign-in form by itself (a 401 while polling).
  async waitSignedOut(c) {
    await page.waitForFunction(() => document.body.getAttribute("data-view") === "signin", null,
      { timeout: c.timeoutMs || 10000 });
    return page.evaluate(() => ({
      view: document.body.getAttribute("data-view"),
      error: document.getElementById("signin-error").hidden ? null : document.getElementById("signin-error").textContent,
      stored: sessionStorage.length,
      rows: document.querySelectorAll("tr[data-coordination-id]").length
    }));
  },

  // Waits until a row for id is in a section ("inflight", "recent", "timeouts"), and optionally
  // until a consumer shows a state there.
  async waitRow(c) {
    await page.waitForFunction(({ section, id, consumer, state }) => {
      const tr = findRow(section, id);
      if (!tr) return false;
      if (!consumer) return true;
      const chip = Array.from(tr.querySelectorAll(".chip")).find((c) => c.getAttribute("data-consumer") === consumer);
      return !!chip && (!state || chip.getAttribute("data-state") === state);
    }, { section: c.section, id: c.id, consumer: c.consumer || null, state: c.state || null },
    { timeout: c.timeoutMs || 10000, polling: 100 });
    return { row: await rowInfo(c.section, c.id) };
  },

  async row(c) { return { row: await rowInfo(c.section, c.id) }; },

  async waitNoRow(c) {
    await page.waitForFunction(({ section, id }) => !findRow(section, id),
    { section: c.section, id: c.id }, { timeout: c.timeoutMs || 10000, polling: 100 });
    return {};
  },

  // Reads a countdown twice, gapMs apart (between polls it is counted down in the page).
  async countdown(c) {
    const a = await rowInfo("inflight", c.id);
    await page.waitForTimeout(c.gapMs || 1500);
    const b = await rowInfo("inflight", c.id);
    return { first: a && a.countdown, second: b && b.countdown };
  },

  // Every coordination id, user id shown and the whole visible text of the page.
  async seen() {
    return page.evaluate(() => ({
      ids: Array.from(new Set(Array.from(document.querySelectorAll("[data-coordination-id]"))
        .map((e) => e.getAttribute("data-coordination-id")))),
      users: Array.from(document.querySelectorAll(".user")).map((e) => e.textContent),
      text: document.body.innerText,
      html: document.documentElement.outerHTML
    }));
  },

  async charts() {
    return page.evaluate(() => {
      const rate = document.querySelector("#rate-chart svg");
      return {
        rateTotal: rate ? Number(rate.getAttribute("data-total")) : null,
        rateBars: rate ? rate.querySelectorAll(".bar-ok, .bar-warn").length : 0,
        latency: Array.from(document.querySelectorAll("#latency-chart .latency-row")).map((g) => ({
          consumer: g.getAttribute("data-consumer"), n: Number(g.getAttribute("data-n")),
          failed: Number(g.getAttribute("data-failed")), missed: Number(g.getAttribute("data-missed")),
          dots: g.querySelectorAll(".dot").length, hasP50: !!g.querySelector(".p50"),
          stats: (g.querySelector(".row-stats") || {}).textContent || "" })),
        tiles: {
          inflight: document.getElementById("sum-inflight").textContent,
          done: document.getElementById("sum-done").textContent,
          timeouts: document.getElementById("sum-timeouts").textContent
        }
      };
    });
  },

  async waitCharts(c) {
    await page.waitForFunction(({ total }) => {
      const rate = document.querySelector("#rate-chart svg");
      return rate && Number(rate.getAttribute("data-total")) >= total;
    }, { total: c.rateTotal || 1 }, { timeout: c.timeoutMs || 10000 });
    return commands.charts();
  },

  // Clicks a coordination's row in a section and waits for its timeline (and, with status, for
  // the coordination to show that status there).
  async openTimeline(c) {
    await page.click("#" + c.section + "-rows tr[data-coordination-id=\"" + c.id + "\"] button[data-open]");
    await page.waitForFunction(({ id, status }) => {
      const d = document.getElementById("detail");
      return !d.hidden && d.getAttribute("data-coordination-id") === id && d.getAttribute("data-loaded") === "true" &&
        (!status || d.getAttribute("data-status") === status);
    }, { id: c.id, status: c.status || null }, { timeout: c.timeoutMs || 10000 });
    return page.evaluate(() => ({
      title: document.getElementById("detail-title").textContent,
      facts: document.getElementById("detail-facts").innerText,
      consumers: Array.from(document.querySelectorAll("#detail-consumers tr")).map((tr) => ({
        consumer: tr.getAttribute("data-consumer"), text: tr.innerText })),
      entries: Array.from(document.querySelectorAll("#timeline li[data-kind]")).map((li) => ({
        kind: li.getAttribute("data-kind"), text: li.innerText })),
      focused: document.activeElement && document.activeElement.id
    }));
  },

  async closeTimeline() {
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => document.getElementById("detail").hidden);
    return {};
  },

  // Pretends the tab is hidden (or visible again) and counts the API requests made over ms.
  async visibility(c) {
    await page.evaluate((hidden) => {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
      document.dispatchEvent(new Event("visibilitychange"));
    }, !!c.hidden);
    // Lets a request already under way finish first.
    await page.waitForTimeout(c.settleMs || 600);
    const from = Date.now();
    await page.waitForTimeout(c.ms || 3000);
    const made = log.requests.filter((r) => r.at >= from && r.path.startsWith("/coordinations")).length;
    const live = await page.evaluate(() => ({ mode: document.getElementById("live").getAttribute("data-mode"),
                                              text: document.getElementById("live-text").textContent }));
    return { apiRequests: made, live };
  },

  // Whether anything injected through data ran or became markup.
  async probe() {
    return page.evaluate(() => ({
      pwned: window.__pwned || null,
      imgs: document.querySelectorAll("img").length,
      injected: document.querySelectorAll("[data-injected]").length,
      csp: window.__csp || []
    }));
  },

  async screenshot(c) {
    await page.screenshot({ path: c.path, fullPage: c.fullPage !== false });
    return { path: c.path };
  },

  async report() {
    const csp = page ? await page.evaluate(() => window.__csp || []).catch(() => []) : [];
    const byPath = {};
    log.requests.forEach((r) => {
      const p = r.path.split("?")[0];
      byPath[p] = (byPath[p] || 0) + 1;
    });
    return { consoleErrors: log.consoleErrors, pageErrors: log.pageErrors, failedRequests: log.failedRequests,
             httpErrors: log.httpErrors, offOrigin: log.offOrigin, csp, requestsByPath: byPath };
  },

  async quit() {
    if (browser) await browser.close();
    browser = null;
    return {};
  }
};

async function main() {
  try {
    await launch();
  } catch (e) {
    out({ event: "error", error: "could not start Chromium at " + CHROMIUM + ": " + (e && e.message || e) });
    process.exit(1);
  }
  out({ event: "ready", browserVersion: browser.version() });
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  let queue = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      let cmd;
      try { cmd = JSON.parse(line); } catch (e) { out({ ok: false, error: "not JSON: " + line }); return; }
      const fn = commands[cmd.cmd];
      if (!fn) { out({ seq: cmd.seq, ok: false, error: "unknown command " + cmd.cmd }); return; }
      try {
        const res = await fn(cmd);
        out(Object.assign({ seq: cmd.seq, ok: true }, res));
      } catch (e) {
        err(cmd.cmd + ": " + (e && e.stack || e));
        let shot = null;
        try {
          if (page && cmd.failureShot) { await page.screenshot({ path: cmd.failureShot, fullPage: true }); shot = cmd.failureShot; }
        } catch (e2) { /* ignore */ }
        out({ seq: cmd.seq, ok: false, error: String(e && e.message || e), failureShot: shot });
      }
      if (cmd.cmd === "quit") process.exit(0);
    });
  });
  rl.on("close", () => {
    queue.then(async () => { if (browser) await browser.close(); process.exit(0); });
  });
}

main();
