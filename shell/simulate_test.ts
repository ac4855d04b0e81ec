import assert from "node:assert/strict";
import {
  formatSimulation,
  main,
  parseScenario,
  simulate,
  type SimulationResult,
} from "./simulate.ts";
import type { ScriptDecl, ServiceDecl } from "./contract.ts";

function svc(over: Partial<ServiceDecl> = {}): ServiceDecl {
  return {
    name: "web",
    masters: ["alpha"],
    slaves: ["beta"],
    intervalMs: 100,
    fall: 3,
    rise: 2,
    preempt: true,
    graceMs: 200,
    timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
    handlers: ["start", "stop", "reclaim"],
    ...over,
  };
}

const DECL: ScriptDecl = {
  hosts: ["alpha", "beta"].map((name) => ({
    name,
    address: "127.0.0.1",
    port: 7100,
    protocol: "http" as const,
    key: null,
  })),
  services: [svc()],
  traps: 0,
};

Deno.test("parseScenario() names the field that is wrong", async (t) => {
  const cases: Array<[string, RegExp]> = [
    ["[]", /expected an object/],
    ['{"durationMs":1,"events":[]}', /"self" must be the host/],
    ['{"self":"a","durationMs":-1,"events":[]}', /"durationMs" must be/],
    ['{"self":"a","durationMs":1,"events":[{"host":"b","unreachable":true}]}', /events\[0\]: "at"/],
    [
      '{"self":"a","durationMs":1,"events":[{"at":0,"host":"b","service":"web","state":"up"}]}',
      /"state" must be UP, RECOVER, FAIL or null/,
    ],
    [
      '{"self":"a","durationMs":1,"events":[{"at":0,"handler":"boot","service":"web","result":"UP"}]}',
      /"handler" must be start, stop or reclaim/,
    ],
    ["{not json", /not valid JSON/],
  ];
  for (const [text, pattern] of cases) {
    await t.step(text, () => {
      assert.throws(() => parseScenario(text, "s.json"), pattern);
    });
  }
});

Deno.test("simulate() shows the slave taking over after fall misses and yielding to RECOVER", async () => {
  const r = await simulate(DECL, {
    self: "beta",
    durationMs: 2000,
    events: [
      { at: 0, host: "alpha", service: "web", state: "UP" },
      { at: 500, host: "alpha", unreachable: true },
      { at: 1200, host: "alpha", unreachable: false },
      { at: 1200, host: "alpha", service: "web", state: "RECOVER" },
    ],
  });
  const decisions = r.lines.filter((l) => l.kind === "decision");
  const start = decisions.find((d) => d.action === "start");
  assert.ok(start, formatSimulation(r));
  // Misses at 500, 600, 700: the third makes alpha FAIL.
  assert.equal(start.atMs, 700);
  assert.match(start.text, /alpha is unreachable/);
  assert.equal(start.rule, "slave-start");
  assert.equal(start.input?.peers[0]?.reachable, false);
  const stop = decisions.find((d) => d.action === "stop");
  assert.ok(stop && stop.atMs >= 1200, formatSimulation(r));
  assert.match(stop.text, /master alpha is RECOVER/);
  assert.equal(r.final.web, "FAIL");
});

Deno.test("simulate() applies scripted handler faults: a start that times out leaves FAIL", async () => {
  const r = await simulate(DECL, {
    self: "beta",
    durationMs: 1500,
    events: [
      { at: 0, host: "alpha", unreachable: true },
      { at: 0, handler: "start", service: "web", result: "timeout" },
    ],
  });
  const text = formatSimulation(r);
  assert.match(text, /start handler failed after 1000 ms: timed out after 1000 ms/);
  assert.equal(r.final.web, "FAIL");
});

Deno.test("simulate() honours an arbiter veto", async () => {
  const r = await simulate(DECL, {
    self: "beta",
    durationMs: 1000,
    events: [
      { at: 0, host: "alpha", unreachable: true },
      { at: 0, arbiter: "deny", service: "web" },
    ],
  });
  assert.equal(r.final.web, "FAIL");
  assert.ok(r.lines.some((l) => l.rule === "arbiter-veto"), formatSimulation(r));
});

