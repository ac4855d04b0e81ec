/**
 * A handler that hangs, or loops forever, is killed at its time limit and reported, and the
 * other services' handlers keep running (their child is not affected; a killed child is
 * restarted for the next call).
 */
import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, makeHarness } from "./_sandbox_util.ts";
import { ScriptError, TimeoutError } from "../shell/errors.ts";
import { parsePolicy } from "../shell/sandbox/policy.ts";
import { createSandbox } from "../shell/sandbox/sandbox.ts";
import { Logger } from "../lib/log.ts";
import { needs } from "./_programs.ts";

const SCRIPT = `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
let calls = 0;
service("hang", {
  masters: ["alpha"], interval: "1s",
  start: (ctx) => new Promise(() => { ctx.log("hanging"); }),
  stop: () => "FAIL",
});
service("spin", {
  masters: ["alpha"], interval: "1s",
  start(ctx) { ctx.log("spinning"); while (true) { /* never yields */ } },
  stop: () => { calls++; return calls === 1 ? "FAIL" : "RECOVER"; },
});
service("web", {
  masters: ["alpha"], interval: "1s",
  start: () => "UP",
  stop: () => "FAIL",
  reclaim: async (ctx) => {
    await new Promise((r) => setTimeout(r, 50));
    return ctx.signal.aborted ? "FAIL" : "UP";
  },
});
`;

Deno.test("a handler that hangs or loops forever is killed and the other services go on", async (t) => {
  const h = await makeHarness(SCRIPT, {});
  try {
    await h.sandbox.start();

    await t.step("a handler awaiting a promise that never settles times out", async () => {
      const started = performance.now();
      await rejects(h.sandbox.invoke(call("hang"), 300), (e: Error) => {
        assert(e instanceof TimeoutError, `a TimeoutError, got ${e.name}`);
        assertMatch(e.message, /^Handler start of hang timed out after 300 ms/);
        return true;
      });
      assert(performance.now() - started < 10_000, "rejected near its time limit");
    });

    await t.step("a handler looping forever (event loop blocked) is killed", async () => {
      const concurrent = h.sandbox.invoke(call("web"), 5000);
      await rejects(h.sandbox.invoke(call("spin"), 300), (e: Error) => {
        assert(e instanceof TimeoutError);
        assertMatch(e.message, /^Handler start of spin timed out after 300 ms/);
        return true;
      });
      // web's handler ran in its own child, untouched by the loop.
      assertEquals(await concurrent, "UP");
    });

    await t.step("the next call restarts the killed child transparently", async () => {
      assertEquals(await h.sandbox.invoke(call("spin", "stop"), 5000), "FAIL");
      assertEquals(await h.sandbox.invoke(call("hang", "stop"), 5000), "FAIL");
      // A fresh child: module state starts over (calls was reset by the restart).
      assertEquals(await h.sandbox.invoke(call("spin", "stop"), 5000), "RECOVER");
    });

    await t.step("a second service's handler still runs afterwards", async () => {
      assertEquals(await h.sandbox.invoke(call("web", "reclaim"), 5000), "UP");
      assertEquals(await h.sandbox.invoke(call("web", "stop"), 5000), "FAIL");
    });

    await t.step("each kill is logged with its reason", () => {
      const kills = h.events.filter((e) => e.msg === "killing the script's child");
      assertEquals(kills.map((e) => [e.child, e.reason]), [
        ["pool-0", "handler start of hang timed out after 300 ms"],
        ["pool-1", "handler start of spin timed out after 300 ms"],
      ]);
    });
    await t.step("timeouts are counted for metrics", () => {
      const c = h.sandbox.counters();
      assertEquals(c.handlers.timeouts, 2);
      assert(c.children.started >= 6, `children restarted (${c.children.started} started)`);
    });

    await t.step("the hung handlers did start (they were killed, not refused)", () => {
      const messages = h.logs.map((l) => l.message);
      assert(messages.includes("hanging") && messages.includes("spinning"), messages.join(","));
    });
  } finally {
    await h.close();
  }
});

Deno.test("with one shared child, a looping handler's kill interrupts the others: retried once, then reported", async () => {
  const h = await makeHarness(SCRIPT, {}, { children: 1 });
  try {
    await h.sandbox.start();
    // hang is interrupted by spin's timeout, runs again in the restarted child, and times out
    // there at the end of its own limit.
    const other = h.sandbox.invoke(call("hang"), 1500);
    await rejects(h.sandbox.invoke(call("spin"), 300), TimeoutError);
    await rejects(other, (e: Error) => {
      assert(e instanceof TimeoutError, `${e.name}: ${e.message}`);
      assertMatch(e.message, /^Handler start of hang timed out after 1500 ms/);
      return true;
    });
    const retried = h.events.filter((e) =>
      e.msg === "retrying a handler its child's kill interrupted"
    );
    assertEquals(retried.map((e) => e.reason), [
      "Handler start of hang was interrupted: handler start of spin timed out after 300 ms",
    ]);
    assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
  } finally {
    await h.close();
  }
});

