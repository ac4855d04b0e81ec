/**
 * The arbiter's rule for one service as a pure function, {@linkcode stepLease}: state, event and
 * time in; the next state, the verdict and a reason out. Tested row by row in `lease_test.ts`;
 * `EtcdArbiter` (`lease.ts`) carries it out against etcd.
 *
 * @module
 */
import {
  type ArbiterLossPolicy,
  type ArbiterState,
  type ArbiterTiming,
  type ArbiterVerdict,
} from "../script/arbiter_timing.ts";

/** One service's standing with the arbiter (plain data; {@linkcode stepLease} makes the next). */
export interface ServiceLease {
  /** The service. */
  service: string;
  /** Its state. */
  state: ArbiterState;
  /** Whether this host wants the service (the scheduler asked for it and has not given it up). */
  wanted: boolean;
  /** The epoch (the key's create revision) while the key is ours, else `null`. */
  epoch: string | null;
  /** Who holds the key when it is not ours (its value), if known. */
  holder: string | null;
  /** Monotonic time the acquire answer arrived, while the key is ours. */
  acquiredAt: number | null;
  /** Monotonic send time of the last keepalive (or grant) confirmed for this key. */
  confirmedSentAt: number | null;
  /** The lease TTL etcd returned at that renewal, in ms. */
  ttlMs: number;
  /** Monotonic time of the first failed request since the last answer, or `null`. */
  etcdDownSince: number | null;
  /** Whether every peer of the service answers and agrees this host holds it (failsafe). */
  peersAgree: boolean;
  /** Monotonic time the state was entered. */
  since: number;
}

/**
 * A service's initial standing: `none`.
 *
 * @param service The service.
 * @param now Monotonic time.
 * @returns The standing.
 *
 * @example
 * ```ts
 * import { initialLease } from "./lease.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(initialLease("web", 0).state, "none");
 * ```
 */
export function initialLease(service: string, now: number): ServiceLease {
  return {
    service,
    state: "none",
    wanted: false,
    epoch: null,
    holder: null,
    acquiredAt: null,
    confirmedSentAt: null,
    ttlMs: 0,
    etcdDownSince: null,
    peersAgree: false,
    since: now,
  };
}

/** What happened, as {@linkcode stepLease} takes it. */
export type LeaseEvent =
  /** Time passed (a deadline or a delay may be over). */
  | { type: "tick" }
  /** The scheduler wants the service (decide() would start it but for the arbiter). */
  | { type: "want" }
  /** The scheduler gave the service up: its address is gone (or was never added). */
  | { type: "unwant" }
  /** The acquire transaction succeeded; the lease's last renewal was sent at `leaseSentAt`. */
  | { type: "acquired"; epoch: string; leaseSentAt: number; ttlMs: number }
  /** The acquire transaction failed: the key exists, held by `holder` (its value). */
  | { type: "taken"; holder: string | null }
  /** A keepalive sent at `sentAt` renewed the lease and the key is confirmed on it. */
  | { type: "renewed"; sentAt: number; ttlMs: number }
  /** The confirmation found the key gone (`holder` null) or on another lease. */
  | { type: "not-owned"; holder: string | null }
  /** etcd answered that the lease does not exist any more (expired or revoked). */
  | { type: "lease-expired" }
  /** A request to etcd got no answer (or no member could serve it). */
  | { type: "unreachable"; error: string }
  /** Whether every peer of the service answers and agrees (for `keep-if-peers-agree`). */
  | { type: "peers"; agree: boolean };

/** What {@linkcode stepLease} needs besides the state and the event. */
export interface LeaseContext {
  /** This host's name (for reasons). */
  self: string;
  /** The timing. */
  timing: ArbiterTiming;
  /** What a holder does when etcd stops answering. */
  onArbiterLoss: ArbiterLossPolicy;
}

