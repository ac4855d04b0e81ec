import assert from "node:assert/strict";
import { RunQueue } from "./_run_queue.ts";

interface Item {
  name: string;
  dueAt: number | null;
}

function item(name: string): Item {
  return { name, dueAt: null };
}

Deno.test("RunQueue runs each item once, earliest first, whatever the order of scheduling", async () => {
  const ran: string[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const q = new RunQueue<Item>((i) => {
    ran.push(i.name);
    if (ran.length === 5) resolve();
  });
  const now = Date.now();
  for (const [name, at] of [["c", 30], ["a", 10], ["e", 50], ["b", 20], ["d", 40]] as const) {
    q.schedule(item(name), now + at);
  }
  await promise;
  assert.deepEqual(ran, ["a", "b", "c", "d", "e"]);
  assert.equal(q.size, 0);
  q.close();
});

Deno.test("RunQueue: a cancelled item does not run, a rescheduled one runs at its new time only", async () => {
  const ran: string[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const q = new RunQueue<Item>((i) => {
    ran.push(i.name);
    if (i.name === "last") resolve();
  });
  const now = Date.now();
  const gone = item("gone");
  const moved = item("moved");
  q.schedule(gone, now + 5);
  q.schedule(moved, now + 5);
  q.cancel(gone);
  q.schedule(moved, now + 30);
  q.schedule(item("first"), now + 15);
  q.schedule(item("last"), now + 60);
  await promise;
  assert.deepEqual(ran, ["first", "moved", "last"]);
  assert.equal(gone.dueAt, null);
  q.close();
});

Deno.test("RunQueue.close() stops every pending run", async () => {
  let ran = 0;
  const q = new RunQueue<Item>(() => ran++);
  const a = item("a");
  q.schedule(a, Date.now() + 10);
  q.close();
  q.schedule(item("b"), Date.now() + 10);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(ran, 0);
  assert.equal(a.dueAt, null);
});
