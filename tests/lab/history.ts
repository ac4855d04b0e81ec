/**
 * The history checker (Jepsen's idea on our lab): record what really happened, then check
 * invariants on the record, not on what the daemons say.
 *
 * **Recorders** (all on the machine's one `CLOCK_REALTIME`, shared by every namespace):
 *
 * - {@linkcode recordAddresses}: `ip -ts -4 monitor address link` in each host namespace, the
 *   kernel's own account of the VIP being added and deleted, and of the link's carrier.
 * - {@linkcode requestsFromProbe}: the lab client's attempts (`tests/lab/probe.ts`): who answered
 *   each request and, when the service knows it, with which epoch (`tcp_service.ts --epoch-file`
 *   answers `h1@42`).
 * - {@linkcode startArpProber}: in the client namespace, one broadcast ARP request for the VIP per
 *   window (`arping -b`), recording every MAC that answered it.
 *
 * **Invariants** ({@linkcode checkHistory}):
 *
 * - **I1** holder intervals never overlap: a host *holds* the VIP while the kernel has the address
 *   on its `eth0` **and** that link has carrier (an address on a link without carrier answers
 *   nobody). The largest overlap and the total are reported; the overlap of the address alone
 *   (carrier ignored) is reported beside it.
 * - **I2** no ARP probe window has answers from two or more MACs.
 * - **I3** the epochs a client sees never go backwards (in the order the answers arrived).
 * - **L** after each heal, exactly one holder within the stated bound (and until the end of the
 *   record).
 *
 * {@linkcode formatHistory} prints a short table; the report itself is the JSON.
 *
 * @module
 */
import type { ManagedProcess } from "./exec.ts";
import { type Lab, LAB_DEVICE } from "./netns.ts";
import type { Attempt } from "./probe.ts";

/** A change of the VIP on a host, from the kernel. */
export interface AddressEvent {
  /** When (ms since the epoch, µs precision). */
  at: number;
  /** The host. */
  host: string;
  /** Added or deleted. */
  op: "add" | "del";
}

/** A change of a host's link carrier, from the kernel. */
export interface CarrierEvent {
  /** When (ms since the epoch). */
  at: number;
  /** The host. */
  host: string;
  /** Whether the link has carrier (`LOWER_UP` and not `NO-CARRIER`). */
  carrier: boolean;
}

/** One request of a client through the VIP. */
export interface RequestRecord {
  /** The client. */
  client: string;
  /** When it started (ms since the epoch). */
  start: number;
  /** When its answer (or failure) came. */
  end: number;
  /** Whether a host answered. */
  ok: boolean;
  /** Who answered, or `null`. */
  host: string | null;
  /** The epoch it answered with (decimal string), or `null` when it gave none. */
  epoch: string | null;
}

/** One ARP probe: a broadcast request for the VIP and every MAC that answered it. */
export interface ArpWindow {
  /** When the request went out (ms since the epoch). */
  start: number;
  /** When the window closed. */
  end: number;
  /** The MACs that answered (lower case, distinct). */
  macs: string[];
}

/** Each host's state when recording started. */
export interface InitialState {
  /** The host. */
  host: string;
  /** The VIP is on its `eth0`. */
  address: boolean;
  /** Its `eth0` has carrier. */
  carrier: boolean;
}

/** Everything recorded in one run. */
export interface History {
  /** The VIP. */
  address: string;
  /** The hosts. */
  hosts: string[];
  /** Start of the record (ms since the epoch). */
  from: number;
  /** End of the record. */
  to: number;
  /** Each host's state at `from`. */
  initial: InitialState[];
  /** Address events (any order). */
  addresses: AddressEvent[];
  /** Carrier events (any order). */
  carriers: CarrierEvent[];
  /** Client requests (any order). */
  requests: RequestRecord[];
  /** ARP windows (any order). */
  arp: ArpWindow[];
  /** MAC → host, to name the MACs in the report. */
  macs: Record<string, string>;
}

/** Options of {@linkcode checkHistory}. */
export interface CheckOptions {
  /** Times the faults were healed (for L). */
  heals?: number[];
  /** L: the bound within which exactly one host must hold after a heal, in ms (default 5000). */
  boundMs?: number;
}

/** One period with two or more holders. */
export interface Overlap {
  /** Start (ms since the epoch). */
  from: number;
  /** End. */
  to: number;
  /** Duration in ms. */
  ms: number;
  /** The holders during it. */
  hosts: string[];
}

