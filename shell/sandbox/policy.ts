/**
 * The operator's policy: what a sandboxed failover script may ask failsh's supervisor to do.
 *
 * {@linkcode parsePolicy} turns `policy.json` into a complete {@linkcode Policy} (defaults filled
 * in, paths made absolute, every field checked with an error that names it). The `check*`
 * functions decide each privileged request and throw a {@linkcode PolicyDeniedError} whose
 * message says what was refused and why.
 *
 * @module
 */
import type { AddressRule, Policy, ProgramRule } from "../contract.ts";
import { isValidName } from "../../lib/types.ts";
import { PolicyDeniedError } from "../errors.ts";
import { dirname, resolve } from "node:path";
import { parseHostPort } from "../../lib/net.ts";

export { PolicyDeniedError };

/** Default time limit of a program the script runs, in ms. */
export const DEFAULT_PROGRAM_TIMEOUT_MS = 10_000;

/** Longest time limit a policy may give a program, in ms (one hour). */
export const MAX_PROGRAM_TIMEOUT_MS = 3_600_000;

/** Longest argv a script may pass to `ctx.run` (arguments, not counting the name). */
export const MAX_RUN_ARGS = 64;

/** Longest single argument of `ctx.run`, in characters. */
export const MAX_ARG_LENGTH = 4096;

/** A policy that could not be parsed: every problem found, each naming its field. */
export class PolicyError extends SyntaxError {
  /** One sentence per problem, e.g. `addresses[0].prefix must be a CIDR prefix…`. */
  readonly problems: string[];

  /**
   * Creates the error.
   *
   * @param source Where the policy came from (a path).
   * @param problems What is wrong, one item per field.
   */
  constructor(source: string, problems: string[]) {
    super(
      problems.length === 1
        ? `Invalid policy ${source}: ${problems[0]}`
        : `Invalid policy ${source}: ${problems.length} problems:\n  - ${problems.join("\n  - ")}`,
    );
    this.name = "PolicyError";
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses and CIDR prefixes
// ---------------------------------------------------------------------------------------------

/** An IP address with its prefix length, parsed. */
export interface Cidr {
  /** 4 or 6. */
  family: 4 | 6;
  /** The address as an integer (32 or 128 bits). */
  value: bigint;
  /** The prefix length (0-32 or 0-128). */
  prefixLength: number;
  /** Canonical text of the address alone (`198.18.0.1`, `2001:db8::1`). */
  ip: string;
  /** Canonical text with the length (`198.18.0.1/24`). */
  text: string;
}

function parseIPv4(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIPv6(text: string): bigint | null {
  if (!/^[0-9A-Fa-f:.]{2,45}$/.test(text)) return null;
  let head = text;
  let tailV4: bigint | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    tailV4 = parseIPv4(text.slice(lastColon + 1));
    if (tailV4 === null) return null;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const parseGroups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = parseGroups(halves[0] ?? "");
  const right = halves.length === 2 ? parseGroups(halves[1] ?? "") : [];
  if (left === null || right === null) return null;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return null;
    groups = [...left, ...new Array<number>(missing).fill(0), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return null;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  if (tailV4 !== null) value = (value & ~0xffffffffn) | tailV4;
  return value;
}

function formatIPv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join(".");
}

function formatIPv6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (at least two) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return hex.slice(0, bestStart).join(":") + "::" + hex.slice(bestStart + bestLen).join(":");
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
 * import { parseCidr } from "./policy.ts";
 * console.log(parseCidr("2001:DB8:0::1/64")?.text); // "2001:db8::1/64"
 * console.log(parseCidr("198.18.0.300/24")); // null
 * ```
 */
export function parseCidr(text: string, options: { requirePrefix?: boolean } = {}): Cidr | null {
  if (typeof text !== "string" || text.length > 64) return null;
  const slash = text.indexOf("/");
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? null : text.slice(slash + 1);
  if (lenText === null && options.requirePrefix) return null;
  let family: 4 | 6;
  let value: bigint | null;
  if (ipText.includes(":")) {
    family = 6;
    value = parseIPv6(ipText);
  } else {
    family = 4;
    value = parseIPv4(ipText);
  }
  if (value === null) return null;
  const max = family === 4 ? 32 : 128;
  let prefixLength = max;
  if (lenText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return null;
    prefixLength = Number(lenText);
    if (prefixLength > max) return null;
  }
  const ip = family === 4 ? formatIPv4(value) : formatIPv6(value);
  return { family, value, prefixLength, ip, text: `${ip}/${prefixLength}` };
}

/**
 * Tells whether an address lies inside a prefix (same family, network bits equal).
 *
 * @param prefix The range, e.g. from `parseCidr("198.18.0.0/24")`.
 * @param address The address (its own prefix length is ignored).
 * @returns `true` when `address` is in `prefix`.
 *
 * @example
 * ```ts
 * import { cidrContains, parseCidr } from "./policy.ts";
 * console.log(cidrContains(parseCidr("198.18.0.0/24")!, parseCidr("198.18.0.7/32")!)); // true
 * ```
 */
export function cidrContains(prefix: Cidr, address: Cidr): boolean {
  if (prefix.family !== address.family) return false;
  const bits = BigInt(prefix.family === 4 ? 32 : 128);
  const hostBits = bits - BigInt(prefix.prefixLength);
  return (prefix.value >> hostBits) === (address.value >> hostBits);
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/** Network device names as Linux accepts them (IFNAMSIZ 16, no `/`, no whitespace). */
const DEVICE_PATTERN = /^[A-Za-z0-9_.:@-]{1,15}$/;

/** `host`, `host:port` or `[v6]:port`, as `--allow-net` takes them (no commas). */
const NET_PATTERN = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|[0-9A-Fa-f:]+)(:[0-9]{1,5})?$/;

function isListenAddress(text: string): boolean {
  try {
    parseHostPort(text, { allowPortZero: true });
    return true;
  } catch {
    return false;
  }
}

const TOP_FIELDS = [
  "host",
  "faild",
  "keys",
  "addresses",
  "netDriver",
  "arp",
  "programs",
  "net",
  "read",
  "childUser",
  "onExit",
  "monitor",
  "debug",
  "debugKey",
  "audit",
  "dumpFile",
];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `path` against the absolute directory `base`, normalised (`..` and `.` removed). */
function resolvePath(base: string, path: string): string {
  return resolve(base, path);
}

function quote(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}

/**
 * Compiles one argument pattern of a program rule: anchored, full match.
 *
 * @param pattern A regular expression source, e.g. `nginx|sshd`.
 * @returns The anchored expression.
 * @throws {SyntaxError} When the pattern is not a valid regular expression.
 *
 * @example
 * ```ts
 * import { compileArgPattern } from "./policy.ts";
 * console.log(compileArgPattern("restart|reload").test("restart")); // true
 * console.log(compileArgPattern("restart|reload").test("restart; rm -rf /")); // false
 * ```
 */
export function compileArgPattern(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`, "u");
}

/**
 * Parses and validates a policy (JSON text), filling in defaults and making paths absolute
 * (relative paths are relative to the policy file's directory).
 *
 * Defaults: `faild` `{ url: "http://127.0.0.1:7100", key: null }`, `keys` `{}`, `addresses`
 * `[]`, `netDriver` `linux`, `arp` `{ count: 3, refreshMs: 0 }`, `programs` `[]` (each with
 * `timeoutMs` 10000), `net` `[]`, `read` `[]`, `childUser` `null`, `onExit` `release`,
 * `monitor` `127.0.0.1:1848`,
 * `debug` `null`, `debugKey` `null`, `audit` `./failsh-audit.log`, `dumpFile` `./failsh.dump`.
 * Fields whose name starts with `_` or `$` are comments and ignored.
 *
 * @param text The JSON text.
 * @param source The file it came from (for messages and to resolve relative paths).
 * @returns The complete policy.
 * @throws {PolicyError} Listing every problem, each naming its field.
 *
 * @example
 * ```ts
 * import { parsePolicy } from "./policy.ts";
 * const policy = parsePolicy(
 *   JSON.stringify({
 *     host: "alpha",
 *     addresses: [{ prefix: "198.18.0.0/24", devices: ["eth0"] }],
 *   }),
 *   "/etc/failover/policy.json",
 * );
 * console.log(policy.netDriver, policy.audit); // "linux" "/etc/failover/failsh-audit.log"
 * ```
 */
export function parsePolicy(text: string, source: string): Policy {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new PolicyError(source, [`not valid JSON: ${(e as Error).message}`]);
  }
  if (!isObject(raw)) throw new PolicyError(source, ["the top level must be a JSON object"]);
  const problems: string[] = [];
  const base = dirname(source.startsWith("/") ? source : resolvePath(cwdOrRoot(), source));

