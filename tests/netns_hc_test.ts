/**
 * End to end in the namespace lab (tests/lab, docs/lab.md): two hosts run faild and failsh as in
 * `samples/ip_failover_linux` (service `vip`, master h1 with preempt, slave h2); hc runs on h1 and
 * checks h1's own web service. The web service dies while the host stays up (its faild and failsh
 * keep running): hc marks the check FAIL and writes `vip` FAIL into h1's faild, signed with the
 * cluster key. That is failsh's local veto (docs/decisions.md, "Health checks: the local veto"):
 * h1's failsh, still running, releases the VIP and does not take it back, and h2 takes the VIP; the
 * client is served by h2. When the web service returns, hc writes `vip` UP, the veto lifts, and h1
 * (master, preempt) takes the VIP back: exactly one holder again.
 *
 * Needs root, `ip netns` and `arping`; skips naming the missing Debian package otherwise.
 */
import assert from "node:assert/strict";
import { Lab, labFile, labUnavailable } from "./lab/netns.ts";
import type { ManagedProcess } from "./lab/exec.ts";
import { FAILD_PORT, REPO_ROOT, startFailover } from "./lab/failover.ts";

const PORT = 8080;
const HC_PORT = 7200;
/** failsh: poll interval, missed polls before a peer is FAIL, handler time limit (ms). */
const INTERVAL = 200;
const FALL = 3;
const HANDLER_TIMEOUT = 3000;
/** hc: the web check's interval, timeout, rise and fall; the faild action's time limit (ms). */
const HC_INTERVAL = 200;
const HC_TIMEOUT = 200;
const HC_RISE = 2;
const HC_FALL = 2;
const ACTION_TIMEOUT = 2000;
/** Scheduling slack on a shared, loaded machine (ms); not a performance figure. */
const SLACK = 5000;

/** failsh's poll time limit (shell/scheduler/scheduler.ts: the larger of 1 s and (fall + 1) intervals). */
const POLL_TIMEOUT = Math.max(1000, INTERVAL * (FALL + 1));
/** hc gives up on a probe 250 ms past its timeout (docs/hc.md, "Time bounds"). */
const HC_PROBE_LIMIT = HC_TIMEOUT + 250;
/** One poll of a faild, at its latest: the wait for the poll, then its time limit. */
const POLL = INTERVAL + POLL_TIMEOUT;
/** The client's per-attempt timeout (tests/lab/probe.ts default). */
const PROBE_TIMEOUT = 300;

/**
 * Worst case from the web dying to h2 serving, from the settings above: hc's `fall` failed probes,
 * the faild write, h1's poll of its own faild (the veto), h1's stop handler, h2's poll of h1 and
 * one flap wait, h2's start handler, one client attempt.
 */
const FAILOVER_BOUND = HC_FALL * HC_INTERVAL + HC_PROBE_LIMIT + ACTION_TIMEOUT + POLL +
  HANDLER_TIMEOUT + POLL + INTERVAL + HANDLER_TIMEOUT + PROBE_TIMEOUT + SLACK;

/**
 * Worst case from the web listening again to h1 serving: hc's `rise` probes, the faild write,
 * h1's poll (the veto lifts), h1's next tick (it reports its own state again), h2's poll of h1,
 * h2's stop handler, h1's poll of h2 and one flap wait, h1's reclaim (start) handler, one client
 * attempt.
 */
const RECOVERY_BOUND = HC_RISE * HC_INTERVAL + HC_PROBE_LIMIT + ACTION_TIMEOUT + POLL + INTERVAL +
  POLL + HANDLER_TIMEOUT + POLL + INTERVAL + HANDLER_TIMEOUT + PROBE_TIMEOUT + SLACK;

async function unavailableReason(): Promise<string | null> {
  // failsh's linux driver announces the VIP with arping.
  const lab = await labUnavailable(["arping"]);
  if (lab) return lab;
  for (const f of ["daemon/faild/faild.ts", "shell/failsh.ts", "daemon/hc/hc.ts"]) {
    if (!await Deno.stat(REPO_ROOT + f).then(() => true, () => false)) return `${f} is missing`;
  }
  return null;
}

const unavailable = await unavailableReason();

/** GET over bash's /dev/tcp inside a lab host (the lab is not reachable from here). */
async function getInside(lab: Lab, host: string, port: number, path: string): Promise<unknown> {
  const script = `exec 3<>/dev/tcp/127.0.0.1/${port} && ` +
    `printf 'GET ${path} HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n' >&3 && cat <&3`;
  const r = await lab.exec(host, ["timeout", "3", "bash", "-c", script], {
    check: false,
    timeoutMs: 5000,
    maxOutput: 4 << 20,
  });
  try {
    return JSON.parse(r.stdout.split("\r\n\r\n").slice(1).join("\r\n\r\n"));
  } catch {
    return null;
  }
}

