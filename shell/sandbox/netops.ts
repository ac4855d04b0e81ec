/**
 * Privileged actions of failsh's supervisor: running a program with a fixed argv, a time limit
 * and bounded output (its whole process group killed on timeout), and the network drivers that
 * put addresses in place.
 *
 * - `linux`: the hot path starts no process. Addresses are added and removed through a
 *   long-lived `ip -force -batch -` (`./ip_batch.ts`), and the first announcement is sent at once
 *   from a packet socket prepared when the driver starts (`./announcer.ts`): a gratuitous ARP for
 *   IPv4, an unsolicited neighbour advertisement (Override flag) for IPv6, whose address is added
 *   with `nodad` so it is usable at once. The rest of a burst (one at once, then one a second,
 *   as the spawned `arping -c COUNT-1` did) and the periodic refresh, for both families, come
 *   from the same socket. When the batch cannot answer (it
 *   died, timed out, could not start) the command is run as a process as before
 *   (`ip addr add ADDR/LEN dev DEV`), and without the socket (no FFI, no `CAP_NET_RAW`)
 *   announcements are `arping -U -c N -I DEV ADDR` (iputils) for IPv4 and, for IPv6, the
 *   kernel's own advertisement (`ndisc_notify=1`, `dad_transmits=0`, no `nodad`), with no
 *   refresh; each fallback is told to `onError` with its reason. Release is `ip addr del`.
 * - `simulated`: records holdings in memory (and optionally a JSON file) and changes nothing on
 *   the system; for the no-root demo and for tests.
 *
 * Every command run is written to the audit log with its outcome, and every takeover with one
 * `takeover` record carrying the decision, address-added and first-announcement times.
 *
 * @module
 */
import type { HeldAddress } from "../../lib/types.ts";
import type { Cidr } from "./cidr.ts";
import type { AuditLog } from "./audit.ts";
import { IpBatch, IpBatchUnavailableError } from "./ip_batch.ts";
import { AnnouncerUnavailableError, PacketAnnouncer } from "./announcer.ts";

/** Largest captured stdout or stderr of a program, in bytes (the rest is dropped). */
export const DEFAULT_MAX_OUTPUT = 64 * 1024;

/** Time limit of one `ip` command, in ms. */
export const IP_TIMEOUT_MS = 5_000;

/** The outcome of {@linkcode runFixed}. */
export interface RunOutcome {
  /** Exit code (128 + signal number when killed by a signal, -1 if it could not start). */
  code: number;
  /** The signal that ended it, if any. */
  signal: string | null;
  /** Captured stdout (UTF-8, at most `maxOutput` bytes). */
  stdout: string;
  /** Captured stderr (UTF-8, at most `maxOutput` bytes). */
  stderr: string;
  /** Whether output was cut at `maxOutput`. */
  truncated: boolean;
  /** Whether it was killed at its time limit. */
  timedOut: boolean;
  /** Whether it was killed because `signal` aborted. */
  aborted: boolean;
  /** Wall time in ms. */
  durationMs: number;
}

/** Options of {@linkcode runFixed}. */
export interface RunFixedOptions {
  /** Time limit in ms; the process group is killed (SIGKILL) after it. */
  timeoutMs: number;
  /** Largest captured stdout and stderr, each, in bytes (default 64 KiB). */
  maxOutput?: number;
  /** Aborting kills the process group too. */
  signal?: AbortSignal;
  /** Environment (the supervisor's is never passed); default `PATH` and `LANG=C` only. */
  env?: Record<string, string>;
  /** Working directory (default `/`). */
  cwd?: string;
  /**
   * Run the program in its own session (`setsid`, so a timeout kills its whole process group)
   * with a parent-death signal (`setpriv --pdeathsig KILL`, so it dies with failsh). Default
   * `true`. `false` starts the program directly, saving the two extra `exec()`s (about 1.5 ms on
   * the takeover path): only for programs that do not fork and end on their own (`ip`).
   */
  isolate?: boolean;
}

const SETSID_CANDIDATES = ["/usr/bin/setsid", "/bin/setsid"];