/** What {@linkcode stepLease} answers. */
export interface LeaseAnswer {
  /** The new standing. */
  lease: ServiceLease;
  /** `grant` only while `held` or `failsafe`. */
  verdict: ArbiterVerdict;
  /** The rule that decided (a row of `docs/arbiter.md`), e.g. `deadline`. */
  rule: string;
  /** One sentence naming the inputs. */
  reason: string;
  /** Monotonic time to call again with a `tick` (deadline or end of the delay), or `null`. */
  wakeAt: number | null;
}

/**
 * The deadline of a held key: `confirmedSentAt + ttl − margin`.
 *
 * @param lease The standing.
 * @param timing The timing.
 * @returns Monotonic time, or `null` when nothing was confirmed.
 *
 * @example
 * ```ts
 * import { arbiterTiming, deadlineOf, initialLease } from "./lease.ts";
 * import { deepEqual } from "node:assert/strict";
 * const l = { ...initialLease("web", 0), confirmedSentAt: 1000, ttlMs: 6000 };
 * deepEqual(deadlineOf(l, arbiterTiming()), 6000);
 * ```
 */
export function deadlineOf(lease: ServiceLease, timing: ArbiterTiming): number | null {
  return lease.confirmedSentAt === null
    ? null
    : lease.confirmedSentAt + lease.ttlMs - timing.marginMs;
}

/** The states in which the key is ours. */
export const KEYED: readonly ArbiterState[] = ["waiting-delay", "held", "failsafe"];

function ms(n: number): string {
  return `${Math.round(n)} ms`;
}

/**
 * The arbiter's rule for one service: from its standing, one event and the monotonic time, the
 * next standing, the verdict, the rule that decided and why. Pure: no clock, no I/O.
 *
 * @param lease The current standing.
 * @param event What happened.
 * @param now Monotonic time in ms.
 * @param ctx This host, the timing, the loss policy.
 * @returns The new standing, the verdict, the rule and reason, and when to tick next.
 *
 * @example
 * ```ts
 * import { arbiterTiming, initialLease, stepLease } from "./lease.ts";
 * import { deepEqual } from "node:assert/strict";
 * const ctx = { self: "h1", timing: arbiterTiming(), onArbiterLoss: "release" as const };
 * let a = stepLease(initialLease("web", 0), { type: "want" }, 0, ctx);
 * a = stepLease(a.lease, { type: "acquired", epoch: "7", leaseSentAt: 0, ttlMs: 6000 }, 10, ctx);
 * deepEqual([a.lease.state, a.verdict], ["waiting-delay", "deny"]);
 * a = stepLease(a.lease, { type: "tick" }, 3010, ctx);
 * deepEqual([a.lease.state, a.verdict], ["held", "grant"]);
 * a = stepLease(a.lease, { type: "tick" }, 5000, ctx); // 0 + 6000 − 1000: no renewal confirmed
 * deepEqual([a.lease.state, a.rule], ["lost", "deadline"]);
 * ```
 */
