/**
 * The prepared announcer: an `AF_PACKET` socket opened once through Deno's FFI to libc, from which
 * failsh's supervisor sends a gratuitous ARP (IPv4) or an unsolicited neighbour advertisement
 * (IPv6) in a few microseconds, without starting `arping` on the takeover path.
 *
 * - Gratuitous ARP: an ARP request with sender and target protocol address both the taken address
 *   and the device's MAC as sender hardware address, to the Ethernet broadcast (what
 *   `arping -U` sends). A neighbour holding an entry for the address replaces its MAC.
 * - Unsolicited neighbour advertisement (RFC 4861 §7.2.6): ICMPv6 type 136 to `ff02::1` from the
 *   address itself, hop limit 255, flags Override (not Solicited, not Router), a target
 *   link-layer address option with the device's MAC, checksum over the IPv6 pseudo-header. A
 *   neighbour holding an entry for the address replaces its MAC (the kernel's `ndisc_recv_na`).
 *   Debian's `ndisc6` package has no sender of unsolicited advertisements (`ndisc6` solicits,
 *   `rdisc6` asks routers), hence this one.
 *
 * The socket receives nothing (protocol 0); each send names the device by index, looked up with
 * `SIOCGIFINDEX` and `SIOCGIFHWADDR` at each announcement (two ioctls, so a device recreated with
 * a new index or MAC is announced right). With `netns`, the socket is created in that network
 * namespace: the calling thread enters it with `setns(2)` for the `socket(2)` call only and goes
 * back at once (the socket keeps its namespace; `ip netns exec` does the same for a process).
 *
 * Needs `CAP_NET_RAW` and FFI (`--allow-ffi`, given by failsh's `-A`; Deno 2.9 no longer needs
 * `--unstable-ffi` for `Deno.dlopen`). {@linkcode PacketAnnouncer.open} throws
 * {@linkcode AnnouncerUnavailableError} when either is missing; the driver then uses `arping`.
 *
 * @module
 */
// The full specifier, as in cidr.ts (failsh also loads without the project's deno.json).
import ipaddr from "npm:ipaddr.js@2.5.0";

/** The announcer cannot be used here (no FFI, no libc, no CAP_NET_RAW…); use `arping`. */
export class AnnouncerUnavailableError extends Error {
  /**
   * Creates the error.
   *
   * @param message Why.
   */
  constructor(message: string) {
    super(message);
    this.name = "AnnouncerUnavailableError";
  }
}

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0x80000;
const O_RDONLY = 0;
const O_CLOEXEC = 0x80000;
const CLONE_NEWNET = 0x40000000;
const SIOCGIFINDEX = 0x8933n;
const SIOCGIFHWADDR = 0x8927n;
const ETH_P_ARP = 0x0806;
const ETH_P_IPV6 = 0x86dd;
const ARPHRD_ETHER = 1;
const IFNAMSIZ = 16;
const DEVICE = /^[A-Za-z0-9_.:@-]{1,15}$/;
const NETNS = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

function cString(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(s.length + 1);
  new TextEncoder().encodeInto(s, b);
  return b;
}

function errorText(lib: Libc): string {
  const loc = lib.symbols.__errno_location();
  if (loc === null) return "unknown error";
  const errno = new Deno.UnsafePointerView(loc).getInt32();
  const msg = lib.symbols.strerror(errno);
  return msg === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(msg);
}

/**
 * The gratuitous ARP frame `arping -U` sends: Ethernet broadcast, ARP request, sender and target
 * protocol address the announced one.
 *
 * @param mac The device's MAC (6 bytes).
 * @param ip The IPv4 address (4 bytes).
 * @returns The 42-byte frame.
 *
 * @example
 * ```ts
 * import { garpFrame } from "./announcer.ts";
 * import { deepEqual } from "node:assert/strict";
 * const f = garpFrame(new Uint8Array([2, 0, 0, 0, 0, 1]), new Uint8Array([198, 18, 0, 100]));
 * deepEqual(f.length, 42);
 * ```
 */
export function garpFrame(mac: Uint8Array, ip: Uint8Array): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(42);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  v.setUint16(12, ETH_P_ARP);
  v.setUint16(14, ARPHRD_ETHER);
  v.setUint16(16, 0x0800);
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, 1); // request
  f.set(mac, 22);
  f.set(ip, 28);
  // target hardware address: zero (RFC 5227's announcement)
  f.set(ip, 38);
  return f;
}

