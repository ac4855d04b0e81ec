/**
 * The requests a sandboxed script makes through its context, carried out by the supervisor:
 * polls signed with a key the script never sees, state set on the local faild, traps.
 */
import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import { call, makeHarness } from "./_sandbox_util.ts";
import {
  bodyDigest,
  parseAuthorization,
  RESPONSE_SIGNATURE_HEADER,
  signResponse,
  verifyRequest,
} from "../lib/sign.ts";
import type { ServiceRecord } from "../lib/types.ts";
import { FaildPool } from "../shell/faild_pool.ts";

const SECRET = "correct horse battery staple";

/** A fake faild: answers GET /v1/services and PUT /v1/services/:name, signing when asked. */
function fakeFaild() {
  const requests: { method: string; path: string; body: string; signed: boolean }[] = [];
  const record: ServiceRecord = {
    name: "web",
    state: "UP",
    lastChange: 1,
    changes: 1,
    detail: "",
    setBy: "x",
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const body = await req.text();
    const auth = req.headers.get("authorization");
    let nonce: string | null = null;
    if (auth) {
      const parts = parseAuthorization(auth);
      if (
        !verifyRequest(SECRET, parts, {
          method: req.method,
          path: url.pathname,
          digest: bodyDigest(body),
        })
      ) {
        return new Response("bad signature", { status: 401 });
      }
      nonce = parts.nonce;
    }
    requests.push({ method: req.method, path: url.pathname, body, signed: nonce !== null });
    const answer = req.method === "GET"
      ? JSON.stringify({ host: "beta", bootId: "b", now: Date.now(), services: [record] })
      : JSON.stringify({
        ...record,
        ...JSON.parse(body || "{}"),
        name: url.pathname.split("/").pop(),
      });
    const headers = new Headers({ "content-type": "application/json" });
    if (nonce !== null) {
      headers.set(
        RESPONSE_SIGNATURE_HEADER,
        signResponse(SECRET, { nonce, status: 200, body: answer }),
      );
    }
    return new Response(answer, { status: 200, headers });
  });
  return { server, requests, port: server.addr.port };
}

Deno.test("ctx.poll() and ctx.setState() go through failsh's pooled clients, which hold the key", async (t) => {
  const faild = fakeFaild();
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (dead.addr as Deno.NetAddr).port;
  dead.close();
  const keyDir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${keyDir}/cluster.key`, SECRET + "\n");
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1", port: ${faild.port}, key: "cluster" });
host("beta", { address: "127.0.0.1", port: ${faild.port}, key: "cluster" });
host("gone", { address: "127.0.0.1", port: ${deadPort} });
service("web", {
  masters: ["alpha"], slaves: ["beta", "gone"], interval: "1s",
  async start(ctx) {
    const beta = await ctx.poll("beta");
    ctx.log("beta " + JSON.stringify({ reachable: beta.reachable, states: beta.services.map((s) => s.state), latency: typeof beta.latencyMs }));
    const gone = await ctx.poll("gone");
    ctx.log("gone " + JSON.stringify({ reachable: gone.reachable, error: gone.error !== null }));
    await ctx.setState("RECOVER", "waiting for beta");
    return "UP";
  },
  stop: async () => "FAIL",
});
trap(async (event, ctx) => {
  try {
    await ctx.run(["nothing"]);
  } catch (e) {
    ctx.log("trap " + event.host + " " + e.name);
  }
});
`,
    {
      keys: { cluster: { file: `${keyDir}/cluster.key` } },
      faild: { url: `http://127.0.0.1:${faild.port}`, key: "cluster" },
    },
    {
      // As failsh wires it: the clients of the script's hosts, opened once it has declared them.
      poll: (host, o) => pool!.peerPoll(host, o),
      setState: (service, state, detail) => pool!.setState(service, state, detail),
    },
  );
  let pool: FaildPool | null = null;
  try {
    pool = await FaildPool.open(h.policy, await h.sandbox.start());
    assertEquals(await h.sandbox.invoke(call("web"), 10_000), "UP");

    await t.step("a poll of a declared host is signed with the policy's key", () => {
      const beta = h.logs.find((l) => l.message.startsWith("beta "));
      assertEquals(JSON.parse(beta!.message.slice(5)), {
        reachable: true,
        states: ["UP"],
        latency: "number",
      });
      assert(
        faild.requests.some((r) => r.method === "GET" && r.path === "/v1/services" && r.signed),
      );
    });
    await t.step("an unreachable host is reported, not thrown", () => {
      const gone = h.logs.find((l) => l.message.startsWith("gone "));
      assertEquals(JSON.parse(gone!.message.slice(5)), { reachable: false, error: true });
    });
    await t.step("setState sets the handler's own service on the local faild", () => {
      const put = faild.requests.find((r) => r.method === "PUT");
      assertEquals([put?.path, put?.signed], ["/v1/services/web", true]);
      assertEquals(JSON.parse(put!.body), { state: "RECOVER", detail: "waiting for beta" });
      assertEquals(h.sandbox.counters().requests.setState.allowed, 1);
    });
    await t.step("traps receive events and their requests are checked too", async () => {
      h.sandbox.trap({
        type: "host",
        host: "gone",
        service: null,
        state: "FAIL",
        previous: null,
        at: 1,
      });
      const deadline = Date.now() + 5000;
      while (!h.logs.some((l) => l.message.startsWith("trap ")) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(
        h.logs.find((l) => l.message.startsWith("trap "))?.message,
        "trap gone PolicyDeniedError",
      );
      assertEquals(h.sandbox.counters().traps.delivered, 1);
      const refusal = h.auditLines().find((l) => l.verdict === "refused");
      assertEquals(refusal?.service, null);
    });
    await t.step("the script never saw the secret", async () => {
      const script = await Deno.readTextFile(`${h.dir}/failover.ts`);
      assert(!script.includes(SECRET));
      assert(!h.sandbox.childCommand().some((a) => a.includes(keyDir)));
    });
  } finally {
    await h.close();
    pool?.close();
    await faild.server.shutdown();
    await Deno.remove(keyDir, { recursive: true });
  }
});

