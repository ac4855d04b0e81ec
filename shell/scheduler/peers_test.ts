import assert from "node:assert/strict";
import { FakeTime } from "../_fake_time.ts";
import { type Answer, Peers, type PollResult } from "./peers.ts";
import { schedulerStats } from "./stats.ts";
import type { HostDecl, ServiceDecl } from "../contract.ts";
import type { ServiceRecord, ServiceState } from "../../lib/types.ts";

function host(name: string): HostDecl {
  return { name, address: "127.0.0.1", port: 7100, protocol: "http", key: null };
}

function service(name: string, over: Partial<ServiceDecl> = {}): ServiceDecl {
  return {
    name,
    masters: ["alpha"],
    slaves: ["beta"],
    intervalMs: 100,
    fall: 2,
    rise: 2,
    preempt: true,
    graceMs: 0,
    timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
    handlers: ["start", "stop", "reclaim"],
    ...over,
  };
}

/** alpha's view of beta, whose faild answers as told. */
function setup(services: ServiceDecl[]) {
  const time = new FakeTime();
  const beta = { up: true, boot: "b1", records: new Map<string, ServiceRecord>() };
  const set = (svc: string, state: ServiceState, changes: number) =>
    beta.records.set(svc, {
      name: svc,
      state,
      changes,
      lastChange: time.now(),
      detail: "",
      setBy: "beta",
    });
  const poller = (h: HostDecl): Promise<PollResult> => {
    if (h.name === "alpha") return Promise.resolve({ bootId: "a1", services: [] });
    if (!beta.up) return Promise.reject(new Error("beta does not answer"));
    return Promise.resolve({ bootId: beta.boot, services: [...beta.records.values()] });
  };
  const answers: Answer[] = [];
  const peers = new Peers({
    self: "alpha",
    hosts: [host("alpha"), host("beta")],
    services,
    poller,
    timers: time,
    stats: schedulerStats(),
    events: { add: () => {}, changed: () => {} },
    hooks: {
      trap: () => {},
      answered: (a) => {
        if (!a.self) answers.push(a);
      },
      missed: () => {},
    },
  });
  return { time, beta, set, peers, answers };
}

Deno.test("Peers counts a peer unreachable after fall misses, back after rise answers", async () => {
  const { time, beta, peers } = setup([service("web")]);
  const reachable = () => peers.inputs("web").peers[0]!.reachable;
  peers.start();
  await time.advance(50);
  assert.equal(reachable(), true, "the first answer counts at once");
  beta.up = false;
  await time.advance(100);
  assert.equal(reachable(), true, "one miss is not enough");
  await time.advance(100);
  assert.equal(reachable(), false, "fall = 2 misses");
  beta.up = true;
  await time.advance(100);
  assert.equal(reachable(), false, "one answer is not enough");
  await time.advance(100);
  assert.equal(reachable(), true, "rise = 2 answers");
  peers.stop();
});

Deno.test("Peers scales fall of a slower service to the host's poll interval", async () => {
  const { time, beta, peers } = setup([service("web"), service("db", { intervalMs: 300 })]);
  const reachable = (svc: string) => peers.inputs(svc).peers[0]!.reachable;
  peers.start();
  await time.advance(50);
  beta.up = false;
  await time.advance(200);
  assert.deepEqual([reachable("web"), reachable("db")], [false, true]);
  // db's fall of 2 of its 300 ms intervals is 6 polls at beta's 100 ms.
  await time.advance(300);
  assert.deepEqual([reachable("web"), reachable("db")], [false, true]);
  await time.advance(100);
  assert.deepEqual([reachable("web"), reachable("db")], [false, false]);
  peers.stop();
});

Deno.test("Peers reports a comeback once, at the peer's first answer, before rise counts it", async () => {
  const { time, beta, set, peers, answers } = setup([service("web")]);
  set("web", "UP", 1);
  peers.start();
  await time.advance(250);
  assert.equal(answers.at(-1)?.heldBefore.has("web"), true, "counted holding web");
  beta.up = false;
  await time.advance(300);
  const before = answers.length;
  beta.up = true;
  await time.advance(300);
  const back = answers.slice(before);
  assert.deepEqual(back.map((a) => a.cameBack.has("web")), [true, false, false]);
  assert.equal(back[0]!.heldBefore.has("web"), false, "not counted while unreachable");
  assert.deepEqual(peers.backAt("web"), { beta: time.now() - 250 });
  peers.stop();
});

Deno.test("Peers marks a restarted peer's restored records stale until it sets them again", async () => {
  const { time, beta, set, peers } = setup([service("web")]);
  set("web", "UP", 3);
  peers.start();
  await time.advance(50);
  const stale = () => peers.inputs("web").peers[0]!.stale;
  assert.equal(stale(), false);
  beta.boot = "b2"; // faild restarted and restored web UP from its state file
  await time.advance(100);
  assert.equal(stale(), true, "restored and not confirmed");
  set("web", "FAIL", 4);
  await time.advance(100);
  assert.equal(stale(), false, "its owner set it again");
  beta.boot = "b3";
  await time.advance(100);
  assert.equal(stale(), true);
  await time.advance(300);
  assert.equal(stale(), false, "or (fall + 1) intervals passed");
  peers.stop();
});
