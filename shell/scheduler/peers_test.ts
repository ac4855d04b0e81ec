import assert from "node:assert/strict";
import { FakeTime } from "../_fake_time.ts";
import { type Answer, Peers, type PollResult } from "./peers.ts";
import { schedulerStats } from "./stats.ts";
import type { HostDecl, ServiceDecl } from "../contract.ts";
import type { ServiceRecord, ServiceState } from "../../lib/types.ts";
import type { LivenessSource, LivenessStatus } from "../liveness/prober.ts";

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

/** A fake liveness source: the test sets beta's kernel's state. */
class FakeLiveness implements LivenessSource {
  states = new Map<string, LivenessStatus>();
  #listeners = new Set<(host: string) => void>();
  set(host: string, state: LivenessStatus["state"], silentMs = 0): void {
    this.states.set(host, {
      state,
      unanswered: state === "silent" ? 5 : 0,
      silentMs,
      rttMs: 0.1,
      lastAnswerAt: null,
      error: null,
    });
    for (const l of this.#listeners) l(host);
  }
  status(host: string): LivenessStatus | null {
    return this.states.get(host) ?? null;
  }
  onChange(listener: (host: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/** alpha's view of beta, whose faild answers as told (after `delay` ms). */
function setup(services: ServiceDecl[], liveness?: LivenessSource, stallGraceMs = 1000) {
  const time = new FakeTime();
  const beta = { up: true, boot: "b1", delay: 0, records: new Map<string, ServiceRecord>() };
  const alpha = { up: true };
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
    if (h.name === "alpha") {
      return alpha.up
        ? Promise.resolve({ bootId: "a1", services: [] })
        : Promise.reject(new Error("alpha's own faild does not answer"));
    }
    if (!beta.up) return Promise.reject(new Error("beta does not answer"));
    const result = { bootId: beta.boot, services: [...beta.records.values()] };
    if (beta.delay === 0) return Promise.resolve(result);
    return new Promise((resolve) => time.setTimeout(() => resolve(result), beta.delay));
  };
  const answers: Answer[] = [];
  const missed: number[] = [];
  const events: string[] = [];
  const peers = new Peers({
    self: "alpha",
    hosts: [
      {
        ...host("alpha"),
        ...(liveness ? { liveness: { intervalMs: 10, fall: 5, stallGraceMs } } : {}),
      },
      {
        ...host("beta"),
        ...(liveness ? { liveness: { intervalMs: 10, fall: 5, stallGraceMs } } : {}),
      },
    ],
    services,
    poller,
    timers: time,
    stats: schedulerStats(),
    events: { add: (_k, _s, _h, message) => events.push(message), changed: () => {} },
    hooks: {
      trap: () => {},
      answered: (a) => {
        if (!a.self) answers.push(a);
      },
      missed: () => missed.push(time.now()),
    },
    liveness,
  });
  return { time, alpha, beta, set, peers, answers, missed, events };
}

/**
 * alpha's view of beta at fast polls (50 ms, fall 2, rise 2) with beta's kernel in `state`
 * (its liveness and alpha's declaring `stallGraceMs`), started and 20 ms in.
 */
async function fastPolls(stallGraceMs: number, state: LivenessStatus["state"] = "alive") {
  const kernel = new FakeLiveness();
  const lab = setup([service("web", { intervalMs: 50, fall: 2, rise: 2 })], kernel, stallGraceMs);
  lab.peers.start();
  kernel.set("beta", state);
  await lab.time.advance(20);
  return { ...lab, kernel };
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

Deno.test("Peers with host liveness: a silent kernel is unreachable at once, a stalled faild is not", async (t) => {
  const svc = service("web", { intervalMs: 1000, fall: 3, rise: 2 });
  await t.step(
    "kernel answering, then silent: unreachable at once, the reason names it",
    async () => {
      const kernel = new FakeLiveness();
      const { time, peers, missed, events } = setup([svc], kernel);
      peers.start();
      kernel.set("beta", "alive");
      await time.advance(50);
      assert.equal(peers.inputs("web").peers[0]!.reachable, true);
      const decidedBefore = missed.length;
      kernel.set("beta", "silent", 52);
      const p = peers.inputs("web").peers[0]!;
      assert.deepEqual([p.reachable, p.kernelSilentMs], [false, 52]);
      assert.equal(missed.length, decidedBefore + 1, "the scheduler is told to decide at once");
      assert.ok(events.includes("beta is unreachable: its kernel has not answered for 52 ms"));
      assert.equal(peers.views()[1]!.liveness?.decisive, true);
      peers.stop();
    },
  );
  await t.step(
    "kernel answering, faild stalled: the polls' fall decides, at their pace",
    async () => {
      const kernel = new FakeLiveness();
      const { time, beta, peers } = setup([svc], kernel);
      peers.start();
      kernel.set("beta", "alive");
      await time.advance(50);
      beta.up = false;
      await time.advance(2000);
      assert.equal(peers.inputs("web").peers[0]!.reachable, true, "2 misses of fall 3");
      await time.advance(1000);
      const p = peers.inputs("web").peers[0]!;
      assert.deepEqual([p.reachable, p.kernelSilentMs], [false, undefined]);
      peers.stop();
    },
  );
  await t.step(
    "fast polls, kernel answering, faild stalled shorter than stallGrace: still reachable",
    async () => {
      const { time, beta, peers, events } = await fastPolls(1000);
      beta.up = false; // a 400 ms stall of beta's faild: 8 polls unanswered
      await time.advance(400);
      assert.equal(peers.inputs("web").peers[0]!.reachable, true, "its kernel answers");
      assert.match(peers.views()[1]!.lastError ?? "", /its kernel answers: unreachable only after/);
      beta.up = true;
      await time.advance(100);
      assert.equal(peers.inputs("web").peers[0]!.reachable, true);
      beta.up = false; // now its faild is gone for good
      await time.advance(950);
      assert.equal(peers.inputs("web").peers[0]!.reachable, true, "950 ms of a 1 s grace");
      await time.advance(100);
      assert.equal(peers.inputs("web").peers[0]!.reachable, false, "silent past stallGrace");
      assert.ok(events.some((e) => /^beta is unreachable after \d+ missed polls/.test(e)));
      peers.stop();
    },
  );
  await t.step("fast polls, faild stalled, then its kernel falls silent: at once", async () => {
    const { time, beta, peers, kernel } = await fastPolls(1000);
    beta.up = false;
    await time.advance(300);
    assert.equal(peers.inputs("web").peers[0]!.reachable, true);
    kernel.set("beta", "silent", 30);
    assert.deepEqual(peers.inputs("web").peers[0]!.kernelSilentMs, 30);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    peers.stop();
  });
  await t.step(
    "fast polls, this host's own faild stalled: unreachable to itself only after its stallGrace, as its peers judge it",
    async () => {
      const { time, alpha, peers } = await fastPolls(1000);
      alpha.up = false;
      await time.advance(400);
      assert.equal(peers.inputs("web").selfReachable, true, "the peers still count it too");
      await time.advance(700);
      assert.equal(peers.inputs("web").selfReachable, false, "silent past its stallGrace");
      peers.stop();
    },
  );
  await t.step("stallGrace 0: the polls' fall alone, as without liveness", async () => {
    const { time, beta, peers } = await fastPolls(0);
    beta.up = false;
    await time.advance(130);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    peers.stop();
  });
  await t.step("no grace for a kernel that never answered (ICMP filtered)", async () => {
    const { time, beta, peers } = await fastPolls(1000, "unknown");
    beta.up = false;
    await time.advance(130);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    peers.stop();
  });
  await t.step("a kernel that never answered (ICMP filtered): polls alone", async () => {
    const kernel = new FakeLiveness();
    const { time, beta, peers } = setup([svc], kernel);
    peers.start();
    kernel.set("beta", "unknown");
    await time.advance(50);
    beta.up = false;
    await time.advance(2000);
    assert.equal(peers.inputs("web").peers[0]!.reachable, true);
    await time.advance(1000);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    peers.stop();
  });
  await t.step("back from silence: rise answers to polls sent after it, not at once", async () => {
    const kernel = new FakeLiveness();
    const { time, peers, events } = setup([svc], kernel);
    peers.start();
    kernel.set("beta", "alive");
    await time.advance(50);
    kernel.set("beta", "silent", 50);
    await time.advance(100);
    kernel.set("beta", "alive");
    assert.ok(events.includes("beta's kernel answers again"));
    assert.equal(peers.inputs("web").peers[0]!.reachable, false, "the kernel alone does not");
    assert.equal(peers.inputs("web").peers[0]!.kernelSilentMs, undefined);
    await time.advance(1000);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false, "one answer of rise 2");
    await time.advance(1000);
    assert.equal(peers.inputs("web").peers[0]!.reachable, true);
    peers.stop();
  });
  await t.step(
    "a poll sent before the silence and answered after it does not bring it back",
    async () => {
      const kernel = new FakeLiveness();
      const { time, beta, peers } = setup([service("web", { intervalMs: 1000, rise: 1 })], kernel);
      peers.start();
      kernel.set("beta", "alive");
      await time.advance(50);
      beta.delay = 200;
      await time.advance(960); // the poll of t=1000 is on its way
      kernel.set("beta", "silent", 50);
      await time.advance(300); // and answers at t=1200
      assert.equal(peers.inputs("web").peers[0]!.reachable, false);
      peers.stop();
    },
  );
  await t.step("a kernel already silent when polling starts (a reload) counts at once", () => {
    const kernel = new FakeLiveness();
    kernel.set("beta", "silent", 70);
    const { peers } = setup([svc], kernel);
    peers.start();
    assert.deepEqual(peers.inputs("web").peers[0]!.kernelSilentMs, 70);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    peers.stop();
  });
  await t.step("ICMP filtered later: the faild's answers outweigh the silence", async () => {
    const kernel = new FakeLiveness();
    const { time, peers, events } = setup([svc], kernel);
    peers.start();
    kernel.set("beta", "alive");
    await time.advance(50);
    kernel.set("beta", "silent", 50);
    assert.equal(peers.inputs("web").peers[0]!.reachable, false);
    await time.advance(2000);
    assert.equal(peers.inputs("web").peers[0]!.reachable, true, "after rise answered polls");
    assert.ok(
      events.some((e) => /beta's faild answers though its kernel does not answer ping/.test(e)),
    );
    assert.equal(peers.views()[1]!.liveness?.decisive, false);
    peers.stop();
  });
});
