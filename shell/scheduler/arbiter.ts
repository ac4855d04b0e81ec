/**
 * The scheduler's side of the arbiter: the link it is given (failsh's `EtcdArbiter`, simulate's
 * scripted one), decide()'s `arbiter` input from it, wanting and giving up a service's key as the
 * decisions go, and how the arbiter's standing shows in the logs and the snapshot.
 *
 * @module
 */
import type { ArbiterView } from "../../lib/types.ts";
import type { Decision, DecisionInput } from "./decide.ts";
import type { ServiceRuntime } from "./service.ts";

/**
 * What the scheduler needs of an arbiter (`EtcdArbiter` of `shell/arbiter/lease.ts` is one).
 * Call {@linkcode Scheduler.arbiterChanged} on every change of a service's standing.
 */
export interface ArbiterLink {
  /**
   * The verdict: `grant` only while this host holds the key and its takeover delay is over
   * (`undefined`: no arbiter for the service, as a simulation may say).
   */
  verdict(service: string): "grant" | "deny" | undefined;
  /** This host would take or holds the service: acquire its key (idempotent). */
  want(service: string): void;
  /** The service's addresses are gone: forget it, delete the key if still ours (idempotent). */
  unwant(service: string): void;
  /**
   * The standing shown by the monitor, the logs and the faild record; `etcdReachable: false`
   * turns a `deny` into decide()'s `unreachable`.
   */
  status(service: string): ArbiterView & { wanted: boolean; rule: string; etcdReachable?: boolean };
}

/** An arbiter link's standing of a service. */
export type ArbiterStatus = ReturnType<ArbiterLink["status"]>;

/**
 * decide()'s `arbiter` input: the link's verdict, `unreachable` for a denial without etcd; with
 * no link, the plain verdict function (if any).
 *
 * @param link The arbiter link, if any.
 * @param plain A plain verdict per service (tests), used without a link.
 * @param service The service.
 * @returns The input.
 */
export function arbiterVerdict(
  link: ArbiterLink | undefined,
  plain: ((service: string) => "grant" | "deny" | undefined) | undefined,
  service: string,
): DecisionInput["arbiter"] {
  if (!link) return plain?.(service);
  const v = link.verdict(service);
  return v === "deny" && link.status(service).etcdReachable === false ? "unreachable" : v;
}

/**
 * Wants or gives up the service's arbiter key as the decision goes: wanted while the service is
 * not `FAIL`, a handler runs, or the decision would take it (start, reclaim, recover, or
 * `arbiter-veto`); given up once the service is `FAIL` and the decision neither takes nor waits.
 * A lost key is given up (acknowledged) only once the service is `FAIL` again: its addresses are
 * gone.
 *
 * @param link The arbiter link, if any (nothing to do without one).
 * @param svc The service.
 * @param busy Whether a handler of the service runs.
 * @param decision The decision just made.
 */
export function steerArbiter(
  link: ArbiterLink | undefined,
  svc: ServiceRuntime,
  busy: boolean,
  decision: Decision,
): void {
  if (!link) return;
  const name = svc.decl.name;
  let st = link.status(name);
  if (st.state === "lost") {
    if (svc.state !== "FAIL" || busy) return;
    link.unwant(name);
    st = link.status(name);
  }
  const takes = decision.action === "start" || decision.action === "reclaim" ||
    decision.action === "recover" || decision.rule === "arbiter-veto";
  if (svc.state !== "FAIL" || busy || takes) {
    if (!st.wanted) link.want(name);
  } else if (st.wanted && decision.action !== "wait") {
    link.unwant(name);
  }
}

/**
 * The arbiter's part of the monitor's view of a service.
 *
 * @param link The arbiter link, if any.
 * @param service The service.
 * @returns The view, or `undefined` without an arbiter.
 */
export function arbiterView(
  link: ArbiterLink | undefined,
  service: string,
): ArbiterView | undefined {
  if (!link) return undefined;
  const { state, verdict, epoch, holder, reason, deadlineInMs } = link.status(service);
  return { state, verdict, epoch, holder, reason, deadlineInMs };
}

/**
 * The arbiter's part of a decision's log line and fields.
 *
 * @param link The arbiter link, if any.
 * @param service The service.
 * @returns The text to append (empty without an arbiter) and the log fields.
 */
export function arbiterNote(
  link: ArbiterLink | undefined,
  service: string,
): { text: string; fields: { arbiter?: string; epoch?: string | null } } {
  const arb = link?.status(service);
  if (!arb) return { text: "", fields: {} };
  return {
    text: ` [arbiter ${arb.state}${arb.epoch ? `, epoch ${arb.epoch}` : ""}]`,
    fields: { arbiter: arb.state, epoch: arb.epoch },
  };
}

/**
 * The event line of a change of the arbiter's standing.
 *
 * @param service The service.
 * @param st Its standing.
 * @returns The line.
 */
export function arbiterChangeText(service: string, st: ArbiterStatus): string {
  return `${service}: arbiter ${st.state} (${st.verdict}${
    st.epoch ? `, epoch ${st.epoch}` : ""
  }) — ${st.reason}`;
}
