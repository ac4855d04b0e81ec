import assert from "node:assert/strict";
import { FakeTime } from "../_fake_time.ts";
import { type PollResult, Scheduler } from "./scheduler.ts";
import type {
  HandlerInvocation,
  HandlerKind,
  HostDecl,
  Sandbox,
  ScriptDecl,
  ServiceDecl,
  TrapEvent,
} from "../contract.ts";
import type { ServiceRecord, ServiceState } from "../../lib/types.ts";
import { Logger } from "../../lib/log.ts";
import { ScriptedArbiter } from "../arbiter/scripted.ts";

const quiet = new Logger({ sink: () => {} });

function host(name: string): HostDecl {
  return { name, address: "127.0.0.1", port: 7100, protocol: "http", key: null };
}

function service(name: string, over: Partial<ServiceDecl> = {}): ServiceDecl {
  return {
    name,
    masters: ["alpha"],
    slaves: ["beta"],
    intervalMs: 100,
    fall: 3,
    rise: 2,
    preempt: true,
    graceMs: 0,
    timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
    handlers: ["start", "stop", "reclaim"],
    ...over,
  };
}

interface Behaviour {
  result?: ServiceState;
  delayMs?: number;
  hang?: boolean;
  throws?: string;
}

/** A sandbox whose handlers answer as told, in fake time. */
class FakeSandbox implements Sandbox {
  readonly decl: ScriptDecl;
  calls: HandlerInvocation[] = [];
  traps: TrapEvent[] = [];
  behaviour = new Map<string, Behaviour>();
  running = new Map<string, number>();
  maxConcurrent = 0;
  onInvoke: ((call: HandlerInvocation) => void) | null = null;
  #time: FakeTime;

  constructor(decl: ScriptDecl, time: FakeTime) {
    this.decl = decl;
    this.#time = time;
  }

  start(): Promise<ScriptDecl> {
    return Promise.resolve(this.decl);
  }

  invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState> {
    this.calls.push(call);
    this.onInvoke?.(call);
    const n = (this.running.get(call.service) ?? 0) + 1;
    this.running.set(call.service, n);
    this.maxConcurrent = Math.max(this.maxConcurrent, n);
    const b = this.behaviour.get(`${call.service}/${call.kind}`) ?? {};
    const done = () => this.running.set(call.service, (this.running.get(call.service) ?? 1) - 1);
    return new Promise((resolve, reject) => {
      if (b.hang || (b.delayMs ?? 0) > timeoutMs) {
        this.#time.setTimeout(() => {
          done();
          const e = new Error(`Handler ${call.kind} of ${call.service} timed out`);
          e.name = "TimeoutError";
          reject(e);
        }, timeoutMs);
        return;
      }
      this.#time.setTimeout(() => {
        done();
        if (b.throws) reject(new Error(b.throws));
        else resolve(b.result ?? (call.kind === "stop" ? "FAIL" : "UP"));
      }, b.delayMs ?? 0);
    });
  }

  trap(event: TrapEvent): void {
    this.traps.push(event);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The faild of every host, as the poller sees them. */
class FakeNet {
  reachable = new Map<string, boolean>();
  records = new Map<string, Map<string, ServiceRecord>>();
  reports: Array<{ service: string; state: ServiceState }> = [];
  polls = new Map<string, number>();
  boots = new Map<string, string>();
  #time: FakeTime;
  #self: string;

  constructor(time: FakeTime, self: string) {
    this.#time = time;
    this.#self = self;
  }

  set(
    hostName: string,
    svc: string,
    state: ServiceState,
    extraChanges = 0,
    setBy = "test",
    detail = "",
  ): ServiceRecord {
    let m = this.records.get(hostName);
    if (!m) this.records.set(hostName, m = new Map());
    const prev = m.get(svc);
    const changed = prev?.state !== state ? 1 : 0;
    const rec = {
      name: svc,
      state,
      lastChange: this.#time.now(),
      changes: (prev?.changes ?? 0) + changed + extraChanges,
      detail,
      setBy,
    };
    m.set(svc, rec);
    return rec;
  }

  /** Polls of a host that never answer (a stuck connection), counted down as they are sent. */
  hang = new Map<string, number>();
  /** Polls of a host sent before this time answer only then (a busy, just-started process). */
  slowUntil = new Map<string, number>();
  pending = 0;

  poller = (h: HostDecl): Promise<PollResult> => {
    this.polls.set(h.name, (this.polls.get(h.name) ?? 0) + 1);
    const hang = this.hang.get(h.name) ?? 0;
    if (hang > 0) {
      this.hang.set(h.name, hang - 1);
      this.pending++;
      return new Promise(() => {});
    }
    if (this.reachable.get(h.name) === false) {
      return Promise.reject(new Error(`${h.name} does not answer`));
    }
    const answer = () => ({
      bootId: this.boots.get(h.name) ?? `${h.name}-boot`,
      services: [...(this.records.get(h.name)?.values() ?? [])],
    });
    const wait = (this.slowUntil.get(h.name) ?? 0) - this.#time.now();
    if (wait > 0) {
      return new Promise((resolve) => this.#time.setTimeout(() => resolve(answer()), wait));
    }
    return Promise.resolve(answer());
  };

  reporter = (svc: string, state: ServiceState, detail = ""): Promise<ServiceRecord> => {
    this.reports.push({ service: svc, state });
    return Promise.resolve(this.set(this.#self, svc, state, 0, "failsh", detail));
  };
}

function setup(self: string, services: ServiceDecl[], hosts = ["alpha", "beta"]) {
  const time = new FakeTime();
  const decl: ScriptDecl = { hosts: hosts.map(host), services, traps: 1 };
  const sandbox = new FakeSandbox(decl, time);
  const net = new FakeNet(time, self);
  const announced: string[] = [];
  const scheduler = new Scheduler({
    self,
    sandbox,
    poller: net.poller,
    reporter: net.reporter,
    timers: time,
    logger: quiet,
    onReannounce: (svc) => {
      announced.push(svc);
      return Promise.resolve();
    },
  });
  return { time, sandbox, net, scheduler, announced };
}

function kinds(sandbox: FakeSandbox, svc = "web"): HandlerKind[] {
  return sandbox.calls.filter((c) => c.service === svc).map((c) => c.kind);
}

Deno.test("Scheduler applies fall/rise hysteresis before a slave takes over", async (t) => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(250);
  await t.step("the slave stays standby while the master is UP", () => {
    assert.equal(scheduler.state("web"), "FAIL");
    assert.deepEqual(kinds(sandbox), []);
  });
  await t.step("two missed polls are not enough (fall is 3)", async () => {
    net.reachable.set("alpha", false);
    await time.advance(200);
    assert.equal(scheduler.state("web"), "FAIL");
    const alpha = scheduler.snapshot().hosts.find((h) => h.name === "alpha")!;
    assert.equal(alpha.reachable, true);
    assert.equal(alpha.misses, 2);
  });
  await t.step("the third miss makes alpha FAIL and beta starts", async () => {
    await time.advance(100);
    assert.deepEqual(kinds(sandbox), ["start"]);
    assert.equal(scheduler.state("web"), "UP");
    assert.equal(net.reports.at(-1)?.state, "UP");
    const why = scheduler.snapshot().events.find((e) => e.message.startsWith("web: start"));
    assert.match(why?.message ?? "", /alpha is unreachable/);
  });
  await t.step("one good poll is not enough to count alpha back (rise is 2)", async () => {
    net.reachable.set("alpha", true);
    await time.advance(100);
    assert.equal(scheduler.snapshot().hosts.find((h) => h.name === "alpha")!.reachable, false);
    assert.equal(scheduler.state("web"), "UP");
  });
  await t.step("after rise good polls alpha (UP) counts again and beta yields", async () => {
    await time.advance(100);
    assert.equal(scheduler.snapshot().hosts.find((h) => h.name === "alpha")!.reachable, true);
    await time.advance(100);
    assert.deepEqual(kinds(sandbox), ["start", "stop"]);
    assert.equal(scheduler.state("web"), "FAIL");
  });
  await scheduler.stop();
});

Deno.test("Scheduler runs one handler at a time per service, in order", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  sandbox.behaviour.set("web/start", { delayMs: 800 });
  net.set("alpha", "web", "FAIL");
  scheduler.start();
  await time.advance(100);
  assert.deepEqual(kinds(sandbox), ["start"]);
  // While start runs, the master comes back UP: no stop may run before start ends.
  net.set("alpha", "web", "UP");
  await time.advance(500);
  assert.deepEqual(kinds(sandbox), ["start"]);
  assert.equal(scheduler.snapshot().services[0]!.lastHandler?.durationMs, null);
  await time.advance(500);
  assert.deepEqual(kinds(sandbox), ["start", "stop"]);
  assert.equal(sandbox.maxConcurrent, 1);
  assert.equal(scheduler.state("web"), "FAIL");
  await scheduler.stop();
});

Deno.test("Scheduler: a timed-out handler leaves the service FAIL and others keep running", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [
    service("web", { timeouts: { start: 300, stop: 300, reclaim: 300 } }),
    service("db"),
  ]);
  sandbox.behaviour.set("web/start", { hang: true });
  net.set("alpha", "web", "FAIL");
  net.set("alpha", "db", "FAIL");
  scheduler.start();
  await time.advance(150);
  assert.equal(scheduler.state("db"), "UP");
  assert.equal(scheduler.state("web"), "FAIL");
  await time.advance(300);
  const web = scheduler.snapshot().services.find((s) => s.name === "web")!;
  assert.equal(web.state, "FAIL");
  assert.equal(web.lastHandler?.error, "timed out after 300 ms");
  assert.equal(web.lastHandler?.result, null);
  assert.equal(scheduler.stats.handlerTimeouts.get("web/start"), 1);
  assert.ok(
    scheduler.snapshot().events.some((e) =>
      /web: start handler failed .* timed out/.test(e.message)
    ),
  );
  assert.equal(scheduler.state("db"), "UP");
  await scheduler.stop();
});

