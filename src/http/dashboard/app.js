// lastcall live dashboard: plain JavaScript, no framework, no network but this server's API.
//
// It polls the API about once a second while the tab is visible (nothing while it is hidden),
// counts deadlines down between polls, and draws its two charts by hand in SVG. Every piece of
// text that comes from the server goes into the page through textContent or an SVG attribute,
// never as markup.
(function () {
  "use strict";

  var TOKEN_KEY = "lastcall.dashboard.token";
  var POLL_MS = 1000;
  var TICK_MS = 250;
  var WINDOW_MS = 30 * 60 * 1000;       // charts and tiles look at the last 30 minutes
  var FULL_REFRESH_MS = 30 * 1000;      // how often the whole 30-minute window is re-read
  var RECENT_COUNT = 20;
  var PAGE_LIMIT = 500;
  var MAX_PAGES = 10;                   // at most 5,000 coordinations per list and refresh
  var SVG_NS = "http://www.w3.org/2000/svg";

  var state = {
    token: null,
    claims: null,
    session: 0,               // bumped on sign-in and sign-out; stale answers are dropped
    inflight: new Map(),      // id -> coordination (waiting or deleting)
    inflightTruncated: false,
    completed: new Map(),     // id -> completed coordination (window + latest finished)
    timeoutsLatest: [],       // ids of the latest timed-out coordinations, newest first
    stopped: [],              // held and vetoed coordinations, and the latest cancelled ones
    lastFull: 0,
    maxSpanMs: 5 * 60 * 1000, // longest deadline - start seen (a coordination's timeout)
    skewMs: 0,                // server clock minus this browser's, when the server says
    selected: null,
    detail: null,             // {coordination, entries} of the selected coordination
    timer: null,
    polling: false,
    failures: 0,
    lastOk: 0,
    chartSig: { rate: "", latency: "" }
  };

  function $(id) { return document.getElementById(id); }

  function now() { return Date.now() + state.skewMs; }

  // ---------------------------------------------------------------------------------------------
  // Small DOM helpers (text only)

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function show(e, on) { e.hidden = !on; }

  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function parseTime(s) {
    if (!s) return null;
    var t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function clockTime(ms) {
    var d = new Date(ms);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }

  function clockTimeMillis(ms) {
    var d = new Date(ms);
    var m = d.getMilliseconds();
    return clockTime(ms) + "." + (m < 10 ? "00" : m < 100 ? "0" : "") + m;
  }

  function dateTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      clockTime(ms);
  }

  // A span of time for people: "0.42 s", "12 s", "4 min 05 s", "2 h 03 min".
  function span(ms) {
    if (ms < 0) ms = 0;
    if (ms < 10000) return (ms / 1000).toFixed(ms < 1000 ? 2 : 1) + " s";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + pad2(s % 60) + " s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + pad2(m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  // An age that ticks: whole seconds, so it does not flicker.
  function age(ms) { return ms < 60000 ? Math.max(0, Math.floor(ms / 1000)) + " s" : span(ms); }

  // A countdown: whole seconds, so it ticks calmly.
  function countdown(ms) {
    var s = Math.ceil(ms / 1000);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + pad2(s % 60) + " s";
    return Math.floor(m / 60) + " h " + pad2(m % 60) + " min";
  }

  function ago(ms) {
    var d = now() - ms;
    if (d < 1500) return "just now";
    if (d < 60000) return Math.floor(d / 1000) + " s ago";
    if (d < 3600000) return Math.floor(d / 60000) + " min ago";
    if (d < 172800000) return Math.floor(d / 3600000) + " h ago";
    return Math.floor(d / 86400000) + " d ago";
  }

  function latencyLabel(sec) {
    if (sec < 1) return Math.round(sec * 1000) + " ms";
    if (sec < 60) return sec.toFixed(sec < 10 ? 2 : 1) + " s";
    if (sec < 3600) return (sec / 60).toFixed(1) + " min";
    return (sec / 3600).toFixed(1) + " h";
  }

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function shortId(id) { return String(id || "").slice(0, 8); }

  function outcomeLabel(o) {
    if (o === "all_completed") return "all completed";
    if (o === "timed_out") return "timed out";
    return o ? String(o) : "–";
  }

  function stateLabel(s) {
    if (s === "pending") return "waiting";
    return String(s);
  }

  // Detail objects as "key: value" text (values that are objects as compact JSON).
  function detailText(d) {
    if (d === null || d === undefined) return "";
    if (typeof d !== "object") return String(d);
    var parts = [];
    Object.keys(d).forEach(function (k) {
      var v = d[k];
      if (Array.isArray(v)) v = v.length ? v.join(", ") : "none";
      else if (v !== null && typeof v === "object") v = JSON.stringify(v);
      parts.push(k + ": " + v);
    });
    return parts.join(" · ");
  }

  // ---------------------------------------------------------------------------------------------
  // The token

  function decodeClaims(token) {
    try {
      var part = token.split(".")[1];
      var b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      while (b64.length % 4) b64 += "=";
      var bin = atob(b64);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var obj = JSON.parse(new TextDecoder().decode(bytes));
      return obj && typeof obj === "object" ? obj : {};
    } catch (e) {
      return {};
    }
  }

  function isOperator() { return !!state.claims && state.claims.role === "operator"; }

  // ---------------------------------------------------------------------------------------------
  // The API

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function api(path) {
    var session = state.session;
    return fetch(path, {
      headers: { "Authorization": "Bearer " + state.token, "Accept": "application/json" },
      cache: "no-store",
      credentials: "omit"
    }).then(function (r) {
      var date = r.headers.get("Date");
      if (date) noteServerDate(Date.parse(date));
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (session !== state.session) throw new ApiError(0, "stale");
        if (!r.ok) {
          var msg = body && typeof body.message === "string" ? body.message : "HTTP " + r.status;
          throw new ApiError(r.status, msg);
        }
        return body;
      });
    }, function () {
      throw new ApiError(0, "cannot reach the server");
    });
  }

  // Uses the server's Date header, when it sends one, to count deadlines down on its clock.
  // The header has a one-second resolution, so only a larger difference is corrected.
  function noteServerDate(serverMs) {
    if (isNaN(serverMs)) return;
    var diff = serverMs + 500 - Date.now();
    state.skewMs = Math.abs(diff) > 2000 ? diff : 0;
  }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      if (params[k] !== undefined && params[k] !== null) {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
      }
    });
    return "/coordinations" + (parts.length ? "?" + parts.join("&") : "");
  }

  // Reads a list page after page (newest first) while more() says so, at most MAX_PAGES pages.
  function listPages(params, more) {
    var out = [];
    var truncated = false;
    function page(cursor, n) {
      var p = Object.assign({}, params, { limit: PAGE_LIMIT, cursor: cursor });
      return api(query(p)).then(function (body) {
        var list = (body && body.coordinations) || [];
        Array.prototype.push.apply(out, list);
        var next = body && body.nextCursor;
        if (!next || !list.length || !more(list[list.length - 1])) return;
        if (n + 1 >= MAX_PAGES) { truncated = true; return; }
        return page(next, n + 1);
      });
    }
    return page(null, 0).then(function () { return { list: out, truncated: truncated }; });
  }

  // ---------------------------------------------------------------------------------------------
  // Polling

  function refresh() {
    var t = now();
    var full = t - state.lastFull > FULL_REFRESH_MS;
    var windowStart = t - WINDOW_MS;
    var always = function () { return true; };
    var completedReq = full
      ? listPages({ status: "completed" }, function (last) {
          var started = parseTime(last.startedAt);
          return started !== null && started > windowStart - state.maxSpanMs - 60000;
        })
      : api(query({ status: "completed", limit: 100 })).then(function (b) {
          return { list: (b && b.coordinations) || [], truncated: false };
        });
    return Promise.all([
      listPages({ status: "waiting" }, always),
      listPages({ status: "deleting" }, always),
      completedReq,
      api(query({ status: "completed", outcome: "timed_out", limit: RECENT_COUNT })),
      listPages({ status: "held" }, always),
      listPages({ status: "vetoed" }, always),
      api(query({ status: "cancelled", limit: RECENT_COUNT }))
    ]).then(function (res) {
      // Stopped: every held and vetoed coordination, and the latest cancelled ones.
      state.stopped = res[4].list.concat(res[5].list, (res[6] && res[6].coordinations) || []);
      var previous = state.inflight;
      var inflight = new Map();
      res[0].list.concat(res[1].list).forEach(function (c) { inflight.set(c.coordinationId, c); });
      state.inflightTruncated = res[0].truncated || res[1].truncated;

      if (full) {
        state.completed = new Map();
        state.lastFull = t;
      }
      res[2].list.forEach(noteCompleted);
      var timeouts = (res[3] && res[3].coordinations) || [];
      timeouts.forEach(noteCompleted);
      state.timeoutsLatest = timeouts.map(function (c) { return c.coordinationId; });
      inflight.forEach(noteSpan);

      // A coordination that left the in-flight lists but is in no page read here (it started
      // long before others that finished meanwhile) is read on its own.
      var gone = [];
      previous.forEach(function (c, id) {
        if (!inflight.has(id) && !state.completed.has(id)) gone.push(id);
      });
      state.inflight = inflight;
      return Promise.all(gone.slice(0, 50).map(function (id) {
        return api("/coordinations/" + encodeURIComponent(id)).then(function (c) {
          if (c && c.status === "completed") noteCompleted(c);
        }, function (e) {
          if (e.status === 401) throw e;
        });
      }));
    }).then(function () {
      pruneCompleted();
      return refreshDetail();
    });
  }

  function noteSpan(c) {
    var s = parseTime(c.startedAt), d = parseTime(c.deadlineAt);
    if (s !== null && d !== null && d - s > state.maxSpanMs) state.maxSpanMs = d - s;
  }

  function noteCompleted(c) {
    if (!c || c.status !== "completed") return;
    c._completedMs = parseTime(c.completedAt);
    c._startedMs = parseTime(c.startedAt);
    noteSpan(c);
    state.completed.set(c.coordinationId, c);
  }

  // Keeps what the window and the lists need: finished in the last 30 minutes, the latest
  // RECENT_COUNT finished, and the latest timeouts.
  function pruneCompleted() {
    var windowStart = now() - WINDOW_MS;
    var all = Array.from(state.completed.values()).sort(byCompletedDesc);
    var keep = new Set(state.timeoutsLatest);
    all.forEach(function (c, i) {
      if (i < RECENT_COUNT || (c._completedMs !== null && c._completedMs >= windowStart)) {
        keep.add(c.coordinationId);
      }
    });
    all.forEach(function (c) {
      if (!keep.has(c.coordinationId)) state.completed.delete(c.coordinationId);
    });
  }

  function byCompletedDesc(a, b) { return (b._completedMs || 0) - (a._completedMs || 0); }

  function byStartedAsc(a, b) { return (parseTime(a.startedAt) || 0) - (parseTime(b.startedAt) || 0); }

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = setTimeout(pollLoop, ms);
  }

  function pollLoop() {
    state.timer = null;
    if (!state.token || state.polling) return;
    if (document.hidden) { setLive("paused"); return; }
    var session = state.session;
    state.polling = true;
    refresh().then(function () {
      if (session !== state.session) return;
      state.failures = 0;
      state.lastOk = Date.now();
      show($("api-error"), false);
      render();
      setLive("live");
    }, function (e) {
      if (session !== state.session || e.message === "stale") return;
      if (e.status === 401) { signOut(e.message); return; }
      state.failures++;
      var banner = $("api-error");
      banner.textContent = (e.status ? "The API answered " + e.status + ": " : "Problem: ") +
        e.message + ". Showing the last data read" +
        (state.lastOk ? " (" + clockTime(state.lastOk) + ")" : "") + "; retrying.";
      show(banner, true);
      setLive("error");
    }).then(function () {
      state.polling = false;
      if (session !== state.session || !state.token) return;
      if (document.hidden) { setLive("paused"); return; }
      schedule(state.failures ? Math.min(POLL_MS * Math.pow(2, state.failures), 15000) : POLL_MS);
    });
  }

  function setLive(mode) {
    var live = $("live");
    live.className = "live live-" + mode;
    live.setAttribute("data-mode", mode);
    var text = $("live-text");
    if (mode === "live") text.textContent = "live · " + clockTime(state.lastOk);
    else if (mode === "paused") text.textContent = "paused while the tab is hidden";
    else if (mode === "error") text.textContent = "reconnecting…";
    else if (mode === "off") text.textContent = "not signed in";
    else text.textContent = "connecting…";
  }

  document.addEventListener("visibilitychange", function () {
    if (!state.token) return;
    if (document.hidden) {
      clearTimeout(state.timer);
      state.timer = null;
      setLive("paused");
    } else if (!state.polling) {
      pollLoop();
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Rendering

  // Puts rows into tbody in order, reusing a row whose data did not change (so focus and hover
  // survive a poll); rows are keyed by coordination id.
  function renderRows(tbody, items, sig, build) {
    var existing = new Map();
    Array.prototype.forEach.call(tbody.children, function (tr) {
      existing.set(tr.getAttribute("data-coordination-id"), tr);
    });
    var rows = items.map(function (c) {
      var s = sig(c);
      var tr = existing.get(c.coordinationId);
      if (tr && tr.getAttribute("data-sig") === s) return tr;
      tr = build(c);
      tr.setAttribute("data-coordination-id", c.coordinationId);
      tr.setAttribute("data-sig", s);
      tr.classList.add("clickable");
      if (state.selected === c.coordinationId) tr.classList.add("selected");
      return tr;
    });
    var ref = tbody.firstChild;
    rows.forEach(function (tr) {
      if (tr === ref) ref = ref.nextSibling;
      else tbody.insertBefore(tr, ref);
    });
    while (ref) {
      var next = ref.nextSibling;
      tbody.removeChild(ref);
      ref = next;
    }
  }

  function idCell(c) {
    var td = el("td", "id-cell");
    var b = el("button", "link mono", shortId(c.coordinationId));
    b.type = "button";
    b.title = "Show the timeline of coordination " + c.coordinationId;
    b.setAttribute("data-open", c.coordinationId);
    td.appendChild(b);
    return td;
  }

  function timeCell(ms, cls) {
    var td = el("td", cls || "");
    if (ms === null) { td.textContent = "–"; return td; }
    var t = el("time", "rel-time", ago(ms));
    t.setAttribute("datetime", new Date(ms).toISOString());
    t.setAttribute("data-since", String(ms));
    t.title = dateTime(ms);
    td.appendChild(t);
    return td;
  }

  function chip(consumer) {
    var st = consumer.status;
    var mark = st === "completed" ? "✓" : st === "failed" ? "✕" : st === "vetoed" ? "⊘" : "…";
    var c = el("span", "chip chip-" + st);
    c.setAttribute("data-consumer", consumer.name);
    c.setAttribute("data-state", st);
    var m = el("span", "chip-mark", mark);
    m.setAttribute("aria-hidden", "true");
    c.appendChild(m);
    c.appendChild(el("span", "chip-name", consumer.name));
    var label = consumer.name + ": " + stateLabel(st);
    if (consumer.completedAt) label += " at " + dateTime(parseTime(consumer.completedAt));
    if (st === "failed" && consumer.detail) label += " (" + detailText(consumer.detail) + ")";
    c.title = label;
    var sr = el("span", "sr-only", " " + stateLabel(st));
    c.appendChild(sr);
    return c;
  }

  function inflightSig(c) {
    return JSON.stringify([c.status, c.userId, c.deadlineAt, c.consumers.map(function (x) {
      return [x.name, x.status];
    })]);
  }

  function buildInflightRow(c) {
    var tr = el("tr");
    tr.appendChild(idCell(c));
    var who = el("td", "who-cell");
    if (c.userId !== undefined) who.appendChild(el("div", "user", c.userId));
    var f = el("div", "muted mono small", "file " + shortId(c.fileId));
    f.title = "file " + c.fileId;
    who.appendChild(f);
    tr.appendChild(who);
    var st = el("td");
    st.appendChild(el("span", "badge badge-" + c.status, c.status === "waiting" ? "waiting" : "deleting"));
    tr.appendChild(st);
    var cons = el("td", "chips");
    c.consumers.forEach(function (x) { cons.appendChild(chip(x)); });
    tr.appendChild(cons);
    tr.appendChild(timeCell(parseTime(c.startedAt)));
    var left = el("td", "num countdown-cell");
    var cd = el("div", "countdown");
    var s = parseTime(c.startedAt), d = parseTime(c.deadlineAt);
    cd.setAttribute("data-deadline", String(d));
    cd.setAttribute("data-start", String(s));
    cd.setAttribute("data-status", c.status);
    left.appendChild(cd);
    var bar = svg("svg", { "class": "deadline-bar", viewBox: "0 0 100 4", preserveAspectRatio: "none",
                           "aria-hidden": "true", focusable: "false" });
    bar.appendChild(svg("rect", { "class": "deadline-track", x: 0, y: 0, width: 100, height: 4, rx: 2 }));
    bar.appendChild(svg("rect", { "class": "deadline-used", x: 0, y: 0, width: 0, height: 4, rx: 2 }));
    left.appendChild(bar);
    tr.appendChild(left);
    updateCountdown(cd, bar);
    return tr;
  }

  function updateCountdown(cd, bar) {
    var d = Number(cd.getAttribute("data-deadline"));
    var s = Number(cd.getAttribute("data-start"));
    var left = d - now();
    var status = cd.getAttribute("data-status");
    cd.setAttribute("data-left-ms", String(Math.round(left)));
    if (status === "deleting") {
      cd.textContent = "deleting…";
      cd.className = "countdown countdown-deleting";
    } else if (left > 0) {
      cd.textContent = countdown(left);
      cd.className = "countdown" + (left < 0.2 * (d - s) ? " countdown-soon" : "");
    } else {
      cd.textContent = "due " + span(-left) + " ago";
      cd.className = "countdown countdown-over";
    }
    if (bar) {
      var used = d > s ? Math.min(1, Math.max(0, (now() - s) / (d - s))) : 1;
      bar.lastChild.setAttribute("width", (used * 100).toFixed(2));
    }
  }

  function recentSig(c) {
    return JSON.stringify([c.outcome, c.completedAt, c.verification && c.verification.result,
                           Boolean(c.override)]);
  }

  // The verification result of a finished deletion: verified, residue (what was found where),
  // or still being checked.
  function verificationCell(c) {
    var td = el("td");
    var v = c.verification;
    var b = v ? el("span", "badge badge-" + v.result, v.result === "verified" ? "verified" : "residue")
              : el("span", "badge badge-checking", "checking…");
    b.setAttribute("data-verification", v ? v.result : "pending");
    if (v && v.result !== "verified") b.title = "left behind: " + detailText(v.residue);
    td.appendChild(b);
    if (c.override) {
      var o = el("span", "chip chip-overridden", "veto overridden");
      o.setAttribute("data-state", "overridden");
      o.title = c.veto ? c.veto.consumer + " vetoed: " + c.veto.reason : "a veto was overridden";
      td.appendChild(document.createTextNode(" "));
      td.appendChild(o);
    }
    return td;
  }

  // Why a stopped coordination is stopped, in the words of whoever stopped it.
  function stoppedReason(c) {
    if (c.status === "held") return "legal hold: " + (c.holdReason || "");
    if (c.status === "vetoed" && c.veto) return c.veto.consumer + " vetoed: " + c.veto.reason;
    if (c.status === "cancelled") return "cancelled by the owner";
    return "";
  }

  function stoppedSig(c) {
    return JSON.stringify([c.status, c.holdReason, c.veto, c.override, c.cancelledAt]);
  }

  function buildStoppedRow(c) {
    var tr = el("tr");
    tr.setAttribute("data-status", c.status);
    tr.appendChild(idCell(c));
    var st = el("td");
    st.appendChild(el("span", "badge badge-" + c.status, c.status));
    if (c.override) {
      st.appendChild(document.createTextNode(" "));
      st.appendChild(el("span", "chip chip-overridden", "veto overridden"));
    }
    tr.appendChild(st);
    var why = el("td", "small why", stoppedReason(c));
    tr.appendChild(why);
    tr.appendChild(timeCell(parseTime(c.startedAt)));
    return tr;
  }

  function buildRecentRow(c) {
    var tr = el("tr");
    tr.appendChild(idCell(c));
    var o = el("td");
    o.appendChild(el("span", "badge badge-" + c.outcome, outcomeLabel(c.outcome)));
    tr.appendChild(o);
    tr.appendChild(verificationCell(c));
    var took = (c._completedMs !== null && c._startedMs !== null) ? span(c._completedMs - c._startedMs) : "–";
    tr.appendChild(el("td", "num", took));
    tr.appendChild(timeCell(c._completedMs));
    return tr;
  }

  function missingOf(c) {
    return c.consumers.filter(function (x) { return x.status === "pending"; });
  }

  function timeoutSig(c) {
    return JSON.stringify([c.completedAt, c.consumers.map(function (x) { return [x.name, x.status]; })]);
  }

  function buildTimeoutRow(c) {
    var tr = el("tr");
    tr.appendChild(idCell(c));
    var td = el("td", "chips missing");
    var missing = missingOf(c);
    missing.forEach(function (x) {
      var m = el("span", "chip chip-missing", x.name);
      m.setAttribute("data-consumer", x.name);
      m.setAttribute("data-state", "missing");
      m.title = x.name + " never answered before the deadline";
      td.appendChild(m);
    });
    if (!missing.length) td.appendChild(el("span", "muted", "none"));
    c.consumers.forEach(function (x) {
      if (x.status !== "failed") return;
      var f = el("span", "chip chip-failed", x.name + " failed");
      f.setAttribute("data-consumer", x.name);
      f.setAttribute("data-state", "failed");
      f.title = detailText(x.detail);
      td.appendChild(f);
    });
    tr.appendChild(td);
    tr.appendChild(timeCell(c._completedMs));
    return tr;
  }

  function render() {
    var t = now();
    var windowStart = t - WINDOW_MS;
    var inflight = Array.from(state.inflight.values()).sort(byStartedAsc);
    var completed = Array.from(state.completed.values()).sort(byCompletedDesc);

    // In flight: oldest first (the most urgent on top).
    renderRows($("inflight-rows"), inflight, inflightSig, buildInflightRow);
    show($("inflight-empty"), inflight.length === 0);
    var waitingOn = {};
    inflight.forEach(function (c) {
      if (c.status !== "waiting") return;
      missingOf(c).forEach(function (x) { waitingOn[x.name] = (waitingOn[x.name] || 0) + 1; });
    });
    var names = Object.keys(waitingOn).sort(function (a, b) { return waitingOn[b] - waitingOn[a]; });
    $("waiting-on").textContent = names.length
      ? "waiting on " + names.map(function (n) { return n + " (" + waitingOn[n] + ")"; }).join(", ")
      : (inflight.length ? "" : "");

    var stopped = (state.stopped || []).slice().sort(byStartedAsc);
    renderRows($("stopped-rows"), stopped, stoppedSig, buildStoppedRow);
    show($("stopped-empty"), stopped.length === 0);

    var recent = completed.slice(0, RECENT_COUNT);
    renderRows($("recent-rows"), recent, recentSig, buildRecentRow);
    show($("recent-empty"), recent.length === 0);

    var timeoutSet = new Set(state.timeoutsLatest);
    completed.forEach(function (c) { if (c.outcome === "timed_out") timeoutSet.add(c.coordinationId); });
    var timeouts = Array.from(timeoutSet).map(function (id) { return state.completed.get(id); })
      .filter(Boolean).sort(byCompletedDesc).slice(0, RECENT_COUNT);
    renderRows($("timeouts-rows"), timeouts, timeoutSig, buildTimeoutRow);
    show($("timeouts-empty"), timeouts.length === 0);

    // Tiles.
    var waiting = inflight.filter(function (c) { return c.status === "waiting"; }).length;
    $("sum-inflight").textContent = String(inflight.length) + (state.inflightTruncated ? "+" : "");
    $("sum-inflight-foot").textContent = waiting + " waiting · " + (inflight.length - waiting) + " deleting";
    var oldest = inflight[0];
    var oldestValue = $("sum-oldest");
    clear(oldestValue);
    if (oldest) {
      var s = parseTime(oldest.startedAt);
      var since = el("span", "age", age(t - s));
      since.setAttribute("data-age-since", String(s));
      oldestValue.appendChild(since);
      $("sum-oldest-foot").textContent = "coordination " + shortId(oldest.coordinationId) +
        " · deadline " + clockTime(parseTime(oldest.deadlineAt));
    } else {
      oldestValue.textContent = "–";
      $("sum-oldest-foot").textContent = "nothing waiting";
    }
    var overdue = inflight.some(function (c) {
      return c.status === "waiting" && parseTime(c.deadlineAt) < t - 5000;
    });
    $("tile-oldest").classList.toggle("tile-alert", overdue);

    var inWindow = completed.filter(function (c) { return c._completedMs !== null && c._completedMs >= windowStart; });
    var timedOut = inWindow.filter(function (c) { return c.outcome === "timed_out"; });
    $("sum-done").textContent = String(inWindow.length);
    $("sum-done-foot").textContent = (inWindow.length - timedOut.length) + " with every consumer's answer";
    $("sum-timeouts").textContent = String(timedOut.length);
    $("sum-timeouts-foot").textContent = inWindow.length
      ? Math.round(100 * timedOut.length / inWindow.length) + "% of deletions"
      : "no deletions";
    $("tile-timeouts").classList.toggle("tile-warn", timedOut.length > 0);

    renderRateChart(inWindow, t);
    renderLatencyChart(inflight, completed, windowStart);
    tick();
  }

  // Between polls: countdowns, deadline bars, "x s ago" and ages move on.
  function tick() {
    if (!state.token) return;
    Array.prototype.forEach.call(document.querySelectorAll(".countdown"), function (cd) {
      var bar = cd.parentNode.querySelector(".deadline-bar");
      updateCountdown(cd, bar);
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-since]"), function (e) {
      e.textContent = ago(Number(e.getAttribute("data-since")));
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-age-since]"), function (e) {
      e.textContent = age(now() - Number(e.getAttribute("data-age-since")));
    });
  }

  setInterval(function () { if (!document.hidden) tick(); }, TICK_MS);

  // ---------------------------------------------------------------------------------------------
  // Charts (SVG by hand)

  function niceMax(v) {
    if (v <= 4) return 4;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function renderRateChart(inWindow, t) {
    var minute = 60000;
    var end = Math.floor(t / minute) * minute + minute;   // the end of the current minute
    var bins = [];
    for (var i = 0; i < 30; i++) bins.push({ start: end - (30 - i) * minute, ok: 0, warn: 0 });
    inWindow.forEach(function (c) {
      var i = Math.floor((c._completedMs - (end - 30 * minute)) / minute);
      if (i < 0 || i >= 30) return;
      if (c.outcome === "timed_out") bins[i].warn++; else bins[i].ok++;
    });
    var sig = end + ":" + bins.map(function (b) { return b.ok + "/" + b.warn; }).join(",");
    if (sig === state.chartSig.rate) return;
    state.chartSig.rate = sig;

    var W = 600, H = 190, L = 36, R = 10, T = 12, B = 26;
    var max = 0, total = 0;
    bins.forEach(function (b) { max = Math.max(max, b.ok + b.warn); total += b.ok + b.warn; });
    var top = niceMax(max);
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart-svg", role: "img",
                            "data-total": total, "data-max-per-minute": max });
    root.appendChild(svg("title", null, plural(total, "deletion") + " in the last 30 minutes; at most " +
                         max + " in one minute"));
    var plotW = W - L - R, plotH = H - T - B;
    var y = function (v) { return T + plotH - (v / top) * plotH; };
    [0, top / 2, top].forEach(function (v) {
      root.appendChild(svg("line", { "class": "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.appendChild(svg("text", { "class": "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" },
                           Number.isInteger(v) ? v : v.toFixed(1)));
    });
    var bw = plotW / 30;
    bins.forEach(function (b, i) {
      var x = L + i * bw + 1.5;
      var w = bw - 3;
      var g = svg("g", { "class": "bar" });
      if (b.ok) {
        g.appendChild(svg("rect", { "class": "bar-ok", x: x, width: w, y: y(b.ok), height: plotH - (y(b.ok) - T) }));
      }
      if (b.warn) {
        var y0 = y(b.ok);
        g.appendChild(svg("rect", { "class": "bar-warn", x: x, width: w, y: y(b.ok + b.warn), height: y0 - y(b.ok + b.warn) }));
      }
      // A full-height invisible target so the tooltip works on empty minutes too.
      g.appendChild(svg("rect", { "class": "bar-hit", x: L + i * bw, width: bw, y: T, height: plotH }));
      g.appendChild(svg("title", null, clockTime(b.start).slice(0, 5) + "–" +
                        clockTime(b.start + minute).slice(0, 5) + ": " + (b.ok + b.warn) +
                        " deleted" + (b.warn ? " (" + b.warn + " timed out)" : "")));
      root.appendChild(g);
    });
    root.appendChild(svg("line", { "class": "axis-line", x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
    [[0, "−30 min"], [10, "−20 min"], [20, "−10 min"], [30, "now"]].forEach(function (p) {
      var anchor = p[0] === 0 ? "start" : p[0] === 30 ? "end" : "middle";
      root.appendChild(svg("text", { "class": "axis", x: L + p[0] * bw, y: H - 8, "text-anchor": anchor }, p[1]));
    });
    var box = $("rate-chart");
    clear(box);
    box.appendChild(root);
  }

  function percentile(sorted, p) {
    if (!sorted.length) return null;
    var rank = Math.ceil(p * sorted.length);
    return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
  }

  var LAT_TICKS = [[0.001, "1 ms"], [0.01, "10 ms"], [0.1, "100 ms"], [1, "1 s"], [10, "10 s"],
                   [60, "1 min"], [600, "10 min"], [3600, "1 h"], [36000, "10 h"], [86400, "1 d"]];

  function renderLatencyChart(inflight, completed, windowStart) {
    var per = {};
    var deadlines = [];
    function consumerOf(name) {
      if (!per[name]) per[name] = { name: name, done: [], failed: [], missed: 0 };
      return per[name];
    }
    function take(c) {
      var s = parseTime(c.startedAt);
      if (s === null) return;
      var d = parseTime(c.deadlineAt);
      if (d !== null) deadlines.push((d - s) / 1000);
      c.consumers.forEach(function (x) {
        var rec = consumerOf(x.name);
        var at = parseTime(x.completedAt);
        if (at !== null && at >= windowStart) {
          var sec = Math.max(0, (at - s) / 1000);
          (x.status === "failed" ? rec.failed : rec.done).push(sec);
        } else if (x.status === "pending" && c.outcome === "timed_out" &&
                   c._completedMs !== null && c._completedMs >= windowStart) {
          rec.missed++;
        }
      });
    }
    inflight.forEach(function (c) {
      c.consumers.forEach(function (x) { consumerOf(x.name); });
      take(c);
    });
    completed.forEach(function (c) {
      if (c._completedMs !== null && c._completedMs >= windowStart) take(c);
    });
    var rows = Object.keys(per).sort().map(function (n) { return per[n]; });
    var sig = JSON.stringify(rows);
    if (sig === state.chartSig.latency) return;
    state.chartSig.latency = sig;

    var box = $("latency-chart");
    clear(box);
    if (!rows.length) {
      box.appendChild(el("p", "empty", "No consumer has answered in the last 30 minutes."));
      return;
    }
    var all = [];
    rows.forEach(function (r) { all = all.concat(r.done, r.failed); });
    var maxV = Math.max.apply(null, all.concat(deadlines, [1]));
    var minV = all.length ? Math.min.apply(null, all) : 0.01;
    var lo = 0.001;
    for (var i = 0; i < LAT_TICKS.length; i++) if (LAT_TICKS[i][0] <= Math.max(minV, 0.001)) lo = LAT_TICKS[i][0];
    var hi = 86400;
    for (var j = LAT_TICKS.length - 1; j >= 0; j--) if (LAT_TICKS[j][0] >= maxV) hi = LAT_TICKS[j][0];
    if (hi <= lo) hi = lo * 10;

    var W = 600, L = 200, R = 14, T = 8, rowH = 44, axisH = 24;
    var H = T + rows.length * rowH + axisH;
    var plotW = W - L - R;
    var lx = function (v) {
      var c = Math.min(hi, Math.max(lo, v));
      return L + (Math.log(c / lo) / Math.log(hi / lo)) * plotW;
    };
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart-svg", role: "img" });
    root.appendChild(svg("title", null, "Time from the delete request to each consumer's completion, log scale"));
    LAT_TICKS.forEach(function (tk) {
      if (tk[0] < lo || tk[0] > hi) return;
      root.appendChild(svg("line", { "class": "grid", x1: lx(tk[0]), x2: lx(tk[0]), y1: T, y2: H - axisH }));
      root.appendChild(svg("text", { "class": "axis", x: lx(tk[0]), y: H - 8, "text-anchor": "middle" }, tk[1]));
    });
    var deadlineMax = deadlines.length ? Math.max.apply(null, deadlines) : null;
    if (deadlineMax !== null && deadlineMax >= lo && deadlineMax <= hi) {
      root.appendChild(svg("line", { "class": "deadline-line", x1: lx(deadlineMax), x2: lx(deadlineMax), y1: T, y2: H - axisH }));
      var dl = svg("text", { "class": "axis deadline-label", x: lx(deadlineMax) - 4, y: T + 10, "text-anchor": "end" }, "deadline");
      root.appendChild(dl);
    }
    rows.forEach(function (r, i) {
      var y0 = T + i * rowH;
      var mid = y0 + 16;
      var g = svg("g", { "class": "latency-row", "data-consumer": r.name, "data-n": r.done.length,
                         "data-failed": r.failed.length, "data-missed": r.missed });
      if (i % 2 === 0) g.appendChild(svg("rect", { "class": "row-band", x: 0, y: y0, width: W, height: rowH }));
      g.appendChild(svg("text", { "class": "row-label", x: 8, y: mid + 4 }, r.name));
      var sorted = r.done.concat(r.failed).sort(function (a, b) { return a - b; });
      var p50 = percentile(sorted, 0.5), p95 = percentile(sorted, 0.95);
      var stats = sorted.length
        ? "p50 " + latencyLabel(p50) + " · p95 " + latencyLabel(p95) + " · " + r.done.length + " done"
        : "no completions";
      if (r.failed.length) stats += " · " + r.failed.length + " failed";
      if (r.missed) stats += " · " + r.missed + " never answered";
      g.appendChild(svg("text", { "class": "row-stats" + (r.missed ? " row-stats-warn" : ""), x: 8, y: mid + 20 }, stats));
      g.appendChild(svg("line", { "class": "row-axis", x1: L, x2: W - R, y1: mid, y2: mid }));
      // Dots, jittered a little in height by their order so equal values stay visible.
      r.done.forEach(function (v, k) {
        var dot = svg("circle", { "class": "dot", cx: lx(v), cy: mid + ((k % 5) - 2) * 2.2, r: 3.2 });
        dot.appendChild(svg("title", null, r.name + ": " + latencyLabel(v)));
        g.appendChild(dot);
      });
      r.failed.forEach(function (v) {
        var x = lx(v);
        var f = svg("path", { "class": "dot-failed", d: "M" + (x - 3.5) + " " + (mid - 3.5) + " l7 7 m0 -7 l-7 7" });
        f.appendChild(svg("title", null, r.name + " failed after " + latencyLabel(v)));
        g.appendChild(f);
      });
      if (p50 !== null) {
        // p95 first, so p50 stays visible when they are the same.
        var m95 = svg("line", { "class": "p95", x1: lx(p95), x2: lx(p95), y1: mid - 11, y2: mid + 11 });
        m95.appendChild(svg("title", null, "p95 " + latencyLabel(p95)));
        g.appendChild(m95);
        var m50 = svg("line", { "class": "p50", x1: lx(p50), x2: lx(p50), y1: mid - 11, y2: mid + 11 });
        m50.appendChild(svg("title", null, "p50 " + latencyLabel(p50)));
        g.appendChild(m50);
      }
      root.appendChild(g);
    });
    box.appendChild(root);
  }

  // ---------------------------------------------------------------------------------------------
  // The selected coordination and its timeline

  var KIND_LABELS = {
    requested: "Deletion requested",
    completion: "Consumer answered",
    timeout: "Deadline passed",
    deletion_decided: "Deletion decided",
    transactions_deleted: "Transactions deleted",
    account_updated: "Account totals updated",
    content_queued: "File content queued for removal",
    metadata_deleted: "File metadata deleted",
    deleted: "Deleted",
    cancelled: "Cancelled by the owner",
    held: "Held by a legal hold",
    hold_released: "Legal hold released",
    resumed: "Resumed",
    vetoed: "Vetoed",
    overridden: "Veto overridden by an operator",
    verified: "Verified: nothing of the file left",
    residue_found: "Residue found after the deletion"
  };

  function openDetail(id, opener) {
    state.selected = id;
    state.detail = null;
    state.detailOpener = opener || null;
    Array.prototype.forEach.call(document.querySelectorAll("tr.selected"), function (tr) {
      tr.classList.remove("selected");
    });
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-coordination-id]"), function (tr) {
      if (tr.getAttribute("data-coordination-id") === id) tr.classList.add("selected");
    });
    var panel = $("detail");
    $("detail-title").textContent = "Coordination " + shortId(id);
    panel.setAttribute("data-coordination-id", id);
    panel.removeAttribute("data-loaded");
    clear($("detail-facts"));
    clear($("detail-consumers"));
    clear($("timeline"));
    $("timeline").appendChild(el("li", "muted", "Loading…"));
    show($("detail-error"), false);
    show(panel, true);
    document.body.classList.add("detail-open");
    $("detail-close").focus();
    refreshDetail().catch(function (e) {
      if (e && e.status === 401) signOut(e.message);
    });
  }

  function closeDetail() {
    var opener = state.detailOpener;
    state.selected = null;
    state.detail = null;
    show($("detail"), false);
    document.body.classList.remove("detail-open");
    Array.prototype.forEach.call(document.querySelectorAll("tr.selected"), function (tr) {
      tr.classList.remove("selected");
    });
    if (opener && document.body.contains(opener)) opener.focus();
  }

  // Re-reads the selected coordination while it can still change.
  function refreshDetail() {
    var id = state.selected;
    if (!id) return Promise.resolve();
    if (state.detail && state.detail.coordination.status === "completed" && state.detail.final) {
      return Promise.resolve();
    }
    var enc = encodeURIComponent(id);
    return Promise.all([api("/coordinations/" + enc), api("/coordinations/" + enc + "/timeline")])
      .then(function (res) {
        if (state.selected !== id) return;
        var c = res[0];
        var entries = (res[1] && res[1].entries) || [];
        var final = c.status === "completed" && entries.some(function (e) { return e.kind === "deleted"; });
        state.detail = { coordination: c, entries: entries, final: final };
        renderDetail();
      }, function (e) {
        if (state.selected !== id || e.message === "stale") return;
        if (e.status === 401) throw e;
        var err = $("detail-error");
        err.textContent = e.status === 404
          ? "This coordination is not visible to this token."
          : "Could not read the timeline: " + e.message;
        show(err, true);
        clear($("timeline"));
      });
  }

  function fact(dl, name, value, cls) {
    dl.appendChild(el("dt", null, name));
    var dd = el("dd", cls || "", value);
    dl.appendChild(dd);
    return dd;
  }

  function renderDetail() {
    var c = state.detail.coordination;
    var entries = state.detail.entries;
    var panel = $("detail");
    panel.setAttribute("data-loaded", "true");
    panel.setAttribute("data-status", c.status);
    var started = parseTime(c.startedAt), deadline = parseTime(c.deadlineAt), done = parseTime(c.completedAt);
    var dl = $("detail-facts");
    clear(dl);
    fact(dl, "Coordination", c.coordinationId, "mono");
    var listed = state.inflight.get(c.coordinationId) || state.completed.get(c.coordinationId);
    if (listed && listed.userId !== undefined) fact(dl, "User", listed.userId);
    fact(dl, "File", c.fileId, "mono");
    var st = fact(dl, "Status", "");
    st.appendChild(el("span", "badge badge-" + c.status, c.status));
    if (c.outcome) {
      st.appendChild(document.createTextNode(" "));
      st.appendChild(el("span", "badge badge-" + c.outcome, outcomeLabel(c.outcome)));
    }
    if (started !== null) fact(dl, "Requested", dateTime(started));
    if (deadline !== null) fact(dl, "Deadline", dateTime(deadline) + (started !== null ? " (" + span(deadline - started) + " after the request)" : ""));
    if (done !== null) fact(dl, "Finished", dateTime(done) + (started !== null ? " (took " + span(done - started) + ")" : ""));
    if (c.holdReason) fact(dl, "Legal hold", c.holdReason);
    if (c.veto) {
      fact(dl, "Vetoed", c.veto.consumer + ": " + c.veto.reason + " (" +
           dateTime(parseTime(c.veto.vetoedAt)) + ")").setAttribute("data-fact", "veto");
    }
    if (c.override) {
      fact(dl, "Overridden", (c.override.reason || "no reason given") + " (" +
           dateTime(parseTime(c.override.overriddenAt)) + ")").setAttribute("data-fact", "override");
    }
    if (c.cancelledAt) fact(dl, "Cancelled", dateTime(parseTime(c.cancelledAt)));
    if (c.status === "completed") {
      var vf = fact(dl, "Verification", c.verification
        ? (c.verification.result === "verified" ? "verified: nothing of the file left"
                                                : "residue: " + detailText(c.verification.residue))
        : "being checked");
      vf.setAttribute("data-fact", "verification");
    }

    var tb = $("detail-consumers");
    clear(tb);
    c.consumers.forEach(function (x) {
      var tr = el("tr");
      tr.setAttribute("data-consumer", x.name);
      tr.appendChild(el("td", "mono", x.name));
      var stc = el("td");
      var s = x.status === "pending" && c.outcome === "timed_out" ? "missing" : x.status;
      stc.appendChild(el("span", "badge badge-" + s, s === "pending" ? "waiting" : s));
      tr.appendChild(stc);
      var at = parseTime(x.completedAt);
      tr.appendChild(el("td", "num", at !== null && started !== null ? latencyLabel(Math.max(0, (at - started) / 1000)) : "–"));
      tr.appendChild(el("td", "small", detailText(x.detail)));
      tb.appendChild(tr);
    });

    var ol = $("timeline");
    clear(ol);
    if (!entries.length) ol.appendChild(el("li", "muted", "No entries."));
    entries.forEach(function (e) {
      var at = parseTime(e.at);
      var li = el("li", "tl tl-" + String(e.kind).replace(/[^a-z_]/g, ""));
      li.setAttribute("data-kind", e.kind);
      var when = el("div", "tl-when");
      var tm = el("time", "mono", at !== null ? clockTimeMillis(at) : String(e.at));
      tm.setAttribute("datetime", String(e.at));
      when.appendChild(tm);
      if (at !== null && started !== null) when.appendChild(el("span", "tl-offset", "+" + latencyLabel(Math.max(0, (at - started) / 1000))));
      li.appendChild(when);
      var body = el("div", "tl-body");
      body.appendChild(el("div", "tl-kind", timelineTitle(e)));
      var extra = timelineDetail(e);
      if (extra) body.appendChild(el("div", "tl-detail", extra));
      li.appendChild(body);
      ol.appendChild(li);
    });
  }

  function timelineTitle(e) {
    var d = e.detail || {};
    switch (e.kind) {
      case "completion":
        return (d.consumer || "a consumer") + " " + (d.status || "answered") +
          (d.counted === false ? " (not expected: recorded, not counted)" : "");
      case "timeout":
        return "Deadline passed; missing " + ((d.missingConsumers || []).join(", ") || "nobody");
      case "deletion_decided":
        return "Deletion decided: " + outcomeLabel(d.outcome);
      case "transactions_deleted":
        return (d.count !== undefined ? d.count + " " : "") + "transactions deleted";
      case "deleted":
        return "Deleted: " + outcomeLabel(d.outcome);
      case "vetoed":
        return "Vetoed by " + (d.consumer || "a consumer");
      case "overridden":
        return "Veto overridden by " + (d.operator || "an operator") + (d.held ? " (a legal hold still holds it)" : "");
      default:
        return KIND_LABELS[e.kind] || String(e.kind);
    }
  }

  function timelineDetail(e) {
    var d = e.detail || {};
    switch (e.kind) {
      case "requested":
        return "expected " + ((d.expectedConsumers || []).join(", ") || "none") +
          (d.deadlineAt ? " · deadline " + dateTime(parseTime(d.deadlineAt)) : "");
      case "completion":
        return d.detail && Object.keys(d.detail).length ? detailText(d.detail) : "";
      case "deleted":
        return d.transactionsDeleted !== undefined ? d.transactionsDeleted + " transactions deleted" : "";
      case "vetoed": case "overridden": case "held":
        return d.reason ? "reason: " + d.reason : "";
      case "timeout": case "deletion_decided": case "transactions_deleted":
      case "account_updated": case "content_queued": case "metadata_deleted":
        return "";
      default:
        return detailText(d);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Signing in and out

  function showSignIn(message) {
    show($("board"), false);
    show($("detail"), false);
    document.body.classList.remove("detail-open");
    show($("signin"), true);
    show($("who"), false);
    show($("signout"), false);
    document.body.setAttribute("data-view", "signin");
    var err = $("signin-error");
    if (message) err.textContent = message;
    show(err, !!message);
    setLive("off");
    $("token-input").focus();
  }

  function showBoard() {
    show($("signin"), false);
    show($("board"), true);
    document.body.setAttribute("data-view", "board");
    var who = $("who");
    var sub = state.claims && typeof state.claims.sub === "string" ? state.claims.sub : "?";
    who.textContent = sub + (isOperator() ? " · operator" : " · user");
    show(who, true);
    show($("signout"), true);
    var note = $("scope-note");
    if (isOperator()) {
      show(note, false);
    } else {
      note.textContent = "This token has no operator role: only the coordinations of user “" +
        sub + "” are shown.";
      show(note, true);
    }
    setLive("connecting");
  }

  function resetData() {
    state.inflight = new Map();
    state.completed = new Map();
    state.timeoutsLatest = [];
    state.lastFull = 0;
    state.lastOk = 0;
    state.failures = 0;
    state.selected = null;
    state.detail = null;
    state.chartSig = { rate: "", latency: "" };
    // Nothing of the last token's data may stay in the page, hidden or not.
    ["inflight-rows", "recent-rows", "timeouts-rows", "rate-chart", "latency-chart", "detail-facts",
     "detail-consumers", "timeline"].forEach(function (id) { clear($(id)); });
    ["sum-inflight", "sum-inflight-foot", "sum-oldest", "sum-oldest-foot", "sum-done", "sum-done-foot",
     "sum-timeouts", "sum-timeouts-foot", "waiting-on", "detail-error", "api-error"].forEach(function (id) {
      $(id).textContent = "";
    });
    show($("api-error"), false);
    var panel = $("detail");
    $("detail-title").textContent = "Coordination";
    ["data-coordination-id", "data-loaded", "data-status"].forEach(function (a) { panel.removeAttribute(a); });
    show(panel, false);
    document.body.classList.remove("detail-open");
  }

  function signIn(token) {
    state.session++;
    clearTimeout(state.timer);
    state.polling = false;
    resetData();
    state.token = token;
    state.claims = decodeClaims(token);
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode: keep in memory */ }
    showBoard();
    pollLoop();
  }

  function signOut(message) {
    state.session++;
    clearTimeout(state.timer);
    state.timer = null;
    state.polling = false;
    state.token = null;
    state.claims = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
    resetData();
    showSignIn(message ? "Signed out: " + message : "");
  }

  function onSubmit(ev) {
    ev.preventDefault();
    var raw = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
    var err = $("signin-error");
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(raw)) {
      err.textContent = "That is not a JWT: expected three base64url parts separated by dots.";
      show(err, true);
      return;
    }
    var button = $("signin-submit");
    button.disabled = true;
    show(err, false);
    // Tries the token once before showing the board, so a bad one is told at once.
    state.token = raw;
    var session = ++state.session;
    api("/coordinations?limit=1").then(function () {
      if (session !== state.session) return;
      $("token-input").value = "";
      signIn(raw);
    }, function (e) {
      if (session !== state.session) return;
      state.token = null;
      err.textContent = e.status === 401 ? "The server refused this token: " + e.message
        : "Could not sign in: " + e.message;
      show(err, true);
    }).then(function () { button.disabled = false; });
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  function start() {
    $("signin-form").addEventListener("submit", onSubmit);
    $("token-input").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) {
        ev.preventDefault();
        $("signin-form").requestSubmit();
      }
    });
    $("signout").addEventListener("click", function () { signOut(""); });
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    $("zone").textContent = "Times are in " + (zone || "this browser's time zone") + ".";
    $("detail-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && state.selected) closeDetail();
    });
    $("board").addEventListener("click", function (ev) {
      var tr = ev.target.closest("tr[data-coordination-id]");
      if (!tr) return;
      var opener = tr.querySelector("button[data-open]");
      openDetail(tr.getAttribute("data-coordination-id"), opener);
    });
    var saved = null;
    try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (e) { saved = null; }
    if (saved) signIn(saved);
    else showSignIn("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
