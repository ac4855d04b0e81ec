/**
 * `hcmon`: the view of many hc instances at once, as the original's hcmon.cgi was. Fetches
 * `GET /v1/checks` of every hc given, concurrently and each with a time limit, and prints a table
 * or JSON; with `--serve` it serves a live web page aggregating them (it polls the instances and
 * the page polls it, so the page updates without reload and shows unreachable instances).
 *
 * ```text
 * hcmon URL... [--json] [--serve HOST:PORT] [--interval 2s] [--timeout 2s]
 * ```
 *
 * @module
 */
import Table from "cli-table3";
import {
  EXIT,
  exitCodesHelp,
  parseCommandLine,
  sharedHelp,
  timeoutOption,
  UsageError,
} from "../lib/cli.ts";
import { baseUrl, parseHostPort } from "../lib/net.ts";
import { readBounded } from "../lib/streams.ts";
import type { CheckStatus, HcSnapshot } from "../daemon/hc/checker.ts";
import { errorText, HC_DURATION } from "../daemon/hc/checks/_util.ts";
import { parseDuration } from "../lib/types.ts";

/** Most bytes read from one hc answer. */
export const MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024;

/** Most hc instances one hcmon watches. */
export const MAX_INSTANCES = 256;

/** One hc instance as hcmon last saw it. */
export interface InstanceView {
  /** Its base URL. */
  url: string;
  /** Its name (from its last answer), or `null` if never reached. */
  name: string | null;
  /** Whether the last fetch succeeded. */
  reachable: boolean;
  /** Why the last fetch failed, or `null`. */
  error: string | null;
  /** When the last fetch ended (ms since the epoch). */
  fetchedAt: number;
  /** When it last answered, or `null`. */
  lastSeen: number | null;
  /** Round-trip time of the last successful fetch, ms. */
  latencyMs: number | null;
  /** Its checks at the last successful fetch (stale when unreachable), or `null`. */
  snapshot: HcSnapshot | null;
}

/** What hcmon shows: every instance and totals. */
export interface HcmonState {
  /** When it was assembled. */
  now: number;
  /** Totals: instances, unreachable ones, checks by state (of reachable instances). */
  summary: {
    instances: number;
    unreachable: number;
    UP: number;
    FAIL: number;
    BLOCKED: number;
    PENDING: number;
  };
  /** Every instance, in the order given. */
  instances: InstanceView[];
}

/**
 * Turns `host:port`, `http://host:port` or `http://host:port/v1/checks` into a base URL.
 *
 * @param text What the user wrote.
 * @returns The base URL without a trailing slash.
 * @throws {TypeError} When it is not an http(s) URL or host:port.
 *
 * @example
 * ```ts
 * import { normalizeHcUrl } from "./hcmon.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(normalizeHcUrl("127.0.0.1:7200"), "http://127.0.0.1:7200");
 * ```
 */
export function normalizeHcUrl(text: string): string {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new TypeError(`Invalid hc URL "${text}": expected http://HOST:PORT or HOST:PORT`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`Invalid hc URL "${text}": scheme must be http or https`);
  }
  const path = u.pathname.replace(/\/+$/, "").replace(/\/v1\/checks$/, "");
  return `${u.origin}${path}`;
}

function isSnapshot(x: unknown): x is HcSnapshot {
  const s = x as HcSnapshot;
  return typeof s === "object" && s !== null && typeof s.name === "string" &&
    Array.isArray(s.checks) &&
    s.checks.every((c) => typeof c?.name === "string" && typeof c?.state === "string");
}

/**
 * Fetches one hc's checks.
 *
 * @param url Its base URL.
 * @param options Time limit and the previous view (to keep the last-known checks).
 * @returns The new view; never throws.
 *
 * @example
 * ```ts ignore
 * import { fetchInstance } from "./hcmon.ts";
 * console.log((await fetchInstance("http://127.0.0.1:7200", { timeoutMs: 2000 })).reachable);
 * ```
 */