Deno.test("Scheduler calls onHandlerFailed before leaving a timed-out service FAIL", async () => {
  const time = new FakeTime();
  const decl: ScriptDecl = {
    hosts: ["alpha", "beta"].map(host),
    services: [service("web", { timeouts: { start: 300, stop: 300, reclaim: 300 } })],
    traps: 0,
  };
  const sandbox = new FakeSandbox(decl, time);
  sandbox.behaviour.set("web/start", { hang: true });
  const net = new FakeNet(time, "beta");
  net.reachable.set("alpha", false);
  const failed: string[] = [];
  const scheduler = new Scheduler({
    self: "beta",
    sandbox,
    poller: net.poller,
    reporter: net.reporter,
    timers: time,
    logger: quiet,
    onHandlerFailed: (svc, kind) => {
      failed.push(`${svc}/${kind}:${scheduler.state(svc)}`);
      return Promise.resolve();
    },
  });
  scheduler.start();
  await time.advance(700);
  assert.deepEqual(failed, ["web/start:FAIL"]);
  assert.equal(scheduler.state("web"), "FAIL");
  await scheduler.stop();
});

/** Master alpha holding `web` (beta FAIL), recording what it announces again and quiets. */
function announcingMaster(over: Partial<ServiceDecl> = {}) {
  const time = new FakeTime();
  const decl: ScriptDecl = {
    hosts: ["alpha", "beta"].map(host),
    services: [service("web", over)],
    traps: 0,
  };
  const sandbox = new FakeSandbox(decl, time);
  const net = new FakeNet(time, "alpha");
  net.set("beta", "web", "FAIL");
  const announced: string[] = [];
  const quieted: string[] = [];
  const scheduler = new Scheduler({
    self: "alpha",
    sandbox,
    poller: net.poller,
    reporter: net.reporter,
    timers: time,
    logger: quiet,
    onReannounce: (svc) => {
      announced.push(svc);
      return Promise.resolve();
    },
    onQuiet: (svc) => quieted.push(svc),
  });
  return { time, net, scheduler, announced, quieted };
}

Deno.test("Scheduler announces again when a peer also holds the service, and when it gives it up", async () => {
  const { time, net, scheduler, announced, quieted } = announcingMaster();
  scheduler.start();
  await time.advance(300);
  assert.equal(scheduler.state("web"), "UP");
  // After a partition: beta held it too. alpha keeps it and announces at once (clients come back
  // before beta yields), and again when beta gives it up (a burst of beta's may have run since).
  net.set("beta", "web", "UP");
  await time.advance(100);
  assert.deepEqual(announced, ["web"]);
  // Its own ARP bursts still running were stopped first, once (then it announced anew).
  assert.deepEqual(quieted, ["web"]);
  // While both hold it, alpha polls beta often, to see beta's FAIL (and announce) at once.
  let before = net.polls.get("beta") ?? 0;
  await time.advance(200);
  assert.deepEqual(announced, ["web"], "not again while beta still shows UP");
  assert.ok((net.polls.get("beta") ?? 0) - before >= 10, "fast polls while both hold it");
  // Bounded: after 10 intervals of beta not yielding, one poll per interval again.
  await time.advance(1000);
  before = net.polls.get("beta") ?? 0;
  await time.advance(500);
  assert.ok((net.polls.get("beta") ?? 0) - before <= 6, "back to one poll per interval");
  net.set("beta", "web", "FAIL");
  await time.advance(100);
  assert.deepEqual(announced, ["web", "web"]);
  assert.deepEqual(quieted, ["web"], "quieted once per double holding");
  await scheduler.stop();
});

Deno.test("Scheduler announces again when a peer comes back after holding the service unseen", async () => {
  const { time, net, scheduler, announced } = announcingMaster({ fall: 2 });
  scheduler.start();
  await time.advance(300);
  assert.equal(scheduler.state("web"), "UP");
  // alpha's link goes down: beta takes the service over (and announces it), then sees alpha
  // again and gives it back, all before alpha can poll beta again. alpha only ever sees FAIL.
  net.reachable.set("beta", false);
  await time.advance(500);
  net.set("beta", "web", "UP");
  net.set("beta", "web", "FAIL");
  assert.deepEqual(announced, []);
  net.reachable.set("beta", true);
  await time.advance(400);
  // beta's last announcement pointed clients at beta: alpha must announce again.
  assert.deepEqual(announced, ["web"]);
  await time.advance(500);
  assert.deepEqual(announced, ["web"], "once, not at every poll");
  await scheduler.stop();
});