/**
 * The Internet checksum of ICMPv6 (RFC 4443 §2.3): over the pseudo-header (source, destination,
 * upper-layer length, next header 58) and the message with its checksum field zero.
 *
 * @param src Source address (16 bytes).
 * @param dst Destination address (16 bytes).
 * @param icmp The ICMPv6 message.
 * @returns The checksum.
 *
 * @example
 * ```ts
 * import { icmpv6Checksum } from "./announcer.ts";
 * console.log(typeof icmpv6Checksum(new Uint8Array(16), new Uint8Array(16), new Uint8Array(8)));
 * ```
 */
export function icmpv6Checksum(src: Uint8Array, dst: Uint8Array, icmp: Uint8Array): number {
  let sum = 0;
  const add = (b: Uint8Array) => {
    for (let i = 0; i < b.length; i += 2) sum += ((b[i] as number) << 8) | (b[i + 1] ?? 0);
  };
  add(src);
  add(dst);
  sum += icmp.length >>> 16;
  sum += icmp.length & 0xffff;
  sum += 58;
  add(icmp);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const ALL_NODES = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/**
 * An unsolicited neighbour advertisement for `ip`, from `ip` to all nodes (`ff02::1`), Override
 * flag set, with the target link-layer address option.
 *
 * @param mac The device's MAC (6 bytes).
 * @param ip The IPv6 address (16 bytes).
 * @returns The 86-byte frame.
 *
 * @example
 * ```ts
 * import { unsolicitedNaFrame } from "./announcer.ts";
 * import { deepEqual } from "node:assert/strict";
 * const ip = new Uint8Array(16);
 * ip[0] = 0x20;
 * deepEqual(unsolicitedNaFrame(new Uint8Array([2, 0, 0, 0, 0, 1]), ip).length, 86);
 * ```
 */
export function unsolicitedNaFrame(mac: Uint8Array, ip: Uint8Array): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(86);
  const v = new DataView(f.buffer);
  f.set([0x33, 0x33, 0, 0, 0, 1], 0);
  f.set(mac, 6);
  v.setUint16(12, ETH_P_IPV6);
  // IPv6 header
  f[14] = 0x60;
  v.setUint16(18, 32); // payload length
  f[20] = 58; // next header: ICMPv6
  f[21] = 255; // hop limit: receivers drop neighbour discovery with any other
  f.set(ip, 22);
  f.set(ALL_NODES, 38);
  // ICMPv6 neighbour advertisement
  const icmp = f.subarray(54);
  icmp[0] = 136;
  icmp[1] = 0;
  icmp[4] = 0x20; // flags: R=0, S=0, O=1
  icmp.set(ip, 8);
  icmp[24] = 2; // option: target link-layer address
  icmp[25] = 1; // length in units of 8 bytes
  icmp.set(mac, 26);
  v.setUint16(56, icmpv6Checksum(ip, ALL_NODES, icmp));
  return f;
}

/** Options of {@linkcode PacketAnnouncer.open}. */
export interface PacketAnnouncerOptions {
  /** Open the socket in this network namespace (`/var/run/netns/NAME`). */
  netns?: string;
  /** The C library (default `libc.so.6`). */
  libc?: string;
}

/** A device's index and MAC, as the kernel reports them. */
export interface LinkInfo {
  /** Interface index. */
  index: number;
  /** MAC address (6 bytes). */
  mac: Uint8Array;
}

/**
 * The prepared announcer (see the module doc).
 *
 * @example
 * ```ts ignore
 * import { PacketAnnouncer } from "./announcer.ts";
 * const a = PacketAnnouncer.open();
 * a.announce("198.18.0.100", "eth0");
 * a.close();
 * ```
 */
export class PacketAnnouncer {
  #lib: Libc;
  #fd: number;

  private constructor(lib: Libc, fd: number) {
    this.#lib = lib;
    this.#fd = fd;
  }

  /**
   * Loads libc and opens the packet socket.
   *
   * @param options Network namespace, library name.
   * @returns The announcer.
   * @throws {AnnouncerUnavailableError} No FFI permission, no libc, no `CAP_NET_RAW`, no such
   *   namespace.
   */
  static open(options: PacketAnnouncerOptions = {}): PacketAnnouncer {
    if (options.netns !== undefined && !NETNS.test(options.netns)) {
      throw new AnnouncerUnavailableError(
        `Cannot open a packet socket in namespace ${JSON.stringify(options.netns)}: not a name`,
      );
    }
    let lib: Libc;
    try {
      lib = Deno.dlopen(options.libc ?? "libc.so.6", SYMBOLS);
    } catch (e) {
      throw new AnnouncerUnavailableError(`Cannot load libc for FFI: ${(e as Error).message}`);
    }
    try {
      const fd = PacketAnnouncer.#socket(lib, options.netns);
      return new PacketAnnouncer(lib, fd);
    } catch (e) {
      lib.close();
      throw e;
    }
  }