export async function fetchInstance(
  url: string,
  options: { timeoutMs: number; previous?: InstanceView },
): Promise<InstanceView> {
  const started = performance.now();
  const prev = options.previous;
  try {
    const res = await fetch(`${url}/v1/checks`, {
      signal: AbortSignal.timeout(options.timeoutMs),
      headers: { accept: "application/json" },
      redirect: "manual",
    });
    const { bytes, truncated } = await readBounded(res.body, MAX_SNAPSHOT_BYTES);
    if (res.status !== 200) throw new Error(`answered HTTP ${res.status}`);
    if (truncated) throw new Error(`answer larger than ${MAX_SNAPSHOT_BYTES} bytes`);
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      throw new Error("answer is not JSON");
    }
    if (!isSnapshot(body)) throw new Error("answer is not an hc status (is this an hc?)");
    const now = Date.now();
    return {
      url,
      name: body.name,
      reachable: true,
      error: null,
      fetchedAt: now,
      lastSeen: now,
      latencyMs: performance.now() - started,
      snapshot: body,
    };
  } catch (e) {
    const msg = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${options.timeoutMs} ms`
      : errorText(e);
    return {
      url,
      name: prev?.name ?? null,
      reachable: false,
      error: msg,
      fetchedAt: Date.now(),
      lastSeen: prev?.lastSeen ?? null,
      latencyMs: null,
      snapshot: prev?.snapshot ?? null,
    };
  }
}

/**
 * Assembles the state from instance views.
 *
 * @param instances The views.
 * @returns The state with totals.
 *
 * @example
 * ```ts
 * import { summarize } from "./hcmon.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(summarize([]).summary.instances, 0);
 * ```
 */
export function summarize(instances: InstanceView[]): HcmonState {
  const summary = {
    instances: instances.length,
    unreachable: 0,
    UP: 0,
    FAIL: 0,
    BLOCKED: 0,
    PENDING: 0,
  };
  for (const i of instances) {
    if (!i.reachable) {
      summary.unreachable++;
      continue;
    }
    for (const c of i.snapshot?.checks ?? []) {
      if (c.state in summary) summary[c.state as "UP"]++;
    }
  }
  return { now: Date.now(), summary, instances };
}

/**
 * Fetches every instance at once.
 *
 * @param urls Base URLs.
 * @param options Time limit per instance and previous views by URL.
 * @returns The state.
 */
export async function fetchAll(
  urls: readonly string[],
  options: { timeoutMs: number; previous?: Map<string, InstanceView> },
): Promise<HcmonState> {
  const views = await Promise.all(urls.map((url) => {
    const previous = options.previous?.get(url);
    return fetchInstance(url, { timeoutMs: options.timeoutMs, ...(previous ? { previous } : {}) });
  }));
  return summarize(views);
}

function ago(ms: number | null, now: number): string {
  if (ms === null) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

/**
 * The state as a table for a terminal.
 *
 * @param state The state.
 * @returns The table text (one row per check; one row for an unreachable instance).
 */
export function renderTable(state: HcmonState): string {
  const table = new Table({
    head: ["hc", "check", "state", "root cause", "latency", "since", "detail"],
    style: { head: [], border: [] },
  });
  for (const i of state.instances) {
    const label = i.name ? `${i.name} (${i.url})` : i.url;
    if (!i.reachable) {
      table.push([label, "", "UNREACHABLE", "", "", ago(i.lastSeen, state.now), i.error ?? ""]);
      continue;
    }
    for (const c of i.snapshot?.checks ?? []) {
      table.push([
        label,
        c.name,
        c.state,
        c.rootCause ?? "",
        c.latencyMs === null ? "" : `${Math.round(c.latencyMs)} ms`,
        ago(c.lastChange, state.now),
        (c.lastResult?.detail ?? "").slice(0, 60),
      ]);
    }
  }
  const s = state.summary;
  return `${table.toString()}\n${s.instances} hc, ${s.unreachable} unreachable; checks: ${s.UP} UP, ${s.FAIL} FAIL, ${s.BLOCKED} BLOCKED, ${s.PENDING} PENDING`;
}

/**
 * Exit code for a one-shot run: 0 all reachable and UP, 1 a check is not UP, 2 an hc is unreachable.
 *
 * @param state The state.
 * @returns The exit code.
 *
 * @example
 * ```ts
 * import { exitCodeFor, summarize } from "./hcmon.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(exitCodeFor(summarize([])), 0);
 * ```
 */
export function exitCodeFor(state: HcmonState): number {
  if (state.summary.unreachable > 0) return EXIT.unavailable;
  const s = state.summary;
  return s.FAIL + s.BLOCKED + s.PENDING > 0 ? EXIT.failure : EXIT.ok;
}

/** The live page. All data is inserted as text (never as HTML), so check details cannot inject. */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hcmon</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2430; background: #f4f6f8; }
  body { margin: 0 auto; padding: 1rem 1.5rem; max-width: 1200px; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  #meta { color: #5b6472; font-size: .85rem; margin-bottom: 1rem; }
  #summary span { display: inline-block; margin-right: .8rem; font-weight: 600; }
  #banner { display: none; background: #8a1c1c; color: #fff; padding: .5rem .8rem; border-radius: 4px; margin: .5rem 0; }
  section { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; margin: 1rem 0; padding: .6rem .9rem; }
  section.unreachable { border-color: #b42318; background: #fff5f4; }
  section h2 { font-size: 1.05rem; margin: .2rem 0 .5rem; display: flex; gap: .6rem; align-items: center; }
  .url { color: #5b6472; font-weight: normal; font-size: .85rem; }
  .err { color: #b42318; font-weight: 600; margin: .2rem 0 .5rem; }
  table { border-collapse: collapse; width: 100%; font-size: .9rem; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eceff2; vertical-align: top; }
  th { color: #5b6472; font-weight: 600; white-space: nowrap; }
  td.since { white-space: nowrap; }
  .stale td { opacity: .45; }
  .state { display: inline-block; min-width: 5.5em; text-align: center; border-radius: 3px; padding: .05rem .4rem; font-weight: 700; font-size: .8rem; color: #fff; }
  .UP { background: #1a7f37; } .FAIL { background: #b42318; } .BLOCKED { background: #b54708; }
  .PENDING { background: #6b7280; } .UNREACHABLE { background: #7a1010; }
  .detail { color: #3b4452; max-width: 28rem; overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>hcmon</h1>
<div id="meta">Health checks of <span id="count">0</span> hc instances &middot; updated <span id="updated">never</span></div>
<div id="summary"></div>
<div id="banner" role="alert"></div>
<main id="instances"></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function ago(ms, now) {
  if (ms === null || ms === undefined) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 120 ? s + "s ago" : s < 7200 ? Math.round(s / 60) + "m ago" : Math.round(s / 3600) + "h ago";
}
function detailOf(c) {
  const last = (c.lastResult && c.lastResult.detail) || "";
  if (c.state !== "BLOCKED") return last;
  return "not probed while " + c.rootCause + " fails" + (last ? "; last probe: " + last : "");
}
function badge(state) { return el("span", { class: "state " + state, "data-state": state }, state); }
function render(st) {
  $("count").textContent = st.summary.instances;
  $("updated").textContent = new Date(st.now).toLocaleTimeString();
  const s = st.summary;
  $("summary").replaceChildren(
    el("span", { "data-total": "UP" }, s.UP + " UP"), el("span", { "data-total": "FAIL" }, s.FAIL + " FAIL"),
    el("span", { "data-total": "BLOCKED" }, s.BLOCKED + " BLOCKED"), el("span", { "data-total": "PENDING" }, s.PENDING + " PENDING"),
    el("span", { "data-total": "UNREACHABLE" }, s.unreachable + " hc unreachable"));
  const sections = st.instances.map((i) => {
    const sec = el("section", { class: i.reachable ? "reachable" : "unreachable", "data-instance": i.url });
    sec.append(el("h2", {}, i.reachable ? el("span", { class: "state UP", "data-reach": "online" }, "ONLINE") : badge("UNREACHABLE"), i.name || "(unknown)", el("span", { class: "url" }, i.url)));
    if (!i.reachable) {
      sec.append(el("div", { class: "err", "data-error": "" }, "Unreachable: " + i.error + (i.lastSeen ? " (last answer " + ago(i.lastSeen, st.now) + "; checks below are stale)" : " (never answered)")));
    }
    const checks = (i.snapshot && i.snapshot.checks) || [];
    if (checks.length) {
      const tb = el("tbody");
      for (const c of checks) {
        const tr = el("tr", { "data-check": c.name, "data-state": i.reachable ? c.state : "STALE", class: i.reachable ? "" : "stale" });
        tr.append(el("td", {}, c.name), el("td", {}, badge(c.state)), el("td", { "data-root": "" }, c.rootCause || ""),
          el("td", {}, c.kind), el("td", {}, c.target), el("td", {}, c.latencyMs === null ? "" : Math.round(c.latencyMs) + " ms"),
          el("td", { class: "since" }, ago(c.lastChange, st.now)), el("td", { class: "detail" }, detailOf(c)));
        tb.append(tr);
      }
      sec.append(el("table", {}, el("thead", {}, el("tr", {}, ...["check", "state", "root cause", "kind", "target", "latency", "since", "detail"].map((h) => el("th", {}, h)))), tb));
    }
    return sec;
  });
  $("instances").replaceChildren(...sections);
}
async function tick() {
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("banner").style.display = "none";
  } catch (e) {
    $("banner").textContent = "hcmon server unreachable: " + e.message + " (retrying)";
    $("banner").style.display = "block";
  }
}
tick();
setInterval(tick, Number(new URLSearchParams(location.search).get("refresh") || 1000));
</script>
</body>
</html>
`;

/** A running `hcmon --serve`. */
export interface HcmonServer {
  /** Base URL of the page. */
  url: string;
  /** Bound address. */
  addr: Deno.NetAddr;
  /** The latest state. */
  state(): HcmonState;
  /** Runs one poll now (tests). */
  poll(): Promise<HcmonState>;
  /** Stops polling and serving. */
  close(): Promise<void>;
}

/**
 * Serves the live page and `GET /api/state`, polling the hc instances in the background.
 *
 * @param urls Base URLs of the hc instances.
 * @param options Address, port, poll interval and per-instance time limit.
 * @returns The server, after the first poll.
 *
 * @example
 * ```ts ignore
 * import { serveHcmon } from "./hcmon.ts";
 * const s = await serveHcmon(["http://127.0.0.1:7200"], { hostname: "127.0.0.1", port: 0 });
 * console.log(s.url);
 * await s.close();
 * ```
 */
export async function serveHcmon(
  urls: readonly string[],
  options: { hostname?: string; port?: number; intervalMs?: number; timeoutMs?: number } = {},
): Promise<HcmonServer> {
  const timeoutMs = options.timeoutMs ?? 2000;
  const intervalMs = options.intervalMs ?? 2000;
  let current = summarize(urls.map((url) => ({
    url,
    name: null,
    reachable: false,
    error: "not polled yet",
    fetchedAt: Date.now(),
    lastSeen: null,
    latencyMs: null,
    snapshot: null,
  })));
  let polling: Promise<HcmonState> | null = null;
  const poll = (): Promise<HcmonState> => {
    polling ??= fetchAll(urls, {
      timeoutMs,
      previous: new Map(current.instances.map((i) => [i.url, i])),
    }).then((s) => {
      current = s;
      return s;
    }).finally(() => {
      polling = null;
    });
    return polling;
  };
  await poll();
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const loop = (): void => {
    if (closed) return;
    timer = setTimeout(() => poll().finally(loop), intervalMs);
  };
  loop();
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 7201,
    onListen: () => {},
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (req.method !== "GET") {
      return new Response("Method not allowed: hcmon is read-only\n", { status: 405 });
    }
    if (path === "/" || path === "/index.html") {
      return new Response(PAGE_HTML, {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "no-store",
          "content-security-policy":
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        },
      });
    }
    if (path === "/api/state") {
      return new Response(JSON.stringify(current), {
        headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
      });
    }
    return new Response("Not found: use / or /api/state\n", { status: 404 });
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    url: baseUrl(addr),
    addr,
    state: () => current,
    poll,
    async close() {
      closed = true;
      clearTimeout(timer);
      await polling;
      await server.shutdown();
    },
  };
}