  for (const key of Object.keys(raw)) {
    if (key.startsWith("_") || key.startsWith("$")) continue;
    if (!TOP_FIELDS.includes(key)) {
      problems.push(`unknown field ${quote(key)} (known fields: ${TOP_FIELDS.join(", ")})`);
    }
  }

  // host
  const host = raw.host;
  if (typeof host !== "string" || !isValidName(host)) {
    problems.push(
      `host must be this host's name as the script declares it (letters, digits, ".", "_", "-"), got ${
        quote(host)
      }`,
    );
  }

  // keys
  const keys: Record<string, { file: string }> = {};
  if (raw.keys !== undefined) {
    if (!isObject(raw.keys)) problems.push(`keys must be an object of name: { "file": path }`);
    else {
      for (const [name, v] of Object.entries(raw.keys)) {
        if (!isValidName(name)) problems.push(`keys: ${quote(name)} is not a valid key name`);
        if (!isObject(v) || typeof v.file !== "string" || v.file === "") {
          problems.push(`keys.${name}.file must be the path of the file holding the secret`);
          continue;
        }
        keys[name] = { file: resolvePath(base, v.file) };
      }
    }
  }
  const keyRef = (field: string, v: unknown): string | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== "string" || !(v in keys)) {
      problems.push(
        `${field} must name a key of "keys" (${
          Object.keys(keys).join(", ") || "none defined"
        }) or be null, got ${quote(v)}`,
      );
      return null;
    }
    return v;
  };

  // faild
  let faild: Policy["faild"] = { url: "http://127.0.0.1:7100", key: null };
  if (raw.faild !== undefined) {
    if (!isObject(raw.faild)) problems.push(`faild must be an object { "url", "key" }`);
    else {
      const url = raw.faild.url ?? faild.url;
      let ok = false;
      if (typeof url === "string") {
        try {
          const u = new URL(url);
          ok = u.protocol === "http:" || u.protocol === "https:";
        } catch {
          ok = false;
        }
      }
      if (!ok) problems.push(`faild.url must be an http:// or https:// URL, got ${quote(url)}`);
      faild = { url: String(url), key: keyRef("faild.key", raw.faild.key) };
    }
  }

  // addresses
  const addresses: AddressRule[] = [];
  if (raw.addresses !== undefined) {
    if (!Array.isArray(raw.addresses)) {
      problems.push(`addresses must be a list of { "prefix", "devices" }`);
    } else {
      raw.addresses.forEach((rule: unknown, i: number) => {
        const f = `addresses[${i}]`;
        if (!isObject(rule)) {
          problems.push(`${f} must be an object { "prefix", "devices" }`);
          return;
        }
        const cidr = typeof rule.prefix === "string" ? parseCidr(rule.prefix) : null;
        if (cidr === null) {
          problems.push(
            `${f}.prefix must be a CIDR prefix like 198.18.0.0/24 or 2001:db8::/64, got ${
              quote(rule.prefix)
            }`,
          );
        }
        const devices = rule.devices;
        if (
          !Array.isArray(devices) || devices.length === 0 ||
          !devices.every((d) => typeof d === "string" && DEVICE_PATTERN.test(d))
        ) {
          problems.push(
            `${f}.devices must be a non-empty list of network device names like "eth0", got ${
              quote(devices)
            }`,
          );
        }
        if (cidr !== null && Array.isArray(devices)) {
          addresses.push({ prefix: cidr.text, devices: devices.map(String) });
        }
      });
    }
  }

  // netDriver
  const netDriver = raw.netDriver ?? "linux";
  if (netDriver !== "linux" && netDriver !== "simulated") {
    problems.push(`netDriver must be "linux" or "simulated", got ${quote(netDriver)}`);
  }

  // arp
  const arp = { count: 3, refreshMs: 0 };
  if (raw.arp !== undefined) {
    if (!isObject(raw.arp)) problems.push(`arp must be an object { "count", "refreshMs" }`);
    else {
      const { count, refreshMs } = raw.arp;
      if (count !== undefined) {
        if (!Number.isInteger(count) || (count as number) < 0 || (count as number) > 100) {
          problems.push(`arp.count must be an integer from 0 to 100, got ${quote(count)}`);
        } else arp.count = count as number;
      }
      if (refreshMs !== undefined) {
        const r = refreshMs as number;
        if (!Number.isInteger(r) || (r !== 0 && (r < 1000 || r > 3_600_000))) {
          problems.push(
            `arp.refreshMs must be 0 (no refresh) or an integer from 1000 to 3600000, got ${
              quote(refreshMs)
            }`,
          );
        } else arp.refreshMs = r;
      }
    }
  }

  // programs
  const programs: ProgramRule[] = [];
  if (raw.programs !== undefined) {
    if (!Array.isArray(raw.programs)) {
      problems.push(`programs must be a list of { "name", "path", "args", "rest"?, "timeoutMs"? }`);
    } else {
      const seen = new Set<string>();
      raw.programs.forEach((p: unknown, i: number) => {
        const f = `programs[${i}]`;
        if (!isObject(p)) {
          problems.push(`${f} must be an object { "name", "path", "args" }`);
          return;
        }
        let ok = true;
        if (typeof p.name !== "string" || !isValidName(p.name)) {
          problems.push(`${f}.name must be a program name like "systemctl", got ${quote(p.name)}`);
          ok = false;
        } else if (seen.has(p.name)) {
          problems.push(`${f}.name ${quote(p.name)} is listed twice`);
          ok = false;
        } else seen.add(p.name);
        if (typeof p.path !== "string" || !p.path.startsWith("/") || p.path.includes("\0")) {
          problems.push(
            `${f}.path must be an absolute path of an executable, got ${quote(p.path)}`,
          );
          ok = false;
        }
        const args = p.args ?? [];
        if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) {
          problems.push(`${f}.args must be a list of regular expressions, one per argument`);
          ok = false;
        } else {
          args.forEach((a: string, j: number) => {
            try {
              compileArgPattern(a);
            } catch (e) {
              problems.push(
                `${f}.args[${j}] is not a valid regular expression: ${(e as Error).message}`,
              );
              ok = false;
            }
          });
        }
        if (p.rest !== undefined) {
          if (typeof p.rest !== "string") {
            problems.push(`${f}.rest must be a regular expression`);
            ok = false;
          } else {
            try {
              compileArgPattern(p.rest);
            } catch (e) {
              problems.push(`${f}.rest is not a valid regular expression: ${(e as Error).message}`);
              ok = false;
            }
          }
        }
        const timeoutMs = p.timeoutMs ?? DEFAULT_PROGRAM_TIMEOUT_MS;
        if (
          !Number.isInteger(timeoutMs) || (timeoutMs as number) < 1 ||
          (timeoutMs as number) > MAX_PROGRAM_TIMEOUT_MS
        ) {
          problems.push(
            `${f}.timeoutMs must be an integer from 1 to ${MAX_PROGRAM_TIMEOUT_MS}, got ${
              quote(timeoutMs)
            }`,
          );
          ok = false;
        }
        if (ok) {
          const rule: ProgramRule = {
            name: p.name as string,
            path: p.path as string,
            args: args as string[],
            timeoutMs: timeoutMs as number,
          };
          if (typeof p.rest === "string") rule.rest = p.rest;
          programs.push(rule);
        }
      });
    }
  }

  // net
  const net: string[] = [];
  if (raw.net !== undefined) {
    if (!Array.isArray(raw.net)) problems.push(`net must be a list of "host:port" strings`);
    else {
      raw.net.forEach((n: unknown, i: number) => {
        if (typeof n !== "string" || !NET_PATTERN.test(n)) {
          problems.push(
            `net[${i}] must be "host", "host:port" or "[ipv6]:port" (no commas or spaces), got ${
              quote(n)
            }`,
          );
        } else net.push(n);
      });
    }
  }

  // read
  const read: string[] = [];
  if (raw.read !== undefined) {
    if (!Array.isArray(raw.read)) problems.push(`read must be a list of paths`);
    else {
      raw.read.forEach((r: unknown, i: number) => {
        if (typeof r !== "string" || r === "" || r.includes(",") || r.includes("\0")) {
          problems.push(`read[${i}] must be a path without commas, got ${quote(r)}`);
          return;
        }
        const abs = resolvePath(base, r);
        for (const [name, k] of Object.entries(keys)) {
          if (k.file === abs || k.file.startsWith(abs === "/" ? "/" : abs + "/")) {
            problems.push(
              `read[${i}] ${quote(r)} would let the script read the secret of key ${
                quote(name)
              } (${k.file})`,
            );
          }
        }
        read.push(abs);
      });
    }
  }

  // childUser
  let childUser: string | null = null;
  if (raw.childUser !== undefined && raw.childUser !== null) {
    const u = raw.childUser;
    if (
      typeof u !== "string" ||
      !(/^[a-z_][a-z0-9_-]{0,31}$/.test(u) || /^[0-9]{1,10}:[0-9]{1,10}$/.test(u))
    ) {
      problems.push(
        `childUser must be a user name like "nobody", "UID:GID" like "65534:65534", or null, got ${
          quote(u)
        }`,
      );
    } else if (u === "root" || u.startsWith("0:") || u.endsWith(":0")) {
      problems.push(`childUser ${quote(u)} is root: use another user, or null`);
    } else childUser = u;
  }

  // onExit
  const onExit = raw.onExit ?? "release";
  if (onExit !== "release" && onExit !== "keep") {
    problems.push(`onExit must be "release" or "keep", got ${quote(onExit)}`);
  }

  // monitor, debug
  const listen = (field: string, v: unknown, dflt: string | null): string | null => {
    if (v === undefined) return dflt;
    if (v === null) return null;
    if (typeof v !== "string" || !isListenAddress(v)) {
      problems.push(
        `${field} must be "address:port" like "127.0.0.1:1848" or null, got ${quote(v)}`,
      );
      return null;
    }
    return v;
  };
  const monitor = listen("monitor", raw.monitor, "127.0.0.1:1848");
  const debug = listen("debug", raw.debug, null);
  const debugKey = keyRef("debugKey", raw.debugKey);
  if (debug !== null && debugKey === null && raw.debugKey === undefined) {
    problems.push(`debug is set, so debugKey must name the key faildebug signs with`);
  }

  const pathField = (field: string, v: unknown, dflt: string): string => {
    if (v === undefined) return resolvePath(base, dflt);
    if (typeof v !== "string" || v === "" || v.includes("\0")) {
      problems.push(`${field} must be a file path, got ${quote(v)}`);
      return dflt;
    }
    return resolvePath(base, v);
  };
  const audit = pathField("audit", raw.audit, "./failsh-audit.log");
  const dumpFile = pathField("dumpFile", raw.dumpFile, "./failsh.dump");

  if (problems.length > 0) throw new PolicyError(source, problems);
  return {
    host: host as string,
    faild,
    keys,
    addresses,
    netDriver: netDriver as Policy["netDriver"],
    arp,
    programs,
    net,
    read,
    childUser,
    onExit: onExit as Policy["onExit"],
    monitor,
    debug,
    debugKey,
    audit,
    dumpFile,
  };
}

