/**
 * Hostile scripts against the channel between the supervisor and its child: a flood of
 * refused requests with no reply ever read, replies piling up towards a child that does not
 * read, a forged `trapdone` with hundreds of thousands of errors, and privileged requests made
 * outside any running handler (the script's top level, a timer after the handler returned).
 * Each runs a real sandboxed child; the flood also runs against a real failsh process.
 */
import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, makeHarness, MOD_URL, until } from "./_sandbox_util.ts";
import { startFaild } from "../daemon/faild/faild.ts";
import { Logger } from "../lib/log.ts";
import type { FailshSnapshot } from "../lib/types.ts";
import {
  MAX_QUEUED_BYTES,
  MAX_REQUESTS_PER_SECOND,
  MAX_TRAP_ERRORS_LOGGED,
} from "../shell/sandbox/child.ts";
import { ScriptError } from "../shell/errors.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/**
 * Source of a function the script calls from a timer after its handler returned: it writes
 * refused takeover requests straight onto the channel for `ms`, never reading a reply, then
 * exits (the attack as found: 2 s froze the supervisor for minutes).
 */
function floodSource(ms: number): string {
  return `function flood() {
  const enc = new TextEncoder();
  const end = Date.now() + ${ms};
  for (let id = 1_000_000; Date.now() < end; id++) {
    const line = enc.encode("\\x1eFAILSH1 " + JSON.stringify({ t: "req", id, inv: null,
      op: "takeover", args: { address: "203.0.113.1/32", device: "eth0" } }) + "\\n");
    for (let off = 0; off < line.length;) off += Deno.stdout.writeSync(line.subarray(off));
  }
  Deno.exit(0);
}`;
}

Deno.test("a child flooding refused requests without reading replies is killed at the bound, alone", async (t) => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
${floodSource(2000)}
service("flood", {
  masters: ["alpha"], interval: "1s",
  async start() { setTimeout(flood, 0); return "UP"; },
  stop: async () => "FAIL",
});
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
    {},
    { children: 2 },
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("flood"), 5000), "UP");
    await until("the first refused request", () => h.auditLines().length > 0);

    await t.step("another service's handler runs during the flood", async () => {
      assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    });

    await t.step("the flooding child is killed at the request bound, saying why", async () => {
      const kill = await until(
        "the flooding child's kill",
        () => h.events.find((e) => e.msg === "killing the script's child") ?? null,
      );
      assertMatch(
        String(kill.reason),
        new RegExp(`it sent more than ${MAX_REQUESTS_PER_SECOND} requests in one second`),
      );
    });

    await t.step("the refusals logged are bounded too", () => {
      const audited = h.auditLines().filter((l) => l.verdict === "refused").length;
      const counted = h.sandbox.counters().requests.takeover.refused;
      assert(counted <= MAX_REQUESTS_PER_SECOND + 1, `${counted} refusals counted`);
      assert(audited > 0 && audited <= counted, `${audited} of ${counted} refusals audited`);
    });

    await t.step("the flooding service's next handler gets a fresh child", async () => {
      assertEquals(await h.sandbox.invoke(call("flood", "stop"), 5000), "FAIL");
      assertEquals(await h.sandbox.invoke(call("web", "stop"), 5000), "FAIL");
    });
  } finally {
    await h.close();
  }
});

Deno.test("a child that does not read its replies is killed when they pass the queue bound", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("deaf", {
  masters: ["alpha"], interval: "1s", timeouts: "20s",
  start(ctx) {
    // Ask for big outputs, then keep the event loop busy so that no reply is ever read.
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      ctx.run(["zeros", "-c", "65536", "/dev/zero"]).catch(() => {});
      const pause = Date.now() + 5;
      while (Date.now() < pause) { /* not reading */ }
    }
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
    {
      programs: [{ name: "zeros", path: "/usr/bin/head", args: ["-c", "[0-9]+", "/dev/zero"] }],
    },
  );
  try {
    await h.sandbox.start();
    await rejects(h.sandbox.invoke(call("deaf"), 20_000), (e: Error) => {
      assert(e instanceof ScriptError, `${e.name}: ${e.message}`);
      assertMatch(
        e.message,
        new RegExp(
          `^Handler start of deaf was interrupted: it did not read its replies \\(more than ${
            MAX_QUEUED_BYTES / 1024 / 1024
          } MiB waiting\\)`,
        ),
      );
      return true;
    });
    assertEquals(await h.sandbox.invoke(call("deaf", "stop"), 5000), "FAIL");
  } finally {
    await h.close();
  }
});

