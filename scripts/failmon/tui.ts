/**
 * failmon's terminal user interface (`-m c`), in the spirit of the original's curses monitor:
 * a hosts view, the services of one host, and one service's detail, driven by the original's keys.
 * It draws with ANSI escapes on the alternate screen and reads raw keys from stdin. The screen is
 * redrawn only when something happens (a snapshot, a change of connection state, a key, a resize):
 * never on a timer.
 *
 * The pure parts ({@linkcode parseKeys}, {@linkcode applyKey}, {@linkcode renderScreen}) are
 * separate from the terminal driver ({@linkcode runTui}) so that they can be tested directly.
 *
 * @module
 */
import type { FailshSnapshot, HostView, ServiceState } from "../../lib/types.ts";
import {
  cleanText,
  fmtArbiter,
  fmtClock,
  fmtDecision,
  fmtDuration,
  fmtHandler,
  fmtLatency,
  fmtLiveness,
  fmtWhen,
  hostTime,
} from "./format.ts";
import { fmtStatus } from "./line.ts";
import { SnapshotStream, type StreamStatus } from "./stream.ts";

/** The three views. */
export type View = "hosts" | "services" | "detail";

/** What the user has selected. */
export interface TuiState {
  /** The view shown. */
  view: View;
  /** Selected host (index into `snapshot.hosts`). */
  host: number;
  /** Selected service (index into {@linkcode servicesOf} of the selected host). */
  service: number;
  /** Whether the hosts view shows the last call (`true`) or the last connect (`false`). */
  lastCall: boolean;
}

/** A key failmon understands. */
export type Key =
  | "up"
  | "down"
  | "left"
  | "right"
  | "tab"
  | "backtab"
  | "enter"
  | "hosts"
  | "services"
  | "detail"
  | "toggle"
  | "redraw"
  | "quit";

/**
 * The state failmon starts in: the hosts view, first host, last connect shown.
 *
 * @returns A fresh state.
 *
 * @example
 * ```ts
 * import { initialState } from "./tui.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(initialState().view, "hosts");
 * ```
 */
export function initialState(): TuiState {
  return { view: "hosts", host: 0, service: 0, lastCall: false };
}

/**
 * Decodes raw terminal input into keys. Unknown bytes are ignored.
 *
 * @param text What stdin delivered in raw mode (possibly several keys).
 * @returns The keys, in order.
 *
 * @example
 * ```ts
 * import { parseKeys } from "./tui.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseKeys("\x1b[Bl\tq"), ["down", "services", "tab", "quit"]);
 * ```
 */
