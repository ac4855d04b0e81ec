/**
 * The hand-over policy: a pure function from a service's decision (what {@linkcode decide} was
 * given and answered) and, when a peer just answered a poll, what changed about that peer, to
 * what makes the hand-over of an address gapless: hold a yield back, announce the addresses
 * again, stop this host's ARP bursts still running, poll the peer faster. Like `decide()` it never
 * does I/O and never reads a clock, every answer has a rule (a row of `docs/decisions.md`,
 * "Hand-over without a gap") and a reason, and its table is tested row by row
 * (`handover_test.ts`). The scheduler (`scheduler.ts`) carries the answer out.
 *
 * Room for later inputs: the arbiter's verdict and epoch will gate {@linkcode HandOver.announce}
 * (only the lease holder announces), and a peer's host liveness arrives through
 * {@linkcode DecisionInput.peers} like its reachability.
 *
 * @module
 */
import type { ServiceState } from "../../lib/types.ts";
import { decide, type Decision, type DecisionInput, type PeerInput } from "./decide.ts";

/**
 * Every rule {@linkcode handOver} can answer with, in the order they are tried (the order of
 * the hand-over table in `docs/decisions.md`; a test checks the table against this list).
 */
export const HANDOVER_RULES = [
  "yield-hold",
  "yielding",
  "recover-hurry",
  "not-holding",
  "peer-gave-up",
  "peer-holds-too",
  "peer-back",
  "peer-changed-unseen",
  "both-hold",
  "keeping",
] as const;

/** The name of a rule of {@linkcode handOver}. */
export type HandOverRule = typeof HANDOVER_RULES[number];

/** Margin added to a held-back yield for the peer's announcement to go out, in ms. */
export const YIELD_MARGIN_MS = 50;

/** Poll period of a peer that holds a service this host keeps, in ms (whatever the interval). */
export const KEEP_POLL_MS = 10;

/** Shortest poll period of a holder while this host waits in RECOVER, in ms. */
export const RECOVER_POLL_MIN_MS = 10;

/** What changed about a peer whose answer to a poll just came in. */
export interface AnswerInput {
  /** The peer that answered (its state now, reachability and flap are in the decision's peers). */
  peer: string;
  /** How often the peer is polled (the shortest interval of the services it takes part in), ms. */
  pollIntervalMs: number;
  /** The peer's state for the service at its previous answer, or `null` (no record, or none). */
  before: ServiceState | null;
  /** Whether this host counted the peer as holding the service (reachable and UP) before. */
  heldBefore: boolean;
  /**
   * Whether this is the first answer of the peer since it was counted unreachable (its comeback,
   * before `rise` good polls count it reachable again).
   */
  cameBack: boolean;
  /** Since when both this host and the peer show the service UP (earlier answers), or `null`. */
  bothHeldSince: number | null;
}

/** Everything {@linkcode handOver} looks at. */
export interface HandOverInput {
  /** What `decide()` was given for the service. */
  input: DecisionInput;
  /** What `decide()` answered for it. */
  decision: Decision;
  /** Whether a stop of this service is held back already (an earlier `yield-hold`). */
  yieldHeld: boolean;
  /** The service's interval, in ms. */
  intervalMs: number;
  /** The time of the answer or of the decision, in ms since the epoch. */
  now: number;
  /** When each peer last answered again after being unreachable, by name (absent: never). */
  backAt: Readonly<Record<string, number>>;
  /** The answer of a peer that just came in, or `null` (a tick, the end of a handler). */
  answer: AnswerInput | null;
}

/** What {@linkcode handOver} answers. */
export interface HandOver {
  /** The rule that fired (a row of the hand-over table in `docs/decisions.md`). */
  rule: HandOverRule;
  /** One sentence naming the inputs that caused it. */
  reason: string;
  /** Carry the decided stop out only at this time (ms since the epoch); `null`: carry it out now. */
  holdUntil: number | null;
  /** Announce the service's addresses again now (gratuitous ARP, unsolicited NA). */
  announce: boolean;
  /** Stop this host's ARP bursts of the service still running (the addresses stay). */
  quiet: boolean;
  /** Poll the answering peer again this soon (ms) instead of a whole interval later, or `null`. */
  pollInMs: number | null;
  /** Since when both hold the service (kept for the next answer), or `null`. */
  bothHeldSince: number | null;
}

const YIELD_RULES: ReadonlySet<string> = new Set(["yield-higher", "nopreempt-yield"]);