function cwdOrRoot(): string {
  try {
    return Deno.cwd();
  } catch {
    return "/";
  }
}

/**
 * Reads and parses a policy file (see {@linkcode parsePolicy}).
 *
 * @param path The policy file.
 * @returns The complete policy.
 * @throws {PolicyError} When the file is invalid; `Deno.errors.NotFound` when it is missing.
 *
 * @example
 * ```ts ignore
 * import { loadPolicy } from "./policy.ts";
 * const policy = await loadPolicy("/etc/failover/policy.json");
 * console.log(policy.host);
 * ```
 */
export async function loadPolicy(path: string): Promise<Policy> {
  const abs = resolvePath(cwdOrRoot(), path);
  let text: string;
  try {
    text = await Deno.readTextFile(abs);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`Cannot read policy ${abs}: no such file`);
    }
    throw e;
  }
  if (text.length > 1_000_000) {
    throw new PolicyError(abs, ["the file is larger than 1 MB"]);
  }
  return parsePolicy(text, abs);
}

/**
 * Reads the secret of a key named in the policy (the file's content, trimmed).
 *
 * @param policy The policy.
 * @param name The key's name, or `null`.
 * @returns The secret, or `null` when `name` is `null`.
 * @throws {Error} When the key is not in the policy or its file cannot be read or is empty.
 *
 * @example
 * ```ts ignore
 * import { loadPolicy, readKey } from "./policy.ts";
 * const policy = await loadPolicy("/etc/failover/policy.json");
 * const secret = await readKey(policy, policy.faild.key);
 * ```
 */