/** The text of `hcmon --help`. */
export const USAGE =
  `Usage: hcmon URL... [--json] [--serve HOST:PORT] [--interval 2s] [--timeout 2s]

Shows the checks of many hc instances at once. URL is an hc status API, e.g.
http://127.0.0.1:7200 or 127.0.0.1:7200.

Options:
  --serve HOST:PORT       serve a live web page aggregating the instances (until Ctrl-C)
  --interval D            with --serve: time between polls (default 2s)
  --timeout MS            time limit of each fetch, in milliseconds or a duration such as 2s
                          (default 2s)
${sharedHelp(["json", "help"])}

${
    exitCodesHelp([
      [EXIT.ok, "every hc reachable and every check UP (with --serve: stopped by a signal)"],
      [EXIT.failure, "a check is not UP, or --serve cannot listen"],
      [EXIT.usage, null],
      [EXIT.unavailable, "an hc is unreachable"],
    ])
  }`;

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    const handler = (): void => {
      for (const s of signals) Deno.removeSignalListener(s, handler);
      resolve();
    };
    for (const s of signals) Deno.addSignalListener(s, handler);
  });
}

/**
 * Runs the hcmon command line.
 *
 * @param args Command-line arguments.
 * @returns The exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./hcmon.ts";
 * Deno.exit(await main(["http://127.0.0.1:7200", "--json"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let urls: string[];
  let timeoutMs: number;
  let intervalMs: number;
  let listen: { hostname: string; port: number } | null = null;
  let json: boolean;
  try {
    const { values, positionals } = parseCommandLine("hcmon", args, {
      options: { serve: { type: "string" }, interval: { type: "string" } },
      shared: ["json", "timeout"],
    });
    if (values.help) {
      console.log(USAGE);
      return EXIT.ok;
    }
    if (positionals.length === 0) throw new UsageError("Missing URL: give at least one hc URL");
    if (positionals.length > MAX_INSTANCES) {
      throw new UsageError(`${positionals.length} URLs given: at most ${MAX_INSTANCES}`);
    }
    json = values.json === true;
    urls = [...new Set(positionals.map(normalizeHcUrl))];
    timeoutMs = timeoutOption(values.timeout, {
      defaultMs: 2000,
      duration: (t) => parseDuration(t, HC_DURATION),
    });
    intervalMs = values.interval
      ? parseDuration(values.interval, { what: "--interval", ...HC_DURATION })
      : 2000;
    if (values.serve !== undefined) {
      listen = parseHostPort(values.serve, { allowPortZero: true });
    }
  } catch (e) {
    console.error(`hcmon: ${errorText(e)}\nRun hcmon --help for the options.`);
    return EXIT.usage;
  }
  if (listen !== null) {
    let server: HcmonServer;
    try {
      server = await serveHcmon(urls, { ...listen, intervalMs, timeoutMs });
    } catch (e) {
      console.error(`hcmon: Cannot serve on ${baseUrl(listen)}: ${errorText(e)}`);
      return EXIT.failure;
    }
    console.log(`hcmon: serving ${server.url}/ for ${urls.length} hc instances`);
    await waitForSignal();
    await server.close();
    return EXIT.ok;
  }
  const state = await fetchAll(urls, { timeoutMs });
  console.log(json ? JSON.stringify(state, null, 2) : renderTable(state));
  return exitCodeFor(state);
}

/** A check row as hcmon shows it (re-exported for callers that build on the JSON). */
export type { CheckStatus };

if (import.meta.main) Deno.exit(await main(Deno.args));