/** This host's state once `decision` is carried out (as far as it changes at once). */
function stateAfter(local: ServiceState, decision: Decision): ServiceState {
  if (decision.action === "recover") return "RECOVER";
  if (decision.action === "stop" && local === "RECOVER") return "FAIL";
  return local;
}

/**
 * Whether this host keeps the service once `peer` counts as reachable: the decision with that
 * peer's answer taken at face value, before `rise` good polls make it count.
 */
function keepsWith(input: DecisionInput, peer: string): boolean {
  const peers = input.peers.map((p) => p.name === peer ? { ...p, reachable: true } : p);
  return decide({ ...input, peers }).action === "none";
}

/**
 * Decides how this host hands a service over, or keeps it, without a gap for clients. Pure: the
 * same input always gives the same answer (it asks {@linkcode decide} what this host would do
 * with a returning peer counted), and nothing outside the input is read.
 *
 * The rules, in the order they are tried (see `docs/decisions.md`, "Hand-over without a gap"):
 * a yield to a peer that answered again less than an interval + 50 ms ago is held back until
 * then (`yield-hold`); a host that gives the service up neither announces nor hurries
 * (`yielding`); a host in RECOVER polls a peer that still shows the service at a twentieth of the
 * interval (`recover-hurry`); a host that keeps the service announces again when the peer gave
 * it up, shows it UP too, answers again after a partition, or changed it between polls, and
 * polls a peer that holds it too every 10 ms for a bounded time (`both-hold`). Whenever this
 * host and the answering peer both show it UP for the first time, this host's ARP bursts still
 * running stop (`quiet`), whoever keeps it.
 *
 * @param h The inputs.
 * @returns What to do, the rule and its reason.
 *
 * @example A master that keeps the service sees the slave holding it too after a partition
 * ```ts
 * import assert from "node:assert/strict";
 * import { decide, type DecisionInput } from "./decide.ts";
 * import { handOver } from "./handover.ts";
 * const input: DecisionInput = {
 *   service: { name: "web", masters: ["alpha"], slaves: ["beta"], preempt: true },
 *   self: "alpha",
 *   local: "UP",
 *   peers: [{ name: "beta", reachable: true, state: "UP" }],
 *   graceOver: true,
 *   handlerRunning: false,
 *   deferredMs: 0,
 *   maxDeferMs: 1100,
 * };
 * const plan = handOver({
 *   input,
 *   decision: decide(input),
 *   yieldHeld: false,
 *   intervalMs: 100,
 *   now: 5000,
 *   backAt: {},
 *   answer: {
 *     peer: "beta",
 *     pollIntervalMs: 100,
 *     before: "FAIL",
 *     heldBefore: false,
 *     cameBack: false,
 *     bothHeldSince: null,
 *   },
 * });
 * assert.deepEqual(
 *   [plan.rule, plan.announce, plan.quiet, plan.pollInMs],
 *   ["peer-holds-too", true, true, 10],
 * );
 * ```
 */