Deno.test("a restarted script must declare exactly what it declared at start", async () => {
  const conf = await Deno.makeTempDir({ prefix: "failsh_conf_" });
  const script = `
import { host, service } from "MOD";
const interval = await Deno.readTextFile(${JSON.stringify(`${conf}/interval`)});
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: Number(interval), timeouts: 200,
  start: () => new Promise(() => {}), stop: () => "FAIL" });
`;
  await Deno.writeTextFile(`${conf}/interval`, "1000");
  const h = await makeHarness(script, { read: [conf] });
  try {
    assertEquals((await h.sandbox.start()).services[0]?.intervalMs, 1000);
    await rejects(h.sandbox.invoke(call("web"), 200), TimeoutError);
    await Deno.writeTextFile(`${conf}/interval`, "2000");
    await rejects(h.sandbox.invoke(call("web", "stop"), 5000), (e: Error) => {
      assert(e instanceof ScriptError);
      assertMatch(e.message, /declaration changed since failsh started/);
      return true;
    });
  } finally {
    await h.close();
    await Deno.remove(conf, { recursive: true });
  }
});

Deno.test("a script with invalid declarations fails to start with every problem named", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha", "gamma"], slaves: ["delta"], interval: "1s", start: () => "UP", stop: () => "FAIL" });
`,
    {},
  );
  try {
    await rejects(h.sandbox.start(), (e: Error) => {
      assert(e instanceof ScriptError);
      assertMatch(e.message, /masters names host "gamma", which is not declared/);
      assertMatch(e.message, /slaves names host "delta", which is not declared/);
      return true;
    });
  } finally {
    await h.close();
  }
});

Deno.test("a script that throws while loading fails to start with its error", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "often", start: () => "UP", stop: () => "FAIL" });
`,
    {},
  );
  try {
    await rejects(h.sandbox.start(), (e: Error) => {
      assert(e instanceof ScriptError, e.name);
      assertMatch(
        e.message,
        /The script failed while loading: TypeError: Invalid interval of service web: "often" is not a duration/,
      );
      return true;
    });
  } finally {
    await h.close();
  }
});

Deno.test("a script that never finishes loading is killed at the start time limit", async () => {
  const h = await makeHarness(
    `import { host } from "MOD"; host("alpha", { address: "127.0.0.1" }); while (true) {}`,
    {},
    { startTimeoutMs: 1500 },
  );
  try {
    await rejects(h.sandbox.start(), /did not finish loading within 1500 ms/);
  } finally {
    await h.close();
  }
});