export function parseKeys(text: string): Key[] {
  const keys: Key[] = [];
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    // deno-lint-ignore no-control-regex
    const seq = /^\x1b(?:\[|O)([ABCDZ])/.exec(rest);
    if (seq) {
      const k = ({ A: "up", B: "down", C: "right", D: "left", Z: "backtab" } as const)[
        seq[1] as "A" | "B" | "C" | "D" | "Z"
      ];
      keys.push(k);
      i += seq[0].length;
      continue;
    }
    if (rest.startsWith("\x1b[")) {
      // Another CSI sequence (e.g. Home, F-keys): skip it whole.
      // deno-lint-ignore no-control-regex
      const m = /^\x1b\[[0-9;]*[~A-Za-z]/.exec(rest);
      i += m ? m[0].length : 2;
      continue;
    }
    const c = text[i]!;
    i++;
    switch (c) {
      case "q":
      case "Q":
      case "\x03": // Ctrl-C in raw mode
      case "\x04": // Ctrl-D
        keys.push("quit");
        break;
      case "\t":
        keys.push("tab");
        break;
      case "\r":
      case "\n":
        keys.push("enter");
        break;
      case "h":
        keys.push("hosts");
        break;
      case "l":
        keys.push("services");
        break;
      case "s":
        keys.push("detail");
        break;
      case "c":
        keys.push("toggle");
        break;
      case "k":
        keys.push("up");
        break;
      case "j":
        keys.push("down");
        break;
      case "\x0c": // Ctrl-L
        keys.push("redraw");
        break;
    }
  }
  return keys;
}

/** One row of the services view. */
export interface ServiceRow {
  /** Service name. */
  name: string;
  /** State as that host reports it (for this host: as failsh runs it). */
  state: ServiceState;
  /** This host's role, for the host failsh runs on. */
  role: string;
  /** Last change (ms since epoch). */
  lastChange: number;
  /** Number of changes, when the host's faild reports it. */
  changes: number | null;
  /** Free text detail reported by the host. */
  detail: string;
}

/**
 * The services of one host: for the host failsh runs on, the services it runs (and any other its
 * faild holds); for a peer, what the peer reported at its last successful poll.
 *
 * @param snapshot The snapshot.
 * @param host The host.
 * @returns The rows, sorted by name.
 *
 * @example
 * ```ts
 * import { servicesOf } from "./tui.ts";
 * import { deepEqual } from "node:assert/strict";
 * const host = { name: "a", self: false, services: [] } as never;
 * deepEqual(servicesOf({ services: [] } as never, host).length, 0);
 * ```
 */
export function servicesOf(snapshot: FailshSnapshot, host: HostView): ServiceRow[] {
  const rows = new Map<string, ServiceRow>();
  for (const r of host.services) {
    rows.set(r.name, {
      name: r.name,
      state: r.state,
      role: "-",
      lastChange: r.lastChange,
      changes: r.changes,
      detail: r.detail,
    });
  }
  if (host.self) {
    for (const v of snapshot.services) {
      const r = rows.get(v.name);
      rows.set(v.name, {
        name: v.name,
        state: v.state,
        role: v.role,
        lastChange: v.lastChange,
        changes: r?.changes ?? null,
        detail: r?.detail ?? "",
      });
    }
  }
  return [...rows.values()].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

function clamp(n: number, count: number): number {
  return count <= 0 ? 0 : Math.max(0, Math.min(count - 1, n));
}

/**
 * Applies one key to the state.
 *
 * Keys: Up/Down (or k/j) select; `l`/Left shows the services of the selected host; `s`/Right
 * shows the selected service's detail; Tab (Shift-Tab) cycles hosts -> services -> detail; `h`
 * goes back to the hosts view; Return goes one view deeper; `c` toggles last connect / last call;
 * `q` (or Ctrl-C, Ctrl-D) quits.
 *
 * @param state The current state.
 * @param key The key.
 * @param snapshot The snapshot shown (to bound the selection), or `null` before the first.
 * @returns The next state, or `"quit"`.
 *
 * @example
 * ```ts
 * import { applyKey, initialState } from "./tui.ts";
 * import { deepEqual } from "node:assert/strict";
 * const next = applyKey(initialState(), "services", null);
 * deepEqual(next !== "quit" && next.view, "services");
 * ```
 */
export function applyKey(
  state: TuiState,
  key: Key,
  snapshot: FailshSnapshot | null,
): TuiState | "quit" {
  const s = { ...state };
  const hosts = snapshot?.hosts ?? [];
  const host = hosts[clamp(s.host, hosts.length)];
  const services = snapshot && host ? servicesOf(snapshot, host) : [];
  const order: View[] = ["hosts", "services", "detail"];
  switch (key) {
    case "quit":
      return "quit";
    case "up":
    case "down": {
      const d = key === "up" ? -1 : 1;
      if (s.view === "hosts") {
        const next = clamp(s.host + d, hosts.length);
        if (next !== s.host) s.service = 0;
        s.host = next;
      } else s.service = clamp(s.service + d, services.length);
      return s;
    }
    case "left":
    case "services":
      s.view = "services";
      return s;
    case "right":
    case "detail":
      s.view = "detail";
      return s;
    case "hosts":
      s.view = "hosts";
      return s;
    case "tab":
    case "backtab": {
      const i = order.indexOf(s.view) + (key === "tab" ? 1 : order.length - 1);
      s.view = order[i % order.length]!;
      return s;
    }
    case "enter":
      s.view = s.view === "hosts" ? "services" : "detail";
      return s;
    case "toggle":
      s.lastCall = !s.lastCall;
      return s;
    case "redraw":
      return s;
  }
}

/** What {@linkcode renderScreen} draws. */
export interface ScreenInput {
  /** The selection. */
  state: TuiState;
  /** The last snapshot received, or `null`. */
  snapshot: FailshSnapshot | null;
  /** The connection state. */
  status: StreamStatus;
  /** The monitor URL, for the title line. */
  url: string;
  /** Terminal columns. */
  width: number;
  /** Terminal rows. */
  height: number;
  /** Whether to use colours and reverse video (default `true`). */
  color?: boolean;
}

type Style = "" | "bold" | "title" | "sel" | "dim" | "UP" | "RECOVER" | "FAIL" | "bad" | "alert";

const SGR: Record<Style, string> = {
  "": "",
  bold: "1",
  title: "1;37;44",
  sel: "7",
  dim: "2",
  UP: "1;32",
  RECOVER: "1;33",
  FAIL: "1;31",
  bad: "1;31",
  alert: "1;37;41",
};

type Seg = [text: string, style: Style];
type Line = Seg[];
type Cell = string | Seg;

function plain(text: string): Line {
  return [[text, ""]];
}

function stateStyle(state: string): Style {
  return state === "UP" || state === "RECOVER" || state === "FAIL" ? state : "bad";
}

/** Lays out cells in columns; returns the header line and one line per row. */
function grid(headers: string[], rows: Cell[][]): { header: Line; rows: Line[] } {
  const text = (c: Cell | undefined) => cleanText(typeof c === "string" ? c : (c?.[0] ?? ""));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => text(r[i]).length)));
  const lay = (cells: Cell[], force?: Style): Line =>
    cells.flatMap((c, i): Seg[] => {
      const t = text(c).padEnd(i === cells.length - 1 ? 0 : widths[i] ?? 0);
      const style = force ?? (typeof c === "string" ? "" : c[1]);
      return i === 0 ? [[" " + t, style]] : [["  ", force ?? ""], [t, style]];
    });
  return { header: lay(headers, "bold"), rows: rows.map((r) => lay(r)) };
}