export function handOver(h: HandOverInput): HandOver {
  const { input, decision, answer, now } = h;
  const { self, local } = input;
  const service = input.service.name;
  const peer: PeerInput | undefined = answer === null
    ? undefined
    : input.peers.find((p) => p.name === answer.peer);
  // Both show the service UP: whoever keeps it, this host's bursts still running stop once.
  const bothUp = answer !== null && local === "UP" && peer?.state === "UP";
  const bothHeldSince = bothUp ? answer.bothHeldSince ?? now : null;
  const quiet = bothUp && answer.bothHeldSince === null;
  const quietNote = quiet
    ? `; both announce it, so ${self}'s ARP bursts still running stop (the addresses stay)`
    : "";
  const answerOf = (
    rule: HandOver["rule"],
    reason: string,
    more: Partial<Pick<HandOver, "holdUntil" | "announce" | "pollInMs">> = {},
  ): HandOver => ({
    rule,
    reason: reason + quietNote,
    holdUntil: more.holdUntil ?? null,
    announce: more.announce ?? false,
    quiet,
    pollInMs: more.pollInMs ?? null,
    bothHeldSince,
  });

  if (local === "UP" && decision.action === "stop" && YIELD_RULES.has(decision.rule)) {
    // The peer may not have polled this host since it came back, nor announced: releasing now
    // would leave clients pointed at this host (they follow whoever announced last).
    let until: number | null = null;
    let who = "";
    for (const p of input.peers) {
      const back = h.backAt[p.name];
      if (back === undefined || p.name === self) continue;
      const t = back + h.intervalMs + YIELD_MARGIN_MS;
      if (until === null || t > until) [until, who] = [t, p.name];
    }
    if (until !== null && until > now) {
      return answerOf(
        "yield-hold",
        `${decision.reason}, but ${who} answered again only ${
          now - h.backAt[who]!
        } ms ago: ${self} keeps ${service} quietly until ${who} had an interval + ${YIELD_MARGIN_MS} ms to see it and announce`,
        { holdUntil: until },
      );
    }
  }
  const keeper = local === "UP" && !input.handlerRunning && !h.yieldHeld &&
    decision.action !== "stop";
  if (local === "UP" && !keeper) {
    const why = input.handlerRunning
      ? "its stop handler runs"
      : h.yieldHeld
      ? "its stop is held back"
      : decision.rule;
    return answerOf(
      "yielding",
      `${self} gives ${service} up (${why}), so it neither announces it nor hurries polls`,
    );
  }
  const after = stateAfter(local, decision);
  if (after === "RECOVER" && answer !== null && peer?.state != null && peer.state !== "FAIL") {
    const fast = Math.max(RECOVER_POLL_MIN_MS, Math.floor(answer.pollIntervalMs / 20));
    return answerOf(
      "recover-hurry",
      `${self} is RECOVER and ${peer.name} still shows ${service} ${peer.state}: ${
        fast < answer.pollIntervalMs
          ? `polls it every ${fast} ms to reclaim right after its stop`
          : `its interval (${answer.pollIntervalMs} ms) is already that short`
      }`,
      { pollInMs: fast < answer.pollIntervalMs ? fast : null },
    );
  }
  if (after !== "UP") {
    return answerOf(
      "not-holding",
      `${self} does not hold ${service} (${after}): nothing to announce`,
    );
  }
  if (answer === null || peer === undefined) {
    return answerOf("keeping", `${self} keeps ${service}; no peer answered just now`);
  }

  // This host keeps the service.
  const name = peer.name;
  const keeps = () => keepsWith(input, name);
  const keepFor = Math.min(10 * answer.pollIntervalMs, 3 * answer.pollIntervalMs + 500);
  const hurry = bothHeldSince !== null && now - bothHeldSince < keepFor &&
    KEEP_POLL_MS < answer.pollIntervalMs && (peer.reachable || keeps());
  const pollInMs = hurry ? KEEP_POLL_MS : null;
  const hurryNote = hurry
    ? `; polls ${name} every ${KEEP_POLL_MS} ms (for ${keepFor} ms at most) to announce again right after it yields`
    : "";
  const announce = (rule: HandOverRule, why: string) =>
    answerOf(
      rule,
      `${why}; ${self} keeps ${service} and announces its addresses again${hurryNote}`,
      { announce: true, pollInMs },
    );
  if (
    (answer.before === "UP" || answer.before === "RECOVER") && peer.state === "FAIL"
  ) {
    return announce(
      "peer-gave-up",
      `${name} gave ${service} up (${answer.before} -> FAIL): its last gratuitous ARP may have gone out since this host announced`,
    );
  }
  if (peer.reachable && peer.state === "UP" && !answer.heldBefore) {
    return announce(
      "peer-holds-too",
      `${name} shows ${service} UP too (a partition healed)`,
    );
  }
  if (answer.cameBack && keeps()) {
    return announce(
      "peer-back",
      `${name} answers again after being unreachable (${
        peer.state ?? "no record"
      }): it may have taken ${service} over and announced it meanwhile`,
    );
  }
  if (peer.reachable && peer.flapped === true) {
    return announce(
      "peer-changed-unseen",
      `${name}'s ${service} record changed more often between two polls than its state shows (now ${peer.state}): it may have taken it over and given it back unseen`,
    );
  }
  if (peer.state === "UP") {
    return answerOf(
      "both-hold",
      `${name} shows ${service} UP too and ${self} keeps it${
        hurry
          ? hurryNote
          : bothHeldSince !== null && now - bothHeldSince >= keepFor
          ? ` (${name} has not yielded within ${keepFor} ms: regular polls again)`
          : !peer.reachable && !keeps()
          ? ` (until ${name} counts as reachable again: then ${self} yields)`
          : ""
      }`,
      { pollInMs },
    );
  }
  return answerOf(
    "keeping",
    `${self} keeps ${service}; ${name} (${peer.state ?? "no record"}) brings nothing new`,
  );
}
