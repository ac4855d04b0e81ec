import assert from "node:assert/strict";
import { analyzeGraph, dependentsOf, effectiveState } from "./graph.ts";

Deno.test("analyzeGraph() orders dependencies first and keeps file order among equals", () => {
  const g = analyzeGraph([
    { name: "web", deps: ["dns", "db"], line: 1 },
    { name: "db", deps: [], line: 3 },
    { name: "dns", deps: ["gw"], line: 5 },
    { name: "gw", deps: [], line: 7 },
  ]);
  assert.deepEqual(g.order, ["db", "gw", "dns", "web"]);
  assert.deepEqual(g.unknown, []);
  assert.deepEqual(g.cycles, []);
});

Deno.test("analyzeGraph() reports unknown dependencies and each cycle once", () => {
  const g = analyzeGraph([
    { name: "a", deps: ["b", "ghost"], line: 1 },
    { name: "b", deps: ["a"], line: 2 },
    { name: "c", deps: ["c"], line: 3 },
  ]);
  assert.deepEqual(g.unknown, [{ name: "a", dep: "ghost", line: 1 }]);
  assert.deepEqual(g.cycles.map((c) => c.path.join(">")), ["a>b>a", "c>c"]);
  assert.equal(g.order.length, 3);
});

Deno.test("dependentsOf() inverts the edges", () => {
  const d = dependentsOf([
    { name: "web", deps: ["dns"], line: 1 },
    { name: "mail", deps: ["dns"], line: 2 },
  ]);
  assert.deepEqual(d.get("dns"), ["web", "mail"]);
});

Deno.test("effectiveState() blames the failing dependency at the root", async (t) => {
  await t.step("no dependencies: own state", () => {
    assert.deepEqual(effectiveState("FAIL", []), { state: "FAIL", rootCause: null });
  });
  await t.step("a FAIL dependency blocks, naming it", () => {
    assert.deepEqual(effectiveState("FAIL", [{ name: "dns", state: "FAIL", rootCause: null }]), {
      state: "BLOCKED",
      rootCause: "dns",
    });
  });
  await t.step("a BLOCKED dependency passes its root cause on", () => {
    assert.deepEqual(
      effectiveState("UP", [{ name: "dns", state: "BLOCKED", rootCause: "gateway" }]),
      { state: "BLOCKED", rootCause: "gateway" },
    );
  });
  await t.step("a PENDING dependency keeps the verdict pending", () => {
    assert.deepEqual(effectiveState("FAIL", [{ name: "dns", state: "PENDING", rootCause: null }]), {
      state: "PENDING",
      rootCause: null,
    });
  });
  await t.step("UP dependencies: own state", () => {
    assert.deepEqual(effectiveState("UP", [{ name: "dns", state: "UP", rootCause: null }]), {
      state: "UP",
      rootCause: null,
    });
  });
});