  static #socket(lib: Libc, netns: string | undefined): number {
    const s = lib.symbols;
    if (netns === undefined) {
      const fd = s.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        throw new AnnouncerUnavailableError(`Cannot open a packet socket: ${errorText(lib)}`);
      }
      return fd;
    }
    const self = s.open(cString("/proc/thread-self/ns/net"), O_RDONLY | O_CLOEXEC);
    if (self < 0) {
      throw new AnnouncerUnavailableError(
        `Cannot open this thread's network namespace: ${errorText(lib)}`,
      );
    }
    try {
      const target = s.open(cString(`/var/run/netns/${netns}`), O_RDONLY | O_CLOEXEC);
      if (target < 0) {
        throw new AnnouncerUnavailableError(
          `Cannot open network namespace ${netns}: ${errorText(lib)}`,
        );
      }
      try {
        if (s.setns(target, CLONE_NEWNET) !== 0) {
          throw new AnnouncerUnavailableError(
            `Cannot enter network namespace ${netns}: ${errorText(lib)}`,
          );
        }
        const fd = s.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        const why = fd < 0 ? errorText(lib) : "";
        if (s.setns(self, CLONE_NEWNET) !== 0) {
          // The thread would stay in the other namespace: nothing else may run here.
          throw new Error(`Cannot return from network namespace ${netns}: ${errorText(lib)}`);
        }
        if (fd < 0) {
          throw new AnnouncerUnavailableError(
            `Cannot open a packet socket in ${netns}: ${why}`,
          );
        }
        return fd;
      } finally {
        s.close(target);
      }
    } finally {
      s.close(self);
    }
  }

  /**
   * Looks a device up in the socket's namespace.
   *
   * @param device The device name.
   * @returns Its index and MAC.
   * @throws {Error} No such device (`Cannot announce on eth9: No such device`).
   */
  link(device: string): LinkInfo {
    if (!DEVICE.test(device)) {
      throw new TypeError(`Cannot announce on ${JSON.stringify(device)}: not a device name`);
    }
    const req = new Uint8Array(40);
    new TextEncoder().encodeInto(device, req.subarray(0, IFNAMSIZ - 1));
    if (this.#lib.symbols.ioctl(this.#fd, SIOCGIFINDEX, req) !== 0) {
      throw new Error(`Cannot announce on ${device}: ${errorText(this.#lib)}`);
    }
    const index = new DataView(req.buffer).getInt32(16, true);
    if (this.#lib.symbols.ioctl(this.#fd, SIOCGIFHWADDR, req) !== 0) {
      throw new Error(`Cannot announce on ${device}: ${errorText(this.#lib)}`);
    }
    const family = new DataView(req.buffer).getUint16(16, true);
    if (family !== ARPHRD_ETHER) {
      throw new Error(`Cannot announce on ${device}: not an Ethernet device (type ${family})`);
    }
    return { index, mac: req.slice(18, 24) };
  }

  /**
   * Sends one gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6).
   *
   * @param ip The address, as text (`198.18.0.100`, `2001:db8::100`).
   * @param device The device it is on.
   * @throws {Error} The device is gone or the send failed (`Cannot announce …: reason`).
   */
  announce(ip: string, device: string): void {
    const addr = ipaddr.parse(ip);
    const bytes = new Uint8Array(addr.toByteArray());
    const link = this.link(device);
    const v6 = addr.kind() === "ipv6";
    const frame = v6 ? unsolicitedNaFrame(link.mac, bytes) : garpFrame(link.mac, bytes);
    const sll = new Uint8Array(20);
    const v = new DataView(sll.buffer);
    v.setUint16(0, AF_PACKET, true);
    v.setUint16(2, v6 ? ETH_P_IPV6 : ETH_P_ARP); // network order
    v.setInt32(4, link.index, true);
    sll[11] = 6;
    sll.set(frame.subarray(0, 6), 12);
    const sent = this.#lib.symbols.sendto(this.#fd, frame, BigInt(frame.length), 0, sll, 20);
    if (Number(sent) !== frame.length) {
      throw new Error(`Cannot announce ${ip} on ${device}: ${errorText(this.#lib)}`);
    }
  }

  /** Closes the socket and unloads the library. */
  close(): void {
    if (this.#fd >= 0) this.#lib.symbols.close(this.#fd);
    this.#fd = -1;
    this.#lib.close();
  }
}