function firstExisting(candidates: string[]): string | null {
  for (const c of candidates) {
    try {
      if (Deno.statSync(c).isFile) return c;
    } catch {
      // try the next one
    }
  }
  return null;
}

let setsidPath: string | null | undefined;

const SETPRIV_CANDIDATES = ["/usr/bin/setpriv", "/bin/setpriv"];

let setprivPath: string | null | undefined;

async function readBounded(
  stream: ReadableStream<Uint8Array>,
  max: number,
): Promise<{ bytes: Uint8Array; truncated: boolean; reader: ReadableStreamDefaultReader }> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  const result = { bytes: new Uint8Array(), truncated: false, reader };
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      if (size < max) {
        const take = value.subarray(0, max - size);
        chunks.push(take);
        size += take.length;
        if (take.length < value.length) truncated = true;
      } else {
        truncated = true;
      }
    }
  } catch {
    // cancelled or broken pipe: keep what we have
  }
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  result.bytes = bytes;
  result.truncated = truncated;
  return result;
}

/**
 * Runs an executable with a fixed argument list (no shell), a clean environment, stdin closed,
 * bounded output and a time limit. The program runs in its own session (`setsid`), so on timeout
 * or abort the whole process group is killed, not just the program; and with a parent-death
 * signal (`setpriv --pdeathsig KILL`), so it does not outlive failsh.
 *
 * @param path Absolute path of the executable.
 * @param args Its arguments.
 * @param options Time limit, output bound, abort signal, environment, working directory.
 * @returns The outcome; a program that cannot be started gives `code` -1 and the reason in
 *   `stderr` rather than throwing.
 *
 * @example
 * ```ts
 * import { runFixed } from "./netops.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = await runFixed("/bin/echo", ["hello"], { timeoutMs: 5000 });
 * deepEqual([r.code, r.stdout], [0, "hello\n"]);
 * ```
 */
