/**
 * Hostile scripts against the child's resources: memory outside the V8 heap (ArrayBuffers),
 * Workers (threads, each with its own heap), a CPU spin started from a timer after its handler
 * returned, and many services (one child each, before). Each runs real sandboxed children and
 * reads their limits, nice value and threads from /proc.
 */
import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, childProcesses, makeHarness, until } from "./_sandbox_util.ts";
import { ScriptError, TimeoutError } from "../shell/errors.ts";
import { DEFAULT_CHILDREN } from "../shell/sandbox/pool.ts";
import { cgroup2Unavailable, childLimits } from "../shell/sandbox/limits.ts";

Deno.test("a handler cannot keep more memory in ArrayBuffers than the child's limit", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("hog", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    const keep = [];
    try {
      // Up to 2 GiB outside the V8 heap, touched so that it is really resident.
      while (keep.length < 2048) {
        keep.push(new Uint8Array(1 << 20).fill(1));
        if (keep.length % 64 === 0) ctx.log("at " + keep.length + " MiB");
      }
    } catch (e) {
      ctx.log("stopped at " + keep.length + " MiB: " + e.name + ": " + e.message);
      return "FAIL";
    }
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
    {},
  );
  try {
    await h.sandbox.start();
    // At the limit, either the allocation fails in the script (a RangeError it can catch) or,
    // when V8 itself needs a page first, V8 aborts the child (SIGTRAP): both stop the hog.
    const outcome = await h.sandbox.invoke(call("hog"), 20_000).then(
      (state) => state,
      (e: Error) => e,
    );
    const messages = h.logs.map((l) => l.message);
    const stopped = messages.map((m) =>
      /^stopped at (\d+) MiB: RangeError: Array buffer allocation failed$/.exec(m)
    ).find((m) => m !== null);
    let kept: number;
    if (outcome instanceof Error) {
      assert(outcome instanceof ScriptError, `the child was stopped: ${outcome}`);
      assertMatch(outcome.message, /the script exited with signal/);
      kept = Math.max(0, ...messages.map((m) => Number(/^at (\d+) MiB$/.exec(m)?.[1] ?? 0)));
    } else {
      assertEquals(outcome, "FAIL");
      assert(stopped, `the allocation failed in the script: ${messages.at(-1)}`);
      kept = Number(stopped[1]);
    }
    const limits = childLimits(256);
    assert(kept > 0 || outcome instanceof Error, "the script allocated something");
    assert(kept * 1024 * 1024 < limits.dataBytes - 512 * 1024 * 1024, `${kept} MiB kept`);
    // The service still runs handlers (in the same child, or in a new one).
    assertEquals(await h.sandbox.invoke(call("hog", "stop"), 20_000), "FAIL");
  } finally {
    await h.close();
  }
});

Deno.test("a script cannot start Workers: the constructor refuses, node's dies at the limit", async (t) => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
import { Worker as NodeWorker } from "node:worker_threads";
host("alpha", { address: "127.0.0.1" });
service("web", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    try {
      const url = URL.createObjectURL(new Blob(["setInterval(() => {}, 1000)"], { type: "text/javascript" }));
      for (let i = 0; i < 50; i++) new Worker(url, { type: "module" });
      return "UP";
    } catch (e) {
      ctx.log(e.name + ": " + e.message);
      return "FAIL";
    }
  },
  async stop(ctx) {
    // Node's worker_threads reach the same runtime through another door: each Worker needs
    // its own V8 code range, which the child's data limit does not leave room for.
    for (let i = 0; i < 50; i++) new NodeWorker("while (true) {}", { eval: true });
    await new Promise((r) => setTimeout(r, 3000));
    return "FAIL";
  },
});
`,
    {},
  );
  try {
    await h.sandbox.start();
    await t.step("new Worker() throws a clear error", async () => {
      assertEquals(await h.sandbox.invoke(call("web"), 10_000), "FAIL");
      assertEquals(
        h.logs[0]?.message,
        "TypeError: Cannot start a Worker: a failover script runs in one thread (see docs/sandbox.md)",
      );
    });
    await t.step("node:worker_threads takes the child down, not the host", async () => {
      await rejects(h.sandbox.invoke(call("web", "stop"), 10_000), (e: Error) => {
        assert(e instanceof ScriptError, `${e.name}: ${e.message}`);
        assertMatch(e.message, /^Handler stop of web was interrupted: /);
        return true;
      });
      assertEquals(childProcesses(h.dir).filter((p) => p.threads > 32), []);
      assertEquals(await h.sandbox.invoke(call("web"), 10_000), "FAIL");
    });
  } finally {
    await h.close();
  }
});

Deno.test("a spin started from a timer after its handler returned is stopped", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
let starts = 0;
service("web", {
  masters: ["alpha"], interval: "1s",
  async start() {
    starts++;
    setTimeout(() => { while (true) { /* outside any handler */ } }, 0);
    return "UP";
  },
  stop: async () => starts === 1 ? "FAIL" : "RECOVER",
});
`,
    {},
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    const kill = await until(
      "the spinning child's kill",
      () => h.events.find((e) => e.msg === "killing the script's child") ?? null,
    );
    assertMatch(
      String(kill.reason),
      /^it kept a CPU busy \d+% of the time for \d+ s while no handler or trap ran$/,
    );
    // A fresh child (module state starts over) answers the next handler.
    assertEquals(await h.sandbox.invoke(call("web", "stop"), 5000), "RECOVER");
  } finally {
    await h.close();
  }
});