/** The checker's verdict. */
export interface HistoryReport {
  /** All invariants hold. */
  ok: boolean;
  /** Length of the record in ms. */
  spanMs: number;
  /** I1: holder intervals (address + carrier) never overlap. */
  i1: {
    ok: boolean;
    /** The longest period with two or more holders, in ms. */
    largestOverlapMs: number;
    /** All such periods together, in ms. */
    totalOverlapMs: number;
    /** The periods (at most 20). */
    overlaps: Overlap[];
    /** The same with the carrier ignored (the address alone). */
    addressOnlyLargestOverlapMs: number;
    /** Each host's holding intervals (at most 50 per host). */
    intervals: Record<string, [number, number][]>;
  };
  /** I2: no ARP window with two MACs. */
  i2: {
    ok: boolean;
    windows: number;
    doubleWindows: number;
    /** The first few such windows, MACs named by host where known. */
    examples: { at: number; answered: string[] }[];
  };
  /** I3: epochs never go backwards for a client. */
  i3: {
    ok: boolean;
    requests: number;
    answered: number;
    withEpoch: number;
    /** Answers with an epoch below one the same client saw before (at most 20). */
    regressions: {
      client: string;
      at: number;
      epoch: string;
      after: string;
      host: string | null;
    }[];
  };
  /** L: after each heal, exactly one holder within the bound. */
  l: {
    ok: boolean;
    boundMs: number;
    heals: {
      at: number;
      /** Time from the heal until exactly one holder for good, or `null` if not within the bound. */
      convergedAfterMs: number | null;
      holder: string | null;
      /** Holder changes between the heal and the end of the record. */
      changes: number;
    }[];
  };
}

// ---------------------------------------------------------------------------------------------
// Parsing.

const TS = /^\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?\]\s*(.*)$/;

/**
 * Reads the timestamp `ip -ts` puts before each line (local time, µs): ms since the epoch.
 *
 * @param line One line of `ip -ts monitor`.
 * @returns The time and the rest of the line, or `null` when the line has no timestamp.
 *
 * @example
 * ```ts
 * import { parseTimestamped } from "./history.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = parseTimestamped("[2026-12-01T10:30:21.491789] 3: eth0 inet 198.18.7.100/24");
 * deepEqual(r?.rest, "3: eth0 inet 198.18.7.100/24");
 * ```
 */
export function parseTimestamped(line: string): { at: number; rest: string } | null {
  const m = TS.exec(line);
  if (!m) return null;
  const base = new Date(m[1]!).getTime(); // No zone: local time, as ip prints it.
  if (!Number.isFinite(base)) return null;
  const frac = (m[2] ?? "").padEnd(9, "0");
  return { at: base + Number(frac) / 1e6, rest: m[3] ?? "" };
}

/**
 * Parses one line of `ip -ts -4 monitor address link` run in a host's namespace.
 *
 * @param line The line.
 * @param host The host it came from.
 * @param address The VIP (without prefix length).
 * @param device The link to follow (default `eth0`).
 * @returns An address or carrier event, or `null` for any other line.
 *
 * @example
 * ```ts
 * import { parseMonitorLine } from "./history.ts";
 * import { deepEqual } from "node:assert/strict";
 * const line = "[2026-12-01T10:30:22.191068] Deleted 3: eth0    inet 198.18.7.100/24 scope global eth0";
 * const e = parseMonitorLine(line, "h1", "198.18.7.100");
 * deepEqual(e?.kind === "address" ? e.op : null, "del");
 * ```
 */
export function parseMonitorLine(
  line: string,
  host: string,
  address: string,
  device = LAB_DEVICE,
):
  | ({ kind: "address" } & AddressEvent)
  | ({ kind: "carrier" } & CarrierEvent)
  | null {
  const t = parseTimestamped(line);
  if (!t) return null;
  let rest = t.rest;
  const deleted = rest.startsWith("Deleted ");
  if (deleted) rest = rest.slice("Deleted ".length);
  const addr = /^\d+:\s+(\S+)\s+inet\s+(\d{1,3}(?:\.\d{1,3}){3})\//.exec(rest);
  if (addr) {
    if (addr[1] !== device || addr[2] !== address) return null;
    return { kind: "address", at: t.at, host, op: deleted ? "del" : "add" };
  }
  const link = /^\d+:\s+([^:@\s]+)(?:@[^:\s]+)?:\s+<([^>]*)>/.exec(rest);
  if (link) {
    if (link[1] !== device) return null;
    const flags = (link[2] ?? "").split(",");
    const carrier = !deleted && flags.includes("LOWER_UP") && !flags.includes("NO-CARRIER");
    return { kind: "carrier", at: t.at, host, carrier };
  }
  return null;
}

