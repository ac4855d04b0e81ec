/**
 * The live monitor page that failsh serves on `GET /` of its monitor port, and that
 * `failmon --serve` serves for several hosts at once. One self-contained HTML document (inline CSS
 * and JavaScript, no external resource, a Content-Security-Policy that forbids loading any) that
 * follows `v1/stream` with `EventSource` and redraws on every event:
 *
 * - `event: snapshot`, data a `FailshSnapshot`: one failsh (failsh's own monitor port);
 * - `event: aggregate`, data `{ now, sources: [{ url, status, error, since, snapshot }] }`: several
 *   failsh, some possibly unreachable (`failmon --serve`).
 *
 * All text from the network is inserted with `textContent`, never as HTML.
 *
 * @module
 */

/** Options of {@linkcode monitorPage}. */
export interface MonitorPageOptions {
  /** The page title (default `failmon`). */
  title?: string;
  /** The stream's URL relative to the page (default `v1/stream`). */
  streamPath?: string;
}

/** The style sheet of the monitor page, also used by `failmon -m h`. */
export const MONITOR_CSS = `
:root { color-scheme: light; --up: #1a7f37; --recover: #9a6700; --fail: #cf222e; --muted: #57606a;
  --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
  background: #fff; }
header.top { display: flex; align-items: center; gap: 1em; padding: .6em 1em; background: #24292f;
  color: #fff; position: sticky; top: 0; z-index: 1; }
header.top h1 { font-size: 1.1em; margin: 0; font-weight: 600; }
header.top .meta { color: #c9d1d9; font-size: .9em; }
.conn { margin-left: auto; padding: .15em .6em; border-radius: 1em; font-size: .85em;
  font-weight: 600; }
.conn.connected { background: var(--up); }
.conn.connecting { background: #6e7781; }
.conn.lost { background: var(--fail); }
main { padding: .5em 1em 2em; }
section.source { margin: 1em 0 2em; }
section.source > h2 { font-size: 1.25em; margin: .2em 0 .4em; display: flex; gap: .6em;
  align-items: baseline; flex-wrap: wrap; }
section.source > h2 .sub { font-size: .75em; font-weight: normal; color: var(--muted); }
section.source.down > h2 { color: var(--fail); }
.banner { padding: .5em .8em; border-radius: 6px; margin: .4em 0; font-weight: 600; }
.banner.lost { background: #ffebe9; color: var(--fail); border: 1px solid #ff818266; }
.banner.stale { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c66; }
section.down .panel { opacity: .55; }
h3 { font-size: .95em; margin: 1.1em 0 .3em; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin-bottom: .3em; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--bg); font-weight: 600; font-size: .85em; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.time, td.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .9em;
  white-space: nowrap; }
tr.unreachable td { background: #ffebe9; }
.state { display: inline-block; min-width: 5.5em; text-align: center; border-radius: 4px;
  padding: 0 .4em; font-weight: 700; font-size: .85em; color: #fff; }
.state.UP { background: var(--up); }
.state.RECOVER { background: var(--recover); }
.state.FAIL { background: var(--fail); }
.state.stale { opacity: .5; }
.yes { color: var(--up); font-weight: 600; }
.no { color: var(--fail); font-weight: 700; }
.muted { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
.overview td, .overview th { white-space: nowrap; }
.why { color: var(--muted); }
`;