export async function runFixed(
  path: string,
  args: readonly string[],
  options: RunFixedOptions,
): Promise<RunOutcome> {
  const started = performance.now();
  const max = options.maxOutput ?? DEFAULT_MAX_OUTPUT;
  const isolate = options.isolate ?? true;
  if (setsidPath === undefined) setsidPath = firstExisting(SETSID_CANDIDATES);
  if (setprivPath === undefined) setprivPath = firstExisting(SETPRIV_CANDIDATES);
  const setsid = isolate ? setsidPath : null;
  // setsid: its own process group, killed whole; setpriv --pdeathsig: killed if failsh dies.
  const argv = [
    ...(setsid ? [setsid] : []),
    ...(isolate && setprivPath ? [setprivPath, "--pdeathsig", "KILL", "--"] : []),
    path,
    ...args,
  ];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0] as string, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: options.env ?? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
      cwd: options.cwd ?? "/",
    }).spawn();
  } catch (e) {
    return {
      code: -1,
      signal: null,
      stdout: "",
      stderr: `Cannot start ${path}: ${(e as Error).message}`,
      truncated: false,
      timedOut: false,
      aborted: false,
      durationMs: performance.now() - started,
    };
  }
  const pid = child.pid;
  let timedOut = false;
  let aborted = false;
  let exited = false;
  const killGroup = () => {
    if (exited) return;
    if (setsid) {
      try {
        Deno.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, Math.max(1, options.timeoutMs));
  const onAbort = () => {
    aborted = true;
    killGroup();
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const out = readBounded(child.stdout, max);
  const err = readBounded(child.stderr, max);
  const status = await child.status;
  exited = true;
  clearTimeout(timer);
  options.signal?.removeEventListener("abort", onAbort);
  // A background grandchild may keep the pipes open: wait a little, then stop reading.
  let drainTimer: ReturnType<typeof setTimeout> | undefined;
  const drained = Promise.all([out, err]);
  const late = await Promise.race([
    drained.then(() => false),
    new Promise<boolean>((resolve) => {
      drainTimer = setTimeout(() => resolve(true), 300);
    }),
  ]);
  clearTimeout(drainTimer);
  if (late) {
    // Cancel the pending reads; what was read so far is kept.
    await Promise.allSettled([child.stdout.cancel(), child.stderr.cancel()]);
  }
  const [o, e] = await drained;
  const dec = new TextDecoder();
  return {
    code: status.code,
    signal: status.signal ?? null,
    stdout: dec.decode(o.bytes),
    stderr: dec.decode(e.bytes),
    truncated: o.truncated || e.truncated,
    timedOut,
    aborted,
    durationMs: Math.round(performance.now() - started),
  };
}

function describe(r: RunOutcome): string {
  if (r.timedOut) return `killed after its time limit (${r.durationMs} ms)`;
  if (r.aborted) return `killed on abort after ${r.durationMs} ms`;
  if (r.code === -1) return r.stderr;
  const err = r.stderr.trim().split("\n").slice(-2).join(" / ").slice(0, 300);
  return `exit code ${r.code} in ${r.durationMs} ms${err ? `: ${err}` : ""}`;
}

// ---------------------------------------------------------------------------------------------
// Network drivers
// ---------------------------------------------------------------------------------------------

/** Options of a takeover. */
export interface DriverTakeoverOptions {
  /** Gratuitous ARP packets sent right after (IPv4; 0 = none). */
  arpCount: number;
  /** Period of a one-packet ARP refresh while held, in ms (0 = none). */
  refreshMs: number;
  /** The service that takes the address (recorded in {@linkcode HeldAddress}). */
  service: string | null;
  /**
   * When the takeover was decided (epoch ms, fractions allowed), for the audit record's
   * timings; default: when `takeover()` is called.
   */
  decidedAt?: number;
}

/** Puts addresses in place and takes them away; remembers what it holds. */
export interface NetDriver {
  /** `linux` or `simulated`. */
  readonly kind: "linux" | "simulated";
  /**
   * Adds the address to the device and announces it. Idempotent: taking an address already
   * present succeeds (and announces again).
   */
  takeover(address: Cidr, device: string, options: DriverTakeoverOptions): Promise<void>;
  /** Removes the address (an address already absent is not an error). */
  release(address: Cidr, device: string): Promise<void>;
  /**
   * Stops the gratuitous ARP bursts still running for a held address, keeping the address (and
   * its periodic refresh). Returns how many bursts were stopped.
   */
  quiet(address: Cidr, device: string): number;
  /** What is held now. */
  held(): HeldAddress[];
  /** Releases every held address; returns the ones that failed, with the error. */
  releaseAll(): Promise<{ address: string; device: string; error: string }[]>;
  /** Stops refresh timers and waits for announcements in flight. Held addresses stay. */
  close(): Promise<void>;
}

/** Options shared by the drivers. */
export interface NetDriverOptions {
  /** Where commands are recorded. */
  audit?: AuditLog;
  /** Linux: run every command inside this network namespace (`ip netns exec NAME …`). */
  netns?: string;
  /** Linux: path of `ip` (default: the first of /usr/sbin/ip, /sbin/ip, /usr/bin/ip, /bin/ip). */
  ipPath?: string;
  /** Linux: path of `arping` (default: /usr/bin/arping, /usr/sbin/arping…). */
  arpingPath?: string;
  /** Simulated: file where holdings are written (JSON, atomically) after every change. */
  stateFile?: string;
  /** Told about background failures (an arping that failed…) and about fallbacks. */
  onError?: (message: string) => void;
  /**
   * Linux: add and remove addresses through a long-lived `ip -force -batch -` (default `true`);
   * `false` runs `ip` as a process for each change.
   */
  ipBatch?: boolean;
  /**
   * Linux: announce from a packet socket opened at start through FFI (default `true`); `false`
   * uses `arping` for IPv4 and the kernel's advertisement for IPv6.
   */
  packetAnnouncer?: boolean;
  /**
   * The arbiter's epoch of a service's holding, written with each gratuitous ARP in the audit
   * log (`null`: no arbiter, or the key is not this host's).
   */
  epochOf?: (service: string | null) => string | null;
}

/** Epoch time in ms with sub-millisecond precision. */
function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Period of the packets of a burst after the first, in ms (what `arping` does). */
export const BURST_PERIOD_MS = 1000;

function keyOf(address: Cidr, device: string): string {
  return `${address.text}|${device}`;
}

/**
 * The `linux` driver: `ip` and `arping` with fixed argument lists. Needs root (or
 * CAP_NET_ADMIN and CAP_NET_RAW).
 *
 * @example
 * ```ts ignore
 * import { LinuxNetDriver } from "./netops.ts";
 * import { parseCidr } from "./cidr.ts";
 * const net = new LinuxNetDriver();
 * await net.takeover(parseCidr("198.18.0.100/24")!, "eth0", { arpCount: 3, refreshMs: 0, service: "web" });
 * console.log(net.held());
 * await net.close();
 * ```
 */
export class LinuxNetDriver implements NetDriver {
  /** Always `linux`. */
  readonly kind = "linux" as const;
  #held = new Map<
    string,
    HeldAddress & { cidr: Cidr; refresh: ReturnType<typeof setInterval> | null }
  >();
  #inflight = new Set<Promise<unknown>>();
  #refreshing = new Set<string>();
  #announcing = new Map<string, Set<AbortController>>();
  #ip: string;
  #arping: string | null;
  #netns: string | null;
  #audit: AuditLog | null;
  #onError: (message: string) => void;
  #epochOf: (service: string | null) => string | null;
  #closed = false;
  #batch: IpBatch | null = null;
  #announcer: PacketAnnouncer | null = null;
  #told = new Set<string>();
  #packetBursts = new Set<AbortController>();

  /**
   * Creates the driver; starts the `ip -batch` child and opens the packet socket, so the first
   * takeover finds them ready (each unavailable one is told to `onError` with the reason, and
   * its fallback used).
   *
   * @param options Audit log, network namespace, tool paths, error callback, hot path switches.
   */
  constructor(options: NetDriverOptions = {}) {
    this.#ip = options.ipPath ??
      firstExisting(["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]) ?? "/usr/sbin/ip";
    this.#arping = options.arpingPath ??
      firstExisting(["/usr/bin/arping", "/usr/sbin/arping", "/bin/arping", "/sbin/arping"]);
    this.#netns = options.netns ?? null;
    this.#audit = options.audit ?? null;
    this.#onError = options.onError ?? ((m) => console.error(m));
    this.#epochOf = options.epochOf ?? (() => null);
    if (options.ipBatch ?? true) {
      this.#batch = new IpBatch({
        argv: [
          this.#ip,
          ...(this.#netns === null ? [] : ["-n", this.#netns]),
          "-force",
          "-batch",
          "-",
        ],
      });
      try {
        this.#batch.start();
      } catch (e) {
        this.#tell("batch", `Address changes spawn ip: ${(e as Error).message}`);
      }
    }
    if (options.packetAnnouncer ?? true) {
      try {
        this.#announcer = PacketAnnouncer.open(
          this.#netns === null ? {} : { netns: this.#netns },
        );
      } catch (e) {
        const why = e instanceof AnnouncerUnavailableError ? e.message : String(e);
        this.#tell(
          "announcer",
          `Announcements come from arping (IPv4) and the kernel (IPv6, no refresh): ${why}`,
        );
      }
    }
  }

  /** How addresses are changed and announced now (for tests, the bench and the docs). */
  get paths(): { change: "ip-batch" | "spawn"; announce: "packet" | "arping" } {
    return {
      change: this.#batch !== null && !this.#closed ? "ip-batch" : "spawn",
      announce: this.#announcer !== null ? "packet" : "arping",
    };
  }

  /** Tells a fallback's reason once per kind and reason. */
  #tell(kind: string, message: string): void {
    const key = `${kind}|${message}`;
    if (this.#told.has(key)) return;
    if (this.#told.size > 64) this.#told.clear();
    this.#told.add(key);
    this.#onError(message);
  }

  async #exec(
    argv: string[],
    timeoutMs: number,
    service: string | null,
    op: string,
    signal?: AbortSignal,
    isolate = true,
    note = "",
    extra: Record<string, unknown> = {},
  ): Promise<RunOutcome> {
    const full = this.#netns === null ? argv : [this.#ip, "netns", "exec", this.#netns, ...argv];
    const r = await runFixed(
      full[0] as string,
      full.slice(1),
      signal === undefined ? { timeoutMs, isolate } : { timeoutMs, signal, isolate },
    );
    this.#audit?.write(
      service,
      { op, argv: full, ...extra },
      r.code === 0 ? "done" : r.aborted ? "aborted" : "failed",
      note + describe(r),
    );
    return r;
  }

  /**
   * Runs `ip ARGS…`: a line of the batch, or a process when the batch cannot answer. Audited
   * either way.
   */
  async #ipCommand(
    args: string[],
    service: string | null,
    op: string,
    deferred?: (() => void)[],
  ): Promise<{ ok: boolean; stderr: string; detail: string; via: "ip-batch" | "spawn" }> {
    let note = "";
    if (this.#batch !== null && !this.#closed) {
      try {
        const a = await this.#batch.run(args);
        const detail = a.ok
          ? `ok in ${a.durationMs.toFixed(2)} ms`
          : `failed in ${a.durationMs.toFixed(2)} ms: ${
            a.stderr.split("\n").slice(-2).join(" / ")
          }`;
        const record = () =>
          this.#audit?.write(
            service,
            { op, batch: args.join(" "), netns: this.#netns },
            a.ok ? "done" : "failed",
            `ip -batch ${detail}`,
          );
        // On the takeover path the record is written right after the first announcement (a
        // synchronous write), never skipped.
        if (deferred !== undefined && a.ok) deferred.push(record);
        else record();
        return { ok: a.ok, stderr: a.stderr, detail, via: "ip-batch" };
      } catch (e) {
        if (!(e instanceof IpBatchUnavailableError) && !(e instanceof RangeError)) throw e;
        note = `ip -batch could not answer (${e.message}), spawned instead: `;
        this.#tell("batch", `Spawning ip: ${e.message}`);
      }
    }
    // `ip` is started directly (no setsid/setpriv): it does not fork and ends in a millisecond,
    // and this is the path a client waits on.
    const r = await this.#exec(
      [this.#ip, ...args],
      IP_TIMEOUT_MS,
      service,
      op,
      undefined,
      false,
      note,
    );
    return { ok: r.code === 0, stderr: r.stderr, detail: describe(r), via: "spawn" };
  }

  /** Adds the address and announces it (see the module doc). */
  async takeover(address: Cidr, device: string, options: DriverTakeoverOptions): Promise<void> {
    const decidedAt = options.decidedAt ?? epochMs();
    const v6 = address.family === 6;
    // With the packet socket, IPv6 addresses are added with `nodad` (usable at once) and
    // announced by our own advertisement. Without it, the kernel announces: with ndisc_notify=1
    // it sends an unsolicited neighbour advertisement when an address becomes valid, and
    // dad_transmits=0 makes that immediate (`nodad` would skip the advertisement too).
    const packet = this.#announcer !== null;
    if (v6 && !packet) {
      const sysctl = firstExisting(["/usr/sbin/sysctl", "/sbin/sysctl", "/usr/bin/sysctl"]);
      if (sysctl !== null) {
        await this.#exec(
          [
            sysctl,
            "-q",
            "-w",
            `net.ipv6.conf.${device}.ndisc_notify=1`,
            `net.ipv6.conf.${device}.dad_transmits=0`,
          ],
          IP_TIMEOUT_MS,
          options.service,
          "ndisc-notify",
        );
      }
    }
    // `ip` takes the family from the address (a batch line cannot carry the global `-6`).
    const args = ["addr", "add", address.text, "dev", device, ...(v6 && packet ? ["nodad"] : [])];
    const deferred: (() => void)[] = [];
    const r = await this.#ipCommand(args, options.service, "ip-addr-add", deferred);
    // "File exists" (older iproute2) or "Address already assigned": the address is there.
    if (!r.ok && !/File exists|already assigned/i.test(r.stderr)) {
      throw new Error(`Cannot take over ${address.text} on ${device}: ${r.detail}`);
    }
    const addedAt = epochMs();
    const key = keyOf(address, device);
    const previous = this.#held.get(key);
    if (previous?.refresh != null) clearInterval(previous.refresh);
    const entry = {
      address: address.text,
      device,
      since: previous?.since ?? Date.now(),
      service: options.service,
      cidr: address,
      refresh: null as ReturnType<typeof setInterval> | null,
    };
    this.#held.set(key, entry);
    let announcedAt: number | null = null;
    let how: "packet" | "arping" | "kernel" | "none" = "none";
    if (options.arpCount > 0 && (packet || !v6)) {
      // One burst per address: a takeover of an address still announcing replaces its burst, so
      // a script repeating takeover in a loop cannot pile up bursts.
      this.quiet(address, device);
      if (packet && this.#sendNow(address, device, options.service)) {
        announcedAt = epochMs();
        how = "packet";
        if (options.arpCount > 1) {
          this.#packetBurst(key, address, device, options.arpCount - 1, options.service);
        }
      } else if (!v6) {
        // The first gratuitous ARP is what clients wait for: a one-packet arping started
        // directly (no setsid/setpriv, about 1.5 ms sooner on the wire; it ends by itself within
        // a second), the rest of the burst from an isolated arping as usual.
        how = "arping";
        this.#announce(key, address, device, 1, options.service, false);
        if (options.arpCount > 1) {
          this.#announce(key, address, device, options.arpCount - 1, options.service);
        }
      }
    } else if (v6 && !packet) {
      how = "kernel";
    }
    if (options.refreshMs > 0 && !this.#closed && (packet || !v6)) {
      entry.refresh = setInterval(() => {
        if (this.#announcer !== null) {
          this.#sendNow(address, device, options.service, "refresh");
          return;
        }
        if (v6 || this.#refreshing.has(key)) return;
        this.#refreshing.add(key);
        const p = this.#announce(key, address, device, 1, options.service);
        p.finally(() => this.#refreshing.delete(key));
      }, options.refreshMs);
    }
    for (const record of deferred) record();
    const ms = (t: number | null) => t === null ? null : Math.round((t - decidedAt) * 1000) / 1000;
    // The takeover's record names the arbiter's epoch of the holding it announces.
    const epoch = this.#epochOf(options.service);
    this.#audit?.write(
      options.service,
      {
        op: "takeover",
        address: address.text,
        device,
        change: r.via,
        announce: how,
        decidedAt: new Date(decidedAt).toISOString(),
        addedMs: ms(addedAt),
        announcedMs: ms(announcedAt),
        ...(epoch === null ? {} : { epoch }),
      },
      "done",
      `${address.text} is on ${device}: added ${ms(addedAt)} ms after the decision, ` +
        (announcedAt === null
          ? how === "arping"
            ? "announced by arping (in the background)"
            : how === "kernel"
            ? "announced by the kernel (ndisc_notify)"
            : "not announced (arpCount 0)"
          : `first announcement on the wire ${ms(announcedAt)} ms after the decision`),
    );
  }

  /**
   * Sends one announcement from the packet socket now. Returns whether it was sent; a failure
   * is told to `onError` and audited.
   */
  #sendNow(address: Cidr, device: string, service: string | null, op = "announce"): boolean {
    const a = this.#announcer;
    if (a === null) return false;
    try {
      a.announce(address.ip, device);
      // The takeover's own record (written right after) carries the first packet; bursts and
      // refreshes get one line each.
      if (op !== "announce") {
        this.#audit?.write(
          service,
          { op, address: address.ip, device, via: "packet" },
          "done",
          address.family === 6 ? "unsolicited neighbour advertisement sent" : "gratuitous ARP sent",
        );
      }
      return true;
    } catch (e) {
      this.#audit?.write(
        service,
        { op, address: address.ip, device, via: "packet" },
        "failed",
        (e as Error).message,
      );
      this.#onError((e as Error).message);
      return false;
    }
  }

  /**
   * The rest of a burst from the packet socket: one at once, then one a second; stopped by
   * quiet() or release.
   */
  #packetBurst(
    key: string,
    address: Cidr,
    device: string,
    count: number,
    service: string | null,
  ): void {
    const abort = new AbortController();
    let bursts = this.#announcing.get(key);
    if (bursts === undefined) this.#announcing.set(key, bursts = new Set());
    bursts.add(abort);
    this.#packetBursts.add(abort);
    const p = new Promise<void>((resolve) => {
      // The timing of the spawning path, which the hand-over rules were tuned against: the rest
      // of the burst is what `arping -U -c COUNT` sends, one packet at once (just after the
      // takeover's own), then one a second.
      let left = count;
      const tick = () => {
        this.#sendNow(address, device, service, "announce-burst");
        if (--left <= 0) done();
      };
      const first = setTimeout(tick, 0);
      const timer = setInterval(tick, BURST_PERIOD_MS);
      const done = () => {
        clearTimeout(first);
        clearInterval(timer);
        abort.signal.removeEventListener("abort", done);
        resolve();
      };
      abort.signal.addEventListener("abort", done, { once: true });
    });
    this.#inflight.add(p);
    p.finally(() => {
      this.#inflight.delete(p);
      this.#packetBursts.delete(abort);
      bursts.delete(abort);
      if (bursts.size === 0 && this.#announcing.get(key) === bursts) this.#announcing.delete(key);
    });
  }

  #announce(
    key: string,
    address: Cidr,
    device: string,
    count: number,
    service: string | null,
    isolate = true,
  ): Promise<void> {
    if (this.#arping === null) {
      this.#onError(`Cannot send gratuitous ARP for ${address.ip}: arping is not installed`);
      return Promise.resolve();
    }
    const argv = [this.#arping, "-U", "-c", String(count), "-I", device, address.ip];
    // A release aborts the burst: an arping still announcing an address this host gave up would
    // point clients back here after the new holder's own announcement.
    const abort = new AbortController();
    let bursts = this.#announcing.get(key);
    if (bursts === undefined) this.#announcing.set(key, bursts = new Set());
    bursts.add(abort);
    // arping sends one packet a second; allow the burst plus a margin.
    const timeoutMs = count * 1000 + 3000;
    // The audit line of a gratuitous ARP names the arbiter's epoch of the holding it announces.
    const epoch = this.#epochOf(service);
    const extra = epoch === null ? {} : { epoch };
    const p = this.#exec(argv, timeoutMs, service, "arping", abort.signal, isolate, "", extra).then(
      (r) => {
        if (r.code !== 0 && !r.aborted) {
          this.#onError(`Gratuitous ARP for ${address.ip} on ${device} failed: ${describe(r)}`);
        }
      },
    );
    this.#inflight.add(p);
    p.finally(() => {
      this.#inflight.delete(p);
      bursts.delete(abort);
      if (bursts.size === 0 && this.#announcing.get(key) === bursts) this.#announcing.delete(key);
    });
    return p;
  }

  /** Stops the address's announcement bursts in flight (see {@linkcode NetDriver.quiet}). */
  quiet(address: Cidr, device: string): number {
    const bursts = [...this.#announcing.get(keyOf(address, device)) ?? []];
    for (const abort of bursts) abort.abort();
    return bursts.length;
  }

  /** Removes the address with `ip addr del`. */
  async release(address: Cidr, device: string): Promise<void> {
    const key = keyOf(address, device);
    const entry = this.#held.get(key);
    if (entry?.refresh != null) clearInterval(entry.refresh);
    this.quiet(address, device);
    const args = ["addr", "del", address.text, "dev", device];
    const r = await this.#ipCommand(args, entry?.service ?? null, "ip-addr-del");
    // The address is not there (message of older and newer iproute2): nothing to release.
    if (!r.ok && !/Cannot assign requested address|Address not found/i.test(r.stderr)) {
      throw new Error(`Cannot release ${address.text} on ${device}: ${r.detail}`);
    }
    this.#held.delete(key);
  }

  /** What is held now. */
  held(): HeldAddress[] {
    return [...this.#held.values()].map(({ address, device, since, service }) => ({
      address,
      device,
      since,
      service,
    }));
  }

  /** Releases everything held. */
  async releaseAll(): Promise<{ address: string; device: string; error: string }[]> {
    const failed: { address: string; device: string; error: string }[] = [];
    for (const h of [...this.#held.values()]) {
      try {
        await this.release(h.cidr, h.device);
      } catch (e) {
        failed.push({ address: h.address, device: h.device, error: (e as Error).message });
      }
    }
    return failed;
  }

  /**
   * Stops the refresh timers and the packet bursts, waits for `arping` bursts in flight, ends
   * the `ip -batch` child and closes the packet socket. Held addresses stay.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const h of this.#held.values()) {
      if (h.refresh !== null) clearInterval(h.refresh);
      h.refresh = null;
    }
    for (const abort of this.#packetBursts) abort.abort();
    await Promise.allSettled([...this.#inflight]);
    await this.#batch?.close();
    this.#announcer?.close();
    this.#announcer = null;
  }
}

/**
 * The `simulated` driver: holdings in memory (and in `stateFile` if given), no system change.
 *
 * @example
 * ```ts
 * import { SimulatedNetDriver } from "./netops.ts";
 * import { parseCidr } from "./cidr.ts";
 * import { deepEqual } from "node:assert/strict";
 * const net = new SimulatedNetDriver();
 * await net.takeover(parseCidr("127.0.0.100/8")!, "lo", { arpCount: 3, refreshMs: 0, service: "web" });
 * deepEqual(net.held().map((h) => h.address), ["127.0.0.100/8"]);
 * await net.close();
 * ```
 */
export class SimulatedNetDriver implements NetDriver {
  /** Always `simulated`. */
  readonly kind = "simulated" as const;
  #held = new Map<string, HeldAddress & { cidr: Cidr }>();
  #audit: AuditLog | null;
  #stateFile: string | null;

  /**
   * Creates the driver.
   *
   * @param options Audit log and state file.
   */
  constructor(options: NetDriverOptions = {}) {
    this.#audit = options.audit ?? null;
    this.#stateFile = options.stateFile ?? null;
  }

  /** Records the address as held. */
  async takeover(address: Cidr, device: string, options: DriverTakeoverOptions): Promise<void> {
    const key = keyOf(address, device);
    const previous = this.#held.get(key);
    this.#held.set(key, {
      address: address.text,
      device,
      since: previous?.since ?? Date.now(),
      service: options.service,
      cidr: address,
    });
    this.#audit?.write(
      options.service,
      { op: "sim-addr-add", address: address.text, device, arpCount: options.arpCount },
      "done",
      "simulated: address recorded, no system change",
    );
    await this.#save();
  }

  /** Forgets the address. */
  /** Nothing is announced in simulation: nothing to stop. */
  quiet(_address: Cidr, _device: string): number {
    return 0;
  }

  async release(address: Cidr, device: string): Promise<void> {
    const key = keyOf(address, device);
    const entry = this.#held.get(key);
    this.#held.delete(key);
    this.#audit?.write(
      entry?.service ?? null,
      { op: "sim-addr-del", address: address.text, device },
      "done",
      "simulated: address forgotten, no system change",
    );
    await this.#save();
  }

  /** What is held now. */
  held(): HeldAddress[] {
    return [...this.#held.values()].map(({ address, device, since, service }) => ({
      address,
      device,
      since,
      service,
    }));
  }

  /** Forgets everything held. */
  async releaseAll(): Promise<{ address: string; device: string; error: string }[]> {
    for (const h of [...this.#held.values()]) await this.release(h.cidr, h.device);
    return [];
  }

  /** Nothing to stop. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  async #save(): Promise<void> {
    if (this.#stateFile === null) return;
    const tmp = `${this.#stateFile}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(
      tmp,
      JSON.stringify({ updated: Date.now(), addresses: this.held() }, null, 2) + "\n",
    );
    await Deno.rename(tmp, this.#stateFile);
  }
}

/**
 * Creates the driver a policy asks for.
 *
 * @param kind `linux` or `simulated` (the policy's `netDriver`).
 * @param options Audit log, namespace, tool paths, state file.
 * @returns The driver.
 *
 * @example
 * ```ts
 * import { createNetDriver } from "./netops.ts";
 * import { deepEqual } from "node:assert/strict";
 * const net = createNetDriver("simulated");
 * deepEqual(net.kind, "simulated");
 * ```
 */
export function createNetDriver(
  kind: "linux" | "simulated",
  options: NetDriverOptions = {},
): NetDriver {
  return kind === "linux" ? new LinuxNetDriver(options) : new SimulatedNetDriver(options);
}