/**
 * Splits a client answer `h1@42` into host and epoch (`h1` alone: no epoch).
 *
 * @param who The answer.
 * @returns Host and epoch.
 *
 * @example
 * ```ts
 * import { parseAnswer } from "./history.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseAnswer("h2@1042"), { host: "h2", epoch: "1042" });
 * ```
 */
export function parseAnswer(who: string): { host: string; epoch: string | null } {
  const m = /^([^@\s]+)@(\d{1,20})$/.exec(who);
  return m ? { host: m[1]!, epoch: m[2]! } : { host: who, epoch: null };
}

/**
 * The lab client's attempts as request records.
 *
 * @param attempts The probe's attempts.
 * @param client The client's name (default `client`).
 * @returns The records.
 */
export function requestsFromProbe(
  attempts: readonly Attempt[],
  client = "client",
): RequestRecord[] {
  return attempts.map((a) => {
    const ans = a.ok ? parseAnswer(a.who) : null;
    return {
      client,
      start: a.start,
      end: a.start + a.durationMs,
      ok: a.ok,
      host: ans?.host ?? null,
      epoch: ans?.epoch ?? null,
    };
  });
}

/**
 * The MACs in arping's output (`Unicast reply from 198.18.7.100 [AA:BB:…]  0.6ms`).
 *
 * @param output arping's standard output.
 * @param address The VIP.
 * @returns Distinct MACs, lower case, in order of answer.
 *
 * @example
 * ```ts
 * import { parseArping } from "./history.ts";
 * import { deepEqual } from "node:assert/strict";
 * const out = "Unicast reply from 198.18.7.100 [06:83:21:E0:17:C1]  0.584ms\n";
 * deepEqual(parseArping(out, "198.18.7.100"), ["06:83:21:e0:17:c1"]);
 * ```
 */
export function parseArping(output: string, address: string): string[] {
  const macs: string[] = [];
  for (const line of output.split("\n")) {
    const m = /reply from (\S+) \[([0-9A-Fa-f:]{17})\]/.exec(line);
    if (!m || m[1] !== address) continue;
    const mac = m[2]!.toLowerCase();
    if (!macs.includes(mac)) macs.push(mac);
  }
  return macs;
}

// ---------------------------------------------------------------------------------------------
// The checker.

interface Edge {
  at: number;
  host: string;
  kind: "address" | "carrier";
  value: boolean;
}

/** Each host's intervals where `holds(address, carrier)` is true, within [from, to]. */
function intervalsOf(
  h: History,
  holds: (address: boolean, carrier: boolean) => boolean,
): Map<string, [number, number][]> {
  const edges: Edge[] = [
    ...h.addresses.map((e) => ({
      at: e.at,
      host: e.host,
      kind: "address" as const,
      value: e.op === "add",
    })),
    ...h.carriers.map((e) => ({
      at: e.at,
      host: e.host,
      kind: "carrier" as const,
      value: e.carrier,
    })),
  ].filter((e) => e.at >= h.from && e.at <= h.to).sort((x, y) => x.at - y.at);
  const out = new Map<string, [number, number][]>();
  for (const host of h.hosts) {
    const init = h.initial.find((i) => i.host === host) ?? { host, address: false, carrier: true };
    let address = init.address;
    let carrier = init.carrier;
    let since: number | null = holds(address, carrier) ? h.from : null;
    const list: [number, number][] = [];
    for (const e of edges) {
      if (e.host !== host) continue;
      if (e.kind === "address") address = e.value;
      else carrier = e.value;
      const now = holds(address, carrier);
      if (now && since === null) since = e.at;
      if (!now && since !== null) {
        if (e.at > since) list.push([since, e.at]);
        since = null;
      }
    }
    if (since !== null && h.to > since) list.push([since, h.to]);
    out.set(host, list);
  }
  return out;
}