const SCRIPT = String.raw`
"use strict";
(function () {
  var app = document.getElementById("app");
  var conn = document.getElementById("conn");
  var streamPath = document.body.getAttribute("data-stream") || "v1/stream";
  var es = null;
  var retryMs = 1000;
  var retryTimer = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function append(parent, children) {
    for (var i = 0; i < children.length; i++) {
      var c = children[i];
      if (c === null || c === undefined) continue;
      parent.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return parent;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "-";
    var d = new Date(ms);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }
  function dur(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "-";
    var a = Math.abs(ms), s;
    if (a < 1000) return Math.round(a) + "ms";
    if (a < 60000) return (a / 1000).toFixed(1) + "s";
    s = Math.floor(a / 1000);
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor(s / 60) % 60) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor(s / 3600) % 24) + "h";
  }
  function when(ms, now) {
    if (ms === null || ms === undefined) return "never";
    return clock(ms) + " (" + dur(Math.max(0, now - ms)) + " ago)";
  }
  function latency(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "-";
    return ms < 10 ? ms.toFixed(2) + "ms" : Math.round(ms) + "ms";
  }
  function kernel(l) {
    if (!l) return "-";
    if (l.error !== null) return el("span", "muted", "no prober");
    if (l.state === "alive") return "alive " + latency(l.rttMs);
    if (l.state === "silent") return el("span", "no", "SILENT " + Math.round(l.silentMs) + "ms");
    return el("span", "muted", "unknown");
  }
  function stateBadge(state, stale) {
    var known = state === "UP" || state === "RECOVER" || state === "FAIL";
    var b = el("span", "state " + (known ? state : "FAIL") + (stale ? " stale" : ""), state);
    b.setAttribute("data-state", String(state));
    if (stale) b.title = "last state reported; the host is unreachable now";
    return b;
  }
  function cell(content, cls) {
    var td = el("td", cls || null);
    if (content !== null && typeof content === "object") td.appendChild(content);
    else td.textContent = content === null || content === undefined ? "" : String(content);
    return td;
  }
  function table(headers, rows, cls) {
    var t = el("table", cls || null);
    var thead = el("thead"), tr = el("tr");
    for (var i = 0; i < headers.length; i++) tr.appendChild(el("th", null, headers[i]));
    thead.appendChild(tr);
    t.appendChild(thead);
    var tbody = el("tbody");
    for (var j = 0; j < rows.length; j++) tbody.appendChild(rows[j]);
    t.appendChild(tbody);
    return t;
  }
  function row(cells, attrs) {
    var tr = el("tr");
    if (attrs) for (var k in attrs) if (attrs[k] !== undefined) tr.setAttribute(k, attrs[k]);
    for (var i = 0; i < cells.length; i++) tr.appendChild(cells[i]);
    return tr;
  }
  function arbiter(a) {
    if (!a) return "-";
    var parts = [a.state];
    if (a.epoch !== null) parts.push("epoch " + a.epoch);
    else if (a.holder !== null) parts.push("key held by " + a.holder);
    return parts.join(", ") + (a.deadlineInMs === null ? "" : " (" + dur(a.deadlineInMs) + " left)");
  }
  function decision(d) {
    if (!d) return el("span", "muted", "none yet");
    var s = el("span");
    append(s, [el("b", null, d.action), ": ", el("span", "why", d.reason)]);
    return s;
  }
  function handler(h) {
    if (!h) return "none yet";
    if (h.durationMs === null) return h.kind + " running";
    if (h.error !== null) return h.kind + " failed in " + dur(h.durationMs) + ": " + h.error;
    return h.kind + " -> " + (h.result === null ? "?" : h.result) + " in " + dur(h.durationMs);
  }

  function renderSnapshot(s, section) {
    var now = s.now;
    var panel = el("div", "panel");
    panel.appendChild(el("h3", null, "Hosts"));
    panel.appendChild(table(
      ["Host", "Reachable", "Misses", "Last connect", "Last call", "Latency", "Kernel",
        "Services", "Last error"],
      s.hosts.map(function (h) {
        return row([
          cell(h.name + (h.self ? " (self)" : "")),
          cell(el("span", h.reachable ? "yes" : "no", h.reachable ? "yes" : "NO")),
          cell(h.misses, "num"),
          cell(when(h.lastConnect, now), "time"),
          cell(when(h.lastCall, now), "time"),
          cell(latency(h.latencyMs), "num"),
          cell(kernel(h.liveness)),
          cell(h.services.length, "num"),
          cell(h.lastError || "", "muted"),
        ], { "data-host": h.name, "class": h.reachable ? "reachable" : "unreachable" });
      }),
      "hosts",
    ));

    panel.appendChild(el("h3", null, "Services on " + s.host));
    if (s.services.length === 0) panel.appendChild(el("p", "empty", "No service declared."));
    else {
      var arbitrated = s.services.some(function (v) { return !!v.arbiter; });
      panel.appendChild(table(
        ["Service", "State", "Role", "Masters", "Slaves", "Interval", "Last change",
          "Last decision"].concat(arbitrated ? ["Arbiter"] : []),
        s.services.map(function (v) {
          return row([
            cell(v.name),
            cell(stateBadge(v.state, false)),
            cell(v.role),
            cell(v.masters.join(", ") || "-"),
            cell(v.slaves.join(", ") || "-"),
            cell(dur(v.intervalMs), "num"),
            cell(when(v.lastChange, now), "time"),
            cell(decision(v.lastDecision)),
          ].concat(arbitrated ? [cell(arbiter(v.arbiter))] : []),
            { "data-service": v.name, "data-state": v.state });
        }),
        "services",
      ));
    }

    var names = {};
    s.services.forEach(function (v) { names[v.name] = true; });
    s.hosts.forEach(function (h) { h.services.forEach(function (r) { names[r.name] = true; }); });
    var list = Object.keys(names).sort();
    if (list.length > 0 && s.hosts.length > 0) {
      panel.appendChild(el("h3", null, "States by host"));
      panel.appendChild(table(
        ["Service"].concat(s.hosts.map(function (h) { return h.name; })),
        list.map(function (n) {
          return row([cell(n)].concat(s.hosts.map(function (h) {
            var r = null;
            for (var i = 0; i < h.services.length; i++) if (h.services[i].name === n) r = h.services[i];
            if (!r) return cell("-", "muted");
            var td = cell(stateBadge(r.state, !h.reachable));
            td.setAttribute("data-host", h.name);
            td.title = (r.detail ? r.detail + " — " : "") + "changed " + when(r.lastChange, now) +
              ", " + r.changes + " changes, set by " + r.setBy;
            return td;
          })), { "data-service": n });
        }),
        "matrix",
      ));
    }

    panel.appendChild(el("h3", null, "Addresses held"));
    if (s.addresses.length === 0) panel.appendChild(el("p", "empty", "No address held."));
    else {
      panel.appendChild(table(
        ["Address", "Device", "Service", "Since"],
        s.addresses.map(function (a) {
          return row([
            cell(a.address, "mono"), cell(a.device, "mono"), cell(a.service || "-"),
            cell(when(a.since, now), "time"),
          ], { "data-address": a.address });
        }),
        "addresses",
      ));
    }

    var runs = s.services.filter(function (v) { return v.lastHandler; });
    panel.appendChild(el("h3", null, "Handler runs"));
    if (runs.length === 0) panel.appendChild(el("p", "empty", "No handler has run yet."));
    else {
      panel.appendChild(table(
        ["Service", "Handler", "Started", "Duration", "Result"],
        runs.map(function (v) {
          var h = v.lastHandler;
          return row([
            cell(v.name), cell(h.kind), cell(when(h.startedAt, now), "time"),
            cell(h.durationMs === null ? "running" : dur(h.durationMs), "num"),
            cell(h.error !== null ? el("span", "no", "error: " + h.error)
              : (h.result === null ? "-" : stateBadge(h.result, false))),
          ], { "data-service": v.name, "title": handler(h) });
        }),
        "handlers",
      ));
    }

    var events = s.events.slice(-50).reverse();
    panel.appendChild(el("h3", null, "Recent events (" + events.length + " of " +
      s.events.length + ", newest first)"));
    if (events.length === 0) panel.appendChild(el("p", "empty", "No event yet."));
    else {
      panel.appendChild(table(
        ["When", "Kind", "Host", "Service", "Message"],
        events.map(function (e) {
          return row([
            cell(when(e.at, now), "time"), cell(e.kind), cell(e.host || ""),
            cell(e.service || ""), cell(e.message),
          ], { "data-kind": e.kind });
        }),
        "events",
      ));
    }
    section.appendChild(panel);
  }

  function renderSource(src, multi) {
    var s = src.snapshot;
    var section = el("section", "source" + (src.status === "connected" ? "" : " down"));
    section.setAttribute("data-source", src.url || (s ? s.host : ""));
    section.setAttribute("data-status", src.status);
    var h2 = el("h2");
    h2.appendChild(el("span", "name", s ? s.host : src.url));
    if (s) {
      h2.appendChild(el("span", "sub", "snapshot " + clock(s.now) + " UTC, up " +
        dur(s.now - s.startedAt) + (multi ? " — " + src.url : "")));
    }
    section.appendChild(h2);
    if (src.status !== "connected") {
      var why = src.status === "connecting" ? "connecting to " + src.url
        : "unreachable: " + (src.error || "no answer") + " (since " + clock(src.since) +
          " UTC); retrying";
      var b = el("div", "banner lost", why);
      b.setAttribute("role", "alert");
      section.appendChild(b);
      if (s) section.appendChild(el("div", "banner stale", "Showing the last state received, at " +
        clock(s.now) + " UTC."));
    }
    if (s) renderSnapshot(s, section);
    return section;
  }

  function overview(sources) {
    return table(
      ["Source", "Host", "Connection", "Services UP", "Hosts unreachable"],
      sources.map(function (src) {
        var s = src.snapshot;
        var up = s ? s.services.filter(function (v) { return v.state === "UP"; }).length : 0;
        var down = s ? s.hosts.filter(function (h) { return !h.reachable; }).length : 0;
        var stale = src.status === "connected" ? "" : " (last known)";
        return row([
          cell(src.url, "mono"), cell(s ? s.host : "?"),
          cell(el("span", src.status === "connected" ? "yes" : "no",
            src.status === "connected" ? "connected" : src.status === "connecting"
              ? "connecting" : "UNREACHABLE: " + (src.error || ""))),
          cell(s ? up + " / " + s.services.length + stale : "-", "num"),
          cell(s ? String(down) + stale : "-", "num"),
        ], { "data-source": src.url, "data-status": src.status });
      }),
      "overview",
    );
  }

  function render(sources, multi) {
    var frag = document.createDocumentFragment();
    if (multi) {
      frag.appendChild(el("h3", null, "Overview"));
      frag.appendChild(overview(sources));
    }
    sources.forEach(function (src) { frag.appendChild(renderSource(src, multi)); });
    if (sources.length === 0) frag.appendChild(el("p", "empty", "No source configured."));
    app.replaceChildren(frag);
    var fails = 0;
    sources.forEach(function (src) {
      if (src.status !== "connected") fails++;
      if (src.snapshot) src.snapshot.hosts.forEach(function (h) {
        if (!h.reachable) fails++;
      });
    });
    document.title = (fails > 0 ? "(" + fails + " down) " : "") + (multi ? "failmon: " +
      sources.length + " hosts" : "failmon: " + (sources[0] && sources[0].snapshot
        ? sources[0].snapshot.host : ""));
    document.body.setAttribute("data-updates",
      String(Number(document.body.getAttribute("data-updates") || "0") + 1));
  }

  function setConn(kind, text) {
    conn.className = "conn " + kind;
    conn.textContent = text;
    document.body.setAttribute("data-conn", kind);
  }

  function onData(kind, data) {
    var parsed;
    try { parsed = JSON.parse(data); } catch (e) { return; }
    retryMs = 1000;
    setConn("connected", "live");
    if (kind === "snapshot") {
      render([{ url: location.host, status: "connected", error: null, since: parsed.now,
        snapshot: parsed }], false);
    } else {
      render(parsed.sources || [], true);
    }
  }

  function connect() {
    retryTimer = null;
    setConn("connecting", "connecting…");
    es = new EventSource(streamPath);
    es.addEventListener("snapshot", function (e) { onData("snapshot", e.data); });
    es.addEventListener("aggregate", function (e) { onData("aggregate", e.data); });
    es.addEventListener("error", function () {
      setConn("lost", "connection lost, retrying…");
      if (es.readyState === 2 && retryTimer === null) {
        es.close();
        retryTimer = setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    });
  }
  connect();
})();
`;

