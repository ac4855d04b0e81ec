/**
 * The operator's policy: what a sandboxed failover script may ask failsh's supervisor to do.
 *
 * {@linkcode parsePolicy} turns `policy.json` into a complete {@linkcode Policy} (defaults filled
 * in, paths made absolute, every field checked with an error that names it);
 * {@linkcode loadPolicy} reads the file, {@linkcode readKey} a key's secret. The decisions on
 * each privileged request are in `./checks.ts`, the addresses in `./cidr.ts`, the child's user
 * and the checks of the `read` paths on disk in `./read_paths.ts`.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import type { AddressRule, Policy, ProgramRule } from "../contract.ts";
import { isValidName } from "../../lib/types.ts";
import { parseCidr } from "./cidr.ts";
import { parseHostPort } from "../../lib/net.ts";
import { checkEtcdEndpoint, MAX_ARBITER_ENDPOINTS } from "../script/registry.ts";
import { DEFAULT_CHILDREN, MAX_CHILDREN } from "./pool.ts";

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
// Parsing
// ---------------------------------------------------------------------------------------------

/** Network device names as Linux accepts them (IFNAMSIZ 16, no `/`, no whitespace). */
export const DEVICE_PATTERN = /^[A-Za-z0-9_.:@-]{1,15}$/;

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
  "etcd",
  "read",
  "childUser",
  "children",
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

/**
 * Shows a value in a message: as JSON, cut at 80 characters.
 *
 * @param v Anything.
 * @returns The text.
 *
 * @example
 * ```ts
 * import { quote } from "./policy.ts";
 * import { equal } from "node:assert/strict";
 * equal(quote("eth 0"), '"eth 0"');
 * ```
 */
export function quote(v: unknown): string {
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
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(compileArgPattern("restart|reload").test("restart"), true);
 * deepEqual(compileArgPattern("restart|reload").test("restart; rm -rf /"), false);
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
 * `timeoutMs` 10000), `net` `[]`, `etcd` `[]`, `read` `[]`, `childUser` `null`, `children` 4,
 * `onExit` `release`, `monitor` `127.0.0.1:1848`, `debug` `null`, `debugKey` `null`, `audit` `./failsh-audit.log`, `dumpFile` `./failsh.dump`.
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
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy(
 *   JSON.stringify({
 *     host: "alpha",
 *     addresses: [{ prefix: "198.18.0.0/24", devices: ["eth0"] }],
 *   }),
 *   "/etc/failover/policy.json",
 * );
 * deepEqual([policy.netDriver, policy.audit], ["linux", "/etc/failover/failsh-audit.log"]);
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
  const base = dirname(resolve(cwdOrRoot(), source));

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
        keys[name] = { file: resolve(base, v.file) };
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

  // etcd: the endpoints the supervisor may talk to for the script's arbiter
  const etcd: string[] = [];
  if (raw.etcd !== undefined) {
    if (!Array.isArray(raw.etcd) || raw.etcd.length > MAX_ARBITER_ENDPOINTS) {
      problems.push(
        `etcd must be a list of at most ${MAX_ARBITER_ENDPOINTS} "http://host:port" endpoints`,
      );
    } else {
      raw.etcd.forEach((e: unknown, i: number) => {
        try {
          etcd.push(checkEtcdEndpoint(e, `etcd[${i}]`));
        } catch (error) {
          problems.push((error as Error).message.replace(/^Invalid /, ""));
        }
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
        const abs = resolve(base, r);
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

  // children: the shared children of the services' handlers (each a deno process, ~40 MiB)
  let children = DEFAULT_CHILDREN;
  if (raw.children !== undefined) {
    const c = raw.children;
    if (typeof c !== "number" || !Number.isInteger(c) || c < 1 || c > MAX_CHILDREN) {
      problems.push(`children must be an integer from 1 to ${MAX_CHILDREN}, got ${quote(c)}`);
    } else children = c;
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
    if (v === undefined) return resolve(base, dflt);
    if (typeof v !== "string" || v === "" || v.includes("\0")) {
      problems.push(`${field} must be a file path, got ${quote(v)}`);
      return dflt;
    }
    return resolve(base, v);
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
    etcd,
    read,
    childUser,
    children,
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
  const abs = resolve(cwdOrRoot(), path);
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
