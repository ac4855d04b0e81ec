import assert from "node:assert/strict";
import { decide, type DecisionInput, type PeerInput } from "./decide.ts";
import {
  type AnswerInput,
  type HandOver,
  handOver,
  HANDOVER_RULES,
  type HandOverInput,
  type HandOverRule,
} from "./handover.ts";
import type { ServiceState } from "../../lib/types.ts";

const NOW = 10_000;
const WEB = { name: "web", masters: ["alpha"], slaves: ["beta"], preempt: true };

function peer(name: string, state: ServiceState | null, more: Partial<PeerInput> = {}): PeerInput {
  return { name, reachable: true, state, ...more };
}

/** Master alpha, 100 ms interval, as the scheduler builds the input. */
function decision(over: Partial<DecisionInput>): DecisionInput {
  return {
    service: WEB,
    self: "alpha",
    local: "UP",
    peers: [],
    graceOver: true,
    handlerRunning: false,
    deferredMs: 0,
    maxDeferMs: 1100,
    ...over,
  };
}

/** beta's answer, polled every 100 ms. */
function answer(over: Partial<AnswerInput> = {}): AnswerInput {
  return {
    peer: "beta",
    pollIntervalMs: 100,
    before: "FAIL",
    heldBefore: false,
    cameBack: false,
    bothHeldSince: null,
    ...over,
  };
}

function input(
  d: Partial<DecisionInput>,
  over: Partial<Omit<HandOverInput, "input" | "decision">> = {},
): HandOverInput {
  const i = decision(d);
  return {
    input: i,
    decision: decide(i),
    yieldHeld: false,
    intervalMs: 100,
    now: NOW,
    backAt: {},
    answer: null,
    ...over,
  };
}

interface Row {
  name: string;
  input: HandOverInput;
  rule: HandOverRule;
  /** What differs from: no hold, no announcement, not quiet, regular polls, not both held. */
  effects?: Partial<Omit<HandOver, "rule" | "reason">>;
  /** Words the reason must contain (it names the inputs). */
  mentions: string[];
}

