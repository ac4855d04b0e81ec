/**
 * The `dns` check: sends a real DNS query over UDP to a given server and checks the answer. The
 * message encoder and decoder are here too (RFC 1035 with name compression, RFC 3596 AAAA).
 *
 * @module
 */
import dgram from "node:dgram";
import { isIP } from "node:net";
import type { CheckKindDef, CheckResult } from "./_types.ts";
import { errorText, parseHostPort } from "./_util.ts";

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

/**
 * Encodes a DNS name as labels.
 *
 * @param name A name such as `www.example.test` (trailing dot optional).
 * @returns The wire form.
 * @throws {RangeError} When a label is empty or longer than 63 bytes, or the name longer than 255.
 */
function encodeName(name: string): number[] {
  const out: number[] = [];
  const trimmed = name.replace(/\.$/, "");
  if (trimmed !== "") {
    for (const label of trimmed.split(".")) {
      const bytes = new TextEncoder().encode(label);
      if (bytes.length === 0 || bytes.length > 63) {
        throw new RangeError(`"${name}" is not a DNS name: each label must be 1 to 63 bytes`);
      }
      out.push(bytes.length, ...bytes);
    }
  }
  out.push(0);
  if (out.length > 255) throw new RangeError(`"${name}" is not a DNS name: longer than 255 bytes`);
  return out;
}

/**
 * Encodes a query with recursion desired.
 *
 * @param id Message id, 0 to 65535.
 * @param name The name asked for.
 * @param type The numeric record type.
 * @returns The message bytes.
 *
 * @example
 * ```ts
 * import { DNS_TYPES, encodeQuery } from "./dns.ts";
 * console.log(encodeQuery(7, "www.example.test", DNS_TYPES.A!).length); // 34
 * ```
 */
export function encodeQuery(id: number, name: string, type: number): Uint8Array {
  const q = encodeName(name);
  const out = new Uint8Array(12 + q.length + 4);
  const view = new DataView(out.buffer);
  view.setUint16(0, id);
  view.setUint16(2, 0x0100); // RD
  view.setUint16(4, 1); // QDCOUNT
  out.set(q, 12);
  view.setUint16(12 + q.length, type);
  view.setUint16(14 + q.length, 1); // IN
  return out;
}