/** Periods where two or more hosts hold, from the intervals. */
function overlapsOf(intervals: Map<string, [number, number][]>): Overlap[] {
  const points: { at: number; host: string; delta: 1 | -1 }[] = [];
  for (const [host, list] of intervals) {
    for (const [a, b] of list) points.push({ at: a, host, delta: 1 }, { at: b, host, delta: -1 });
  }
  // Ends before starts at the same instant: touching intervals do not overlap.
  points.sort((x, y) => x.at - y.at || x.delta - y.delta);
  const holding = new Set<string>();
  const out: Overlap[] = [];
  let open: { from: number; hosts: Set<string> } | null = null;
  for (const p of points) {
    if (p.delta === 1) holding.add(p.host);
    else holding.delete(p.host);
    if (holding.size >= 2) {
      if (!open) open = { from: p.at, hosts: new Set(holding) };
      else for (const x of holding) open.hosts.add(x);
    } else if (open) {
      if (p.at > open.from) {
        out.push({
          from: open.from,
          to: p.at,
          ms: p.at - open.from,
          hosts: [...open.hosts].sort(),
        });
      }
      open = null;
    }
  }
  return out;
}

/** Who holds at time `t` (sorted). */
function holdersAt(intervals: Map<string, [number, number][]>, t: number): string[] {
  const out: string[] = [];
  for (const [host, list] of intervals) {
    if (list.some(([a, b]) => a <= t && t < b)) out.push(host);
  }
  return out.sort();
}

/**
 * Checks the invariants I1, I2, I3 and L on a recorded history.
 *
 * @param h The history.
 * @param options Heal times and the bound for L.
 * @returns The report (it is also the JSON output).
 *
 * @example
 * ```ts
 * import { checkHistory } from "./history.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = checkHistory({
 *   address: "198.18.7.100", hosts: ["h1", "h2"], from: 0, to: 10_000,
 *   initial: [{ host: "h1", address: true, carrier: true }, { host: "h2", address: false, carrier: true }],
 *   addresses: [{ at: 4000, host: "h2", op: "add" }, { at: 4500, host: "h1", op: "del" }],
 *   carriers: [], requests: [], arp: [], macs: {},
 * });
 * deepEqual(r.i1.largestOverlapMs, 500);
 * ```
 */
export function checkHistory(h: History, options: CheckOptions = {}): HistoryReport {
  const effective = intervalsOf(h, (a, c) => a && c);
  const addressOnly = intervalsOf(h, (a) => a);
  const overlaps = overlapsOf(effective);
  const rawOverlaps = overlapsOf(addressOnly);
  const largest = overlaps.reduce((m, o) => Math.max(m, o.ms), 0);
  const intervals: Record<string, [number, number][]> = {};
  for (const [host, list] of effective) intervals[host] = list.slice(0, 50);

  // I2.
  const name = (mac: string) => h.macs[mac] ? `${h.macs[mac]} (${mac})` : mac;
  const doubles = h.arp.filter((w) => new Set(w.macs).size >= 2).sort((x, y) => x.start - y.start);

  // I3: per client, in the order the answers arrived.
  const requests = [...h.requests].sort((x, y) => x.end - y.end || x.start - y.start);
  const maxSeen = new Map<string, bigint>();
  const regressions: HistoryReport["i3"]["regressions"] = [];
  for (const r of requests) {
    if (!r.ok || r.epoch === null) continue;
    const e = BigInt(r.epoch);
    const max = maxSeen.get(r.client);
    if (max !== undefined && e < max) {
      if (regressions.length < 20) {
        regressions.push({
          client: r.client,
          at: r.end,
          epoch: r.epoch,
          after: max.toString(),
          host: r.host,
        });
      }
    } else {
      maxSeen.set(r.client, e);
    }
  }

  // L: after each heal, exactly one holder from some point within the bound to the end (or to
  // the next heal).
  const boundMs = options.boundMs ?? 5000;
  const heals = [...(options.heals ?? [])].sort((a, b) => a - b);
  const changePoints = [...new Set([...effective.values()].flat().flat())].sort((a, b) => a - b);
  const lHeals = heals.map((at, i) => {
    const end = Math.min(heals[i + 1] ?? h.to, h.to);
    // Candidate start times: the heal itself and every change after it, within the bound.
    const candidates = [
      at,
      ...changePoints.filter((t) => t > at && t <= Math.min(at + boundMs, end)),
    ];
    let converged: number | null = null;
    let holder: string | null = null;
    for (const t of candidates) {
      const later = [t, ...changePoints.filter((p) => p > t && p < end)];
      const sets = later.map((p) => holdersAt(effective, p).join(","));
      if (
        sets.every((s) => s === sets[0]) && sets[0] !== undefined &&
        sets[0].split(",").filter(Boolean).length === 1
      ) {
        converged = t - at;
        holder = sets[0];
        break;
      }
    }
    let changes = 0;
    let last = holdersAt(effective, at).join(",");
    for (const p of changePoints.filter((p) => p > at && p < end)) {
      const now = holdersAt(effective, p).join(",");
      if (now !== last) changes++;
      last = now;
    }
    return { at, convergedAfterMs: converged, holder, changes };
  });

  const i1 = {
    ok: overlaps.length === 0,
    largestOverlapMs: largest,
    totalOverlapMs: overlaps.reduce((s, o) => s + o.ms, 0),
    overlaps: overlaps.slice(0, 20),
    addressOnlyLargestOverlapMs: rawOverlaps.reduce((m, o) => Math.max(m, o.ms), 0),
    intervals,
  };
  const i2 = {
    ok: doubles.length === 0,
    windows: h.arp.length,
    doubleWindows: doubles.length,
    examples: doubles.slice(0, 5).map((w) => ({ at: w.start, answered: w.macs.map(name) })),
  };
  const i3 = {
    ok: regressions.length === 0,
    requests: h.requests.length,
    answered: h.requests.filter((r) => r.ok).length,
    withEpoch: h.requests.filter((r) => r.ok && r.epoch !== null).length,
    regressions,
  };
  const l = {
    ok: lHeals.every((x) => x.convergedAfterMs !== null),
    boundMs,
    heals: lHeals,
  };
  return { ok: i1.ok && i2.ok && i3.ok && l.ok, spanMs: h.to - h.from, i1, i2, i3, l };
}