const ROWS: Row[] = [
  {
    name: "a slave's yield to a master back from a partition waits an interval + 50 ms",
    input: input({ self: "beta", peers: [peer("alpha", "UP")] }, { backAt: { alpha: NOW - 30 } }),
    rule: "yield-hold",
    effects: { holdUntil: NOW - 30 + 100 + 50 },
    mentions: ["alpha answered again only 30 ms ago", "master alpha is UP, so slave beta yields"],
  },
  {
    name: "the held-back host stops its own ARP bursts when it first sees the peer UP too",
    input: input(
      { self: "beta", peers: [peer("alpha", "UP")] },
      { backAt: { alpha: NOW - 30 }, answer: answer({ peer: "alpha", before: "UP" }) },
    ),
    rule: "yield-hold",
    effects: { holdUntil: NOW + 120, quiet: true, bothHeldSince: NOW },
    mentions: ["ARP bursts still running stop"],
  },
  {
    name: "a master without preempt holds back its yield to the slave too",
    input: input(
      { service: { ...WEB, preempt: false }, peers: [peer("beta", "UP")] },
      { backAt: { beta: NOW - 100 } },
    ),
    rule: "yield-hold",
    effects: { holdUntil: NOW + 50 },
    mentions: ["preempt is off", "beta answered again only 100 ms ago"],
  },
  {
    name: "the yield goes ahead once the peer had its interval + 50 ms",
    input: input({ self: "beta", peers: [peer("alpha", "UP")] }, { backAt: { alpha: NOW - 150 } }),
    rule: "yielding",
    mentions: ["beta gives web up (yield-higher)"],
  },
  {
    name: "a stop for another reason (own faild unreachable) is not held back",
    input: input({ selfReachable: false, peers: [peer("beta", "FAIL")] }, {
      backAt: { beta: NOW - 10 },
    }),
    rule: "yielding",
    mentions: ["self-unreachable"],
  },
  {
    name: "a host whose stop handler runs does not announce when the peer gives up",
    input: input({ handlerRunning: true, peers: [peer("beta", "FAIL")] }, {
      answer: answer({ before: "UP" }),
    }),
    rule: "yielding",
    mentions: ["its stop handler runs"],
  },
  {
    name: "a host whose stop is held back does not announce when the peer gives up",
    input: input({ peers: [peer("beta", "FAIL")] }, {
      yieldHeld: true,
      answer: answer({ before: "UP" }),
    }),
    rule: "yielding",
    mentions: ["its stop is held back"],
  },
  {
    name: "a master in RECOVER polls the holder at a twentieth of the interval",
    input: input({ local: "RECOVER", peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP", pollIntervalMs: 1000 }),
    }),
    rule: "recover-hurry",
    effects: { pollInMs: 50 },
    mentions: ["beta still shows web UP", "every 50 ms"],
  },
  {
    name: "a master in RECOVER polls the holder at least 10 ms apart",
    input: input({ local: "RECOVER", peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP" }),
    }),
    rule: "recover-hurry",
    effects: { pollInMs: 10 },
    mentions: ["every 10 ms"],
  },
  {
    name: "a master entering RECOVER at this answer hurries at once",
    input: input({ local: "FAIL", peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP", heldBefore: true }),
    }),
    rule: "recover-hurry",
    effects: { pollInMs: 10 },
    mentions: ["alpha is RECOVER"],
  },
  {
    name: "at a 10 ms interval there is nothing to hurry",
    input: input({ local: "RECOVER", peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP", pollIntervalMs: 10 }),
    }),
    rule: "recover-hurry",
    mentions: ["already that short"],
  },
  {
    name: "a master that reclaims (the slave is FAIL) has nothing to hand over",
    input: input({ local: "RECOVER", peers: [peer("beta", "FAIL")] }, {
      answer: answer({ before: "UP" }),
    }),
    rule: "not-holding",
    mentions: ["alpha does not hold web (RECOVER)"],
  },
  {
    name: "a standby neither announces nor quiets",
    input: input({ self: "beta", local: "FAIL", peers: [peer("alpha", "UP")] }, {
      answer: answer({ peer: "alpha", before: "FAIL" }),
    }),
    rule: "not-holding",
    mentions: ["beta does not hold web (FAIL)"],
  },
  {
    name: "a holder with no answer in hand keeps the service",
    input: input({ peers: [peer("beta", "FAIL")] }),
    rule: "keeping",
    mentions: ["no peer answered just now"],
  },
  {
    name: "the keeper announces again when the peer gives the service up",
    input: input({ peers: [peer("beta", "FAIL")] }, { answer: answer({ before: "UP" }) }),
    rule: "peer-gave-up",
    effects: { announce: true },
    mentions: ["beta gave web up (UP -> FAIL)", "announces its addresses again"],
  },
  {
    name: "the keeper announces again when a peer abandons RECOVER",
    input: input({ self: "beta", peers: [peer("alpha", "FAIL")] }, {
      answer: answer({ peer: "alpha", before: "RECOVER" }),
    }),
    rule: "peer-gave-up",
    effects: { announce: true },
    mentions: ["alpha gave web up (RECOVER -> FAIL)"],
  },
  {
    name: "after a heal the keeper announces, quiets its bursts and polls the peer every 10 ms",
    input: input({ peers: [peer("beta", "UP")] }, { answer: answer() }),
    rule: "peer-holds-too",
    effects: { announce: true, quiet: true, pollInMs: 10, bothHeldSince: NOW },
    mentions: ["beta shows web UP too", "every 10 ms (for 800 ms at most)"],
  },
  {
    name: "while both hold it the keeper keeps polling fast, without announcing again",
    input: input({ peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP", heldBefore: true, bothHeldSince: NOW - 300 }),
    }),
    rule: "both-hold",
    effects: { pollInMs: 10, bothHeldSince: NOW - 300 },
    mentions: ["beta shows web UP too and alpha keeps it", "every 10 ms"],
  },
  {
    name: "fast polls end after 3 intervals + 500 ms if the peer does not yield",
    input: input({ peers: [peer("beta", "UP")] }, {
      answer: answer({ before: "UP", heldBefore: true, bothHeldSince: NOW - 800 }),
    }),
    rule: "both-hold",
    effects: { bothHeldSince: NOW - 800 },
    mentions: ["has not yielded within 800 ms"],
  },
  {
    name: "at short intervals fast polls last 10 intervals",
    input: input({ peers: [peer("beta", "UP")] }, {
      answer: answer({
        before: "UP",
        heldBefore: true,
        bothHeldSince: NOW - 500,
        pollIntervalMs: 50,
      }),
    }),
    rule: "both-hold",
    effects: { bothHeldSince: NOW - 500 },
    mentions: ["within 500 ms"],
  },
  {
    name: "the keeper announces at the first answer of a peer back from a partition",
    input: input({ peers: [peer("beta", "FAIL", { reachable: false })] }, {
      answer: answer({ cameBack: true }),
    }),
    rule: "peer-back",
    effects: { announce: true },
    mentions: ["beta answers again after being unreachable (FAIL)"],
  },
  {
    name: "a peer back from a partition holding the service too: announce, quiet, fast polls",
    input: input({ peers: [peer("beta", "UP", { reachable: false })] }, {
      answer: answer({ cameBack: true }),
    }),
    rule: "peer-back",
    effects: { announce: true, quiet: true, pollInMs: 10, bothHeldSince: NOW },
    mentions: ["beta answers again", "every 10 ms"],
  },
  {
    name: "a slave that will yield to the returning master neither announces nor hurries",
    input: input({ self: "beta", peers: [peer("alpha", "UP", { reachable: false })] }, {
      answer: answer({ peer: "alpha", before: "UP", cameBack: true }),
    }),
    rule: "both-hold",
    effects: { quiet: true, bothHeldSince: NOW },
    mentions: ["until alpha counts as reachable again: then beta yields"],
  },
  {
    name: "the keeper announces when the peer changed the service between two polls",
    input: input({ peers: [peer("beta", "FAIL", { flapped: true })] }, {
      answer: answer({ before: "FAIL" }),
    }),
    rule: "peer-changed-unseen",
    effects: { announce: true },
    mentions: ["changed more often between two polls", "given it back unseen"],
  },
  {
    name: "a flap of a peer not yet counted back is not announced",
    input: input({ peers: [peer("beta", "FAIL", { reachable: false, flapped: true })] }, {
      answer: answer(),
    }),
    rule: "keeping",
    mentions: ["beta (FAIL) brings nothing new"],
  },
  {
    name: "the keeper does nothing when a FAIL peer answers as before",
    input: input({ peers: [peer("beta", "FAIL")] }, { answer: answer() }),
    rule: "keeping",
    mentions: ["alpha keeps web"],
  },
  {
    name: "the yielding host quiets its bursts when it first sees the keeper UP too",
    input: input({ self: "beta", peers: [peer("alpha", "UP")] }, {
      answer: answer({ peer: "alpha", before: "FAIL" }),
    }),
    rule: "yielding",
    effects: { quiet: true, bothHeldSince: NOW },
    mentions: ["beta gives web up"],
  },
];

