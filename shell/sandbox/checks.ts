/**
 * The policy's decision on each privileged request of a script: an address to take over or
 * release ({@linkcode checkTakeover}, {@linkcode checkRelease}), the gratuitous ARP of a
 * takeover ({@linkcode checkArp}), a program to run ({@linkcode checkRun}). Each returns what to
 * do, or throws a {@linkcode PolicyDeniedError} whose message says what was refused and why.
 *
 * @module
 */
import type { AddressRule, Policy, ProgramRule } from "../contract.ts";
import { PolicyDeniedError } from "../errors.ts";
import { type Cidr, cidrContains, parseCidr } from "./cidr.ts";
import {
  compileArgPattern,
  DEVICE_PATTERN,
  MAX_ARG_LENGTH,
  MAX_RUN_ARGS,
  quote,
} from "./policy.ts";

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
 * import { checkTakeover } from "./checks.ts";
 * import { parsePolicy } from "./policy.ts";
 * import { PolicyDeniedError } from "../errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy(
 *   '{"host":"a","addresses":[{"prefix":"198.18.0.0/24","devices":["eth0"]}]}',
 *   "/tmp/policy.json",
 * );
 * deepEqual(checkTakeover(policy, "198.18.0.100/24", "eth0").cidr.ip, "198.18.0.100");
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
 * import { checkRelease } from "./checks.ts";
 * import { parsePolicy } from "./policy.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy(
 *   '{"host":"a","addresses":[{"prefix":"2001:db8::/64","devices":["eth0"]}]}',
 *   "/tmp/policy.json",
 * );
 * deepEqual(checkRelease(policy, "2001:db8:0::5/64", "eth0").cidr.text, "2001:db8::5/64");
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
 * import { checkArp } from "./checks.ts";
 * import { parsePolicy } from "./policy.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy('{"host":"a","arp":{"count":2,"refreshMs":5000}}', "/tmp/p.json");
 * deepEqual(checkArp(policy, "198.18.0.100/24", { arpCount: 1 }), { arpCount: 1, refreshMs: 5000 });
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
 * import { checkRun } from "./checks.ts";
 * import { parsePolicy } from "./policy.ts";
 * import { deepEqual } from "node:assert/strict";
 * const policy = parsePolicy(
 *   JSON.stringify({
 *     host: "a",
 *     programs: [{ name: "systemctl", path: "/usr/bin/systemctl", args: ["start|stop", "nginx"] }],
 *   }),
 *   "/tmp/policy.json",
 * );
 * deepEqual(checkRun(policy, ["systemctl", "start", "nginx"]).path, "/usr/bin/systemctl");
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