Deno.test("Scheduler: after a partition the slave yields one interval after the master answers again", async () => {
  const { time, sandbox, net, scheduler, announced } = setup("beta", [
    service("web", { fall: 2 }),
  ]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(250);
  net.reachable.set("alpha", false);
  await time.advance(400);
  assert.deepEqual(kinds(sandbox), ["start"]);
  announced.length = 0;
  // The partition heals: alpha (master, UP all along) answers again. It may not have seen beta
  // holding the service yet: beta waits an interval (100 ms) before it yields, so alpha can
  // announce first; then it stops.
  net.reachable.set("alpha", true);
  const healedAt = time.now();
  let stoppedAt = -1;
  sandbox.onInvoke = (call) => {
    if (call.kind === "stop") stoppedAt = time.now();
  };
  await time.advance(400);
  assert.deepEqual(kinds(sandbox), ["start", "stop"]);
  assert.ok(stoppedAt - healedAt >= 100, `stopped ${stoppedAt - healedAt} ms after the heal`);
  assert.ok(stoppedAt - healedAt <= 300, `stopped ${stoppedAt - healedAt} ms after the heal`);
  const held = scheduler.snapshot().events.find((e) => /stop held back/.test(e.message));
  assert.ok(held, "the hold-back is in the events");
  // Holding back is not keeping: beta never announced the address meanwhile.
  assert.deepEqual(announced, []);
  await scheduler.stop();
});

Deno.test("Scheduler: a slave holding back its yield does not announce when another slave gives the service up", async () => {
  const { time, sandbox, net, scheduler, announced } = setup(
    "beta",
    [service("web", { slaves: ["beta", "gamma"], fall: 2, rise: 1 })],
    ["alpha", "beta", "gamma"],
  );
  net.set("alpha", "web", "UP");
  net.set("gamma", "web", "FAIL");
  scheduler.start();
  await time.advance(250);
  net.reachable.set("alpha", false);
  await time.advance(400);
  assert.deepEqual(kinds(sandbox), ["start"]);
  // gamma shows web UP too (it held it during a cut): beta outranks it and keeps it.
  net.set("gamma", "web", "UP");
  await time.advance(1500);
  announced.length = 0;
  // The master comes back: beta holds its yield back for an interval + 50 ms, and meanwhile
  // gamma gives web up. Announcing now would pull the clients to beta just before it releases.
  net.reachable.set("alpha", true);
  const heldBack = () => scheduler.snapshot().events.some((e) => /stop held back/.test(e.message));
  for (let i = 0; i < 30 && !heldBack(); i++) await time.advance(10);
  assert.ok(heldBack(), "beta holds its yield back");
  net.set("gamma", "web", "FAIL");
  await time.advance(400);
  assert.deepEqual(kinds(sandbox), ["start", "stop"]);
  assert.deepEqual(announced, [], "a host that is giving the service up does not announce it");
  await scheduler.stop();
});

Deno.test("Scheduler: a master in RECOVER polls the holder often, so it reclaims right after the stop", async () => {
  const { time, sandbox, net, scheduler } = setup("alpha", [service("web")]);
  net.set("beta", "web", "UP");
  scheduler.start();
  await time.advance(300);
  assert.equal(scheduler.state("web"), "RECOVER");
  const before = net.polls.get("beta") ?? 0;
  await time.advance(100);
  // Interval 100 ms: at least a poll every 10 ms while waiting, not one per interval.
  assert.ok((net.polls.get("beta") ?? 0) - before >= 8, "beta polled often while waiting");
  net.set("beta", "web", "FAIL");
  await time.advance(15);
  assert.deepEqual(kinds(sandbox), ["reclaim"]);
  assert.equal(scheduler.state("web"), "UP");
  // Once the hand-over is done, back to one poll per interval.
  const after = net.polls.get("beta") ?? 0;
  await time.advance(500);
  assert.ok((net.polls.get("beta") ?? 0) - after <= 6, "one poll per interval again");
  await scheduler.stop();
});

Deno.test("Scheduler: one stuck poll costs one miss, a black hole still fails after fall", async (t) => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web", { fall: 2 })]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(300);
  await t.step("a poll that never answers (a lost segment) does not blind the poller", async () => {
    net.hang.set("alpha", 1);
    await time.advance(1000);
    assert.deepEqual(kinds(sandbox), [], "no takeover: the next poll went out and was answered");
    assert.equal(scheduler.snapshot().hosts.find((h) => h.name === "alpha")?.reachable, true);
  });
  await t.step("a peer whose every poll hangs is FAIL after fall intervals", async () => {
    net.hang.set("alpha", 1000);
    const sentBefore = net.pending;
    await time.advance(250);
    assert.deepEqual(kinds(sandbox), ["start"]);
    await time.advance(2000);
    // Outstanding polls are bounded (the first stuck one above never ends in this fake).
    assert.ok(net.pending - sentBefore <= 3, `${net.pending - sentBefore} polls outstanding`);
  });
  await scheduler.stop();
});

Deno.test("Scheduler: a throwing handler leaves the service FAIL and is retried later", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  sandbox.behaviour.set("web/start", { throws: "Cannot take over 198.18.0.100/24: refused" });
  net.set("alpha", "web", "FAIL");
  scheduler.start();
  await time.advance(100);
  const web = scheduler.snapshot().services[0]!;
  assert.equal(web.state, "FAIL");
  assert.match(web.lastHandler?.error ?? "", /refused/);
  await time.advance(500);
  assert.equal(kinds(sandbox).length, 1, "no retry in a tight loop");
  await time.advance(600);
  assert.equal(kinds(sandbox).length, 2, "the start is tried again after the hold-off");
  await scheduler.stop();
});

Deno.test("Scheduler runs the RECOVER handshake when the master returns", async (t) => {
  const { time, sandbox, net, scheduler } = setup("alpha", [service("web")]);
  net.set("beta", "web", "UP");
  scheduler.start();
  await time.advance(100);
  await t.step("the returning master enters RECOVER and reports it", () => {
    assert.equal(scheduler.state("web"), "RECOVER");
    assert.deepEqual(net.reports.map((r) => r.state), ["FAIL", "RECOVER"]);
    assert.deepEqual(kinds(sandbox), []);
  });
  await t.step("it waits while the slave is still UP", async () => {
    await time.advance(300);
    assert.equal(scheduler.state("web"), "RECOVER");
    assert.match(scheduler.snapshot().services[0]!.lastDecision!.reason, /waits for beta/);
  });
  await t.step("once the slave stopped it runs reclaim and is UP", async () => {
    net.set("beta", "web", "FAIL");
    await time.advance(100);
    assert.deepEqual(kinds(sandbox), ["reclaim"]);
    assert.equal(scheduler.state("web"), "UP");
    assert.deepEqual(net.reports.map((r) => r.state), ["FAIL", "RECOVER", "UP"]);
  });
  await scheduler.stop();
});