const NOTHING = {
  holdUntil: null,
  announce: false,
  quiet: false,
  pollInMs: null,
  bothHeldSince: null,
};

Deno.test("handOver() follows the hand-over table", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => {
      const { reason, ...got } = handOver(row.input);
      assert.deepEqual(got, { rule: row.rule, ...NOTHING, ...row.effects }, reason);
      for (const word of row.mentions) {
        assert.ok(reason.includes(word), `"${reason}" should mention "${word}"`);
      }
    });
  }
});

Deno.test("handOver()'s table has a row for every rule", () => {
  const tested = new Set(ROWS.map((r) => r.rule));
  assert.deepEqual(HANDOVER_RULES.filter((r) => !tested.has(r)), []);
});

Deno.test("handOver() is pure: the same input gives the same answer", () => {
  const i = ROWS.find((r) => r.rule === "peer-back")!.input;
  const frozen = structuredClone(i);
  assert.deepEqual(handOver(i), handOver(i));
  assert.deepEqual(i, frozen);
});

Deno.test("handOver() never announces, hurries or holds for a host that does not keep the service", () => {
  const states: (ServiceState | null)[] = ["UP", "RECOVER", "FAIL", null];
  let cases = 0;
  for (const local of ["UP", "RECOVER", "FAIL"] as const) {
    for (const state of states) {
      for (const before of states) {
        for (const reachable of [true, false]) {
          for (const flags of [0, 1, 2, 3, 4, 5, 6, 7]) {
            const handlerRunning = (flags & 1) !== 0;
            const yieldHeld = (flags & 2) !== 0;
            const cameBack = (flags & 4) !== 0;
            const i = input(
              { local, handlerRunning, peers: [peer("beta", state, { reachable, flapped: true })] },
              { yieldHeld, answer: answer({ before, cameBack }), backAt: { beta: NOW - 10 } },
            );
            const plan = handOver(i);
            cases++;
            const keeps = local === "UP" && !handlerRunning && !yieldHeld &&
              i.decision.action !== "stop";
            if (plan.announce) assert.ok(keeps, `${plan.rule}: ${plan.reason}`);
            if (plan.pollInMs === 10 && local === "UP") assert.ok(keeps, plan.reason);
            if (plan.holdUntil !== null) assert.equal(i.decision.action, "stop", plan.reason);
            if (plan.quiet) assert.equal(state, "UP", plan.reason);
          }
        }
      }
    }
  }
  assert.equal(cases, 3 * 4 * 4 * 2 * 8);
});
