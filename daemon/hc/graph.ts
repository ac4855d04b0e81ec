/**
 * The dependency graph of an Hcfile: unknown dependencies, cycles, the order checks run in, and
 * which check is the root cause when a dependency is failing.
 *
 * @module
 */

/** A node: a check's name, what it depends on, and where it is declared. */
export interface GraphNode {
  /** The check's name. */
  name: string;
  /** The checks it depends on. */
  deps: readonly string[];
  /** The Hcfile line of its target. */
  line: number;
}

/** What {@linkcode analyzeGraph} found. */
export interface GraphAnalysis {
  /** Every node in dependency order (dependencies first; file order among equals). */
  order: string[];
  /** Dependencies that name no check. */
  unknown: { name: string; dep: string; line: number }[];
  /** Each cycle as the path that closes it, e.g. `["a", "b", "a"]`, with the line of its first node. */
  cycles: { path: string[]; line: number }[];
}

/**
 * Checks a dependency graph and orders it.
 *
 * @param nodes The checks in file order.
 * @returns Order, unknown dependencies and cycles. Nodes on a cycle come last in the order.
 *
 * @example
 * ```ts
 * import { analyzeGraph } from "./graph.ts";
 * import { deepEqual } from "node:assert/strict";
 * const g = analyzeGraph([
 *   { name: "web", deps: ["dns"], line: 3 },
 *   { name: "dns", deps: [], line: 1 },
 * ]);
 * deepEqual(g.order, ["dns", "web"]);
 * ```
 */
export function analyzeGraph(nodes: readonly GraphNode[]): GraphAnalysis {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const unknown: GraphAnalysis["unknown"] = [];
  for (const n of nodes) {
    for (const d of n.deps) {
      if (!byName.has(d)) unknown.push({ name: n.name, dep: d, line: n.line });
    }
  }
  // Cycles: depth-first search with colours; report each back edge's cycle once.
  const colour = new Map<string, 0 | 1 | 2>();
  const stack: string[] = [];
  const cycles: GraphAnalysis["cycles"] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    colour.set(name, 1);
    stack.push(name);
    for (const d of byName.get(name)?.deps ?? []) {
      if (!byName.has(d)) continue;
      const c = colour.get(d) ?? 0;
      if (c === 0) visit(d);
      else if (c === 1) {
        const path = [...stack.slice(stack.indexOf(d)), d];
        const key = [...path.slice(0, -1)].sort().join(" ");
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push({ path, line: byName.get(path[0]!)?.line ?? 0 });
        }
      }
    }
    stack.pop();
    colour.set(name, 2);
  };
  for (const n of nodes) if ((colour.get(n.name) ?? 0) === 0) visit(n.name);
  // Order: Kahn's algorithm in file order.
  const indegree = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const n of nodes) {
    const deps = new Set(n.deps.filter((d) => byName.has(d)));
    indegree.set(n.name, deps.size);
    for (const d of deps) dependents.set(d, [...(dependents.get(d) ?? []), n.name]);
  }
  const order: string[] = [];
  const ready = nodes.filter((n) => indegree.get(n.name) === 0).map((n) => n.name);
  const position = new Map(nodes.map((n, i) => [n.name, i]));
  while (ready.length > 0) {
    ready.sort((a, b) => position.get(a)! - position.get(b)!);
    const next = ready.shift()!;
    order.push(next);
    for (const m of dependents.get(next) ?? []) {
      const left = indegree.get(m)! - 1;
      indegree.set(m, left);
      if (left === 0) ready.push(m);
    }
  }
  for (const n of nodes) if (!order.includes(n.name)) order.push(n.name);
  return { order, unknown, cycles };
}

/**
 * Maps each check to the checks that depend on it directly.
 *
 * @param nodes The checks.
 * @returns Dependents by name.
 *
 * @example
 * ```ts
 * import { dependentsOf } from "./graph.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(dependentsOf([{ name: "web", deps: ["dns"], line: 2 }]).get("dns"), ["web"]);
 * ```
 */
export function dependentsOf(nodes: readonly GraphNode[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const n of nodes) {
    for (const d of new Set(n.deps)) out.set(d, [...(out.get(d) ?? []), n.name]);
  }
  return out;
}

/** The state a check reports. */
export type CheckState = "PENDING" | "UP" | "FAIL" | "BLOCKED";

/**
 * The state a check reports given its own state and its dependencies' reported states: `BLOCKED`
 * (with the failing check at the root as cause) when a dependency is `FAIL` or `BLOCKED`,
 * `PENDING` while a dependency has no verdict yet, else its own state.
 *
 * @param own The check's own state from its probes.
 * @param deps Each dependency's name, reported state and root cause.
 * @returns The reported state and the root cause (`null` unless `BLOCKED`).
 *
 * @example
 * ```ts
 * import { effectiveState } from "./graph.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = effectiveState("FAIL", [{ name: "dns", state: "BLOCKED", rootCause: "gateway" }]);
 * deepEqual(r, { state: "BLOCKED", rootCause: "gateway" });
 * ```
 */
export function effectiveState(
  own: "PENDING" | "UP" | "FAIL",
  deps: readonly { name: string; state: CheckState; rootCause: string | null }[],
): { state: CheckState; rootCause: string | null } {
  for (const d of deps) {
    if (d.state === "FAIL") return { state: "BLOCKED", rootCause: d.name };
    if (d.state === "BLOCKED") return { state: "BLOCKED", rootCause: d.rootCause ?? d.name };
  }
  if (deps.some((d) => d.state === "PENDING")) return { state: "PENDING", rootCause: null };
  return { state: own, rootCause: null };
}