function fit(line: Line, width: number, color: boolean, fill: Style = ""): string {
  let out = "";
  let used = 0;
  for (const [raw, style] of line) {
    if (used >= width) break;
    const text = cleanText(raw).slice(0, width - used);
    used += text.length;
    out += color && style ? `\x1b[${SGR[style]}m${text}\x1b[0m` : text;
  }
  if (used < width && fill) {
    const pad = " ".repeat(width - used);
    out += color ? `\x1b[${SGR[fill]}m${pad}\x1b[0m` : pad;
  }
  return out;
}

function highlight(line: Line): Line {
  return line.map(([t, s]): Seg => [t, s === "" || s === "bold" ? "sel" : s]);
}

/** Keeps the selected row visible in a window of `room` rows. */
function windowed(rows: Line[], selected: number, room: number): Line[] {
  if (rows.length <= room) return rows;
  const start = Math.max(0, Math.min(rows.length - room, selected - Math.floor(room / 2)));
  return rows.slice(start, start + room);
}

function hostsView(input: ScreenInput, snapshot: FailshSnapshot, room: number): Line[] {
  const { state } = input;
  const now = snapshot.now;
  const which = state.lastCall ? "LAST CALL" : "LAST CONNECT";
  const g = grid(
    ["HOST", "REACHABLE", which, "LATENCY", "KERNEL", "MISSES", "SERVICES", "LAST ERROR"],
    snapshot.hosts.map((h) => [
      h.name + (h.self ? " (self)" : ""),
      h.reachable ? ["yes", "UP"] : ["NO", "FAIL"],
      fmtWhen(hostTime(h, state.lastCall), now),
      fmtLatency(h.latencyMs),
      h.liveness?.state === "silent" ? [fmtLiveness(h.liveness), "bad"] : fmtLiveness(h.liveness),
      h.misses > 0 ? [String(h.misses), "bad"] : String(h.misses),
      String(servicesOf(snapshot, h).length),
      h.lastError ?? "",
    ]),
  );
  const sel = clamp(state.host, snapshot.hosts.length);
  const rows = g.rows.map((r, i) => i === sel ? highlight(r) : r);
  const out: Line[] = [[[` Hosts seen by ${snapshot.host}`, "bold"]], [], g.header];
  if (rows.length === 0) out.push(plain(" (no host declared)"));
  out.push(...windowed(rows, sel, Math.max(1, room - out.length)));
  return out;
}