Deno.test("Scheduler: with nopreempt a returning master stays standby", async () => {
  const { time, sandbox, net, scheduler } = setup("alpha", [service("web", { preempt: false })]);
  net.set("beta", "web", "UP");
  scheduler.start();
  await time.advance(1000);
  assert.equal(scheduler.state("web"), "FAIL");
  assert.deepEqual(kinds(sandbox), []);
  net.set("beta", "web", "FAIL");
  await time.advance(100);
  assert.equal(scheduler.state("web"), "UP");
  assert.deepEqual(kinds(sandbox), ["start"]);
  await scheduler.stop();
});

Deno.test("Scheduler: a reclaim without a reclaim handler runs start", async () => {
  const { time, sandbox, net, scheduler } = setup("alpha", [
    service("web", { handlers: ["start", "stop"] }),
  ]);
  net.set("beta", "web", "UP");
  scheduler.start();
  await time.advance(100);
  net.set("beta", "web", "FAIL");
  await time.advance(100);
  assert.deepEqual(kinds(sandbox), ["start"]);
  assert.equal(scheduler.state("web"), "UP");
  await scheduler.stop();
});

Deno.test("Scheduler waits out the grace period before a takeover", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web", { graceMs: 1000 })]);
  net.set("alpha", "web", "FAIL");
  scheduler.start();
  await time.advance(900);
  assert.deepEqual(kinds(sandbox), []);
  assert.match(scheduler.snapshot().services[0]!.lastDecision!.reason, /grace/);
  await time.advance(200);
  assert.deepEqual(kinds(sandbox), ["start"]);
  await scheduler.stop();
});

Deno.test("Scheduler: two slaves racing, exactly one starts", async () => {
  const svc = service("web", { slaves: ["beta", "gamma"] });
  const hosts = ["alpha", "beta", "gamma"];
  const b = setup("beta", [svc], hosts);
  const g = setup("gamma", [svc], hosts);
  // Each sees the other's faild; alpha is gone for both.
  for (const s of [b, g]) s.net.reachable.set("alpha", false);
  b.net.set("gamma", "web", "FAIL");
  g.net.set("beta", "web", "FAIL");
  b.scheduler.start();
  g.scheduler.start();
  for (let i = 0; i < 10; i++) {
    await b.time.advance(50);
    await g.time.advance(50);
    // Exchange what each reported to its own faild.
    const bs = b.scheduler.state("web")!;
    const gs = g.scheduler.state("web")!;
    g.net.set("beta", "web", bs);
    b.net.set("gamma", "web", gs);
  }
  assert.equal(b.scheduler.state("web"), "UP");
  assert.equal(g.scheduler.state("web"), "FAIL");
  assert.deepEqual(kinds(g.sandbox), []);
  assert.ok(
    g.scheduler.snapshot().events.some((e) => /defers/.test(e.message)),
    "gamma logged its deferral",
  );
  await b.scheduler.stop();
  await g.scheduler.stop();
});

/**
 * A cold start of a master and a slave: each host's faild (what its reporter wrote) is copied to
 * the other's view after every step of 25 ms (half an interval). `alphaLateMs` is how much later alpha's failsh
 * starts than beta's (processes never start at the same instant); alpha's start handler takes
 * `startMs`. Returns both, and the handlers beta ran.
 */
async function coldStart(
  options: {
    alphaLateMs: number;
    startMs?: number;
    hang?: boolean;
    untilMs: number;
    /** Beta's polls of alpha answer no sooner than this (a just-started process, a busy host). */
    firstPollMs?: number;
  },
): Promise<{ alpha: ServiceState; beta: ServiceState; betaRan: HandlerKind[]; betaAt: number }> {
  const svc = service("web", {
    intervalMs: 50,
    graceMs: 100,
    timeouts: { start: 2000, stop: 1000, reclaim: 1000 },
  });
  const a = setup("alpha", [svc]);
  const b = setup("beta", [svc]);
  a.sandbox.behaviour.set(
    "web/start",
    options.hang ? { hang: true } : { delayMs: options.startMs ?? 0 },
  );
  if (options.firstPollMs !== undefined) {
    b.net.slowUntil.set("alpha", b.time.now() + options.firstPollMs);
  }
  let betaAt = -1;
  b.sandbox.onInvoke = (call) => {
    if (call.kind === "start" && betaAt < 0) betaAt = b.time.now() - t0;
  };
  const t0 = b.time.now();
  b.scheduler.start();
  let aStarted = false;
  for (let t = 0; t < options.untilMs; t += 25) {
    if (!aStarted && t >= options.alphaLateMs) {
      a.scheduler.start();
      aStarted = true;
    }
    await a.time.advance(25);
    await b.time.advance(25);
    // Each faild answers with what its own failsh reported (none yet: no record). A real faild
    // creates the record with 0 changes; FakeNet counts the creation as one.
    const asFaild = (m: Map<string, ServiceRecord> | undefined) =>
      new Map([...m ?? []].map(([k, r]) => [k, { ...r, changes: r.changes - 1 }]));
    b.net.records.set("alpha", asFaild(a.net.records.get("alpha")));
    a.net.records.set("beta", asFaild(b.net.records.get("beta")));
  }
  const result = {
    alpha: a.scheduler.state("web")!,
    beta: b.scheduler.state("web")!,
    betaRan: kinds(b.sandbox),
    betaAt,
  };
  // A hung handler ends at its time limit, in fake time too.
  const stopping = [a.scheduler.stop(), b.scheduler.stop()];
  await a.time.advance(3000);
  await b.time.advance(3000);
  await Promise.all(stopping);
  return result;
}