export async function readKey(policy: Policy, name: string | null): Promise<string | null> {
  if (name === null) return null;
  const key = policy.keys[name];
  if (!key) throw new Error(`Cannot read key ${name}: it is not in the policy's keys`);
  let text: string;
  try {
    text = await Deno.readTextFile(key.file);
  } catch (e) {
    throw new Error(`Cannot read key ${name}: ${key.file}: ${(e as Error).message}`);
  }
  const secret = text.trim();
  if (secret === "") throw new Error(`Cannot read key ${name}: ${key.file} is empty`);
  return secret;
}

// ---------------------------------------------------------------------------------------------
// The child's user
// ---------------------------------------------------------------------------------------------

/** A user and group id. */
export interface UserIds {
  /** The user id. */
  uid: number;
  /** The (primary) group id. */
  gid: number;
}

/**
 * The ids of the policy's `childUser`: `UID:GID` as given, or a name looked up in `/etc/passwd`
 * (with its primary group).
 *
 * @param policy The policy.
 * @param passwd The text of `/etc/passwd` (default: read it).
 * @returns The ids, or `null` when `childUser` is `null`.
 * @throws {Error} When the name is not in `/etc/passwd` (or it cannot be read).
 *
 * @example
 * ```ts
 * import { childUserIds, parsePolicy } from "./policy.ts";
 * const policy = parsePolicy('{"host":"a","childUser":"nobody"}', "/tmp/p.json");
 * console.log(childUserIds(policy, "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
 * // { uid: 65534, gid: 65534 }
 * ```
 */