/**
 * The report as a short table.
 *
 * @param r The report.
 * @param title A title line.
 * @returns Text.
 */
export function formatHistory(r: HistoryReport, title = "history"): string {
  const ms = (n: number) => `${Math.round(n)} ms`;
  const rows: [string, string, string][] = [
    [
      "I1 holders never overlap",
      r.i1.ok ? "ok" : "VIOLATED",
      `largest ${ms(r.i1.largestOverlapMs)}, total ${
        ms(r.i1.totalOverlapMs)
      }, ${r.i1.overlaps.length} period(s)` +
      (r.i1.overlaps[0] ? ` (${r.i1.overlaps[0].hosts.join("+")})` : "") +
      `; address alone: largest ${ms(r.i1.addressOnlyLargestOverlapMs)}`,
    ],
    [
      "I2 one MAC per ARP window",
      r.i2.ok ? "ok" : "VIOLATED",
      `${r.i2.doubleWindows} of ${r.i2.windows} windows with 2+ MACs` +
      (r.i2.examples[0] ? ` (${r.i2.examples[0].answered.join(", ")})` : ""),
    ],
    [
      "I3 epochs never go back",
      r.i3.ok ? "ok" : "VIOLATED",
      `${r.i3.withEpoch} of ${r.i3.answered} answers carried an epoch; ${r.i3.regressions.length} went back`,
    ],
    [
      "L one holder after a heal",
      r.l.heals.length === 0 ? "-" : r.l.ok ? "ok" : "VIOLATED",
      r.l.heals.length === 0
        ? "no heal recorded"
        : r.l.heals.map((x) =>
          x.convergedAfterMs === null
            ? `not within ${ms(r.l.boundMs)}`
            : `${x.holder} after ${ms(x.convergedAfterMs)} (bound ${
              ms(r.l.boundMs)
            }, ${x.changes} change(s))`
        ).join("; "),
    ],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  return [
    `${title} (${ms(r.spanMs)} recorded)`,
    ...rows.map(([a, b, c]) => `  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Recorders in the lab.

/** The running kernel recorders: `stop()` ends them and returns the events. */
export interface AddressRecorder {
  /** When recording started (the initial state's time). */
  from: number;
  /** Each host's state at `from`. */
  initial: InitialState[];
  /** Address events so far. */
  addresses: AddressEvent[];
  /** Carrier events so far. */
  carriers: CarrierEvent[];
  /** Stops the monitors. */
  stop(): Promise<void>;
}

/** Most events kept per recorder (a flapping link cannot grow it without bound). */
const MAX_EVENTS = 100_000;

/**
 * Starts `ip -ts -4 monitor address link` in each host's namespace, then reads each host's
 * state (events before that instant are in the state, so they are dropped).
 *
 * @param lab The lab.
 * @param address The VIP (default the lab's).
 * @returns The recorder.
 */
export async function recordAddresses(lab: Lab, address = lab.vip): Promise<AddressRecorder> {
  const addresses: AddressEvent[] = [];
  const carriers: CarrierEvent[] = [];
  const procs: ManagedProcess[] = lab.hosts.map((h) =>
    lab.spawn(h, ["ip", "-ts", "-4", "monitor", "address", "link"], {
      label: `${h}-history-monitor`,
      onStdoutLine: (line) => {
        const e = parseMonitorLine(line, h, address);
        if (!e) return;
        if (e.kind === "address" && addresses.length < MAX_EVENTS) {
          addresses.push({ at: e.at, host: e.host, op: e.op });
        } else if (e.kind === "carrier" && carriers.length < MAX_EVENTS) {
          carriers.push({ at: e.at, host: e.host, carrier: e.carrier });
        }
      },
    })
  );
  // `ip monitor` subscribes right after it starts.
  await new Promise((r) => setTimeout(r, 300));
  const from = Date.now();
  const initial: InitialState[] = [];
  for (const h of lab.hosts) {
    const addrs = await lab.addresses(h);
    const link = await lab.exec(h, ["ip", "-j", "link", "show", "dev", LAB_DEVICE], {
      timeoutMs: 5000,
    });
    const flags = (JSON.parse(link.stdout) as { flags?: string[] }[])[0]?.flags ?? [];
    initial.push({
      host: h,
      address: addrs.some((a) => a.split("/")[0] === address),
      carrier: flags.includes("LOWER_UP") && !flags.includes("NO-CARRIER"),
    });
  }
  return {
    from,
    initial,
    addresses,
    carriers,
    async stop() {
      // Let the last events reach us before stopping.
      await new Promise((r) => setTimeout(r, 200));
      await Promise.all(procs.map((p) => p.stop({ graceMs: 1000 })));
    },
  };
}

/** The running ARP prober. */
export interface ArpProber {
  /** The windows so far. */
  windows: ArpWindow[];
  /** Stops probing (waits for the probe in flight). */
  stop(): Promise<void>;
}

/**
 * Probes who answers ARP for the VIP from a member's namespace (the client by default): one
 * broadcast request per window (`arping -b`, so it never switches to unicast after the first
 * answer), every reply within `waitMs` recorded, a new window every `everyMs`.
 *
 * The replies reach that namespace's kernel too, which may refresh its neighbour entry for the
 * VIP (at most once per `locktime`, 1 s): the prober is not entirely invisible to the client.
 *
 * @param lab The lab.
 * @param options Member, period and wait in ms (defaults `client`, 100, 100), address.
 * @returns The prober.
 */
export function startArpProber(
  lab: Lab,
  options: { member?: string; everyMs?: number; waitMs?: number; address?: string } = {},
): ArpProber {
  const member = options.member ?? "client";
  const address = options.address ?? lab.vip;
  const everyMs = options.everyMs ?? 100;
  const wait = ((options.waitMs ?? 100) / 1000).toFixed(3);
  const windows: ArpWindow[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const start = Date.now();
      // -c 2: stop early once two MACs answered; `timeout -s INT` ends the window otherwise.
      const r = await lab.exec(member, [
        "timeout",
        "-s",
        "INT",
        wait,
        "arping",
        "-b",
        "-c",
        "2",
        "-w",
        "1",
        "-I",
        LAB_DEVICE,
        address,
      ], { check: false, timeoutMs: 3000 }).catch(() => null);
      const end = Date.now();
      if (r && windows.length < MAX_EVENTS) {
        windows.push({ start, end, macs: parseArping(r.stdout, address) });
      }
      const pause = start + everyMs - Date.now();
      if (pause > 0) await new Promise((res) => setTimeout(res, pause));
    }
  })();
  return {
    windows,
    async stop() {
      running = false;
      await loop;
    },
  };
}

/**
 * MAC → host for every host of the lab (to name the MACs in the report).
 *
 * @param lab The lab.
 * @returns The map.
 */
export async function labMacs(lab: Lab): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const h of lab.hosts) out[await lab.mac(h)] = h;
  return out;
}