Deno.test("Scheduler: a cold start at 50 ms, only the master ever starts the service", async (t) => {
  await t.step(
    "the master's failsh starts 150 ms after the slave's (after its grace)",
    async () => {
      const r = await coldStart({ alphaLateMs: 150, startMs: 20, untilMs: 2000 });
      assert.deepEqual([r.alpha, r.beta, r.betaRan], ["UP", "FAIL", []]);
    },
  );
  await t.step("the master's start handler takes 300 ms (a loaded machine)", async () => {
    const r = await coldStart({ alphaLateMs: 0, startMs: 300, untilMs: 2000 });
    assert.deepEqual([r.alpha, r.beta, r.betaRan], ["UP", "FAIL", []]);
  });
  await t.step("both at once: the master 200 ms late, its start handler 400 ms", async () => {
    const r = await coldStart({ alphaLateMs: 200, startMs: 400, untilMs: 2000 });
    assert.deepEqual([r.alpha, r.beta, r.betaRan], ["UP", "FAIL", []]);
  });
  await t.step("the slave's first polls of the master answer only after 300 ms", async () => {
    const r = await coldStart({ alphaLateMs: 0, startMs: 20, firstPollMs: 300, untilMs: 2000 });
    assert.deepEqual([r.alpha, r.beta, r.betaRan], ["UP", "FAIL", []]);
  });
  await t.step("a master whose start hangs does not keep the slave waiting long", async () => {
    // Bounded: grace (100 ms) + the start-up allowance (1 s) after the slave's own grace.
    const r = await coldStart({ alphaLateMs: 0, hang: true, untilMs: 1500 });
    assert.ok(r.betaAt > 0 && r.betaAt <= 100 + 100 + 1000 + 100, `beta started at ${r.betaAt} ms`);
  });
  await t.step(
    "a master whose failsh never starts does not keep the slave waiting long",
    async () => {
      const r = await coldStart({ alphaLateMs: 1_000_000, untilMs: 3000 });
      assert.equal(r.beta, "UP");
      assert.ok(
        r.betaAt > 0 && r.betaAt <= 100 + 100 + 1000 + 100,
        `beta started at ${r.betaAt} ms`,
      );
    },
  );
});

Deno.test("Scheduler: two slaves racing, the first's start handler takes 800 ms: only it starts", async () => {
  // At a 200 ms interval the lower slave defers 3 intervals (600 ms); a start handler on a
  // loaded host takes longer (775 ms seen in the lab), so the deferral lasts at least 1 s for
  // the handler and one interval to see its outcome.
  const svc = service("web", { slaves: ["beta", "gamma"], intervalMs: 200 });
  const hosts = ["alpha", "beta", "gamma"];
  const b = setup("beta", [svc], hosts);
  const g = setup("gamma", [svc], hosts);
  b.sandbox.behaviour.set("web/start", { delayMs: 800 });
  for (const s of [b, g]) s.net.reachable.set("alpha", false);
  b.net.set("gamma", "web", "FAIL");
  g.net.set("beta", "web", "FAIL");
  b.scheduler.start();
  g.scheduler.start();
  for (let i = 0; i < 60; i++) {
    await b.time.advance(50);
    await g.time.advance(50);
    g.net.set("beta", "web", b.scheduler.state("web")!);
    b.net.set("gamma", "web", g.scheduler.state("web")!);
  }
  assert.equal(b.scheduler.state("web"), "UP");
  assert.deepEqual(kinds(g.sandbox), [], "gamma never started web");
  await b.scheduler.stop();
  await g.scheduler.stop();
});

Deno.test("Scheduler: a peer that flapped between polls delays the takeover by one poll", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(100);
  // Between two polls alpha went UP -> FAIL -> UP -> FAIL: counter +3, visible change 1.
  net.set("alpha", "web", "FAIL", 2);
  await time.advance(100);
  assert.deepEqual(kinds(sandbox), []);
  assert.match(scheduler.snapshot().services[0]!.lastDecision!.reason, /between polls/);
  await time.advance(100);
  assert.deepEqual(kinds(sandbox), ["start"]);
  await scheduler.stop();
});

Deno.test("Scheduler: a holder whose own faild is unreachable stops", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.reachable.set("alpha", false);
  scheduler.start();
  await time.advance(400);
  assert.equal(scheduler.state("web"), "UP");
  net.reachable.set("beta", false);
  await time.advance(400);
  assert.deepEqual(kinds(sandbox), ["start", "stop"]);
  assert.equal(scheduler.state("web"), "FAIL");
  await scheduler.stop();
});

