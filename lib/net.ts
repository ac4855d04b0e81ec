/**
 * `HOST:PORT` as every tool reads and writes it: one parser (IPv6 in brackets, a default port
 * or host where the caller has one) and one formatter that brackets IPv6 addresses.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatHostPort, parseHostPort } from "./net.ts";
 * assert.deepStrictEqual(parseHostPort("[::1]:7100"), { hostname: "::1", port: 7100 });
 * assert.deepStrictEqual(formatHostPort("::1", 7100), "[::1]:7100");
 * ```
 *
 * @module
 */

/** A host name or IP address (IPv6 without brackets) and a port. */
export interface HostPort {
  /** Host name, IPv4 or IPv6 address (no brackets). */
  hostname: string;
  /** Port, 0 to 65535. */
  port: number;
}

/** Options of {@linkcode parseHostPort}. */
export interface ParseHostPortOptions {
  /** The port when none is written (`host`, `[v6]`, a bare IPv6 address); without it a port is required. */
  defaultPort?: number;
  /** The host when it is left empty (`:7100`); without it a host is required. */
  defaultHostname?: string;
  /** Accept port 0 ("any free port", for listening; default `false`). */
  allowPortZero?: boolean;
}

const NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

/**
 * Parses `HOST:PORT`: `127.0.0.1:7100`, `node-1:7100`, `[::1]:7100`; with options also `HOST`,
 * `[v6]`, a bare IPv6 address (`2001:db8::1`) and `:PORT`.
 *
 * @param text The address.
 * @param options Default port and host, whether port 0 is allowed.
 * @returns Host name (IPv6 without brackets) and port.
 * @throws {TypeError} Saying what is wrong and what is expected.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHostPort } from "./net.ts";
 * assert.deepStrictEqual(parseHostPort("127.0.0.1:5353"), { hostname: "127.0.0.1", port: 5353 });
 * assert.deepStrictEqual(parseHostPort("2001:db8::1", { defaultPort: 53 }), { hostname: "2001:db8::1", port: 53 });
 * assert.deepStrictEqual(parseHostPort(":0", { defaultHostname: "0.0.0.0", allowPortZero: true }), { hostname: "0.0.0.0", port: 0 });
 * assert.throws(() => parseHostPort("::1:53"), TypeError);
 * ```
 */
export function parseHostPort(text: string, options: ParseHostPortOptions = {}): HostPort {
  const fail = (why: string): never => {
    const shown = text.length > 80 ? `${text.slice(0, 77)}...` : text;
    throw new TypeError(
      `Invalid address "${shown}": ${why}; expected HOST:PORT, e.g. 127.0.0.1:7100 or [::1]:7100`,
    );
  };
  if (typeof text !== "string" || text.length > 300) fail("too long");
  let host: string;
  let portText: string | null;
  if (text.startsWith("[")) {
    const m = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
    if (!m) fail("an IPv6 address in brackets must be followed by :PORT or nothing");
    host = m![1]!;
    portText = m![2] ?? null;
    if (!IPV6.test(host) || !host.includes(":")) fail(`"${host}" is not an IPv6 address`);
  } else {
    const colons = text.split(":").length - 1;
    if (colons > 1) {
      // A bare IPv6 address: only where a default port makes "[v6]:PORT" unnecessary.
      if (options.defaultPort === undefined || !IPV6.test(text)) {
        fail("write an IPv6 address in brackets, [v6]:PORT");
      }
      return { hostname: text, port: options.defaultPort! };
    }
    const i = text.indexOf(":");
    host = i < 0 ? text : text.slice(0, i);
    portText = i < 0 ? null : text.slice(i + 1);
    if (host === "") {
      if (options.defaultHostname === undefined) fail("the host is missing");
      host = options.defaultHostname!;
    } else if (!NAME.test(host)) {
      fail("the host must be a name or an IP address");
    }
  }
  if (portText === null) {
    if (options.defaultPort === undefined) fail("the port is missing");
    return { hostname: host, port: options.defaultPort! };
  }
  const port = Number(portText);
  const min = options.allowPortZero ? 0 : 1;
  if (!/^[0-9]{1,5}$/.test(portText) || port < min || port > 65535) {
    fail(`the port must be a number from ${min} to 65535`);
  }
  return { hostname: host, port };
}

/**
 * A host as it stands in front of `:PORT` or in a URL: IPv6 addresses in brackets.
 *
 * @param hostname A host name, IPv4 or IPv6 address (brackets optional).
 * @returns The host, bracketed when it is IPv6.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatHost } from "./net.ts";
 * assert.deepStrictEqual(formatHost("::1"), "[::1]");
 * assert.deepStrictEqual(formatHost("198.18.0.1"), "198.18.0.1");
 * ```
 */
export function formatHost(hostname: string): string {
  return hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
}

/**
 * `HOST:PORT`, with IPv6 in brackets.
 *
 * @param hostname Host name or address.
 * @param port The port.
 * @returns The address text.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatHostPort } from "./net.ts";
 * assert.deepStrictEqual(formatHostPort("2001:db8::1", 1848), "[2001:db8::1]:1848");
 * ```
 */
export function formatHostPort(hostname: string, port: number): string {
  return `${formatHost(hostname)}:${port}`;
}

/**
 * The base URL of a server at an address, e.g. `http://[::1]:7100`.
 *
 * @param addr Host name and port (a `Deno.NetAddr` fits).
 * @param options The scheme (default `http`).
 * @returns The URL, without a trailing slash.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { baseUrl } from "./net.ts";
 * assert.deepStrictEqual(baseUrl({ hostname: "::1", port: 7100 }), "http://[::1]:7100");
 * assert.deepStrictEqual(baseUrl({ hostname: "127.0.0.1", port: 443 }, { scheme: "https" }), "https://127.0.0.1:443");
 * ```
 */
export function baseUrl(
  addr: { hostname: string; port: number },
  options: { scheme?: string } = {},
): string {
  return `${options.scheme ?? "http"}://${formatHostPort(addr.hostname, addr.port)}`;
}
