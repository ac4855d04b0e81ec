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
import { keyOf, LinuxNetDriver } from "./linux_driver.ts";

export { BURST_PERIOD_MS, LinuxNetDriver } from "./linux_driver.ts";
export {
  DEFAULT_MAX_OUTPUT,
  describeOutcome,
  IP_TIMEOUT_MS,
  runFixed,
  type RunFixedOptions,
  type RunOutcome,
} from "./run_fixed.ts";

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
