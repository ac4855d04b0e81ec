/**
 * The supervisor's check of what a script's child declares. The child writes its channel, so a
 * script could send any JSON as its declaration: {@linkcode checkDecl} accepts only exactly what
 * `mod.ts` would send for valid declarations, by replaying them through a registry of its own.
 *
 * @module
 */
import type { ArbiterDecl, HostDecl, ScriptDecl, ServiceDecl } from "../contract.ts";
import { ScriptRegistry } from "../script/registry.ts";
import type { LivenessOptions } from "../script/api.ts";

/** The `host()` liveness options that declare `value`, or `value` itself when it is no object. */
function livenessOptions(value: unknown): LivenessOptions {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return value as LivenessOptions;
  }
  const { intervalMs, fall, stallGraceMs } = value as Record<string, unknown>;
  return { interval: intervalMs, fall, stallGrace: stallGraceMs } as LivenessOptions;
}

/**
 * Checks a declaration received from a script's child: it must be exactly what a
 * {@linkcode ScriptRegistry} produces for the same declarations (the supervisor does not trust
 * the child, which could write any JSON on its channel).
 *
 * @param value The received `decl`.
 * @returns The declaration.
 * @throws {TypeError} Naming the first problem.
 *
 * @example
 * ```ts
 * import { checkDecl } from "./decl.ts";
 * import { throws } from "node:assert/strict";
 * throws(
 *   () => checkDecl({ hosts: [], services: [{ name: "web", intervalMs: 0 }], traps: 0 }),
 *   /^TypeError: Invalid declaration from the script: /,
 * );
 * ```
 */
export function checkDecl(value: unknown): ScriptDecl {
  const fail = (why: string): never => {
    throw new TypeError(`Invalid declaration from the script: ${why}`);
  };
  if (typeof value !== "object" || value === null) fail("not an object");
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.hosts) || !Array.isArray(v.services)) {
    fail("hosts and services must be lists");
  }
  if (!Number.isInteger(v.traps) || (v.traps as number) < 0 || (v.traps as number) > 10_000) {
    fail("traps must be a count");
  }
  const r = new ScriptRegistry();
  const noop = () => Promise.resolve("FAIL" as const);
  try {
    if (v.arbiter !== undefined) {
      const a = v.arbiter as ArbiterDecl;
      if (typeof a !== "object" || a === null) fail("the arbiter is not an object");
      r.arbiter({
        endpoints: a.endpoints,
        prefix: a.prefix,
        ttl: a.ttlMs,
        renew: a.renewMs,
        timeout: a.timeoutMs,
        margin: a.marginMs,
        takeoverDelay: a.takeoverDelayMs,
        onArbiterLoss: a.onArbiterLoss,
      });
    }
    for (const h of v.hosts as HostDecl[]) {
      if (typeof h !== "object" || h === null) fail("a host is not an object");
      r.host(h.name, {
        address: h.address,
        port: h.port,
        protocol: h.protocol,
        key: h.key,
        ...(h.liveness === undefined ? {} : { liveness: livenessOptions(h.liveness) }),
      });
    }
    for (const d of v.services as ServiceDecl[]) {
      if (typeof d !== "object" || d === null || !Array.isArray(d.handlers)) {
        fail("a service is not an object with handlers");
      }
      r.service(d.name, {
        masters: d.masters,
        slaves: d.slaves,
        interval: d.intervalMs,
        fall: d.fall,
        rise: d.rise,
        preempt: d.preempt,
        grace: d.graceMs,
        timeouts: d.timeouts,
        start: noop,
        stop: noop,
        ...(d.handlers.includes("reclaim") ? { reclaim: noop } : {}),
      });
    }
  } catch (e) {
    fail((e as Error).message);
  }
  for (let i = 0; i < (v.traps as number); i++) r.trap(() => {});
  const problems = r.validate();
  if (problems.length > 0) fail(problems.join("; "));
  const decl = r.decl();
  if (JSON.stringify(decl) !== JSON.stringify(value)) {
    fail("it has fields or values mod.ts never sends");
  }
  return decl;
}