/**
 * Builds the live monitor page.
 *
 * @param options Title and stream path.
 * @returns A complete, self-contained HTML document.
 *
 * @example
 * ```ts
 * import { monitorPage } from "./page.ts";
 * import { deepEqual } from "node:assert/strict";
 * const html = monitorPage();
 * deepEqual(html.startsWith("<!doctype html>"), true);
 * ```
 */
export function monitorPage(options: MonitorPageOptions = {}): string {
  const title = escapeHtml(options.title ?? "failmon");
  const stream = escapeHtml(options.streamPath ?? "v1/stream");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>${title}</title>
<style>${MONITOR_CSS}</style>
</head>
<body data-stream="${stream}" data-conn="connecting" data-updates="0">
<header class="top"><h1>${title}</h1><span class="meta">failover monitor</span>
<span id="conn" class="conn connecting" role="status">connecting…</span></header>
<main id="app"><p class="empty">Waiting for the first snapshot…</p></main>
<noscript><p>This page needs JavaScript to follow the live stream. Use <code>failmon -m h</code> for a static page.</p></noscript>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/**
 * Escapes text for HTML element content and quoted attribute values.
 *
 * @param text Untrusted text.
 * @returns The text with `&`, `<`, `>`, `"` and `'` escaped.
 *
 * @example
 * ```ts
 * import { escapeHtml } from "./page.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(escapeHtml('<b title="x">'), "&lt;b title=&quot;x&quot;&gt;");
 * ```
 */
export function escapeHtml(text: unknown): string {
  return String(text ?? "").replace(
    /[&<>"']/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === '"'
        ? "&quot;"
        : "&#39;",
  );
}