Deno.test("an error a handler leaves unhandled is logged and the child keeps serving", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
let n = 0;
service("sloppy", {
  masters: ["alpha"], interval: "1s",
  start: async () => { Promise.reject(new RangeError("forgotten")); n++; return "UP"; },
  stop: async () => { n++; return n === 2 ? "FAIL" : "RECOVER"; },
});
`,
    {},
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("sloppy"), 5000), "UP");
    // Same child (module state kept: n is 2), not a restarted one.
    assertEquals(await h.sandbox.invoke(call("sloppy", "stop"), 5000), "FAIL");
    assert(h.logs.some((l) => l.message === "Unhandled error: RangeError: forgotten"));
    assertEquals(h.sandbox.counters().children.ended, 0);
  } finally {
    await h.close();
  }
});

Deno.test("close() does not wait for a child stuck in a loop with a full pipe", async () => {
  const h = await makeHarness(
    `
import { host, service, trap } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
trap(() => { while (true) { /* stuck */ } });
`,
    {},
    { trapTimeoutMs: 60_000 },
  );
  await h.sandbox.start();
  const big = "x".repeat(60_000);
  for (let i = 0; i < 100; i++) {
    h.sandbox.trap({
      type: "host",
      host: big,
      service: null,
      state: "FAIL",
      previous: null,
      at: i,
    });
  }
  const c = h.sandbox.counters().traps;
  assert(c.dropped > 0, `events beyond the queue bound are dropped (${JSON.stringify(c)})`);
  await h.close();
});

/** failsh runs a program in its own session through setsid, so a timeout kills the whole group. */
const NO_SETSID = needs({ programs: ["setsid"] });

Deno.test({
  name: "the programs a handler started are killed with it when it times out" + NO_SETSID,
  ignore: NO_SETSID !== "",
}, async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) { await ctx.run(["slow", PIDS]); return "UP"; },
  stop: async () => "FAIL",
});
`,
    {},
  );
  const pids = `${h.dir}/pids`;
  const program = `${h.dir}/slow.sh`;
  await Deno.writeTextFile(
    program,
    '#!/bin/sh\necho $$ > "$1"\nsleep 30 &\necho $! >> "$1"\nwait\n',
  );
  await Deno.chmod(program, 0o755);
  await Deno.writeTextFile(
    `${h.dir}/failover.ts`,
    (await Deno.readTextFile(`${h.dir}/failover.ts`)).replace("PIDS", JSON.stringify(pids)),
  );
  const policy = parsePolicy(
    JSON.stringify({
      host: "alpha",
      netDriver: "simulated",
      audit: `${h.dir}/audit.log`,
      programs: [{ name: "slow", path: program, args: [".+"], timeoutMs: 60_000 }],
    }),
    `${h.dir}/policy.json`,
  );
  const sandbox = createSandbox(`${h.dir}/failover.ts`, policy, {
    onOutput: () => {},
    logger: new Logger({ sink: () => {} }),
  });
  try {
    await sandbox.start();
    const deadline = Date.now() + 10_000;
    const running = sandbox.invoke(call("web"), 1500);
    while (Date.now() < deadline) {
      const text = await Deno.readTextFile(pids).catch(() => "");
      if (text.trim().split("\n").length === 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await rejects(running, TimeoutError);
    const [shell, sleeper] = (await Deno.readTextFile(pids)).trim().split("\n").map(Number);
    const alive = (pid: number) => {
      try {
        return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
      } catch {
        return false;
      }
    };
    const until = Date.now() + 5000;
    while ((alive(shell!) || alive(sleeper!)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert(!alive(shell!), "the program was killed");
    assert(!alive(sleeper!), "its background child was killed too");
  } finally {
    await sandbox.close();
    await h.close();
  }
});

Deno.test("a script that imports from the network or npm fails to start, saying why", async () => {
  for (
    const [spec, reason] of [
      ["npm:left-pad@1.3.0", /it said: .*npm specifiers were requested; but --no-npm is specified/],
      ["https://example.com/x.ts", /it said: .*Requires import access to "example\.com:443"/],
    ] as const
  ) {
    const h = await makeHarness(
      `import ${JSON.stringify(spec)};\nimport { host } from "MOD";\n`,
      {},
    );
    try {
      await rejects(h.sandbox.start(), (e: Error) => {
        assert(e instanceof ScriptError);
        assertMatch(e.message, /^The script failed to start: the script exited with code 1/);
        assertMatch(e.message, reason);
        return true;
      });
    } finally {
      await h.close();
    }
  }
});

Deno.test("declarations may follow a top-level await; later ones are refused", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
await new Promise((r) => setTimeout(r, 300));
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
setTimeout(() => {
  try {
    service("late", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
  } catch (e) {
    console.log("LATE " + e.message);
  }
}, 100);
`,
    {},
  );
  try {
    const decl = await h.sandbox.start();
    assertEquals(decl.services.map((s) => s.name), ["web"]);
    const deadline = Date.now() + 5000;
    while (!h.output.some((l) => l.startsWith("LATE ")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert(
      h.output.some((l) =>
        l.includes("LATE Cannot declare service late: the script has already loaded")
      ),
      h.output.join("\n"),
    );
  } finally {
    await h.close();
  }
});

Deno.test("a handler that eats memory dies at the heap limit, alone", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("hog", {
  masters: ["alpha"], interval: "1s",
  async start() {
    const keep = [];
    while (true) keep.push(new Array(1e6).fill(Math.random()));
  },
  stop: async () => "FAIL",
});
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
    {},
    { memoryMb: 64 },
  );
  try {
    await h.sandbox.start();
    await rejects(h.sandbox.invoke(call("hog"), 20_000), (e: Error) => {
      assert(e instanceof ScriptError, `${e.name}: ${e.message}`);
      assertMatch(e.message, /^Handler start of hog was interrupted: the script exited with/);
      return true;
    });
    assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    assertEquals(await h.sandbox.invoke(call("hog", "stop"), 5000), "FAIL");
  } finally {
    await h.close();
  }
});