Deno.test("Scheduler: a FAIL written to the local faild by a health check makes the holder stop", async (t) => {
  const { time, sandbox, net, scheduler } = setup("alpha", [service("web")]);
  net.set("beta", "web", "FAIL");
  scheduler.start();
  await time.advance(300);
  assert.equal(scheduler.state("web"), "UP");
  await t.step("hc sets web FAIL: alpha runs stop and does not start again", async () => {
    net.set("alpha", "web", "FAIL", 0, "hc");
    await time.advance(100);
    assert.deepEqual(kinds(sandbox), ["start", "stop"]);
    await time.advance(2000);
    assert.deepEqual(kinds(sandbox), ["start", "stop"]);
    assert.equal(scheduler.state("web"), "FAIL");
    assert.match(scheduler.snapshot().services[0]!.lastDecision!.reason, /set by hc/);
    const rec = net.records.get("alpha")?.get("web");
    assert.equal(rec?.setBy, "hc", "failsh never wrote over hc's FAIL");
  });
  await t.step("hc sets web UP again: the veto is lifted and alpha starts", async () => {
    net.set("alpha", "web", "UP", 0, "hc");
    await time.advance(200);
    assert.deepEqual(kinds(sandbox), ["start", "stop", "start"]);
    assert.equal(scheduler.state("web"), "UP");
  });
  await scheduler.stop();
});

Deno.test("Scheduler: a FAIL written over a standby's own FAIL keeps it from taking over", async (t) => {
  // hc signs with the same key as failsh and faild counts only state changes, so only the
  // detail tells hc's FAIL apart from failsh's own.
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(300);
  assert.equal(scheduler.state("web"), "FAIL");
  await t.step(
    "hc marks web FAIL on the standby, then the master dies: beta stays off",
    async () => {
      net.set("beta", "web", "FAIL", 0, "failsh", "hc: web: connection refused");
      await time.advance(100);
      net.reachable.set("alpha", false);
      await time.advance(1000);
      assert.deepEqual(kinds(sandbox), []);
      assert.match(scheduler.snapshot().services[0]!.lastDecision!.reason, /local faild/);
      assert.equal(net.records.get("beta")?.get("web")?.detail, "hc: web: connection refused");
    },
  );
  await t.step("hc sets web UP: the veto is lifted and beta takes over", async () => {
    net.set("beta", "web", "UP", 0, "failsh", "hc: web: ok");
    await time.advance(300);
    assert.deepEqual(kinds(sandbox), ["start"]);
    assert.equal(scheduler.state("web"), "UP");
  });
  await scheduler.stop();
});

Deno.test("Scheduler reports its states again after the local faild restarted", async () => {
  const { time, net, scheduler } = setup("alpha", [service("web")]);
  net.set("beta", "web", "FAIL");
  scheduler.start();
  await time.advance(300);
  assert.equal(net.records.get("alpha")?.get("web")?.state, "UP");
  // A new faild (new boot id) without the record.
  net.records.get("alpha")!.clear();
  net.boots.set("alpha", "alpha-boot-2");
  await time.advance(300);
  assert.equal(net.records.get("alpha")?.get("web")?.state, "UP");
  await scheduler.stop();
});

Deno.test("Scheduler delivers trap events for peer and local changes", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(100);
  net.reachable.set("alpha", false);
  await time.advance(400);
  const summary = sandbox.traps.map((e) => `${e.type}:${e.host}:${e.service ?? "-"}:${e.state}`);
  assert.ok(summary.includes("service:alpha:web:UP"), summary.join());
  assert.ok(summary.includes("host:alpha:-:FAIL"), summary.join());
  assert.ok(summary.includes("service:beta:web:UP"), summary.join());
  await scheduler.stop();
});

Deno.test("Scheduler: steady polls that change nothing notify no listener", async () => {
  const { time, net, scheduler } = setup("beta", [service("web")]);
  net.set("alpha", "web", "UP");
  scheduler.start();
  await time.advance(500);
  let changes = 0;
  const off = scheduler.onChange(() => changes++);
  await time.advance(2000);
  assert.equal(changes, 0);
  net.set("alpha", "web", "FAIL");
  await time.advance(100);
  assert.ok(changes > 0, "a peer's change is a change");
  off();
  await scheduler.stop();
});

Deno.test("Scheduler keeps at most 200 recent events and notifies listeners", async () => {
  const { time, net, scheduler } = setup("beta", [service("web")]);
  time.flushTurns = 1;
  let changes = 0;
  const off = scheduler.onChange(() => changes++);
  net.set("alpha", "web", "UP");
  scheduler.start();
  for (let i = 0; i < 100; i++) {
    net.reachable.set("alpha", i % 2 === 0);
    await time.advance(500);
  }
  off();
  const snap = scheduler.snapshot();
  assert.ok(snap.events.length <= 200);
  assert.ok(snap.events.length > 100);
  assert.ok(changes > 0);
  assert.ok(snap.events.every((e, i) => i === 0 || e.at >= snap.events[i - 1]!.at));
  await scheduler.stop();
});

Deno.test("Scheduler.stop({ release: true }) stops held services and reports them FAIL", async () => {
  const { time, sandbox, net, scheduler } = setup("beta", [service("web")]);
  net.reachable.set("alpha", false);
  scheduler.start();
  await time.advance(400);
  assert.equal(scheduler.state("web"), "UP");
  const stopping = scheduler.stop({ release: true });
  await time.advance(10);
  await stopping;
  assert.deepEqual(kinds(sandbox), ["start", "stop"]);
  assert.equal(net.reports.at(-1)?.state, "FAIL");
});