export function childUserIds(policy: Policy, passwd?: string): UserIds | null {
  const spec = policy.childUser;
  if (spec === null || spec === undefined) return null;
  const numeric = /^([0-9]+):([0-9]+)$/.exec(spec);
  if (numeric) return { uid: Number(numeric[1]), gid: Number(numeric[2]) };
  let text = passwd;
  if (text === undefined) {
    try {
      text = Deno.readTextFileSync("/etc/passwd");
    } catch (e) {
      throw new Error(`Cannot find childUser ${spec}: ${(e as Error).message}`);
    }
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === spec && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`Cannot find childUser ${spec}: no such user in /etc/passwd`);
}

/**
 * Tells whether a user (with only its primary group) may read a path: search permission on every
 * directory above it, read permission on it (and search, for a directory), from the mode bits
 * (ACLs are not consulted).
 *
 * @param path An absolute path.
 * @param ids The user.
 * @returns `true` when readable; `false` when not, or when the path does not exist.
 *
 * @example
 * ```ts
 * import { readableBy } from "./policy.ts";
 * console.log(readableBy("/", { uid: 65534, gid: 65534 })); // true
 * ```
 */
export function readableBy(path: string, ids: UserIds): boolean {
  const allows = (info: Deno.FileInfo, bit: number): boolean => {
    const mode = info.mode ?? 0;
    if (info.uid === ids.uid) return (mode & (bit << 6)) !== 0;
    if (info.gid === ids.gid) return (mode & (bit << 3)) !== 0;
    return (mode & bit) !== 0;
  };
  const parts = path.split("/").filter((p) => p !== "");
  let dir = "";
  try {
    for (let i = 0; i < parts.length; i++) {
      const info = Deno.statSync(dir === "" ? "/" : dir);
      if (!allows(info, 1)) return false;
      dir += "/" + parts[i];
    }
    const info = Deno.statSync(path);
    return allows(info, 4) && (!info.isDirectory || allows(info, 1));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Symlinks in the read paths
// ---------------------------------------------------------------------------------------------

/** Most directory entries {@linkcode checkReadPaths} walks (a larger `read` tree is refused). */
export const MAX_READ_ENTRIES = 20_000;

function realOrNull(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

function under(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(root + "/");
}

/**
 * Checks the policy's `read` paths on disk, where symlinks are. deno's `--allow-read` checks a
 * path as written (after removing `.` and `..`) and the kernel then follows symlinks, so a link
 * inside a readable directory lets the script read its target. Refused: a link (to a file or a
 * directory, dangling or not) whose target is outside every `read` path (after resolving
 * symlinks) or is a key file, a hard link to a key file, and a `read` path whose real location
 * holds a key file.
 *
 * @param policy The policy (`read` and `keys`, absolute paths).
 * @param options `maxEntries` walked in all (default {@linkcode MAX_READ_ENTRIES}).
 * @returns One sentence per problem, each naming `read[i]`; empty when the paths are safe.
 *
 * @example
 * ```ts
 * import { checkReadPaths, parsePolicy } from "./policy.ts";
 * const policy = parsePolicy('{"host":"a","read":["/nonexistent-failover-dir"]}', "/tmp/p.json");
 * console.log(checkReadPaths(policy)); // []
 * ```
 */
export function checkReadPaths(policy: Policy, options: { maxEntries?: number } = {}): string[] {
  const maxEntries = options.maxEntries ?? MAX_READ_ENTRIES;
  const problems: string[] = [];
  const keys: { name: string; file: string; real: string; inode: string | null }[] = [];
  const inodeOf = (path: string): string | null => {
    try {
      const info = Deno.statSync(path);
      return info.ino === null ? null : `${info.dev}:${info.ino}`;
    } catch {
      return null;
    }
  };
  for (const [name, k] of Object.entries(policy.keys)) {
    keys.push({ name, file: k.file, real: realOrNull(k.file) ?? k.file, inode: inodeOf(k.file) });
  }
  const roots = policy.read.map((r) => realOrNull(r));
  const inRoots = (p: string) => roots.some((r) => r !== null && under(p, r));
  let entries = 0;
  policy.read.forEach((read, i) => {
    const real = roots[i];
    if (real === null || real === undefined) return; // missing: deno denies it anyway
    const shown = real === read ? read : `${read} is ${real}, which`;
    for (const k of keys) {
      if (under(k.real, real)) {
        problems.push(
          `read[${i}] ${shown} holds the secret of key ${JSON.stringify(k.name)} (${k.file})`,
        );
      }
    }
    // Walk the tree without following links: every link must stay inside the read paths.
    const stack: [real: string, shown: string][] = [[real, read]];
    while (stack.length > 0) {
      const [dir, dirShown] = stack.pop()!;
      let list: Deno.DirEntry[];
      try {
        list = [...Deno.readDirSync(dir)];
      } catch {
        continue; // a file, or unreadable: nothing below it
      }
      for (const e of list) {
        if (++entries > maxEntries) {
          problems.push(
            `read[${i}] ${read} holds more than ${maxEntries} entries: failsh cannot check them for symlinks leading out of the read paths; give narrower read paths`,
          );
          return;
        }
        const path = `${dir}/${e.name}`;
        const pathShown = `${dirShown}/${e.name}`;
        if (e.isDirectory) {
          stack.push([path, pathShown]);
          continue;
        }
        if (!e.isSymlink) {
          // A hard link to a key is the key under another name.
          const inode = keys.length > 0 ? inodeOf(path) : null;
          const key = inode === null ? undefined : keys.find((k) => k.inode === inode);
          if (key) {
            problems.push(
              `read[${i}] ${read} holds ${pathShown}, a hard link to the secret of key ${
                JSON.stringify(key.name)
              } (${key.file})`,
            );
          }
          continue;
        }
        let target = realOrNull(path);
        if (target === null) {
          // Dangling: judge where it would lead once its target exists.
          try {
            const text = Deno.readLinkSync(path);
            target = text.startsWith("/") ? text : `${dir}/${text}`;
            target = "/" + target.split("/").reduce<string[]>((acc, part) => {
              if (part === "..") acc.pop();
              else if (part !== "" && part !== ".") acc.push(part);
              return acc;
            }, []).join("/");
          } catch {
            continue;
          }
        }
        const key = keys.find((k) => k.real === target);
        const holds = keys.find((k) => under(k.real, target as string));
        if (key) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, the secret of key ${
              JSON.stringify(key.name)
            }`,
          );
        } else if (!inRoots(target)) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, outside the read paths (deno would let the script read it): remove the link or add its target to read`,
          );
        } else if (holds) {
          problems.push(
            `read[${i}] ${read} holds a symlink ${pathShown} to ${target}, which holds the secret of key ${
              JSON.stringify(holds.name)
            }`,
          );
        }
      }
    }
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Request checks
// ---------------------------------------------------------------------------------------------

/** An address request the policy allowed. */
export interface AllowedAddress {
  /** The address, parsed (canonical text in `cidr.text`). */
  cidr: Cidr;
  /** The device. */
  device: string;
  /** The rule that allowed it. */
  rule: AddressRule;
}

/** Shortest prefix length of an address under a single-address rule (IPv4, IPv6). */
export const MIN_PREFIX_LENGTH = { 4: 8, 6: 16 } as const;

function minimumPrefixLength(rule: AddressRule, address: Cidr): number {
  const p = parseCidr(rule.prefix) as Cidr;
  const max = address.family === 4 ? 32 : 128;
  return p.prefixLength === max ? MIN_PREFIX_LENGTH[address.family] : p.prefixLength;
}

function prefixLengthFits(rule: AddressRule, address: Cidr): boolean {
  return address.prefixLength >= minimumPrefixLength(rule, address);
}

function checkAddress(
  policy: Policy,
  verb: string,
  address: string,
  device: string,
): AllowedAddress {
  const shown = typeof address === "string" ? address.slice(0, 64) : String(address);
  if (typeof address !== "string" || !address.includes("/")) {
    const ip = parseCidr(String(address));
    throw new PolicyDeniedError(
      ip
        ? `Cannot ${verb} ${shown}: the address must include its prefix length, like ${ip.ip}/${
          ip.family === 4 ? 24 : 64
        }`
        : `Cannot ${verb} ${shown}: not an IP address with a prefix length`,
    );
  }
  const cidr = parseCidr(address, { requirePrefix: true });
  if (cidr === null) {
    throw new PolicyDeniedError(
      `Cannot ${verb} ${shown}: not an IP address with a prefix length like 198.18.0.10/24`,
    );
  }
  if (typeof device !== "string" || !DEVICE_PATTERN.test(device)) {
    throw new PolicyDeniedError(
      `Cannot ${verb} ${cidr.text}: ${quote(device)} is not a network device name`,
    );
  }
  const rules = policy.addresses.filter((r) => {
    const p = parseCidr(r.prefix);
    return p !== null && cidrContains(p, cidr);
  });
  if (rules.length === 0) {
    throw new PolicyDeniedError(`Cannot ${verb} ${cidr.text}: address is outside the policy`);
  }
  const onDevice = rules.filter((r) => r.devices.includes(device));
  if (onDevice.length === 0) {
    const allowed = [...new Set(rules.flatMap((r) => r.devices))].join(", ");
    throw new PolicyDeniedError(
      `Cannot ${verb} ${cidr.text} on ${device}: device is not allowed for this address (allowed: ${allowed})`,
    );
  }
  // The prefix length sets the connected route the kernel adds: it may not reach beyond a range
  // rule, nor be absurdly wide under a single-address rule.
  const rule = onDevice.find((r) => prefixLengthFits(r, cidr));
  if (!rule) {
    const r = onDevice[0] as AddressRule;
    const floor = minimumPrefixLength(r, cidr);
    throw new PolicyDeniedError(
      `Cannot ${verb} ${cidr.text}: a /${cidr.prefixLength} network is wider than the policy allows for ${r.prefix} (at least /${floor})`,
    );
  }
  return { cidr, device, rule };
}

/**
 * Decides whether the script may take over an address on a device.
 *
 * @param policy The policy.
 * @param address The address with its prefix length (`198.18.0.100/24`).
 * @param device The network device (`eth0`).
 * @returns The parsed address and the rule that allows it.
 * @throws {PolicyDeniedError} When the address is malformed, has no prefix length, lies outside
 *   every rule, or the device is not listed for it.
 *
 * @example
 * ```ts
 * import { checkTakeover, parsePolicy, PolicyDeniedError } from "./policy.ts";
 * const policy = parsePolicy(
 *   '{"host":"a","addresses":[{"prefix":"198.18.0.0/24","devices":["eth0"]}]}',
 *   "/tmp/policy.json",
 * );
 * console.log(checkTakeover(policy, "198.18.0.100/24", "eth0").cidr.ip); // "198.18.0.100"
 * try {
 *   checkTakeover(policy, "198.19.0.100/24", "eth0");
 * } catch (e) {
 *   console.log(e instanceof PolicyDeniedError, (e as Error).message);
 * }
 * ```
 */
export function checkTakeover(policy: Policy, address: string, device: string): AllowedAddress {
  return checkAddress(policy, "take over", address, device);
}

/**
 * Decides whether the script may release an address (same rules as
 * {@linkcode checkTakeover}: a script cannot remove addresses the policy does not cover).
 *
 * @param policy The policy.
 * @param address The address with its prefix length.
 * @param device The network device.
 * @returns The parsed address and the rule that allows it.
 * @throws {PolicyDeniedError} When the request is outside the policy.
 *
 * @example
 * ```ts
 * import { checkRelease, parsePolicy } from "./policy.ts";
 * const policy = parsePolicy(
 *   '{"host":"a","addresses":[{"prefix":"2001:db8::/64","devices":["eth0"]}]}',
 *   "/tmp/policy.json",
 * );
 * console.log(checkRelease(policy, "2001:db8:0::5/64", "eth0").cidr.text); // "2001:db8::5/64"
 * ```
 */
export function checkRelease(policy: Policy, address: string, device: string): AllowedAddress {
  return checkAddress(policy, "release", address, device);
}

/** The gratuitous ARP a takeover may send, after {@linkcode checkArp}. */
export interface AllowedArp {
  /** Packets of the burst after the takeover (0 to the policy's `arp.count`). */
  arpCount: number;
  /** Period of the refresh while held, ms (0: none). */
  refreshMs: number;
}

/**
 * Decides the gratuitous ARP of a takeover. The policy's `arp` values are the defaults **and the
 * caps**: a script may ask for fewer packets (`arpCount` up to `arp.count`) and a slower refresh
 * (`refreshMs` of 0, or from `arp.refreshMs` to 3600000), never more.
 *
 * @param policy The policy.
 * @param address The address, for messages (`198.18.0.100/24`).
 * @param request What the script asked for (`arpCount`, `refreshMs`; absent means the policy's).
 * @returns The values to use.
 * @throws {PolicyDeniedError} When a value is malformed or above the policy's.
 *
 * @example
 * ```ts
 * import { checkArp, parsePolicy } from "./policy.ts";
 * const policy = parsePolicy('{"host":"a","arp":{"count":2,"refreshMs":5000}}', "/tmp/p.json");
 * console.log(checkArp(policy, "198.18.0.100/24", { arpCount: 1 })); // { arpCount: 1, refreshMs: 5000 }
 * try {
 *   checkArp(policy, "198.18.0.100/24", { arpCount: 50 });
 * } catch (e) {
 *   console.log((e as Error).message); // "Cannot take over 198.18.0.100/24: arpCount 50 is above the policy's arp.count 2"
 * }
 * ```
 */
export function checkArp(
  policy: Policy,
  address: string,
  request: { arpCount?: unknown; refreshMs?: unknown },
): AllowedArp {
  const cap = policy.arp;
  const count = request.arpCount ?? cap.count;
  if (!Number.isInteger(count) || (count as number) < 0) {
    throw new PolicyDeniedError(
      `Cannot take over ${address}: arpCount must be an integer from 0 to ${cap.count}, got ${
        quote(count)
      }`,
    );
  }
  if ((count as number) > cap.count) {
    throw new PolicyDeniedError(
      `Cannot take over ${address}: arpCount ${count} is above the policy's arp.count ${cap.count}`,
    );
  }
  const refresh = request.refreshMs ?? cap.refreshMs;
  if (!Number.isInteger(refresh) || (refresh as number) < 0 || (refresh as number) > 3_600_000) {
    throw new PolicyDeniedError(
      `Cannot take over ${address}: refreshMs must be 0 or an integer up to 3600000, got ${
        quote(refresh)
      }`,
    );
  }
  const r = refresh as number;
  if (r !== 0 && cap.refreshMs === 0) {
    throw new PolicyDeniedError(
      `Cannot take over ${address}: refreshMs ${r} is refused: the policy's arp.refreshMs is 0 (no refresh)`,
    );
  }
  if (r !== 0 && r < cap.refreshMs) {
    throw new PolicyDeniedError(
      `Cannot take over ${address}: refreshMs ${r} is more often than the policy's arp.refreshMs ${cap.refreshMs} allows`,
    );
  }
  return { arpCount: count as number, refreshMs: r };
}

/** A program run the policy allowed. */
export interface AllowedRun {
  /** The rule that allowed it. */
  rule: ProgramRule;
  /** The executable that is run. */
  path: string;
  /** The arguments (without the program name). */
  args: string[];
  /** The time limit: the smaller of the rule's and the one the script asked for. */
  timeoutMs: number;
}

const compiled = new WeakMap<ProgramRule, { args: RegExp[]; rest: RegExp | null }>();

function patternsOf(rule: ProgramRule): { args: RegExp[]; rest: RegExp | null } {
  let c = compiled.get(rule);
  if (!c) {
    c = {
      args: rule.args.map(compileArgPattern),
      rest: rule.rest === undefined ? null : compileArgPattern(rule.rest),
    };
    compiled.set(rule, c);
  }
  return c;
}

function showArgv(argv: readonly unknown[]): string {
  const s = argv.map((a) => {
    const t = String(a);
    return /^[A-Za-z0-9._\/:=@%+-]+$/.test(t) ? t : JSON.stringify(t);
  }).join(" ");
  return s.length > 200 ? s.slice(0, 197) + "..." : s;
}

/**
 * Decides whether the script may run a program: `argv[0]` must be a program name of the
 * policy and each argument must fully match its position's pattern (or `rest` beyond them).
 *
 * @param policy The policy.
 * @param argv The program's name, then its arguments (never a shell string).
 * @param options The time limit the script asks for (capped by the rule's).
 * @returns The executable, arguments and time limit to use.
 * @throws {PolicyDeniedError} When the program is not listed or an argument does not match.
 *
 * @example
 * ```ts
 * import { checkRun, parsePolicy } from "./policy.ts";
 * const policy = parsePolicy(
 *   JSON.stringify({
 *     host: "a",
 *     programs: [{ name: "systemctl", path: "/usr/bin/systemctl", args: ["start|stop", "nginx"] }],
 *   }),
 *   "/tmp/policy.json",
 * );
 * console.log(checkRun(policy, ["systemctl", "start", "nginx"]).path); // "/usr/bin/systemctl"
 * ```
 */
export function checkRun(
  policy: Policy,
  argv: readonly string[],
  options: { timeoutMs?: number } = {},
): AllowedRun {
  if (!Array.isArray(argv) || argv.length === 0) {
    throw new PolicyDeniedError("Cannot run an empty command: argv must start with a program name");
  }
  if (!argv.every((a) => typeof a === "string")) {
    throw new PolicyDeniedError(`Cannot run ${showArgv(argv)}: every argument must be a string`);
  }
  const [name, ...args] = argv as string[];
  const rule = policy.programs.find((p) => p.name === name);
  if (!rule) {
    throw new PolicyDeniedError(
      `Cannot run ${showArgv([name])}: program is not in the policy (allowed: ${
        policy.programs.map((p) => p.name).join(", ") || "none"
      })`,
    );
  }
  if (args.length > MAX_RUN_ARGS) {
    throw new PolicyDeniedError(
      `Cannot run ${showArgv(argv)}: more than ${MAX_RUN_ARGS} arguments`,
    );
  }
  const { args: patterns, rest } = patternsOf(rule);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg.length > MAX_ARG_LENGTH || arg.includes("\0")) {
      throw new PolicyDeniedError(
        `Cannot run ${showArgv(argv)}: argument ${
          i + 1
        } is longer than ${MAX_ARG_LENGTH} characters or contains NUL`,
      );
    }
    const pattern = i < patterns.length ? patterns[i] : rest;
    if (!pattern) {
      throw new PolicyDeniedError(
        `Cannot run ${
          showArgv(argv)
        }: ${name} takes at most ${patterns.length} arguments under the policy`,
      );
    }
    if (!pattern.test(arg)) {
      const source = i < patterns.length ? rule.args[i] : rule.rest;
      throw new PolicyDeniedError(
        `Cannot run ${showArgv(argv)}: argument ${i + 1} ${
          JSON.stringify(arg.slice(0, 80))
        } does not match the policy's pattern ${JSON.stringify(source)}`,
      );
    }
  }
  // A missing argument is allowed only where the pattern accepts the empty string.
  const needed = patterns.findLastIndex((p) => !p.test("")) + 1;
  if (args.length < needed) {
    throw new PolicyDeniedError(
      `Cannot run ${showArgv(argv)}: ${name} needs ${needed} arguments under the policy`,
    );
  }
  let timeoutMs = rule.timeoutMs;
  if (options.timeoutMs !== undefined) {
    if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) {
      throw new PolicyDeniedError(
        `Cannot run ${showArgv(argv)}: timeoutMs must be a positive number of milliseconds`,
      );
    }
    timeoutMs = Math.min(timeoutMs, Math.ceil(options.timeoutMs));
  }
  return { rule, path: rule.path, args, timeoutMs };
}
