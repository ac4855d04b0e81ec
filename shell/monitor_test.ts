import assert from "node:assert/strict";
import { metricsText } from "./monitor.ts";
import type { FailshSnapshot, HostView } from "../lib/types.ts";
import { schedulerStats } from "./scheduler/stats.ts";

function hostView(name: string, more: Partial<HostView> = {}): HostView {
  return {
    name,
    url: `http://${name}:7100`,
    self: false,
    reachable: true,
    misses: 0,
    lastConnect: null,
    lastCall: null,
    latencyMs: null,
    lastError: null,
    services: [],
    ...more,
  };
}

Deno.test("metricsText() shows each probed peer's host liveness: state, last answer age, rtt", () => {
  const snapshot: FailshSnapshot = {
    host: "beta",
    startedAt: 0,
    now: 10_000,
    hosts: [
      hostView("beta", { self: true }),
      hostView("alpha", {
        reachable: false,
        liveness: {
          state: "silent",
          intervalMs: 10,
          fall: 5,
          stallGraceMs: 1000,
          unanswered: 6,
          silentMs: 62,
          rttMs: 0.045,
          lastAnswerAt: 9_500,
          error: null,
          decisive: true,
        },
      }),
      hostView("gamma", {
        liveness: {
          state: "unknown",
          intervalMs: 10,
          fall: 5,
          stallGraceMs: 1000,
          unanswered: 40,
          silentMs: 400,
          rttMs: null,
          lastAnswerAt: null,
          error: null,
          decisive: false,
        },
      }),
    ],
    services: [],
    addresses: [],
    events: [],
  };
  const text = metricsText(snapshot, schedulerStats());
  for (
    const line of [
      "# TYPE failsh_peer_liveness_state gauge",
      'failsh_peer_liveness_state{host="alpha",state="silent"} 1',
      'failsh_peer_liveness_state{host="alpha",state="alive"} 0',
      'failsh_peer_liveness_state{host="gamma",state="unknown"} 1',
      'failsh_peer_liveness_last_answer_age_seconds{host="alpha"} 0.5',
      'failsh_peer_liveness_rtt_ms{host="alpha"} 0.045',
      'failsh_peer_liveness_unanswered{host="alpha"} 6',
    ]
  ) assert.ok(text.split("\n").includes(line), `missing: ${line}`);
  assert.doesNotMatch(text, /liveness[a-z_]*\{host="beta"/, "this host is not probed");
  assert.doesNotMatch(text, /last_answer_age_seconds\{host="gamma"/, "gamma never answered");
  const none = metricsText(
    { ...snapshot, hosts: [hostView("beta", { self: true })] },
    schedulerStats(),
  );
  assert.doesNotMatch(none, /liveness/, "no liveness metrics without a probed peer");
});