Deno.test("Scheduler refuses a script that does not name this host", () => {
  assert.throws(
    () => setup("delta", [service("web")]),
    /this host "delta" is not among the script's hosts \(alpha, beta\)/,
  );
});

Deno.test("Scheduler with an arbiter: no takeover without the grant, a lost key stops the holder", async (t) => {
  const time = new FakeTime();
  const decl: ScriptDecl = {
    hosts: ["alpha", "beta"].map(host),
    services: [service("web")],
    traps: 0,
  };
  const sandbox = new FakeSandbox(decl, time);
  const net = new FakeNet(time, "beta");
  const revoked: string[] = [];
  const arbiter: ScriptedArbiter = new ScriptedArbiter({
    timers: time,
    takeoverDelayMs: 300,
    onChange: (s) => scheduler.arbiterChanged(s),
  });
  const scheduler: Scheduler = new Scheduler({
    self: "beta",
    sandbox,
    poller: net.poller,
    reporter: net.reporter,
    timers: time,
    logger: quiet,
    arbiterLink: arbiter,
    onArbiterRevoked: (svc) => {
      revoked.push(`${svc}:${scheduler.state(svc)}`);
      return Promise.resolve();
    },
  });
  net.reachable.set("alpha", false);
  scheduler.start();
  await t.step(
    "the master is gone but the key is someone else's: the slave only wants it",
    async () => {
      await time.advance(1000);
      assert.deepEqual(kinds(sandbox), []);
      assert.equal(arbiter.status("web").state, "acquiring");
      assert.equal(scheduler.snapshot().services[0]!.lastDecision?.action, "wait");
      assert.match(scheduler.snapshot().services[0]!.lastDecision?.reason ?? "", /arbiter denies/);
    },
  );
  await t.step(
    "the key is free: taken at once, held after the takeover delay, then started",
    async () => {
      arbiter.event("web", "grant");
      await time.advance(100);
      assert.equal(arbiter.status("web").state, "waiting-delay");
      assert.deepEqual(kinds(sandbox), []);
      await time.advance(300);
      assert.deepEqual(kinds(sandbox), ["start"]);
      assert.equal(scheduler.state("web"), "UP");
      assert.equal(scheduler.epoch("web"), "101");
      assert.equal(scheduler.snapshot().services[0]!.arbiter?.epoch, "101");
      assert.ok(
        scheduler.snapshot().events.some((e) =>
          /web: start — .*\[arbiter held, epoch 101\]/.test(e.message)
        ),
      );
    },
  );
  await t.step("the key is lost: stop, the addresses removed, FAIL, the key given up", async () => {
    arbiter.event("web", "lose");
    await time.advance(100);
    assert.deepEqual(kinds(sandbox), ["start", "stop"]);
    assert.deepEqual(revoked, ["web:UP"]); // before it is set FAIL
    assert.equal(scheduler.state("web"), "FAIL");
    assert.equal(scheduler.stats.arbiterLosses.get("web"), 1);
    // Given up (acknowledged) once FAIL, then wanted again: the master is still gone.
    assert.equal(arbiter.status("web").state, "acquiring");
    assert.equal(scheduler.epoch("web"), null);
  });
  await t.step("the key is free again: a new epoch, started again", async () => {
    arbiter.event("web", "regain");
    await time.advance(500);
    assert.deepEqual(kinds(sandbox), ["start", "stop", "start"]);
    assert.equal(scheduler.epoch("web"), "102");
  });
  await t.step("the master returns: the slave yields and gives the key up", async () => {
    net.set("alpha", "web", "RECOVER");
    net.reachable.set("alpha", true);
    await time.advance(1000);
    assert.deepEqual(kinds(sandbox), ["start", "stop", "start", "stop"]);
    assert.equal(arbiter.status("web").state, "none");
    assert.equal(arbiter.status("web").wanted, false);
  });
  await scheduler.stop();
});

Deno.test("Scheduler with an arbiter it cannot reach: a returning master does not make the slave stop", async () => {
  const time = new FakeTime();
  const decl: ScriptDecl = {
    hosts: ["alpha", "beta"].map(host),
    services: [service("web")],
    traps: 0,
  };
  const sandbox = new FakeSandbox(decl, time);
  const net = new FakeNet(time, "alpha");
  net.set("beta", "web", "UP");
  let reachable = false;
  const wanted: string[] = [];
  const scheduler = new Scheduler({
    self: "alpha",
    sandbox,
    poller: net.poller,
    reporter: net.reporter,
    timers: time,
    logger: quiet,
    arbiterLink: {
      verdict: () => "deny",
      want: (s) => void wanted.push(s),
      unwant: () => {},
      status: () => ({
        state: "acquiring",
        verdict: "deny",
        epoch: null,
        holder: reachable ? "beta" : null,
        reason: "",
        deadlineInMs: null,
        wanted: wanted.length > 0,
        rule: "want",
        etcdReachable: reachable,
      }),
    },
  });
  scheduler.start();
  await time.advance(1000);
  assert.equal(scheduler.state("web"), "FAIL", "no RECOVER while etcd does not answer");
  assert.match(scheduler.snapshot().services[0]!.lastDecision?.reason ?? "", /does not answer/);
  reachable = true; // etcd answers again: the key is beta's, the handshake can free it
  await time.advance(300);
  assert.equal(scheduler.state("web"), "RECOVER");
  await scheduler.stop();
});
