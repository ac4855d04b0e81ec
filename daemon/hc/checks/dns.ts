/**
 * The `dns` check: sends a real DNS query over UDP (or TCP, `tcp=yes`) to a given server and
 * checks the answer. Messages are encoded and decoded by `dns-packet`.
 *
 * @module
 */
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";
import { formatHostPort, parseHostPort } from "../../../lib/net.ts";
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { errorText } from "./_util.ts";

/** Record types hc can ask for, by name. */
export const DNS_TYPES: Readonly<Record<string, number>> = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  CAA: 257,
};

/** Response codes by name (RFC 1035, 2136). */
export const DNS_RCODES: readonly string[] = [
  "NOERROR",
  "FORMERR",
  "SERVFAIL",
  "NXDOMAIN",
  "NOTIMP",
  "REFUSED",
  "YXDOMAIN",
  "YXRRSET",
  "NXRRSET",
  "NOTAUTH",
  "NOTZONE",
];

/** One resource record of an answer, its data already formatted as text. */
export interface DnsRecord {
  /** Owner name, lower case, without the trailing dot. */
  name: string;
  /** Numeric type. */
  type: number;
  /** Class (1 = IN). */
  class: number;
  /** Time to live in seconds. */
  ttl: number;
  /** The data as text: `198.18.0.10`, `2001:db8::1`, `10 mail.example.test`, TXT strings joined. */
  data: string;
}

/** A decoded DNS message. */
export interface DnsMessage {
  /** Message id. */
  id: number;
  /** `true` for a response. */
  response: boolean;
  /** `true` when the answer was truncated (TC). */
  truncated: boolean;
  /** Response code (0 = NOERROR). */
  rcode: number;
  /** Questions: name and type. */
  questions: { name: string; type: number; class: number }[];
  /** Answer section. */
  answers: DnsRecord[];
  /** Authority section. */
  authority: DnsRecord[];
}

/** Most bytes of an answer over TCP (its two-byte length prefix allows no more). */
const MAX_TCP_MESSAGE = 65_535;

const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(DNS_TYPES).map(([name, code]) => [code, name]),
);

/**
 * Checks a DNS name: labels of 1 to 63 bytes, at most 255 bytes in all.
 *
 * @param name A name such as `www.example.test` (trailing dot optional).
 * @throws {RangeError} When a label is empty or longer than 63 bytes, or the name longer than 255.
 */
function checkName(name: string): void {
  const trimmed = name.replace(/\.$/, "");
  let length = 1;
  if (trimmed !== "") {
    for (const label of trimmed.split(".")) {
      const bytes = new TextEncoder().encode(label).length;
      if (bytes === 0 || bytes > 63) {
        throw new RangeError(`"${name}" is not a DNS name: each label must be 1 to 63 bytes`);
      }
      length += bytes + 1;
    }
  }
  if (length > 255) throw new RangeError(`"${name}" is not a DNS name: longer than 255 bytes`);
}

function queryPacket(id: number, name: string, type: number): dnsPacket.Packet {
  checkName(name);
  const typeName = TYPE_NAMES[type];
  if (typeName === undefined) throw new RangeError(`Cannot ask for record type ${type}`);
  return {
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: typeName as dnsPacket.RecordType, name, class: "IN" }],
  };
}

/**
 * Encodes a query with recursion desired (`dns-packet`).
 *
 * @param id Message id, 0 to 65535.
 * @param name The name asked for.
 * @param type The numeric record type.
 * @returns The message bytes.
 * @throws {RangeError} When the name is not a DNS name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DNS_TYPES, encodeQuery } from "./dns.ts";
 * assert.equal(encodeQuery(7, "www.example.test", DNS_TYPES.A!).length, 34);
 * ```
 */
export function encodeQuery(id: number, name: string, type: number): Uint8Array {
  return new Uint8Array(dnsPacket.encode(queryPacket(id, name, type)));
}

function text(value: unknown): string {
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return String(value);
}

/** Names as hc compares them: lower case, no trailing dot. */
function lowerName(name: unknown): string {
  return text(name).toLowerCase().replace(/\.$/, "");
}

function formatData(type: string, data: unknown): string {
  const d = data as Record<string, unknown>;
  switch (type) {
    case "A":
    case "AAAA":
      return text(data);
    case "NS":
    case "CNAME":
    case "PTR":
      return lowerName(data);
    case "MX":
      return `${d.preference} ${lowerName(d.exchange)}`;
    case "TXT":
      return (Array.isArray(data) ? data : [data]).map(text).join("");
    case "SRV":
      return `${d.priority} ${d.weight} ${d.port} ${lowerName(d.target)}`;
    case "SOA":
      return `${lowerName(d.mname)} ${lowerName(d.rname)} ${d.serial} ${d.refresh} ${d.retry} ` +
        `${d.expire} ${d.minimum}`;
    case "CAA":
      return `${d.flags} ${d.tag} "${d.value}"`;
    default:
      return data instanceof Uint8Array
        ? Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("")
        : JSON.stringify(data);
  }
}