Deno.test("a forged trapdone with 300 000 errors is a protocol error, not 300 000 log lines", async () => {
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
trap(() => {
  // The main child numbers trap events 1, 2, 3…: answer for the one running now.
  const errors = "{}," .repeat(300_000).slice(0, -1);
  const line = "\\x1eFAILSH1 " + '{"t":"trapdone","id":1,"errors":[' + errors + "]}\\n";
  const data = new TextEncoder().encode(line);
  for (let off = 0; off < data.length;) off += Deno.stdout.writeSync(data.subarray(off));
});
trap(() => { throw new RangeError("a real failure"); });
`,
    {},
  );
  try {
    await h.sandbox.start();
    h.sandbox.trap({
      type: "host",
      host: "beta",
      service: null,
      state: "FAIL",
      previous: null,
      at: 1,
    });
    const kill = await until(
      "the main child's kill",
      () => h.events.find((e) => e.msg === "killing the script's child") ?? null,
    );
    assertMatch(
      String(kill.reason),
      /it broke the sandbox protocol: trapdone reports 300000 errors for 2 traps/,
    );
    const logged = h.events.filter((e) => e.msg === "trap failed").length;
    assertEquals(logged, 0, "nothing of the forged list is logged");
    assertEquals(h.sandbox.counters().traps.errors, 0);
  } finally {
    await h.close();
  }
});

Deno.test("the errors of many failing traps are all counted, a few logged", async () => {
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
for (let i = 0; i < 200; i++) trap(() => { throw new RangeError("trap " + i + " failed"); });
`,
    {},
  );
  try {
    await h.sandbox.start();
    h.sandbox.trap({
      type: "host",
      host: "b",
      service: null,
      state: "FAIL",
      previous: null,
      at: 1,
    });
    await until("the trap errors", () => h.sandbox.counters().traps.errors === 200);
    const lines = h.events.filter((e) => e.msg === "trap failed" || e.msg === "traps failed");
    assertEquals(lines.length, MAX_TRAP_ERRORS_LOGGED + 1);
    assertEquals(lines[0]?.error, "RangeError: trap 0 failed");
    assertEquals([lines.at(-1)?.msg, lines.at(-1)?.more], [
      "traps failed",
      200 - MAX_TRAP_ERRORS_LOGGED,
    ]);
  } finally {
    await h.close();
  }
});

Deno.test("privileged requests outside a running handler or trap are refused", async (t) => {
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1" });
// At the top level: no handler runs; forge a request on the channel.
{
  const line = "\\x1eFAILSH1 " + JSON.stringify({ t: "req", id: 1, inv: null, op: "takeover",
    args: { address: "198.18.0.100/32", device: "eth0" } }) + "\\n";
  Deno.stdout.writeSync(new TextEncoder().encode(line));
}
let saved = null;
service("web", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    saved = ctx;
    setTimeout(async () => {
      for (const [what, p] of [
        ["takeover", () => saved.takeover("198.18.0.100/32", { device: "eth0" })],
        ["run", () => saved.run(["true"])],
        ["poll", () => saved.poll("alpha")],
      ]) {
        try {
          await p();
          console.log("LATE " + what + " allowed");
        } catch (e) {
          console.log("LATE " + what + " " + e.name + ": " + e.message);
        }
      }
    }, 50);
    return "UP";
  },
  stop: async () => "FAIL",
});
trap(async (event, ctx) => {
  const r = await ctx.run(["true"]);
  ctx.log("trap ran true: " + r.code);
});
`,
    {
      addresses: [{ prefix: "198.18.0.100/32", devices: ["eth0"] }],
      programs: [{ name: "true", path: "/bin/true", args: [] }],
    },
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    await until(
      "the late requests",
      () => h.output.filter((l) => l.startsWith("LATE ")).length === 3,
    );

    await t.step("the script gets a typed error naming the rule", () => {
      const late = h.output.filter((l) => l.startsWith("LATE "));
      assertEquals(late, [
        `LATE takeover PolicyDeniedError: ${outside("take over 198.18.0.100/32")}`,
        `LATE run PolicyDeniedError: ${outside("run true")}`,
        `LATE poll PolicyDeniedError: ${outside("poll alpha")}`,
      ]);
    });

    await t.step("nothing was taken over", () => {
      assertEquals(h.sandbox.heldAddresses(), []);
    });

    await t.step("each refusal is one audit line, the top-level ones included", () => {
      // The top level runs in every child started (main, and the one serving web).
      const children = h.sandbox.counters().children.started;
      const lines = h.auditLines();
      assertEquals(
        lines.map((l) => [l.service, (l.request as { op: string }).op, l.verdict]),
        [
          ...Array.from({ length: children }, () => [null, "takeover", "refused"]),
          [null, "takeover", "refused"],
          [null, "run", "refused"],
          [null, "poll", "refused"],
        ],
      );
      assertMatch(String(lines[0]?.reason), /outside a running handler or trap/);
    });

    await t.step("a running trap may still run a program of the policy", async () => {
      h.sandbox.trap({
        type: "host",
        host: "alpha",
        service: null,
        state: "UP",
        previous: null,
        at: 1,
      });
      await until("the trap's log", () => h.logs.some((l) => l.message === "trap ran true: 0"));
      assertEquals(h.auditLines().at(-1)?.verdict, "done");
    });
  } finally {
    await h.close();
  }
});

function outside(what: string): string {
  return `Cannot ${what}: privileged requests are allowed only while a handler or trap runs (this one came from outside a running handler or trap: the script's top level, or a timer or promise left running after its handler returned)`;
}