class Reader {
  #view: DataView;
  #bytes: Uint8Array;
  at = 0;
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  #need(n: number, at = this.at): void {
    if (at + n > this.#bytes.length) {
      throw new RangeError("Truncated DNS message: read past the end");
    }
  }
  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.at++);
  }
  u16(): number {
    this.#need(2);
    const v = this.#view.getUint16(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.at);
    this.at += 4;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.#need(n);
    const v = this.#bytes.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  /** Reads a possibly compressed name starting at the cursor. */
  name(): string {
    const labels: string[] = [];
    let pos = this.at;
    let jumped = false;
    let jumps = 0;
    let length = 0;
    while (true) {
      this.#need(1, pos);
      const len = this.#bytes[pos]!;
      if (len === 0) {
        pos += 1;
        break;
      }
      if ((len & 0xc0) === 0xc0) {
        this.#need(2, pos);
        const target = ((len & 0x3f) << 8) | this.#bytes[pos + 1]!;
        if (++jumps > 64 || target >= pos) {
          throw new RangeError("Bad DNS message: compression pointer loops or points forward");
        }
        if (!jumped) this.at = pos + 2;
        jumped = true;
        pos = target;
        continue;
      }
      if ((len & 0xc0) !== 0) throw new RangeError("Bad DNS message: unknown label type");
      this.#need(1 + len, pos);
      labels.push(new TextDecoder().decode(this.#bytes.subarray(pos + 1, pos + 1 + len)));
      length += len + 1;
      if (length > 255) throw new RangeError("Bad DNS message: name longer than 255 bytes");
      pos += 1 + len;
    }
    if (!jumped) this.at = pos;
    return labels.join(".").toLowerCase();
  }
}

/**
 * Formats 16 bytes as an IPv6 address in RFC 5952 form (lower case, longest zero run as `::`).
 *
 * @param b The 16 bytes.
 * @returns The text form.
 *
 * @example
 * ```ts
 * import { formatIpv6 } from "./dns.ts";
 * const b = new Uint8Array(16); b[0] = 0x20; b[1] = 0x01; b[15] = 1;
 * console.log(formatIpv6(b)); // "2001::1"
 * ```
 */
export function formatIpv6(b: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[i]! << 8) | b[i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/**
 * Normalizes an IPv6 address text to the RFC 5952 form, or returns `null` if it is not one.
 *
 * @param text An IPv6 address.
 * @returns The canonical text, or `null`.
 *
 * @example
 * ```ts
 * import { normalizeIpv6 } from "./dns.ts";
 * console.log(normalizeIpv6("2001:DB8:0:0:0:0:0:1")); // "2001:db8::1"
 * ```
 */
export function normalizeIpv6(text: string): string | null {
  if (isIP(text) !== 6 || text.includes(".")) return null;
  const [head = "", tail] = text.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === undefined ? [] : tail === "" ? [] : tail.split(":");
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const words = [...h, ...Array(fill).fill("0"), ...t].map((w) => parseInt(w, 16));
  const b = new Uint8Array(16);
  words.forEach((w, i) => {
    b[i * 2] = w >> 8;
    b[i * 2 + 1] = w & 0xff;
  });
  return formatIpv6(b);
}

function formatData(r: Reader, type: number, rdlength: number): string {
  const end = r.at + rdlength;
  let text: string;
  switch (type) {
    case 1: {
      if (rdlength !== 4) throw new RangeError("Bad DNS message: A record is not 4 bytes");
      text = Array.from(r.bytes(4)).join(".");
      break;
    }
    case 28: {
      if (rdlength !== 16) throw new RangeError("Bad DNS message: AAAA record is not 16 bytes");
      text = formatIpv6(r.bytes(16));
      break;
    }
    case 2:
    case 5:
    case 12:
      text = r.name();
      break;
    case 15: {
      const pref = r.u16();
      text = `${pref} ${r.name()}`;
      break;
    }
    case 16: {
      const parts: string[] = [];
      while (r.at < end) parts.push(new TextDecoder().decode(r.bytes(r.u8())));
      text = parts.join("");
      break;
    }
    case 33: {
      const prio = r.u16();
      const weight = r.u16();
      const port = r.u16();
      text = `${prio} ${weight} ${port} ${r.name()}`;
      break;
    }
    case 6: {
      const mname = r.name();
      const rname = r.name();
      const nums = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32()];
      text = `${mname} ${rname} ${nums.join(" ")}`;
      break;
    }
    default:
      text = Array.from(r.bytes(rdlength), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  if (r.at !== end) throw new RangeError("Bad DNS message: record data length mismatch");
  return text;
}

/**
 * Decodes a DNS message.
 *
 * @param bytes The message as received.
 * @returns The decoded message.
 * @throws {RangeError} When the message is malformed (truncated, looping pointers, ...).
 *
 * @example
 * ```ts
 * import { decodeMessage, encodeQuery } from "./dns.ts";
 * console.log(decodeMessage(encodeQuery(1, "example.test", 1)).questions[0]?.name);
 * ```
 */
export function decodeMessage(bytes: Uint8Array): DnsMessage {
  const r = new Reader(bytes);
  const id = r.u16();
  const flags = r.u16();
  const counts = [r.u16(), r.u16(), r.u16(), r.u16()];
  const questions: DnsMessage["questions"] = [];
  for (let i = 0; i < counts[0]!; i++) {
    questions.push({ name: r.name(), type: r.u16(), class: r.u16() });
  }
  const section = (n: number): DnsRecord[] => {
    const out: DnsRecord[] = [];
    for (let i = 0; i < n; i++) {
      const name = r.name();
      const type = r.u16();
      const cls = r.u16();
      const ttl = r.u32();
      const len = r.u16();
      out.push({ name, type, class: cls, ttl, data: formatData(r, type, len) });
    }
    return out;
  };
  const answers = section(counts[1]!);
  const authority = section(counts[2]!);
  return {
    id,
    response: (flags & 0x8000) !== 0,
    truncated: (flags & 0x0200) !== 0,
    rcode: flags & 0x000f,
    questions,
    answers,
    authority,
  };
}

/**
 * Sends a query over UDP and waits for the matching answer. Retransmits once at half the time.
 *
 * @param server The server's IP address and port.
 * @param query Name, numeric type, when to retransmit, and a signal that aborts the wait (the
 *   socket is then closed).
 * @returns The decoded answer.
 *
 * @example
 * ```ts ignore
 * import { queryUdp } from "./dns.ts";
 * const m = await queryUdp({ host: "127.0.0.1", port: 53 }, {
 *   name: "example.test", type: 1, signal: AbortSignal.timeout(1000),
 * });
 * console.log(m.answers);
 * ```
 */
export function queryUdp(
  server: { host: string; port: number },
  query: { name: string; type: number; retransmitMs?: number; signal: AbortSignal },
): Promise<DnsMessage> {
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
  },
  signal: AbortSignal,
): Promise<CheckResult> {
  const started = performance.now();
  let m: DnsMessage;
  try {
    m = await queryUdp(
      options.server,
      {
        name: options.name,
        type: options.type,
        retransmitMs: Math.max(1, options.timeoutMs / 2),
        signal,
      },
    );
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
      detail: `${head}: the answer is truncated (TC) and hc asks over UDP only`,
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
  summary: "a DNS server answers a UDP query for name and type with the expected value",
  options: {
    server: {
      help: "the DNS server as IP or IP:port (port 53 by default), e.g. 127.0.0.1:5353",
      required: true,
      parse: (t) => {
        const hp = parseHostPort(t, 53);
        if (isIP(hp.host) === 0) {
          throw new RangeError(`"${t}" is not an IP address: the server must be an IP literal`);
        }
        return hp;
      },
    },
    name: {
      help: "the name to ask for, e.g. www.example.test",
      required: true,
      parse: (t) => {
        encodeName(t);
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
    const s = v.server as { host: string; port: number };
    return `${v.name} ${(v.type as string | undefined) ?? "A"} @${s.host}:${s.port}`;
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
    };
    return { run: (signal) => probeDns(options, signal) };
  },
};