async function waitUntil(
  what: string,
  f: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!await f()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the lab's web service on one host again and waits until it listens. */
async function restartService(lab: Lab, host: string): Promise<ManagedProcess> {
  const p = lab.spawn(host, [
    Deno.execPath(),
    "run",
    "--no-lock",
    "--allow-net",
    labFile("tcp_service.ts"),
    "--port",
    String(PORT),
    "--name",
    host,
  ], { label: `${host}-service-again`, stdin: true });
  await waitUntil(`the web service on ${host} to listen again`, async () => {
    const r = await lab.exec(host, ["ss", "-Hltn", `sport = :${PORT}`], {
      check: false,
      timeoutMs: 3000,
    });
    return r.stdout.includes(`:${PORT}`);
  }, 15_000);
  return p;
}

/** The `vip` record in a host's faild state file (written by faild), or `null`. */
async function faildRecord(
  dir: string,
): Promise<{ state: string; detail: string } | null> {
  try {
    const state = JSON.parse(await Deno.readTextFile(`${dir}/state.json`)) as {
      services: { name: string; state: string; detail: string }[];
    };
    return state.services.find((s) => s.name === "vip") ?? null;
  } catch {
    return null;
  }
}

Deno.test({
  name: "hc end to end: the primary's web dies, hc writes vip FAIL, failsh's local veto hands " +
    "the VIP to the standby, and back when the web returns" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 2 });
    const extra: ManagedProcess[] = [];
    try {
      const services = await lab.startServices(PORT);
      const cluster = await startFailover(lab, {
        intervalMs: INTERVAL,
        fall: FALL,
        preempt: true,
        handlerTimeoutMs: HANDLER_TIMEOUT,
      });
      const probe = lab.startProbe(PORT, { timeoutMs: PROBE_TIMEOUT });
      const watch = await lab.watchAddress();
      try {
        assert.ok(await probe.waitServedBy("h1", 20_000), "h1 serves the VIP at start");
        const h1 = cluster.hosts.get("h1")!;
        const hcfile = `${h1.dir}/Hcfile`;
        const faild = `http://127.0.0.1:${FAILD_PORT}`;
        await Deno.writeTextFile(
          hcfile,
          [
            "name hc-h1",
            "web:",
            `\ttcp host=127.0.0.1 port=${PORT} interval=${HC_INTERVAL}ms timeout=${HC_TIMEOUT}ms ` +
            `rise=${HC_RISE} fall=${HC_FALL}`,
            `\ton fail: faild url=${faild} key-file=cluster.key service=vip state=FAIL ` +
            `timeout=${ACTION_TIMEOUT}ms`,
            `\ton up: faild url=${faild} key-file=cluster.key service=vip state=UP ` +
            `timeout=${ACTION_TIMEOUT}ms`,
            "",
          ].join("\n"),
        );
        const hc = lab.spawn("h1", [
          Deno.execPath(),
          "run",
          "-A",
          `${REPO_ROOT}daemon/hc/hc.ts`,
          hcfile,
          "--listen",
          `127.0.0.1:${HC_PORT}`,
        ], { label: "h1-hc" });
        extra.push(hc);
        type Checks = {
          checks: {
            name: string;
            state: string;
            lastResult: { detail: string } | null;
            lastAction: { ok: boolean; detail: string } | null;
          }[];
        };
        const web = async () =>
          ((await getInside(lab, "h1", HC_PORT, "/v1/checks")) as Checks | null)
            ?.checks[0];
        await waitUntil(
          "hc reports web UP on h1 and its up action has run",
          async () => {
            const w = await web();
            return w?.state === "UP" && w.lastAction?.ok === true;
          },
          30_000,
        );
        // hc's UP at start matches what failsh holds: nothing moves.
        assert.deepEqual(await lab.holders(), ["h1"], "h1 still holds the VIP once hc runs");
        const addedBefore = watch.added.get("h1") ?? 0;

        // The fault: h1's web service dies; h1 itself, its faild and failsh stay up.
        const cutAt = Date.now();
        await services.get("h1")!.stop({ graceMs: 1000 });
        assert.ok(
          await probe.waitServedBy("h2", FAILOVER_BOUND),
          `h2 serves the VIP within ${FAILOVER_BOUND} ms after h1's web died`,
        );
        const holders = await lab.waitHolders(
          (h) => h.length === 1 && h[0] === "h2",
          FAILOVER_BOUND,
        );
        assert.deepEqual(holders, ["h2"], "exactly h2 holds the VIP");
        // The outage is measured up to a moment the client is served (by h2) again: attempts
        // that failed while h1 gave up the VIP may still be the last ones in the window when
        // the holders settle, and the report would show no restoration at all.
        assert.ok(await probe.waitServedBy("h2", FAILOVER_BOUND), "the client is served by h2");
        const outage = await probe.settledOutage(cutAt);
        console.log(
          `client-visible outage after the web died (hc vip FAIL, local veto): ${
            JSON.stringify(outage)
          }`,
        );
        assert.equal(outage.servedBy, "h2");
        const w = await web();
        assert.equal(w?.state, "FAIL", "hc reports web FAIL");
        assert.match(
          w!.lastResult!.detail,
          new RegExp(`cannot connect to 127\\.0\\.0\\.1:${PORT}`),
        );
        // h1's faild holds the FAIL hc wrote, and failsh did not write over it.
        const rec = await faildRecord(h1.dir);
        assert.equal(rec?.state, "FAIL", "h1's faild has vip FAIL");
        assert.ok(rec.detail.startsWith("hc hc-h1: web FAIL"), `detail: ${rec.detail}`);

        // The veto holds: over several polls h1 (master, preempt) neither retakes nor recovers,
        // and its failsh is alive and says why.
        await new Promise((r) => setTimeout(r, 2 * FALL * INTERVAL + HANDLER_TIMEOUT));
        assert.deepEqual(await lab.holders(), ["h2"], "h2 still holds the VIP while vetoed");
        assert.equal(h1.failsh.done, false, "h1's failsh still runs");
        const snap = await cluster.snapshot("h1");
        assert.ok(snap, "h1's failsh answers its monitor");
        assert.deepEqual(snap.addresses, [], "h1's failsh holds no address");
        const vip = snap.services.find((s) => s.name === "vip");
        assert.equal(vip?.state, "FAIL", "h1's failsh has vip FAIL");
        assert.match(vip.lastDecision?.reason ?? "", /local faild reports vip FAIL/);
        assert.ok(
          snap.events.some((e) =>
            e.message.includes("the local faild was set FAIL by") &&
            e.message.includes("hc hc-h1: web FAIL")
          ),
          "h1's failsh logged the veto with hc's detail",
        );
        assert.equal(watch.added.get("h1") ?? 0, addedBefore, "h1 never re-added the VIP");
        assert.equal((await faildRecord(h1.dir))?.state, "FAIL", "vip stays FAIL in h1's faild");

        // Recovery: the web service returns, hc writes vip UP, the veto lifts and h1 (master,
        // preempt) takes the VIP back.
        extra.push(await restartService(lab, "h1"));
        const backAt = Date.now();
        assert.ok(
          await probe.waitServedBy("h1", RECOVERY_BOUND),
          `h1 serves the VIP again within ${RECOVERY_BOUND} ms after its web returned`,
        );
        const back = await lab.waitHolders(
          (h) => h.length === 1 && h[0] === "h1",
          RECOVERY_BOUND,
        );
        assert.deepEqual(back, ["h1"], "exactly h1 holds the VIP after the recovery");
        assert.ok(await probe.waitServedBy("h1", RECOVERY_BOUND), "the client is served by h1");
        const recovery = await probe.settledOutage(backAt);
        console.log(
          `client-visible outage after the web returned (hc vip UP, preempt): ${
            JSON.stringify(recovery)
          }`,
        );
        assert.equal(recovery.servedBy, "h1");
        console.log(`VIP address events (ip monitor): ${watch.events.join("; ")}`);
        assert.equal((await web())?.state, "UP", "hc reports web UP again");
        // Settled: still exactly one holder some polls later, and failsh's own UP in faild.
        await new Promise((r) => setTimeout(r, 2 * FALL * INTERVAL));
        assert.deepEqual(await lab.holders(), ["h1"], "h1 alone holds the VIP");
        await waitUntil(
          "h1's faild shows vip UP",
          async () => (await faildRecord(h1.dir))?.state === "UP",
          10 * INTERVAL + SLACK,
        );
        assert.equal(h1.failsh.done, false, "h1's failsh still runs");
      } catch (e) {
        (e as Error).message += `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n` +
          `address events: ${watch.events.join("; ")}\n` + lab.diagnostics(30);
        throw e;
      } finally {
        await watch.stop();
        await probe.stop();
        for (const p of extra) await p.stop({ graceMs: 3000 });
        await cluster.stop();
      }
    } finally {
      await lab.teardown();
    }
  },
});
