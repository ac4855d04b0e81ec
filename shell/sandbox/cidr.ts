/**
 * IP addresses and CIDR prefixes as the policy reads them, parsed with `ipaddr.js` (supervisor
 * side only: the sandboxed child imports no npm package).
 *
 * `ipaddr.js` accepts more than an operator means: IPv4 in octal, hex or fewer than four parts
 * (`0x7f.1` is `127.0.0.1`), IPv6 zone ids (`fe80::1%eth0`), and it reads the deprecated
 * IPv4-compatible `::a.b.c.d` as the IPv4-mapped `::ffff:a.b.c.d`. {@linkcode parseCidr} refuses
 * all of these before handing the text to it: an IPv4 address is four decimal numbers without
 * leading zeros, an IPv6 address is hex groups of 1-4 digits with at most one `::` and an
 * embedded IPv4 address only after a group (`::ffff:198.18.0.1`), and a prefix length is decimal.
 *
 * @module
 */
// The full specifier, not deno.json's "ipaddr.js" (which pins the same version for deno.lock):
// failsh's modules also load without the project's deno.json, when a script in /etc/failover is
// run directly (`deno run -A failover.ts`) and deno finds no configuration beside it.
import ipaddr from "npm:ipaddr.js@2.5.0";

/** An IP address with its prefix length, parsed. */
export interface Cidr {
  /** 4 or 6. */
  family: 4 | 6;
  /** The prefix length (0-32 or 0-128). */
  prefixLength: number;
  /** Canonical text of the address alone (`198.18.0.1`, `2001:db8::1`, RFC 5952 for IPv6). */
  ip: string;
  /** Canonical text with the length (`198.18.0.1/24`). */
  text: string;
}

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** A strict IP address: the forms an operator writes, never ipaddr.js's lenient extras. */
function parseIp(text: string): Address | null {
  if (!text.includes(":")) {
    return ipaddr.IPv4.isValidFourPartDecimal(text) ? ipaddr.IPv4.parse(text) : null;
  }
  if (!/^[0-9A-Fa-f:.]{2,45}$/.test(text)) return null;
  const last = text.lastIndexOf(":");
  const embedded = text.slice(last + 1).includes(".");
  if (embedded) {
    // After at least one group: "::1.2.3.4" is the deprecated IPv4-compatible form.
    if (!ipaddr.IPv4.isValidFourPartDecimal(text.slice(last + 1)) || /^::[^:]*$/.test(text)) {
      return null;
    }
  }
  const groups = (embedded ? text.slice(0, last) : text).split(":");
  if (groups.some((g) => g.length > 4)) return null;
  return ipaddr.IPv6.isValid(text) ? ipaddr.IPv6.parse(text) : null;
}

function canonical(address: Address): string {
  return address.kind() === "ipv6"
    ? (address as ipaddr.IPv6).toRFC5952String()
    : address.toString();
}

/**
 * Parses an IP address, optionally with a prefix length (`198.18.0.1/24`, `2001:db8::1/64`).
 *
 * @param text The address.
 * @param options `requirePrefix` refuses an address without `/length`; without a length the
 *   prefix is the full address (32 or 128).
 * @returns The parsed address, or `null` when `text` is not one.
 *
 * @example
 * ```ts
 * import { parseCidr } from "./cidr.ts";
 * import { equal } from "node:assert/strict";
 * equal(parseCidr("2001:DB8:0::1/64")?.text, "2001:db8::1/64");
 * equal(parseCidr("198.18.0.300/24"), null);
 * equal(parseCidr("0x7f.1"), null);
 * ```
 */
export function parseCidr(text: string, options: { requirePrefix?: boolean } = {}): Cidr | null {
  if (typeof text !== "string" || text.length > 64) return null;
  const slash = text.indexOf("/");
  const lenText = slash < 0 ? null : text.slice(slash + 1);
  if (lenText === null && options.requirePrefix) return null;
  const address = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (address === null) return null;
  const family = address.kind() === "ipv4" ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefixLength = max;
  if (lenText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return null;
    prefixLength = Number(lenText);
    if (prefixLength > max) return null;
  }
  const ip = canonical(address);
  return { family, prefixLength, ip, text: `${ip}/${prefixLength}` };
}

/**
 * Tells whether an address lies inside a prefix: same family (an IPv4-mapped IPv6 address is
 * IPv6, never inside an IPv4 prefix), network bits equal.
 *
 * @param prefix The range, e.g. from `parseCidr("198.18.0.0/24")`.
 * @param address The address (its own prefix length is ignored).
 * @returns `true` when `address` is in `prefix`.
 *
 * @example
 * ```ts
 * import { cidrContains, parseCidr } from "./cidr.ts";
 * import { equal } from "node:assert/strict";
 * equal(cidrContains(parseCidr("198.18.0.0/24")!, parseCidr("198.18.0.7/32")!), true);
 * equal(cidrContains(parseCidr("198.18.0.0/24")!, parseCidr("::ffff:198.18.0.7")!), false);
 * ```
 */
export function cidrContains(prefix: Cidr, address: Cidr): boolean {
  if (prefix.family !== address.family) return false;
  return ipaddr.parse(address.ip).match(ipaddr.parse(prefix.ip), prefix.prefixLength);
}

/**
 * Tells whether a listen host is loopback: `localhost`, `127.0.0.0/8`, `::1`, or an
 * IPv4-mapped loopback address (`::ffff:127.0.0.1`); brackets around an IPv6 address are
 * allowed.
 *
 * @param host The host part of a listen address.
 * @returns `true` for a loopback host.
 *
 * @example
 * ```ts
 * import { isLoopbackHost } from "./cidr.ts";
 * import { equal } from "node:assert/strict";
 * equal(isLoopbackHost("[::1]"), true);
 * equal(isLoopbackHost("127.0.0.2"), true);
 * equal(isLoopbackHost("0.0.0.0"), false);
 * ```
 */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const address = parseIp(host.replace(/^\[(.*)\]$/, "$1"));
  if (address === null) return false;
  const range = address.range();
  if (range === "ipv4Mapped") {
    return (address as ipaddr.IPv6).toIPv4Address().range() === "loopback";
  }
  return range === "loopback";
}
