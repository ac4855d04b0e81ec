import assert from "node:assert/strict";
import type { ChangeEvent } from "../../lib/types.ts";
import { ServiceStore, TooManyServicesError, validateRecord } from "./store.ts";

function clock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("ServiceStore.set() creates a record with zero changes and the creation time", () => {
  const c = clock();
  const store = new ServiceStore({ now: c.now });
  const r = store.set("web", "UP", { setBy: "k1", detail: "started" });
  assert.deepEqual(r.record, {
    name: "web",
    state: "UP",
    lastChange: 1_000,
    changes: 0,
    detail: "started",
    setBy: "k1",
  });
  assert.equal(r.created, true);
  assert.equal(store.size, 1);
});

Deno.test("ServiceStore counts a change and moves lastChange only when the state differs", () => {
  const c = clock();
  const store = new ServiceStore({ now: c.now });
  store.set("web", "UP", { setBy: "k1" });
  c.advance(500);
  const same = store.set("web", "UP", { setBy: "k1" });
  assert.equal(same.record.changes, 0);
  assert.equal(same.record.lastChange, 1_000);
  assert.equal(same.modified, false);
  c.advance(500);
  const changed = store.set("web", "FAIL", { setBy: "k2", detail: "port closed" });
  assert.equal(changed.record.changes, 1);
  assert.equal(changed.record.lastChange, 2_000);
  assert.equal(changed.record.setBy, "k2");
  c.advance(500);
  const detailOnly = store.set("web", "FAIL", { setBy: "k2", detail: "still closed" });
  assert.equal(detailOnly.stateChanged, false);
  assert.equal(detailOnly.modified, true);
  assert.equal(detailOnly.record.changes, 1);
  assert.equal(detailOnly.record.lastChange, 2_000);
  // A flap between two polls still shows in the counter.
  store.set("web", "UP", { setBy: "k2" });
  store.set("web", "FAIL", { setBy: "k2" });
  assert.equal(store.get("web")?.changes, 3);
});

Deno.test("ServiceStore refuses a new service beyond the limit but still updates existing ones", () => {
  const store = new ServiceStore({ maxServices: 2 });
  store.set("a", "UP", { setBy: "k" });
  store.set("b", "UP", { setBy: "k" });
  assert.throws(() => store.set("c", "UP", { setBy: "k" }), TooManyServicesError);
  assert.equal(store.size, 2);
  store.set("a", "FAIL", { setBy: "k" });
  assert.equal(store.get("a")?.state, "FAIL");
  store.delete("b");
  store.set("c", "UP", { setBy: "k" });
  assert.deepEqual(store.list().map((s) => s.name), ["a", "c"]);
});

Deno.test("ServiceStore rejects bad names, states and details", () => {
  const store = new ServiceStore();
  assert.throws(() => store.set("../x", "UP", { setBy: "k" }), RangeError);
  assert.throws(() => store.set("-x", "UP", { setBy: "k" }), RangeError);
  assert.throws(() => store.set("x".repeat(65), "UP", { setBy: "k" }), RangeError);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => store.set("x", "up" as any, { setBy: "k" }), RangeError);
  assert.throws(() => store.set("x", "UP", { setBy: "k", detail: "d".repeat(513) }), RangeError);
  assert.equal(store.size, 0);
});

Deno.test("ServiceStore emits numbered events for changes and deletes, not for no-ops", () => {
  const store = new ServiceStore();
  const events: ChangeEvent[] = [];
  const off = store.onChange((e) => events.push(e));
  store.set("web", "UP", { setBy: "k" });
  store.set("web", "UP", { setBy: "k" });
  store.set("web", "FAIL", { setBy: "k" });
  store.delete("web");
  store.delete("web");
  off();
  store.set("db", "UP", { setBy: "k" });
  assert.deepEqual(events.map((e) => [e.type, e.service.state, e.seq]), [
    ["set", "UP", 1],
    ["set", "FAIL", 2],
    ["delete", "FAIL", 3],
  ]);
});

Deno.test("ServiceStore.list() is sorted and load() restores records without events", () => {
  const store = new ServiceStore();
  let events = 0;
  store.onChange(() => events++);
  store.load([
    { name: "zeta", state: "UP", lastChange: 5, changes: 7, detail: "", setBy: "k" },
    { name: "alpha", state: "FAIL", lastChange: 6, changes: 2, detail: "x", setBy: "k" },
  ]);
  assert.deepEqual(store.list().map((s) => s.name), ["alpha", "zeta"]);
  assert.equal(events, 0);
  store.set("zeta", "FAIL", { setBy: "k" });
  assert.equal(store.get("zeta")?.changes, 8);
  assert.throws(
    () => new ServiceStore({ maxServices: 1 }).load(store.list()),
    TooManyServicesError,
  );
});

Deno.test("validateRecord() names the bad field", () => {
  const good = { name: "web", state: "UP", lastChange: 1, changes: 0, detail: "", setBy: "k" };
  assert.equal(validateRecord(good, "r").name, "web");
  assert.throws(() => validateRecord({ ...good, state: "DOWN" }, "r"), /state "DOWN"/);
  assert.throws(() => validateRecord({ ...good, changes: -1 }, "r"), /changes/);
  assert.throws(() => validateRecord({ ...good, name: "a b" }, "r"), /name/);
  assert.throws(() => validateRecord([], "r"), /not an object/);
});