Deno.test("each child runs at low priority under the memory limits", async () => {
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
    {},
    { memoryMb: 128 },
  );
  try {
    await h.sandbox.start();
    const limits = childLimits(128);
    // A child spawned a moment ago may still be in its launch chain (prlimit, then nice, then
    // setpriv, each exec'ing the next): read them once every one runs deno itself.
    const children = await until("every child runs deno", () => {
      const all = childProcesses(h.dir).filter((c) => c.argv.includes("--failsh-child"));
      return all.length >= 1 && all.every((c) => /(^|\/)deno$/.test(c.argv[0] ?? "")) && all;
    });
    for (const c of children) {
      assertEquals(c.nice, limits.nice);
      const data = /^Max data size\s+(\d+)\s+(\d+)\s+bytes/m.exec(c.limits);
      assertEquals([Number(data?.[1]), Number(data?.[2])], [limits.dataBytes, limits.dataBytes]);
      assertMatch(c.limits, /^Max core file size\s+0\s+0\s+bytes/m);
    }
    assertMatch(h.sandbox.childCommand().join(" "), /--data=\d+:\d+ .*--max-old-space-size=128/);
  } finally {
    await h.close();
  }
});

Deno.test("120 services share a few children", async () => {
  const lines = [
    `import { host, service } from "MOD";`,
    `host("alpha", { address: "127.0.0.1" });`,
  ];
  for (let i = 0; i < 120; i++) {
    lines.push(
      `service("s${i}", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });`,
    );
  }
  const h = await makeHarness(lines.join("\n"), {});
  try {
    await h.sandbox.start();
    for (let i = 0; i < 120; i++) assertEquals(await h.sandbox.invoke(call(`s${i}`), 5000), "UP");
    assertEquals(h.sandbox.counters().children.started, 1 + DEFAULT_CHILDREN);
    assertEquals(childProcesses(h.dir).length, 1 + DEFAULT_CHILDREN);
  } finally {
    await h.close();
  }
});

Deno.test("a timed-out handler kills only its child; neighbours are retried; the culprit moves out", async (t) => {
  // With two children, a and c share one (declaration order: a→0, b→1, c→0).
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
let bCalls = 0;
service("a", { masters: ["alpha"], interval: "1s", start() { while (true) {} }, stop: async () => "FAIL" });
service("b", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => String(++bCalls) === "1" ? "FAIL" : "UP" });
service("c", {
  masters: ["alpha"], interval: "1s",
  start: () => new Promise((r) => setTimeout(() => r("UP"), 600)),
  stop: async () => "FAIL",
});
`,
    {},
    { children: 2 },
  );
  try {
    await h.sandbox.start();
    await t.step("c, interrupted by a's timeout on their shared child, is retried", async () => {
      assertEquals(await h.sandbox.invoke(call("b", "stop"), 5000), "FAIL");
      const c = h.sandbox.invoke(call("c"), 5000);
      await new Promise((r) => setTimeout(r, 100));
      await rejects(h.sandbox.invoke(call("a"), 300), TimeoutError);
      assertEquals(await c, "UP");
      const retries = h.events.filter((e) =>
        e.msg === "retrying a handler its child's kill interrupted"
      );
      assertEquals(retries.map((e) => [e.service, e.kind]), [["c", "start"]]);
      assertEquals(h.sandbox.counters().handlers.retried, 1);
    });
    await t.step("b's child was not touched (its module state is kept)", async () => {
      assertEquals(await h.sandbox.invoke(call("b", "stop"), 5000), "UP");
    });
    await t.step("a now has a child of its own: its next timeout interrupts nobody", async () => {
      const c = h.sandbox.invoke(call("c"), 5000);
      await new Promise((r) => setTimeout(r, 100));
      await rejects(h.sandbox.invoke(call("a"), 300), TimeoutError);
      assertEquals(await c, "UP");
      const retries = h.events.filter((e) =>
        e.msg === "retrying a handler its child's kill interrupted"
      );
      assertEquals(retries.length, 1);
      const moved = h.events.filter((e) => e.msg === "a service gets a child of its own");
      assertEquals(moved.map((e) => e.service), ["a"]);
    });
  } finally {
    await h.close();
  }
});

const V2 = cgroup2Unavailable();
Deno.test({
  name: "on cgroup v2, each child has its own cgroup with memory, task and CPU limits" +
    (V2 ? ` (skipped: ${V2})` : ""),
  ignore: V2 !== null,
  async fn() {
    const h = await makeHarness(
      `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
      {},
    );
    try {
      await h.sandbox.start();
      const limits = childLimits(256);
      for (const c of childProcesses(h.dir)) {
        const rel = /^0::(.*)$/m.exec(Deno.readTextFileSync(`/proc/${c.pid}/cgroup`))?.[1];
        assert(rel, "the child is in a cgroup v2");
        const dir = `${cgroupMount()}${rel}`;
        assertEquals(Number(Deno.readTextFileSync(`${dir}/memory.max`)), limits.memoryMaxBytes);
        assertEquals(Number(Deno.readTextFileSync(`${dir}/pids.max`)), limits.tasksMax);
      }
    } finally {
      await h.close();
    }
  },
});

function cgroupMount(): string {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [left, right] = line.split(" - ");
    if (right?.startsWith("cgroup2 ")) return left!.split(" ")[4]!;
  }
  return "/sys/fs/cgroup";
}
