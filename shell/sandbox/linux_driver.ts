/**
 * The `linux` network driver: addresses through a long-lived `ip -batch` (`./ip_batch.ts`),
 * announcements from a packet socket (`./announcer.ts`), with spawned `ip` and `arping` as the
 * fallbacks (see `./netops.ts` for the whole picture).
 *
 * @module
 */
import type { HeldAddress } from "../../lib/types.ts";
import type { Cidr } from "./cidr.ts";
import type { AuditLog } from "./audit.ts";
import { IpBatch, IpBatchUnavailableError } from "./ip_batch.ts";
import { AnnouncerUnavailableError, PacketAnnouncer } from "./announcer.ts";
import {
  describeOutcome as describe,
  firstExisting,
  IP_TIMEOUT_MS,
  runFixed,
  type RunOutcome,
} from "./run_fixed.ts";
import type { DriverTakeoverOptions, NetDriver, NetDriverOptions } from "./netops.ts";

/** Epoch time in ms with sub-millisecond precision. */
function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Period of the packets of a burst after the first, in ms (what `arping` does). */
export const BURST_PERIOD_MS = 1000;

/**
 * The key of a held address: the address and its device.
 *
 * @param address The address.
 * @param device The device.
 * @returns The key.
 */
export function keyOf(address: Cidr, device: string): string {
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