function records(list: readonly dnsPacket.Answer[] | undefined): DnsRecord[] {
  return (list ?? []).map((a) => {
    const r = a as dnsPacket.Answer & { ttl?: number; class?: string; data?: unknown };
    return {
      name: lowerName(r.name),
      type: DNS_TYPES[r.type] ?? unknownTypeCode(r.type),
      class: r.class === "IN" || r.class === undefined ? 1 : 0,
      ttl: r.ttl ?? 0,
      data: formatData(r.type, r.data),
    };
  });
}

function unknownTypeCode(name: string): number {
  const m = /^UNKNOWN_(\d+)$/.exec(name);
  return m ? Number(m[1]) : 0;
}

/**
 * Decodes a DNS message (`dns-packet`: name compression, pointers only backwards).
 *
 * @param bytes The message.
 * @returns The decoded message, record data as text.
 * @throws {RangeError} When the message is truncated or malformed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeMessage, encodeQuery } from "./dns.ts";
 * assert.deepStrictEqual(decodeMessage(encodeQuery(1, "a.test", 1)).questions, [
 *   { name: "a.test", type: 1, class: 1 },
 * ]);
 * ```
 */
export function decodeMessage(bytes: Uint8Array): DnsMessage {
  if (bytes.length < 12) throw new RangeError("Truncated DNS message: shorter than its header");
  let p: dnsPacket.DecodedPacket;
  try {
    p = dnsPacket.decode(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new RangeError(`Bad DNS message: ${errorText(e)}`);
  }
  const flags = (bytes[2]! << 8) | bytes[3]!;
  return {
    id: p.id ?? 0,
    response: (flags & 0x8000) !== 0,
    truncated: (flags & 0x0200) !== 0,
    rcode: flags & 0x000f,
    questions: (p.questions ?? []).map((q) => ({
      name: lowerName(q.name),
      type: DNS_TYPES[q.type] ?? unknownTypeCode(q.type),
      class: q.class === "IN" || q.class === undefined ? 1 : 0,
    })),
    answers: records(p.answers),
    authority: records(p.authorities),
  };
}

/**
 * Formats 16 bytes as an IPv6 address in the RFC 5952 form.
 *
 * @param b The address bytes.
 * @returns The text, e.g. `2001:db8::1`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatIpv6 } from "./dns.ts";
 * assert.equal(formatIpv6(new Uint8Array([0x20, 1, 0x0d, 0xb8, ...new Array(11).fill(0), 1])), "2001:db8::1");
 * ```
 */
export function formatIpv6(b: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return normalizeIpv6(words.join(":"))!;
}

/**
 * Normalises an IPv6 address to the RFC 5952 form (lower case, longest zero run compressed).
 *
 * @param text The address.
 * @returns The normal form, or `null` when the text is not an IPv6 address.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { normalizeIpv6 } from "./dns.ts";
 * assert.equal(normalizeIpv6("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
 * ```
 */
export function normalizeIpv6(text: string): string | null {
  if (isIP(text) !== 6 || text.includes(".")) return null;
  // The URL standard serialises IPv6 hosts in the RFC 5952 form.
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}

/** A DNS server: an IP literal and a port. */
export interface DnsServer {
  /** The server's IP address. */
  host: string;
  /** Its port. */
  port: number;
}

/** What to ask. */
export interface DnsQuery {
  /** The name. */
  name: string;
  /** The numeric record type. */
  type: number;
  /** Over UDP: send the query again after this many ms without an answer. */
  retransmitMs?: number;
  /** Ends the query. */
  signal: AbortSignal;
}

/**
 * Sends one query over UDP and waits for the matching answer (same id, from the server's port).
 *
 * @param server The server (an IP literal).
 * @param query Name, type, retransmission and the abort signal.
 * @returns The answer.
 * @throws {Error} On a timeout (`no answer: timed out`), a socket error or a malformed answer.
 */
export function queryUdp(server: DnsServer, query: DnsQuery): Promise<DnsMessage> {
  const { signal } = query;
  const id = Math.floor(Math.random() * 65536);
  const packet = encodeQuery(id, query.name, query.type);
  const socket = dgram.createSocket(isIP(server.host) === 6 ? "udp6" : "udp4");
  return new Promise<DnsMessage>((resolve, reject) => {
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (error: Error | null, message?: DnsMessage): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      try {
        socket.close();
      } catch { /* already closed */ }
      if (error) reject(error);
      else resolve(message!);
    };
    const onAbort = (): void => finish(new Error("no answer: timed out"));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    socket.on("error", (e: Error) => finish(new Error(`UDP error: ${e.message}`)));
    socket.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
      if (rinfo.port !== server.port) return;
      let m: DnsMessage;
      try {
        m = decodeMessage(new Uint8Array(msg));
      } catch (e) {
        if (msg.length >= 2 && ((msg[0]! << 8) | msg[1]!) === id) finish(e as Error);
        return;
      }
      if (m.id !== id || !m.response) return;
      finish(null, m);
    });
    const send = (): void => {
      socket.send(packet, server.port, server.host, (e: Error | null) => {
        if (e) finish(new Error(`cannot send: ${e.message}`));
      });
    };
    send();
    if (query.retransmitMs !== undefined) {
      timer = setTimeout(() => {
        if (!done) send();
      }, query.retransmitMs);
    }
  });
}

