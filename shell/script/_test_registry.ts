/**
 * Fixtures of the registry's tests (and of `checkDecl()`'s): a registry with two hosts, and
 * handlers that return at once.
 *
 * @module
 */
import { ScriptRegistry } from "./registry.ts";

/**
 * A registry that declares `alpha` (127.0.0.1, defaults) and `beta` (`::1`, port 7200, https,
 * key `cluster`).
 *
 * @returns The registry.
 */
export function registry(): ScriptRegistry {
  const r = new ScriptRegistry();
  r.host("alpha", { address: "127.0.0.1" });
  r.host("beta", { address: "::1", port: 7200, protocol: "https", key: "cluster" });
  return r;
}

/** A `start` returning `UP` and a `stop` returning `FAIL`. */
export const handlers = {
  start: () => Promise.resolve("UP" as const),
  stop: () => Promise.resolve("FAIL" as const),
};