Deno.test("the scheduler can provide the poller and the state setter", async () => {
  const polled: string[] = [];
  const states: string[] = [];
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });
service("web", {
  masters: ["alpha"], slaves: ["beta"], interval: "1s",
  async start(ctx) {
    const r = await ctx.poll("beta");
    await ctx.setState(r.services[0].state, "copied");
    return ctx.peerState("beta");
  },
  stop: async () => "FAIL",
});
`,
    {},
    {
      poll: (host) => {
        polled.push(`${host.name}@${host.address}:${host.port}`);
        return Promise.resolve({
          host: host.name,
          reachable: true,
          services: [{
            name: "web",
            state: "RECOVER",
            lastChange: 0,
            changes: 0,
            detail: "",
            setBy: "",
          }],
          latencyMs: 1,
          error: null,
        });
      },
      setState: (service, state, detail) => {
        states.push(`${service}=${state} (${detail})`);
        return Promise.resolve();
      },
    },
  );
  try {
    await h.sandbox.start();
    const peers = {
      beta: [{
        name: "web",
        state: "UP" as const,
        lastChange: 0,
        changes: 0,
        detail: "",
        setBy: "",
      }],
    };
    assertEquals(await h.sandbox.invoke({ ...call("web"), peers }, 5000), "UP");
    assertEquals(polled, ["beta@127.0.0.2:7100"]);
    assertEquals(states, ["web=RECOVER (copied)"]);
  } finally {
    await h.close();
  }
});

Deno.test("a script that floods requests is refused beyond the in-flight bound", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => ctx.run(["sleep", "1"])));
    const refused = results.filter((r) => r.status === "rejected");
    ctx.log(refused.length + " " + (refused[0]?.reason?.message ?? ""));
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
    {
      programs: [{ name: "sleep", path: "/bin/sleep", args: [], rest: "[0-9.]+", timeoutMs: 5000 }],
    },
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 10_000), "UP");
    const [count, ...message] = h.logs[0]!.message.split(" ");
    assertEquals(count, "8");
    assertMatch(message.join(" "), /^Cannot run: the script already has 32 requests in progress$/);
  } finally {
    await h.close();
  }
});

Deno.test("close() kills the programs still running and leaves nothing behind", async () => {
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
trap(async (event, ctx) => {
  ctx.log("sleeping");
  await ctx.run(["sleep", "30"]);
});
`,
    { programs: [{ name: "sleep", path: "/bin/sleep", args: ["[0-9]+"], timeoutMs: 60_000 }] },
  );
  await h.sandbox.start();
  h.sandbox.trap({
    type: "host",
    host: "alpha",
    service: null,
    state: "UP",
    previous: null,
    at: 1,
  });
  const deadline = Date.now() + 5000;
  while (
    h.sandbox.counters().requests.run.allowed === 0 && !h.logs.length && Date.now() < deadline
  ) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 200));
  const started = performance.now();
  await h.close();
  assert(performance.now() - started < 5000, "close() did not wait for the 30 s program");
});