function servicesView(input: ScreenInput, snapshot: FailshSnapshot, room: number): Line[] {
  const host = snapshot.hosts[clamp(input.state.host, snapshot.hosts.length)];
  if (!host) return [plain(" (no host declared)")];
  const list = servicesOf(snapshot, host);
  const now = snapshot.now;
  const stale = !host.reachable;
  const g = grid(
    ["SERVICE", "STATE", "ROLE", "LAST CHANGE", "CHANGES", "DETAIL"],
    list.map((r) => [
      r.name,
      [r.state + (stale ? "?" : ""), stateStyle(r.state)],
      r.role,
      fmtWhen(r.lastChange, now),
      r.changes === null ? "-" : String(r.changes),
      r.detail,
    ]),
  );
  const sel = clamp(input.state.service, list.length);
  const rows = g.rows.map((r, i) => i === sel ? highlight(r) : r);
  const out: Line[] = [
    [[` Services of ${host.name}`, "bold"], [
      host.self
        ? " (this host, as failsh runs them)"
        : stale
        ? ` (last reported at ${fmtWhen(host.lastConnect, now)}; unreachable now: counts as FAIL)`
        : ` (reported at ${fmtWhen(host.lastConnect, now)})`,
      stale ? "bad" : "",
    ]],
    [],
    g.header,
  ];
  if (rows.length === 0) out.push(plain(" (no service reported)"));
  out.push(...windowed(rows, sel, Math.max(1, room - out.length)));
  return out;
}

function detailView(input: ScreenInput, snapshot: FailshSnapshot): Line[] {
  const host = snapshot.hosts[clamp(input.state.host, snapshot.hosts.length)];
  const list = host ? servicesOf(snapshot, host) : [];
  const row = list[clamp(input.state.service, list.length)];
  if (!host || !row) return [plain(" (no service selected: press h, pick a host, then l)")];
  const now = snapshot.now;
  const local = snapshot.services.find((v) => v.name === row.name);
  const out: Line[] = [[[` Service ${row.name}`, "bold"], [` (selected on ${host.name})`, ""]], []];
  const field = (name: string, value: Cell) => {
    out.push([[`   ${name.padEnd(14)}`, "bold"], typeof value === "string" ? [value, ""] : value]);
  };
  if (local) {
    field("State", [local.state, stateStyle(local.state)]);
    field("Role", local.role);
    field("Masters", local.masters.join(", ") || "-");
    field("Slaves", local.slaves.join(", ") || "-");
    field("Interval", fmtDuration(local.intervalMs));
    field("Last change", fmtWhen(local.lastChange, now));
    field("Last decision", fmtDecision(local.lastDecision));
    if (local.lastDecision) field("", `at ${fmtWhen(local.lastDecision.at, now)}`);
    field("Last handler", fmtHandler(local.lastHandler));
    if (local.lastHandler) field("", `at ${fmtWhen(local.lastHandler.startedAt, now)}`);
    if (local.arbiter) {
      field("Arbiter", fmtArbiter(local.arbiter));
      field("", local.arbiter.reason);
    }
  } else {
    field("State", [row.state, stateStyle(row.state)]);
    field("", `${snapshot.host} does not run this service; ${host.name} reports it`);
  }
  out.push([]);
  out.push([[" On every host", "bold"]]);
  const g = grid(
    ["HOST", "REACHABLE", "STATE", "LAST CHANGE", "CHANGES", "SET BY", "DETAIL"],
    snapshot.hosts.map((h) => {
      const r = h.services.find((x) => x.name === row.name);
      return [
        h.name + (h.self ? " (self)" : ""),
        h.reachable ? ["yes", "UP"] : ["NO", "FAIL"],
        r ? [r.state + (h.reachable ? "" : "?"), stateStyle(r.state)] : "-",
        r ? fmtWhen(r.lastChange, now) : "-",
        r ? String(r.changes) : "-",
        r?.setBy ?? "-",
        r?.detail ?? "",
      ];
    }),
  );
  out.push(g.header, ...g.rows);
  const addresses = snapshot.addresses.filter((a) => a.service === row.name);
  out.push([]);
  out.push([[" Addresses held", "bold"]]);
  if (addresses.length === 0) out.push(plain("   (none)"));
  for (const a of addresses) {
    out.push(plain(`   ${a.address} on ${a.device} since ${fmtWhen(a.since, now)}`));
  }
  const events = snapshot.events.filter((e) => e.service === row.name).slice(-8);
  out.push([]);
  out.push([[" Recent events", "bold"]]);
  if (events.length === 0) out.push(plain("   (none)"));
  for (const e of events) {
    out.push(plain(`   ${fmtWhen(e.at, now)}  ${e.kind.padEnd(8)}  ${e.message}`));
  }
  return out;
}

