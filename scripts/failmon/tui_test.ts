import assert from "node:assert/strict";
import { failoverSnapshot, sampleSnapshot } from "../../tests/fake_failsh.ts";
import {
  applyKey,
  initialState,
  type Key,
  parseKeys,
  renderScreen,
  servicesOf,
  type TuiState,
} from "./tui.ts";

function press(keys: Key[], snapshot = sampleSnapshot()): TuiState {
  let state = initialState();
  for (const k of keys) {
    const next = applyKey(state, k, snapshot);
    assert.notEqual(next, "quit");
    state = next as TuiState;
  }
  return state;
}

function screen(state: TuiState, snapshot = sampleSnapshot(), width = 120): string {
  return renderScreen({
    state,
    snapshot,
    status: { kind: "connected", since: 0 },
    url: "http://127.0.0.1:1848",
    width,
    height: 40,
    color: false,
  }).join("\n");
}

Deno.test("parseKeys decodes arrows, Tab and the original's letter keys", () => {
  assert.deepEqual(parseKeys("\x1b[A\x1b[B\x1b[C\x1b[D\x1bOB\t\x1b[Z"), [
    "up",
    "down",
    "right",
    "left",
    "down",
    "tab",
    "backtab",
  ]);
  assert.deepEqual(parseKeys("hlscq"), ["hosts", "services", "detail", "toggle", "quit"]);
  assert.deepEqual(parseKeys("\x03"), ["quit"]);
  assert.deepEqual(parseKeys("x\x1b[5~j"), ["down"], "unknown keys and sequences are ignored");
});

Deno.test("applyKey moves between the views like the original's keys", async (t) => {
  await t.step("l and Left show the services of the selected host", () => {
    assert.equal(press(["down", "services"]).view, "services");
    assert.equal(press(["down", "services"]).host, 1);
    assert.equal(press(["left"]).view, "services");
  });
  await t.step("s and Right show the service detail, h goes back to hosts", () => {
    assert.equal(press(["detail"]).view, "detail");
    assert.equal(press(["right", "hosts"]).view, "hosts");
  });
  await t.step("Tab cycles hosts, services, detail", () => {
    assert.equal(press(["tab"]).view, "services");
    assert.equal(press(["tab", "tab"]).view, "detail");
    assert.equal(press(["tab", "tab", "tab"]).view, "hosts");
    assert.equal(press(["backtab"]).view, "detail");
  });
  await t.step("selection stays within the list", () => {
    assert.equal(press(["down", "down", "down"]).host, 1);
    assert.equal(press(["up"]).host, 0);
    assert.equal(press(["services", "down", "down", "down"]).service, 1);
  });
  await t.step("c toggles last connect / last call; q quits", () => {
    assert.equal(press(["toggle"]).lastCall, true);
    assert.equal(press(["toggle", "toggle"]).lastCall, false);
    assert.equal(applyKey(initialState(), "quit", null), "quit");
  });
});

Deno.test("renderScreen shows hosts, then services, then a service's detail", () => {
  const hosts = screen(initialState());
  assert.match(hosts, /HOST\s+REACHABLE\s+LAST CONNECT\s+LATENCY\s+KERNEL\s+MISSES\s+SERVICES/);
  assert.match(hosts, /alpha \(self\)\s+yes/);
  assert.match(hosts, /beta\s+yes/);
  assert.match(screen(press(["toggle"])), /REACHABLE\s+LAST CALL\s+LATENCY/);

  const services = screen(press(["services"]));
  assert.match(services, /Services of alpha/);
  assert.match(services, /db\s+UP\s+master/);
  assert.match(services, /web\s+FAIL\s+slave/);

  // Services are sorted by name: db, web; select web and open its detail.
  const detail = screen(press(["services", "down", "detail"]));
  assert.match(detail, /Service web/);
  assert.match(detail, /Role\s+slave/);
  assert.match(detail, /Masters\s+beta/);
  assert.match(detail, /Interval\s+1\.0s/);
  assert.match(detail, /Last decision none: master beta is UP/);
  assert.match(detail, /Last handler\s+none yet/);
});

