import assert from "node:assert/strict";
import {
  decide,
  DECISION_RULES,
  type DecisionAction,
  type DecisionInput,
  type DecisionRule,
  type PeerInput,
  rankOf,
} from "./decide.ts";
import type { ServiceState } from "../../lib/types.ts";

const WEB = { name: "web", masters: ["alpha"], slaves: ["beta", "gamma"], preempt: true };

function peer(name: string, state: ServiceState | null, more: Partial<PeerInput> = {}): PeerInput {
  return { name, reachable: true, state, ...more };
}

function input(over: Partial<DecisionInput>): DecisionInput {
  return {
    service: WEB,
    self: "beta",
    local: "FAIL",
    peers: [],
    graceOver: true,
    handlerRunning: false,
    deferredMs: 0,
    maxDeferMs: 3000,
    ...over,
  };
}

interface Row {
  name: string;
  input: DecisionInput;
  action: DecisionAction;
  rule: DecisionRule;
  /** Words the reason must contain (it names the inputs). */
  mentions: string[];
}

const ROWS: Row[] = [
  {
    name: "a host that is not in the service does nothing",
    input: input({ self: "delta" }),
    action: "none",
    rule: "not-member",
    mentions: ["delta"],
  },
  {
    name: "nothing is decided while a handler of the service runs",
    input: input({ handlerRunning: true, peers: [peer("alpha", "FAIL")] }),
    action: "none",
    rule: "handler-running",
    mentions: ["handler"],
  },
  {
    name: "a slave stays standby while the master is UP",
    input: input({ peers: [peer("alpha", "UP"), peer("gamma", "FAIL")] }),
    action: "none",
    rule: "standby",
    mentions: ["alpha is UP"],
  },
  {
    name: "a slave stays standby while the master is RECOVER",
    input: input({ peers: [peer("alpha", "RECOVER"), peer("gamma", "FAIL")] }),
    action: "none",
    rule: "standby",
    mentions: ["alpha is RECOVER"],
  },
  {
    name: "a slave stays standby while another slave is UP",
    input: input({ self: "beta", peers: [peer("alpha", "FAIL"), peer("gamma", "UP")] }),
    action: "none",
    rule: "standby",
    mentions: ["gamma is UP"],
  },
  {
    name: "a slave starts when the master is FAIL and no other slave holds the service",
    input: input({ peers: [peer("alpha", "FAIL"), peer("gamma", "FAIL")] }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha is FAIL", "gamma is FAIL"],
  },
  {
    name: "a partitioned master (unreachable) counts as FAIL and the slave starts",
    input: input({
      peers: [peer("alpha", "UP", { reachable: false }), peer("gamma", "FAIL")],
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha is unreachable"],
  },
  {
    name: "a master whose kernel stopped answering counts as FAIL and the reason says so",
    input: input({
      peers: [
        peer("alpha", "UP", { reachable: false, kernelSilentMs: 52 }),
        peer("gamma", "FAIL"),
      ],
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha's kernel has not answered for 52 ms (counts as FAIL)"],
  },
  {
    name: "a holder stays when only a lower peer's kernel is silent",
    input: input({
      self: "alpha",
      local: "UP",
      peers: [peer("beta", "UP", { reachable: false, kernelSilentMs: 60 }), peer("gamma", "FAIL")],
    }),
    action: "none",
    rule: "holding",
    mentions: ["alpha holds web"],
  },
  {
    name:
      "a cold start: the slave defers to a reachable master whose failsh has not registered yet",
    input: input({ peers: [peer("alpha", null), peer("gamma", "FAIL")] }),
    action: "wait",
    rule: "startup-defer",
    mentions: ["master alpha is starting up", "no record yet", "defers"],
  },
  {
    name: "a master without a record counts as FAIL once the start-up deferral is over",
    input: input({
      peers: [peer("alpha", null), peer("gamma", "FAIL")],
      deferredMs: 4100,
      maxStartupDeferMs: 4100,
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha has no record", "did not start within 4100 ms"],
  },
  {
    name: "an unreachable master without a record is not waited for",
    input: input({ peers: [peer("alpha", null, { reachable: false }), peer("gamma", "FAIL")] }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha is unreachable"],
  },
  {
    name: "a slave waits during the start-up grace period",
    input: input({ graceOver: false, peers: [peer("alpha", "FAIL"), peer("gamma", "FAIL")] }),
    action: "wait",
    rule: "grace",
    mentions: ["grace"],
  },
  {
    name: "the arbiter vetoes a takeover",
    input: input({ arbiter: "deny", peers: [peer("alpha", "FAIL", { reachable: false })] }),
    action: "wait",
    rule: "arbiter-veto",
    mentions: ["arbiter denies"],
  },
  {
    name: "an arbiter grant lets the takeover go ahead",
    input: input({ arbiter: "grant", peers: [peer("alpha", "FAIL", { reachable: false })] }),
    action: "start",
    rule: "slave-start",
    mentions: ["beta starts"],
  },
  {
    name: "a flapping peer (counter moved between polls) delays a takeover by one poll",
    input: input({ peers: [peer("alpha", "FAIL", { flapped: true }), peer("gamma", "FAIL")] }),
    action: "wait",
    rule: "flap-wait",
    mentions: ["alpha changed state between polls"],
  },
  {
    name: "a flapping peer that is UP now keeps the slave standby",
    input: input({ peers: [peer("alpha", "UP", { flapped: true })] }),
    action: "none",
    rule: "standby",
    mentions: ["alpha is UP"],
  },
  {
    name: "two slaves racing: the lower-priority slave defers to a reachable higher one",
    input: input({
      self: "gamma",
      peers: [peer("alpha", "FAIL", { reachable: false }), peer("beta", "FAIL")],
      deferredMs: 1000,
    }),
    action: "wait",
    rule: "race-defer",
    mentions: ["beta", "defers"],
  },
  {
    name: "two slaves racing: the higher-priority slave starts at once",
    input: input({
      self: "beta",
      peers: [peer("alpha", "FAIL", { reachable: false }), peer("gamma", "FAIL")],
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["slave beta starts"],
  },
  {
    name: "two slaves racing: the deferral is bounded",
    input: input({
      self: "gamma",
      peers: [peer("alpha", "FAIL", { reachable: false }), peer("beta", "FAIL")],
      deferredMs: 3000,
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["did not start within 3000 ms"],
  },
  {
    name: "a lower slave does not defer to an unreachable higher slave",
    input: input({
      self: "gamma",
      peers: [peer("alpha", "FAIL"), peer("beta", "FAIL", { reachable: false })],
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["beta is unreachable"],
  },
  {
    name: "a slave that is UP stops when the master is UP",
    input: input({ local: "UP", peers: [peer("alpha", "UP")] }),
    action: "stop",
    rule: "yield-higher",
    mentions: ["master alpha is UP", "yields"],
  },
  {
    name: "a slave that is UP stops when the master is RECOVER",
    input: input({ local: "UP", peers: [peer("alpha", "RECOVER")] }),
    action: "stop",
    rule: "yield-higher",
    mentions: ["master alpha is RECOVER"],
  },
  {
    name: "a slave that is UP keeps the service while the master is FAIL",
    input: input({ local: "UP", peers: [peer("alpha", "FAIL"), peer("gamma", "FAIL")] }),
    action: "none",
    rule: "holding",
    mentions: ["beta holds web"],
  },
  {
    name: "partition heals with two slaves UP: the lower-priority one stops",
    input: input({
      self: "gamma",
      local: "UP",
      peers: [peer("alpha", "FAIL"), peer("beta", "UP")],
    }),
    action: "stop",
    rule: "yield-higher",
    mentions: ["beta is UP and outranks gamma"],
  },
  {
    name: "partition heals with two slaves UP: the higher-priority one keeps it",
    input: input({
      self: "beta",
      local: "UP",
      peers: [peer("alpha", "FAIL"), peer("gamma", "UP")],
    }),
    action: "none",
    rule: "holding",
    mentions: ["gamma is UP"],
  },
  {
    name: "partition heals with master and slave UP: the master keeps it",
    input: input({ self: "alpha", local: "UP", peers: [peer("beta", "UP")] }),
    action: "none",
    rule: "holding",
    mentions: ["alpha holds web"],
  },
  {
    name: "partition heals with master and slave UP, nopreempt: the master leaves it to the slave",
    input: input({
      self: "alpha",
      local: "UP",
      service: { ...WEB, preempt: false },
      peers: [peer("beta", "UP")],
    }),
    action: "stop",
    rule: "nopreempt-yield",
    mentions: ["preempt is off"],
  },
  {
    name: "partition heals with master and slave UP, nopreempt: the slave keeps it",
    input: input({
      self: "beta",
      local: "UP",
      service: { ...WEB, preempt: false },
      peers: [peer("alpha", "UP")],
    }),
    action: "none",
    rule: "holding",
    mentions: ["beta holds web"],
  },
  {
    name: "a holder whose own faild is unreachable stops",
    input: input({ local: "UP", selfReachable: false, peers: [peer("alpha", "FAIL")] }),
    action: "stop",
    rule: "self-unreachable",
    mentions: ["own faild is unreachable"],
  },
  {
    name: "a host whose own faild is unreachable does not start",
    input: input({ selfReachable: false, peers: [peer("alpha", "FAIL")] }),
    action: "wait",
    rule: "self-unreachable",
    mentions: ["own faild is unreachable"],
  },
  {
    name: "a holder whose local faild was set FAIL by a health check stops",
    input: input({ local: "UP", localVeto: "hc", peers: [peer("alpha", "FAIL")] }),
    action: "stop",
    rule: "local-veto",
    mentions: ["set by hc"],
  },
  {
    name: "a host vetoed by a health check does not start",
    input: input({ localVeto: "hc", peers: [peer("alpha", "FAIL", { reachable: false })] }),
    action: "none",
    rule: "local-veto",
    mentions: ["set by hc"],
  },
  {
    name: "a holder does not yield to a restored, unconfirmed UP after a peer's faild restart",
    input: input({ local: "UP", peers: [peer("alpha", "UP", { stale: true })] }),
    action: "none",
    rule: "holding",
    mentions: ["beta holds web"],
  },
  {
    name: "a host does not start while a peer's restored UP is unconfirmed",
    input: input({ peers: [peer("alpha", "UP", { stale: true }), peer("gamma", "FAIL")] }),
    action: "wait",
    rule: "stale-wait",
    mentions: ["alpha restarted its faild", "before starting web"],
  },
  {
    name: "a master in RECOVER does not reclaim while a slave's restored UP is unconfirmed",
    input: input({
      self: "alpha",
      local: "RECOVER",
      peers: [peer("beta", "UP", { stale: true }), peer("gamma", "FAIL")],
    }),
    action: "wait",
    rule: "stale-wait",
    mentions: ["beta restarted its faild", "before reclaiming"],
  },
  {
    name: "a master in RECOVER waits one poll when the slave flapped before reclaiming",
    input: input({
      self: "alpha",
      local: "RECOVER",
      peers: [peer("beta", "FAIL", { flapped: true }), peer("gamma", "FAIL")],
    }),
    action: "wait",
    rule: "flap-wait",
    mentions: ["beta changed state between polls", "waits one poll before reclaiming"],
  },
  {
    name: "a cold start: the slave defers to a reachable master that never held the service",
    input: input({ peers: [peer("alpha", "FAIL", { neverHeld: true }), peer("gamma", "FAIL")] }),
    action: "wait",
    rule: "startup-defer",
    mentions: ["master alpha is starting up", "never held it", "defers"],
  },
  {
    name: "a cold start: the deferral to a starting master lasts maxStartupDeferMs, not maxDeferMs",
    input: input({
      peers: [peer("alpha", "FAIL", { neverHeld: true }), peer("gamma", "FAIL")],
      deferredMs: 3000,
      maxStartupDeferMs: 4100,
    }),
    action: "wait",
    rule: "startup-defer",
    mentions: ["3000 of 4100 ms"],
  },
  {
    name: "two slaves racing: the start-up bound does not lengthen a race between slaves",
    input: input({
      self: "gamma",
      peers: [peer("alpha", "FAIL", { reachable: false }), peer("beta", "FAIL")],
      deferredMs: 3000,
      maxStartupDeferMs: 4100,
    }),
    action: "start",
    rule: "slave-start",
    mentions: ["did not start within 3000 ms"],
  },
  {
    name: "a slave does not defer to a master that held the service and failed",
    input: input({ peers: [peer("alpha", "FAIL", { neverHeld: false }), peer("gamma", "FAIL")] }),
    action: "start",
    rule: "slave-start",
    mentions: ["alpha is FAIL"],
  },
  {
    name: "a holder the arbiter denies stops",
    input: input({ local: "UP", arbiter: "deny", peers: [peer("alpha", "FAIL")] }),
    action: "stop",
    rule: "arbiter-revoke",
    mentions: ["arbiter denies"],
  },
  {
    name: "a master with no one else UP starts",
    input: input({ self: "alpha", peers: [peer("beta", "FAIL"), peer("gamma", "FAIL")] }),
    action: "start",
    rule: "master-start",
    mentions: ["master alpha starts"],
  },
  {
    name: "a master waits during the grace period even when nobody holds the service",
    input: input({ self: "alpha", graceOver: false, peers: [peer("beta", "FAIL")] }),
    action: "wait",
    rule: "grace",
    mentions: ["grace"],
  },
  {
    name: "a master does not wait for a reachable FAIL slave (slaves never delay a master)",
    input: input({ self: "alpha", peers: [peer("beta", "FAIL"), peer("gamma", "FAIL")] }),
    action: "start",
    rule: "master-start",
    mentions: ["beta is FAIL"],
  },
  {
    name: "a returning master enters RECOVER while a slave is UP (preempt)",
    input: input({ self: "alpha", peers: [peer("beta", "UP"), peer("gamma", "FAIL")] }),
    action: "recover",
    rule: "master-recover",
    mentions: ["beta is UP", "RECOVER"],
  },
  {
    name: "a returning master stays standby while a slave is UP (nopreempt)",
    input: input({
      self: "alpha",
      service: { ...WEB, preempt: false },
      peers: [peer("beta", "UP")],
    }),
    action: "none",
    rule: "nopreempt-standby",
    mentions: ["preempt is off"],
  },
  {
    name: "a returning master does not enter RECOVER during its grace period",
    input: input({ self: "alpha", graceOver: false, peers: [peer("beta", "UP")] }),
    action: "wait",
    rule: "grace",
    mentions: ["grace"],
  },
  {
    // With the arbiter, the slave holds the key: the master must announce RECOVER (no address
    // moves) so that the slave stops and frees the key; vetoing it would make preemption impossible.
    name: "a returning master enters RECOVER without the arbiter's grant",
    input: input({ self: "alpha", arbiter: "deny", peers: [peer("beta", "UP")] }),
    action: "recover",
    rule: "master-recover",
    mentions: ["enters RECOVER"],
  },
  {
    // Seen in the lab: a master cut from etcd entered RECOVER, the slave yielded, and nobody
    // could take the key: the VIP was down until etcd came back.
    name: "a returning master that cannot reach the arbiter does not make the slave stop",
    input: input({ self: "alpha", arbiter: "unreachable", peers: [peer("beta", "UP")] }),
    action: "wait",
    rule: "arbiter-veto",
    mentions: ["does not answer"],
  },
  {
    name: "a RECOVER master that loses the arbiter gives RECOVER up",
    input: input({
      self: "alpha",
      local: "RECOVER",
      arbiter: "unreachable",
      peers: [peer("beta", "UP")],
    }),
    action: "stop",
    rule: "arbiter-revoke",
    mentions: ["does not answer"],
  },
  {
    name: "an unreachable arbiter vetoes a takeover like a denial",
    input: input({ arbiter: "unreachable", peers: [peer("alpha", "FAIL", { reachable: false })] }),
    action: "wait",
    rule: "arbiter-veto",
    mentions: ["arbiter denies"],
  },
  {
    name: "a RECOVER master the arbiter denies waits for the key instead of giving up",
    input: input({
      self: "alpha",
      local: "RECOVER",
      arbiter: "deny",
      peers: [peer("beta", "FAIL")],
    }),
    action: "wait",
    rule: "arbiter-veto",
    mentions: ["arbiter denies"],
  },
  {
    name: "a RECOVER master the arbiter grants reclaims",
    input: input({
      self: "alpha",
      local: "RECOVER",
      arbiter: "grant",
      peers: [peer("beta", "FAIL")],
    }),
    action: "reclaim",
    rule: "reclaim",
    mentions: ["RECOVER"],
  },
  {
    name: "a RECOVER master waits while the slave is still UP",
    input: input({ self: "alpha", local: "RECOVER", peers: [peer("beta", "UP")] }),
    action: "wait",
    rule: "recover-wait",
    mentions: ["waits for beta"],
  },
  {
    name: "a RECOVER master reclaims once no slave is UP any more",
    input: input({
      self: "alpha",
      local: "RECOVER",
      peers: [peer("beta", "FAIL"), peer("gamma", "FAIL")],
    }),
    action: "reclaim",
    rule: "reclaim",
    mentions: ["beta is FAIL"],
  },
  {
    name: "a RECOVER master reclaims when the slave became unreachable",
    input: input({
      self: "alpha",
      local: "RECOVER",
      peers: [peer("beta", "UP", { reachable: false })],
    }),
    action: "reclaim",
    rule: "reclaim",
    mentions: ["beta is unreachable"],
  },
  {
    name: "a RECOVER master gives up when a higher master holds the service",
    input: input({
      service: { ...WEB, masters: ["alpha", "omega"] },
      self: "omega",
      local: "RECOVER",
      peers: [peer("alpha", "UP"), peer("beta", "FAIL")],
    }),
    action: "stop",
    rule: "recover-abandon",
    mentions: ["alpha is UP"],
  },
  {
    name: "two masters racing: the second master defers to the first",
    input: input({
      service: { ...WEB, masters: ["alpha", "omega"] },
      self: "omega",
      peers: [peer("alpha", "FAIL"), peer("beta", "FAIL")],
    }),
    action: "wait",
    rule: "race-defer",
    mentions: ["alpha"],
  },
  {
    name: "a master does not preempt another master that holds the service",
    input: input({
      service: { ...WEB, masters: ["alpha", "omega"] },
      self: "alpha",
      peers: [peer("omega", "UP"), peer("beta", "FAIL")],
    }),
    action: "none",
    rule: "standby",
    mentions: ["omega is UP"],
  },
  {
    name: "partition heals with two masters UP: the second master stops",
    input: input({
      service: { ...WEB, masters: ["alpha", "omega"] },
      self: "omega",
      local: "UP",
      peers: [peer("alpha", "UP")],
    }),
    action: "stop",
    rule: "yield-higher",
    mentions: ["alpha is UP and outranks omega"],
  },
];

Deno.test("decide() follows the decision table", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => {
      const decision = decide(row.input);
      assert.equal(decision.action, row.action, decision.reason);
      assert.equal(decision.rule, row.rule, decision.reason);
      for (const word of row.mentions) {
        assert.ok(decision.reason.includes(word), `"${decision.reason}" should mention "${word}"`);
      }
    });
  }
});

Deno.test("decide()'s table has a row for every rule", () => {
  const tested = new Set(ROWS.map((r) => r.rule));
  assert.deepEqual(DECISION_RULES.filter((r) => !tested.has(r)), []);
});

Deno.test("decide() is pure: the same input gives the same decision", () => {
  const i = input({ peers: [peer("alpha", "FAIL"), peer("gamma", "UP")] });
  const frozen = structuredClone(i);
  assert.deepEqual(decide(i), decide(i));
  assert.deepEqual(i, frozen);
});

Deno.test("decide() marks only race deferrals as deferring", () => {
  const waiting = decide(input({ self: "gamma", peers: [peer("beta", "FAIL")] }));
  assert.equal(waiting.deferring, true);
  assert.equal(decide(input({ graceOver: false })).deferring, false);
});

Deno.test("decide() leaves exactly one holder whatever two UP hosts see of each other", () => {
  const hosts = ["alpha", "beta", "gamma"];
  for (const preempt of [true, false]) {
    for (const a of hosts) {
      for (const b of hosts) {
        if (a === b) continue;
        const service = { ...WEB, preempt };
        const da = decide(input({ service, self: a, local: "UP", peers: [peer(b, "UP")] }));
        const db = decide(input({ service, self: b, local: "UP", peers: [peer(a, "UP")] }));
        const keepers = [da, db].filter((x) => x.action === "none").length;
        assert.equal(keepers, 1, `${a} and ${b}: ${da.reason} / ${db.reason}`);
      }
    }
  }
});

Deno.test("rankOf() puts masters before slaves in list order", () => {
  assert.deepEqual(["alpha", "beta", "gamma", "x"].map((h) => rankOf(WEB, h)), [
    0,
    1,
    2,
    Number.MAX_SAFE_INTEGER,
  ]);
});