export function stepLease(
  lease: ServiceLease,
  event: LeaseEvent,
  now: number,
  ctx: LeaseContext,
): LeaseAnswer {
  const { self, timing } = ctx;
  const l: ServiceLease = { ...lease };
  const svc = l.service;
  let rule: string | null = null;
  let reason = "";
  const to = (state: ArbiterState, r: string, why: string) => {
    if (state !== l.state) l.since = now;
    l.state = state;
    rule = r;
    reason = why;
  };
  const forget = () => {
    l.epoch = null;
    l.acquiredAt = null;
    l.confirmedSentAt = null;
  };
  const backToAcquiring = (r: string, why: string) => {
    forget();
    if (l.wanted) to("acquiring", r, `${why}; ${self} tries to take the key again`);
    else to("none", r, why);
  };
  const epoch = () => `epoch ${l.epoch ?? "?"}`;

  switch (event.type) {
    case "want":
      l.wanted = true;
      if (l.state === "none") {
        l.holder = null;
        to(
          "acquiring",
          "want",
          `${self} wants ${svc}: it takes the key only if it does not exist (create_revision == 0)`,
        );
      }
      break;
    case "unwant":
      l.wanted = false;
      if (l.state !== "none") {
        forget();
        l.holder = null;
        to(
          "none",
          "unwant",
          `${self} gave ${svc} up (its address is gone); the key is deleted if it is still ours`,
        );
      }
      break;
    case "acquired":
      l.etcdDownSince = null;
      if (l.state === "acquiring") {
        l.epoch = event.epoch;
        l.holder = null;
        l.acquiredAt = now;
        l.confirmedSentAt = event.leaseSentAt;
        l.ttlMs = event.ttlMs;
        to(
          "waiting-delay",
          "acquired",
          `${self} took the key of ${svc} (${epoch()}); it waits the takeover delay of ${
            ms(timing.takeoverDelayMs)
          } before holding it, so that a paused old holder has released`,
        );
      } else if (l.state === "failsafe") {
        l.epoch = event.epoch;
        l.holder = null;
        l.acquiredAt = now;
        l.confirmedSentAt = event.leaseSentAt;
        l.ttlMs = event.ttlMs;
        to(
          "held",
          "reacquired",
          `etcd answers again and the key of ${svc} was free: ${self}, which kept the service meanwhile, took it again (${epoch()})`,
        );
      }
      break;
    case "taken":
      l.etcdDownSince = null;
      if (l.state === "acquiring") {
        l.holder = event.holder;
      } else if (l.state === "failsafe") {
        l.holder = event.holder;
        to(
          "lost",
          "failsafe-taken",
          `${
            event.holder ?? "another host"
          } took the key of ${svc} while ${self} kept it without etcd: ${self} must release it`,
        );
      }
      break;
    case "renewed":
      l.etcdDownSince = null;
      if (KEYED.includes(l.state)) {
        if (l.confirmedSentAt === null || event.sentAt >= l.confirmedSentAt) {
          l.confirmedSentAt = event.sentAt;
          l.ttlMs = event.ttlMs;
        }
        if (l.state === "failsafe") {
          to(
            "held",
            "etcd-back",
            `etcd answers again and the key of ${svc} is still on ${self}'s lease (${epoch()})`,
          );
        }
      }
      break;
    case "not-owned": {
      l.etcdDownSince = null;
      const who = event.holder === null ? "is gone" : `is held by ${event.holder}`;
      if (l.state === "held" || l.state === "failsafe") {
        l.holder = event.holder;
        to(
          "lost",
          "key-lost",
          `the key of ${svc} ${who} (${self} had ${epoch()}): ${self} must release`,
        );
      } else if (l.state === "waiting-delay") {
        backToAcquiring(
          "key-lost-in-delay",
          `the key of ${svc} ${who} before the takeover delay ended`,
        );
        l.holder = event.holder;
      }
      break;
    }
    case "lease-expired":
      l.etcdDownSince = null;
      if (l.state === "held") {
        to(
          "lost",
          "lease-expired",
          `etcd says ${self}'s lease expired (${svc}, ${epoch()}): ${self} must release`,
        );
      } else if (l.state === "waiting-delay") {
        backToAcquiring(
          "lease-expired-in-delay",
          `${self}'s lease expired before the takeover delay ended`,
        );
      } else if (l.state === "failsafe") {
        l.confirmedSentAt = null;
        rule = "failsafe-reacquire";
        reason =
          `etcd answers again but ${self}'s lease expired: ${self} keeps ${svc} only if it can take the key again at once`;
      }
      break;
    case "unreachable":
      if (l.etcdDownSince === null) l.etcdDownSince = now;
      break;
    case "peers":
      l.peersAgree = event.agree;
      break;
    case "tick":
      break;
  }

  // The clock's part of the rule.
  const deadline = deadlineOf(l, timing);
  if (l.state === "waiting-delay") {
    if (deadline === null || now >= deadline) {
      backToAcquiring(
        "deadline-before-start",
        `no renewal of ${self}'s key of ${svc} was confirmed in time (deadline passed during the takeover delay)`,
      );
    } else if (now >= (l.acquiredAt ?? now) + timing.takeoverDelayMs) {
      to(
        "held",
        "takeover-delay-over",
        `${self} holds ${svc} (${epoch()}): the takeover delay of ${
          ms(timing.takeoverDelayMs)
        } is over and its renewals are confirmed`,
      );
    }
  }
  if (l.state === "held" && (deadline === null || now >= deadline)) {
    const since = l.confirmedSentAt === null ? "ever" : `${ms(now - l.confirmedSentAt)} ago`;
    const late = `the last confirmed renewal of ${svc}'s key was sent ${since} (TTL ${
      ms(l.ttlMs)
    }, margin ${ms(timing.marginMs)})`;
    if (ctx.onArbiterLoss === "keep-if-peers-agree" && l.etcdDownSince !== null && l.peersAgree) {
      to(
        "failsafe",
        "failsafe",
        `${late}; etcd has not answered for ${
          ms(now - l.etcdDownSince)
        } but every peer answers and agrees, so ${self} keeps it (keep-if-peers-agree)`,
      );
    } else {
      const why = l.etcdDownSince !== null
        ? `etcd has not answered for ${ms(now - l.etcdDownSince)}`
        : "no renewal was confirmed";
      to(
        "lost",
        "deadline",
        `${late}; ${why}: ${self} releases it before etcd can let anyone else take the key`,
      );
    }
  }
  if (l.state === "failsafe" && !l.peersAgree) {
    to(
      "lost",
      "failsafe-disagree",
      `etcd does not answer and a peer of ${svc} no longer answers or agrees: ${self} releases it`,
    );
  }

  // The reason when nothing changed: the current standing, with its numbers.
  if (rule === null) {
    switch (l.state) {
      case "none":
        rule = "idle";
        reason = `${self} does not want ${svc}`;
        break;
      case "acquiring":
        rule = l.holder !== null ? "key-held" : "acquiring";
        reason = l.holder !== null
          ? `${l.holder} holds the key of ${svc}; ${self} waits until it is gone (a TTL is no timer to trust)`
          : `${self} is taking the key of ${svc}`;
        if (l.etcdDownSince !== null) {
          reason += `; etcd has not answered for ${ms(now - l.etcdDownSince)}`;
        }
        break;
      case "waiting-delay":
        rule = "takeover-delay";
        reason = `${self} took the key of ${svc} (${epoch()}) and waits ${
          ms((l.acquiredAt ?? now) + timing.takeoverDelayMs - now)
        } more before holding it`;
        break;
      case "held":
        rule = "held";
        reason = `${self} holds ${svc} (${epoch()}): the last confirmed renewal was sent ${
          ms(now - (l.confirmedSentAt ?? now))
        } ago; without another it releases in ${ms((deadline ?? now) - now)}`;
        if (l.etcdDownSince !== null) {
          reason += ` (etcd has not answered for ${ms(now - l.etcdDownSince)})`;
        }
        break;
      case "failsafe":
        rule = "failsafe";
        reason = `etcd has not answered for ${
          ms(now - (l.etcdDownSince ?? now))
        }; ${self} keeps ${svc} (${epoch()}) while every peer answers and agrees`;
        break;
      case "lost":
        rule = "lost";
        reason = `${self} lost ${svc}: its address must go; nothing is taken until that is done`;
        break;
    }
  }

  let wakeAt: number | null = null;
  const d = deadlineOf(l, timing);
  if (l.state === "held") wakeAt = d;
  if (l.state === "waiting-delay") {
    const end = (l.acquiredAt ?? now) + timing.takeoverDelayMs;
    wakeAt = d === null ? end : Math.min(d, end);
  }
  return {
    lease: l,
    verdict: l.state === "held" || l.state === "failsafe" ? "grant" : "deny",
    rule: rule ?? "idle",
    reason,
    wakeAt,
  };
}