Deno.test("renderScreen marks an unreachable peer and its stale states", () => {
  const after = failoverSnapshot(sampleSnapshot());
  assert.match(screen(initialState(), after), /beta\s+NO\s.*connection refused/);
  const beta = screen(press(["down", "services"], after), after);
  assert.match(beta, /unreachable now: counts as FAIL/);
  assert.match(beta, /web\s+UP\?/);
  const detail = screen(press(["services", "down", "detail"], after), after);
  assert.match(detail, /Last decision start: master beta is FAIL/);
  assert.match(detail, /198\.18\.0\.100\/24 on eth0/);
});

Deno.test("renderScreen fits the terminal and shows a lost connection", () => {
  const lines = renderScreen({
    state: initialState(),
    snapshot: sampleSnapshot(),
    status: { kind: "lost", error: "connection refused", attempt: 3, retryInMs: 2000, since: 0 },
    url: "http://127.0.0.1:1848",
    width: 50,
    height: 12,
    color: false,
  });
  assert.equal(lines.length, 12);
  assert.ok(lines.every((l) => l.length === 50));
  assert.match(lines[1]!, /^ connection lost: connection refused; retrying in/);
  const wide = renderScreen({
    state: initialState(),
    snapshot: sampleSnapshot(),
    status: { kind: "lost", error: "connection refused", attempt: 3, retryInMs: 2000, since: 0 },
    url: "http://127.0.0.1:1848",
    width: 140,
    height: 12,
    color: false,
  });
  assert.match(
    wide[1]!,
    /retrying in 2\.0s \(attempt 3\) \(showing the last snapshot, from 20:00:00Z\)/,
  );
  assert.match(wide.join("\n"), /beta\s+yes/, "the last snapshot stays visible");
});

Deno.test("renderScreen never passes control characters from the network to the terminal", () => {
  const s = sampleSnapshot();
  s.hosts[1]!.lastError = "evil\x1b[2J\x1b]0;pwned\x07";
  const text = screen(initialState(), s);
  assert.ok(!text.includes("\x1b"), "no escape sequence from the data");
  assert.match(text, /evil\?\[2J\?\]0;pwned\?/);
});

Deno.test("servicesOf merges what failsh runs with what the local faild holds", () => {
  const s = sampleSnapshot();
  s.hosts[0]!.services.push({
    name: "extra",
    state: "UP",
    lastChange: 0,
    changes: 2,
    detail: "set by failc",
    setBy: "ops",
  });
  const rows = servicesOf(s, s.hosts[0]!);
  assert.deepEqual(rows.map((r) => [r.name, r.role]), [
    ["db", "master"],
    ["extra", "-"],
    ["web", "slave"],
  ]);
});

Deno.test("renderScreen shows each peer's kernel liveness in the hosts view", () => {
  const snapshot = sampleSnapshot();
  const beta = snapshot.hosts.find((h) => !h.self)!;
  const liveness = {
    state: "silent" as const,
    intervalMs: 10,
    fall: 5,
    stallGraceMs: 1000,
    unanswered: 5,
    silentMs: 52,
    rttMs: 0.05,
    lastAnswerAt: snapshot.now - 60,
    error: null,
    decisive: true,
  };
  beta.liveness = liveness;
  assert.match(screen(initialState(), snapshot), /beta\s+yes\s+.*ago\)\s+\S+\s+SILENT 52ms/);
  beta.liveness = { ...liveness, state: "alive", silentMs: 0, unanswered: 0, decisive: false };
  assert.match(screen(initialState(), snapshot), /beta\s+yes\s+.*ago\)\s+\S+\s+alive 0\.05ms/);
  assert.match(screen(initialState(), snapshot), /alpha \(self\)\s+yes\s+.*ago\)\s+\S+\s+-\s/);
});