/**
 * Draws the whole screen as text lines (each exactly `width` columns when `color` is off): a
 * title line, the connection state, the view, and a key help line at the bottom.
 *
 * @param input The selection, data, connection state and terminal size.
 * @returns `height` lines, with ANSI colour codes when `color` is on.
 *
 * @example
 * ```ts
 * import { initialState, renderScreen } from "./tui.ts";
 * import { deepEqual } from "node:assert/strict";
 * const lines = renderScreen({
 *   state: initialState(), snapshot: null, status: { kind: "connecting", attempt: 1 },
 *   url: "http://127.0.0.1:1848", width: 80, height: 24, color: false,
 * });
 * deepEqual(lines.length, 24);
 * ```
 */
export function renderScreen(input: ScreenInput): string[] {
  const { width, height, snapshot, status, state } = input;
  const color = input.color ?? true;
  const tabs = (["hosts", "services", "detail"] as const).map((v): Seg => [
    ` ${v === "hosts" ? "Hosts" : v === "services" ? "Services" : "Detail"} `,
    v === state.view ? "sel" : "title",
  ]);
  const title: Line = [
    [` failmon  ${snapshot ? snapshot.host : "?"} @ ${input.url}  `, "title"],
    ...tabs,
    [snapshot ? `  snapshot ${fmtClock(snapshot.now)}Z` : "", "title"],
  ];
  const statusLine: Line = status.kind === "connected"
    ? [[" connected: live updates", "UP"]]
    : status.kind === "lost"
    ? [[
      ` ${fmtStatus(status)}${
        snapshot ? ` (showing the last snapshot, from ${fmtClock(snapshot.now)}Z)` : ""
      }`,
      "alert",
    ]]
    : [[` ${fmtStatus(status)} to ${input.url}`, "RECOVER"]];
  const help: Line = [[
    " Up/Down select  l/Left services  s/Right detail  Tab view  h hosts  c " +
    (state.lastCall ? "last connect" : "last call") + "  q quit",
    "dim",
  ]];
  const room = Math.max(1, height - 4);
  let body: Line[];
  if (!snapshot) {
    body = [
      [],
      plain(
        status.kind === "lost" ? " No snapshot received yet." : " Waiting for the first snapshot…",
      ),
    ];
  } else if (state.view === "hosts") body = hostsView(input, snapshot, room);
  else if (state.view === "services") body = servicesView(input, snapshot, room);
  else body = detailView(input, snapshot);
  const lines: string[] = [fit(title, width, color, "title"), fit(statusLine, width, color)];
  const shown = body.slice(0, room);
  while (shown.length < room) shown.push([]);
  for (const l of shown) lines.push(fit(l, width, color));
  lines.push(fit([], width, color));
  lines.push(fit(help, width, color));
  return lines.slice(0, height).map((l) => color ? l : l.padEnd(width));
}