const LIVE: ScriptDecl = {
  ...DECL,
  hosts: DECL.hosts.map((h) =>
    h.name === "alpha" ? { ...h, liveness: { intervalMs: 10, fall: 5, stallGraceMs: 1000 } } : h
  ),
  services: [svc({ intervalMs: 1000, graceMs: 0 })],
};

Deno.test("simulate() with host liveness: a silent kernel is dead at once, a stalled faild is not", async (t) => {
  await t.step("alpha's kernel stops answering: beta starts at once, and says why", async () => {
    const r = await simulate(LIVE, {
      self: "beta",
      durationMs: 6000,
      events: [
        { at: 0, host: "alpha", service: "web", state: "UP" },
        { at: 2500, host: "alpha", unreachable: true },
        { at: 2500, host: "alpha", kernel: "silent" },
      ],
    });
    const start = r.lines.find((l) => l.kind === "decision" && l.action === "start");
    assert.ok(start, formatSimulation(r));
    assert.equal(start.atMs, 2500, "at the silence, not after 3 missed polls of 1 s");
    assert.match(start.text, /alpha's kernel has not answered for 50 ms \(counts as FAIL\)/);
    assert.match(formatSimulation(r), /alpha's kernel stops answering ping/);
    assert.match(formatSimulation(r, { inputs: true }), /alpha=unreachable\(kernel silent 50ms\)/);
  });
  await t.step(
    "alpha's faild stalls while its kernel answers: the polls' fall decides",
    async () => {
      const r = await simulate(LIVE, {
        self: "beta",
        durationMs: 6000,
        events: [
          { at: 0, host: "alpha", service: "web", state: "UP" },
          { at: 2500, host: "alpha", unreachable: true },
        ],
      });
      const start = r.lines.find((l) => l.kind === "decision" && l.action === "start");
      assert.ok(start, formatSimulation(r));
      assert.equal(start.atMs, 5000, "three missed polls at 3000, 4000, 5000");
      assert.match(start.text, /alpha is unreachable \(counts as FAIL\)/);
    },
  );
  await t.step("a short stall (two polls) on a live kernel makes no takeover", async () => {
    const r = await simulate(LIVE, {
      self: "beta",
      durationMs: 6000,
      events: [
        { at: 0, host: "alpha", service: "web", state: "UP" },
        { at: 2500, host: "alpha", unreachable: true },
        { at: 4500, host: "alpha", unreachable: false },
      ],
    });
    assert.equal(r.final.web, "FAIL", formatSimulation(r));
    assert.ok(!r.lines.some((l) => l.action === "start"), formatSimulation(r));
  });
  await t.step(
    "fast polls (50 ms, fall 3): a faild stalled 600 ms on a live kernel makes no takeover; one silent past stallGrace (1 s) does",
    async () => {
      const fast: ScriptDecl = { ...LIVE, services: [svc({ intervalMs: 50, graceMs: 0 })] };
      const stalled = await simulate(fast, {
        self: "beta",
        durationMs: 3000,
        events: [
          { at: 0, host: "alpha", service: "web", state: "UP" },
          { at: 1000, host: "alpha", unreachable: true },
          { at: 1600, host: "alpha", unreachable: false },
        ],
      });
      assert.equal(stalled.final.web, "FAIL", formatSimulation(stalled));
      assert.ok(!stalled.lines.some((l) => l.action === "start"), formatSimulation(stalled));
      const gone = await simulate(fast, {
        self: "beta",
        durationMs: 3000,
        events: [
          { at: 0, host: "alpha", service: "web", state: "UP" },
          { at: 1000, host: "alpha", unreachable: true },
        ],
      });
      const start = gone.lines.find((l) => l.kind === "decision" && l.action === "start");
      assert.ok(start, formatSimulation(gone));
      assert.ok(
        start.atMs >= 1950 && start.atMs <= 2050,
        `a second after alpha's last answer, not 150 ms: ${start.atMs}`,
      );
    },
  );
  await t.step("the kernel event needs a host that declares liveness", async () => {
    await assert.rejects(
      simulate(DECL, {
        self: "beta",
        durationMs: 100,
        events: [{ at: 0, host: "alpha", kernel: "silent" }],
      }),
      /events\[0\] sets the kernel of "alpha", which declares no liveness/,
    );
    assert.throws(
      () =>
        parseScenario(
          '{"self":"a","durationMs":1,"events":[{"at":0,"host":"b","kernel":"dead"}]}',
          "s.json",
        ),
      /"kernel" must be silent, answering or unknown/,
    );
  });
});

Deno.test("simulate() refuses a scenario naming an unknown host", async () => {
  await assert.rejects(
    simulate(DECL, {
      self: "beta",
      durationMs: 100,
      events: [{ at: 0, host: "zeta", unreachable: true }],
    }),
    /events\[0\] names unknown host "zeta"/,
  );
  await assert.rejects(
    simulate(DECL, { self: "zeta", durationMs: 100, events: [] }),
    /self "zeta" is not one of the script's hosts/,
  );
});

Deno.test("failsh simulate runs a real script against a scenario file (--json)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-sim-test-" });
  try {
    const scenario = `${dir}/s.json`;
    await Deno.writeTextFile(
      scenario,
      JSON.stringify({
        self: "beta",
        durationMs: 3000,
        events: [
          { at: 0, host: "alpha", service: "web", state: "UP" },
          { at: 1000, host: "alpha", unreachable: true },
        ],
      }),
    );
    const script = new URL("../samples/loopback_demo/failover.ts", import.meta.url).pathname;
    const out: string[] = [];
    const log = console.log;
    console.log = (s: string) => out.push(s);
    let code: number;
    try {
      code = await main([script, scenario, "--json"]);
    } finally {
      console.log = log;
    }
    assert.equal(code, 0);
    const result = JSON.parse(out.join("\n"));
    assert.equal(result.final.web, "UP");
    const start = result.lines.find((l: { action: string }) => l.action === "start");
    // The sample's interval is 100 ms with fall 3: misses at 1000, 1100, 1200.
    assert.equal(start.atMs, 1200);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failsh simulate: the etcd sample's arbiter is granted, lost and regained", async () => {
  const script = new URL("../samples/ip_failover_etcd/failover.ts", import.meta.url).pathname;
  const scenario = new URL("../samples/ip_failover_etcd/scenario_partition.json", import.meta.url)
    .pathname;
  const out: string[] = [];
  const log = console.log;
  console.log = (s: string) => out.push(s);
  let code: number;
  try {
    code = await main([script, scenario, "--json"]);
  } finally {
    console.log = log;
  }
  assert.equal(code, 0);
  const r = JSON.parse(out.join("\n")) as SimulationResult;
  const at = (rule: string) => r.lines.filter((l) => l.rule === rule).map((l) => l.atMs);
  const starts = r.lines.filter((l) => l.action === "start").map((l) => l.atMs);
  // alpha is gone at 2000 (fall 3 at 1 s: FAIL at 4000), but the key is someone else's until
  // 9000; then the takeover delay (renew 2 s + margin 1 s) before the start.
  assert.equal(at("arbiter-veto")[0], 4000);
  assert.deepEqual(starts, [12000, 25000]);
  assert.deepEqual(at("arbiter-revoke"), [18000]);
  assert.ok(r.lines.some((l) => l.text === "arbiter: held, epoch 101 (holding, epoch 101)"));
  assert.ok(r.lines.some((l) => /^arbiter: held, epoch 102/.test(l.text)));
  assert.equal(r.final.vip, "UP");
});

Deno.test("parseScenario() refuses an arbiter event it does not know", () => {
  assert.throws(
    () =>
      parseScenario(
        JSON.stringify({
          self: "beta",
          durationMs: 100,
          events: [{ at: 0, arbiter: "steal", service: "web" }],
        }),
        "s.json",
      ),
    /"arbiter" must be grant, deny, lose, regain or null/,
  );
});