Deno.test("a real failsh stays live while its script floods it: monitor, other services, SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-hostile-flood-" });
  const key = "flood-test-secret";
  const faild = await startFaild({
    listen: "127.0.0.1:0",
    community: `*  ${key}  RW\n`,
    name: "alpha",
    logger: new Logger({ level: "error", sink: () => {} }),
    nonceSlots: 1 << 12,
  });
  const monitorPort = freePort();
  const monitor = `http://127.0.0.1:${monitorPort}`;
  let child: Deno.ChildProcess | null = null;
  try {
    await Deno.writeTextFile(`${dir}/key`, key + "\n", { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/policy.json`,
      JSON.stringify({
        host: "alpha",
        faild: { url: faild.url, key: "k" },
        keys: { k: { file: `${dir}/key` } },
        addresses: [{ prefix: "127.0.0.100/32", devices: ["lo"] }],
        netDriver: "simulated",
        monitor: `127.0.0.1:${monitorPort}`,
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/dump.json`,
      }),
    );
    // flood starts at once and floods for 2 s; web starts during the flood (longer grace).
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `import { host, service } from ${JSON.stringify(MOD_URL)};
host("alpha", { address: "127.0.0.1", port: ${faild.addr.port}, key: "k" });
host("beta", { address: "127.0.0.1", port: ${freePort()}, key: "k" });
${floodSource(2000)}
service("flood", {
  masters: ["alpha"], slaves: ["beta"], interval: "100ms", fall: 2, grace: "200ms",
  async start() { setTimeout(flood, 0); return "UP"; },
  async stop() { return "FAIL"; },
});
service("web", {
  masters: ["alpha"], slaves: ["beta"], interval: "100ms", fall: 2, grace: "1500ms",
  async start(ctx) { await ctx.takeover("127.0.0.100/32", { device: "lo" }); return "UP"; },
  async stop(ctx) { await ctx.release("127.0.0.100/32", { device: "lo" }); return "FAIL"; },
});
`,
    );
    child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}shell/failsh.ts`,
        "--policy",
        `${dir}/policy.json`,
        `${dir}/failover.ts`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const snap = async () =>
      await (await fetch(`${monitor}/v1/snapshot`, { signal: AbortSignal.timeout(2000) }))
        .json() as FailshSnapshot;
    await until(
      "the flood to begin",
      async () =>
        (await Deno.readTextFile(`${dir}/audit.log`).catch(() => "")).includes('"refused"'),
      30_000,
    );

    // While the flood lasts (2 s from its first refusal), the monitor keeps answering.
    const floodEnds = Date.now() + 2500;
    let answered = 0;
    while (Date.now() < floodEnds) {
      const s = await snap().catch((e) => {
        throw new Error(`The monitor port did not answer during the flood: ${e}`);
      });
      assert(s.services.length === 2);
      answered++;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(answered >= 2, `the monitor answered ${answered} times`);

    // web is started during (or right after) the flood.
    const s = await until("web UP with its address, seen on the monitor port", async () => {
      const s = await snap().catch(() => null);
      return s?.services.find((x) => x.name === "web")?.state === "UP" && s.addresses.length === 1
        ? s
        : null;
    }, 10_000);
    assertEquals(s.addresses[0]?.address, "127.0.0.100/32");

    child.kill("SIGTERM");
    const status = await Promise.race([
      child.status,
      new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
    ]);
    assert(status !== null, "failsh exits on SIGTERM during the attack");
    child = null;
    assertEquals(status.code, 0);
    assertMatch(await Deno.readTextFile(`${dir}/audit.log`), /sim-addr-del/);
  } finally {
    if (child) {
      child.kill("SIGKILL");
      await child.status;
    }
    await faild.close();
    await Deno.remove(dir, { recursive: true });
  }
});

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