/** Reads one length-prefixed message (at most 2 + 65535 bytes, the prefix's limit). */
async function readFramed(conn: Deno.Conn): Promise<Uint8Array> {
  const buf = new Uint8Array(2 + MAX_TCP_MESSAGE);
  let got = 0;
  let want = 2;
  while (got < want) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) {
      throw new Error(
        got < 2
          ? "the server closed the connection without an answer"
          : `Truncated DNS answer over TCP: ${got - 2} of ${want - 2} bytes`,
      );
    }
    got += n;
    if (want === 2 && got >= 2) want = 2 + ((buf[0]! << 8) | buf[1]!);
  }
  return buf.subarray(0, want);
}

/**
 * Sends one query over TCP (RFC 1035 4.2.2: a two-byte length before each message, as
 * `dns-packet`'s `streamEncode` writes it) and reads the answer.
 *
 * @param server The server (an IP literal).
 * @param query Name, type and the abort signal (`retransmitMs` does not apply).
 * @returns The answer.
 * @throws {Error} On a timeout, a refused connection, a closed stream or a malformed answer.
 */
export async function queryTcp(server: DnsServer, query: DnsQuery): Promise<DnsMessage> {
  const { signal } = query;
  const id = Math.floor(Math.random() * 65536);
  const packet = dnsPacket.streamEncode(queryPacket(id, query.name, query.type));
  if (signal.aborted) throw new Error("no answer: timed out");
  let conn: Deno.TcpConn | undefined;
  const onAbort = (): void => {
    try {
      conn?.close();
    } catch { /* already closed */ }
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    try {
      conn = await Deno.connect({ hostname: server.host, port: server.port, transport: "tcp" });
    } catch (e) {
      throw new Error(signal.aborted ? "no answer: timed out" : `cannot connect: ${errorText(e)}`);
    }
    if (signal.aborted) throw new Error("no answer: timed out");
    try {
      await conn.write(new Uint8Array(packet));
      const bytes = await readFramed(conn);
      const length = bytes.length - 2;
      const m = decodeMessage(bytes.subarray(2, 2 + length));
      if (m.id !== id || !m.response) throw new Error("the answer is not for this query");
      return m;
    } catch (e) {
      if (signal.aborted) throw new Error("no answer: timed out");
      throw e;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    onAbort();
  }
}

function normalizeExpect(type: number, text: string): string {
  if (type === 28) return normalizeIpv6(text) ?? text;
  if ([2, 5, 12].includes(type)) return text.toLowerCase().replace(/\.$/, "");
  return text;
}

/**
 * Asks a DNS server and checks the answer.
 *
 * @param options Server, question and expectations.
 * @param signal Aborts the query.
 * @returns The check result.
 */
export async function probeDns(
  options: {
    server: { host: string; port: number };
    name: string;
    type: number;
    typeName: string;
    expect: string | null;
    rcode: number;
    timeoutMs: number;
    tcp?: boolean;
  },
  signal: AbortSignal,
): Promise<CheckResult> {
  const started = performance.now();
  let m: DnsMessage;
  try {
    const query = { name: options.name, type: options.type, signal };
    m = options.tcp ? await queryTcp(options.server, query) : await queryUdp(options.server, {
      ...query,
      retransmitMs: Math.max(1, options.timeoutMs / 2),
    });
  } catch (e) {
    return { ok: false, detail: errorText(e), latencyMs: null };
  }
  const ms = performance.now() - started;
  const values = m.answers.filter((a) => a.type === options.type).map((a) => a.data);
  const rcodeName = DNS_RCODES[m.rcode] ?? `RCODE${m.rcode}`;
  const head = `${options.typeName} ${options.name}: ${
    m.rcode !== 0 ? rcodeName : values.length ? values.join(", ") : "no answer"
  } in ${Math.round(ms)} ms`;
  if (m.rcode !== options.rcode) {
    return {
      ok: false,
      detail: `${head}: expected ${DNS_RCODES[options.rcode]}, got ${rcodeName}`,
      latencyMs: ms,
    };
  }
  if (m.truncated && values.length === 0) {
    return {
      ok: false,
      detail: `${head}: the answer is truncated (TC): ask over TCP (tcp=yes)`,
      latencyMs: ms,
    };
  }
  if (options.expect !== null) {
    const want = normalizeExpect(options.type, options.expect);
    if (!values.includes(want)) {
      return { ok: false, detail: `${head}: expected ${want}`, latencyMs: ms };
    }
  } else if (options.rcode === 0 && values.length === 0) {
    return {
      ok: false,
      detail: `${head}: expected at least one ${options.typeName} record`,
      latencyMs: ms,
    };
  }
  return { ok: true, detail: head, latencyMs: ms };
}

/** The `dns` check kind: `dns server=IP[:PORT] name=N [type=A] [expect=V] [rcode=NOERROR]`. */
export const dnsCheck: CheckKindDef = {
  summary: "a DNS server answers a query (UDP, or TCP) for name and type with the expected value",
  options: {
    server: {
      help: "the DNS server as IP or IP:port (port 53 by default), e.g. 127.0.0.1:5353",
      required: true,
      parse: (t) => {
        let hp;
        try {
          hp = parseHostPort(t, { defaultPort: 53 });
        } catch (e) {
          throw new RangeError(errorText(e));
        }
        if (isIP(hp.hostname) === 0) {
          throw new RangeError(`"${t}" is not an IP address: the server must be an IP literal`);
        }
        return { host: hp.hostname, port: hp.port };
      },
    },
    name: {
      help: "the name to ask for, e.g. www.example.test",
      required: true,
      parse: (t) => {
        checkName(t);
        return t.replace(/\.$/, "").toLowerCase();
      },
    },
    type: {
      help: `record type: ${Object.keys(DNS_TYPES).join(", ")} (default A)`,
      parse: (t) => {
        const u = t.toUpperCase();
        if (DNS_TYPES[u] === undefined) {
          throw new RangeError(
            `"${t}" is not a record type: use ${Object.keys(DNS_TYPES).join(", ")}`,
          );
        }
        return u;
      },
    },
    expect: {
      help: 'a value one answer must equal (A: 198.18.0.10, MX: "10 mx.example.test", TXT text)',
    },
    tcp: {
      help: "yes: ask over TCP (RFC 7766) instead of UDP; no (the default): UDP",
      parse: (t) => {
        if (t !== "yes" && t !== "no") throw new RangeError(`"${t}" is not yes or no`);
        return t === "yes";
      },
    },
    rcode: {
      help: `expected response code (default NOERROR): ${DNS_RCODES.join(", ")}`,
      parse: (t) => {
        const i = DNS_RCODES.indexOf(t.toUpperCase());
        if (i < 0) {
          throw new RangeError(`"${t}" is not a response code: use ${DNS_RCODES.join(", ")}`);
        }
        return i;
      },
    },
  },
  takesArgv: false,
  validate(v) {
    const errors: string[] = [];
    const type = (v.type as string | undefined) ?? "A";
    if (typeof v.expect === "string") {
      if (type === "A" && isIP(v.expect) !== 4) {
        errors.push(`expect=${v.expect} is not an IPv4 address, which type=A answers hold`);
      }
      if (type === "AAAA" && normalizeIpv6(v.expect) === null) {
        errors.push(`expect=${v.expect} is not an IPv6 address, which type=AAAA answers hold`);
      }
      if (typeof v.rcode === "number" && v.rcode !== 0) {
        errors.push("expect= cannot be combined with an rcode other than NOERROR");
      }
    }
    return { errors, warnings: [] };
  },
  target: (v) => {
    const s = v.server as DnsServer;
    return `${v.name} ${(v.type as string | undefined) ?? "A"} @${formatHostPort(s.host, s.port)}${
      v.tcp === true ? " tcp" : ""
    }`;
  },
  create(v, _argv, context) {
    const typeName = (v.type as string | undefined) ?? "A";
    const options = {
      server: v.server as { host: string; port: number },
      name: v.name as string,
      type: DNS_TYPES[typeName]!,
      typeName,
      expect: (v.expect as string | undefined) ?? null,
      rcode: (v.rcode as number | undefined) ?? 0,
      timeoutMs: context.timeoutMs,
      tcp: v.tcp === true,
    };
    return { run: (signal) => probeDns(options, signal) };
  },
};