/** Options of {@linkcode runTui}. */
export interface RunTuiOptions {
  /** Start with the last call shown instead of the last connect. */
  lastCall?: boolean;
  /** Use colours (default: unless `NO_COLOR` is set). */
  color?: boolean;
}

const encoder = new TextEncoder();

function writeAll(text: string): void {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

/**
 * Runs the terminal UI until the user quits (q, Ctrl-C, SIGINT, SIGTERM). The terminal is
 * restored (raw mode off, cursor shown, main screen back) on every exit path, errors included.
 *
 * @param url The failsh monitor URL.
 * @param options Initial toggle and colours.
 * @returns The exit code: 0 after `q`, 130 after SIGINT, 143 after SIGTERM.
 * @throws {Error} When stdin or stdout is not a terminal.
 *
 * @example
 * ```ts ignore
 * import { runTui } from "./tui.ts";
 * Deno.exit(await runTui("http://127.0.0.1:1848"));
 * ```
 */
export async function runTui(url: string, options: RunTuiOptions = {}): Promise<number> {
  if (!Deno.stdin.isTerminal() || !Deno.stdout.isTerminal()) {
    throw new Error(
      "Cannot start the terminal UI: stdin and stdout must be a terminal (use -m l, -m 1 or --json)",
    );
  }
  const color = options.color ?? !Deno.env.get("NO_COLOR");
  let state: TuiState = { ...initialState(), lastCall: options.lastCall ?? false };
  let snapshot: FailshSnapshot | null = null;
  let status: StreamStatus = { kind: "connecting", attempt: 1 };
  let pending = false;
  let finished = false;
  let exitCode = 0;
  let wakeQuit: () => void = () => {};
  const quitting = new Promise<void>((resolve) => (wakeQuit = resolve));
  const quit = (code: number) => {
    if (finished) return;
    finished = true;
    exitCode = code;
    wakeQuit();
  };

  const draw = () => {
    pending = false;
    if (finished) return;
    const size = Deno.consoleSize();
    const lines = renderScreen({
      state,
      snapshot,
      status,
      url,
      width: size.columns,
      height: size.rows,
      color,
    });
    writeAll("\x1b[H" + lines.map((l) => l + "\x1b[0m\x1b[K").join("\r\n") + "\x1b[0m\x1b[J");
  };
  const schedule = () => {
    if (pending) return;
    pending = true;
    queueMicrotask(draw);
  };

  const onInt = () => quit(130);
  const onTerm = () => quit(143);
  const onWinch = () => schedule();
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGWINCH", onWinch);
  Deno.stdin.setRaw(true);
  writeAll("\x1b[?1049h\x1b[?25l\x1b[2J");
  const stream = new SnapshotStream(url, {
    onSnapshot: (s) => {
      snapshot = s;
      schedule();
    },
    onStatus: (s) => {
      status = s;
      schedule();
    },
  });
  const reader = Deno.stdin.readable.getReader();
  const readKeys = (async () => {
    const decoder = new TextDecoder();
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) return quit(0);
      for (const key of parseKeys(decoder.decode(value, { stream: true }))) {
        const next = applyKey(state, key, snapshot);
        if (next === "quit") return quit(0);
        state = next;
      }
      schedule();
    }
  })().catch((error) => {
    if (!finished) {
      finished = true;
      throw error;
    }
  });
  try {
    draw();
    await Promise.race([quitting, readKeys]);
  } finally {
    finished = true;
    stream.close();
    reader.releaseLock();
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    Deno.removeSignalListener("SIGWINCH", onWinch);
    try {
      Deno.stdin.setRaw(false);
    } catch {
      // stdin may be gone already
    }
    writeAll("\x1b[0m\x1b[?25h\x1b[?1049l");
  }
  await stream.done;
  return exitCode;
}
