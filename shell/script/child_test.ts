import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import type { ChildMessage, SupervisorMessage } from "../rpc.ts";
import { ScriptRegistry } from "./registry.ts";
import { serveChild } from "./child.ts";
import { PolicyDeniedError } from "../errors.ts";

import { handlers, registry } from "./_test_registry.ts";

/** A fake supervisor: a queue of lines for the child and the lines it wrote. */
function channel() {
  const sent: ChildMessage[] = [];
  const queue: string[] = [];
  let wake: (() => void) | null = null;
  let closed = false;
  const lines = (async function* () {
    while (true) {
      while (queue.length > 0) yield queue.shift() as string;
      if (closed) return;
      await new Promise<void>((r) => (wake = r));
    }
  })();
  let notify: (() => void) | null = null;
  return {
    sent,
    io: {
      write(line: string) {
        sent.push(JSON.parse(line));
        notify?.();
      },
      lines,
    },
    push(msg: SupervisorMessage) {
      queue.push(JSON.stringify(msg));
      wake?.();
    },
    close() {
      closed = true;
      wake?.();
    },
    async next<T extends ChildMessage["t"]>(t: T): Promise<Extract<ChildMessage, { t: T }>> {
      while (true) {
        const i = sent.findIndex((m) => m.t === t);
        if (i >= 0) return sent.splice(i, 1)[0] as Extract<ChildMessage, { t: T }>;
        await new Promise<void>((r) => (notify = r));
      }
    },
  };
}

Deno.test("serveChild() runs handlers and relays their requests", async (t) => {
  const r = registry();
  r.service("web", {
    masters: ["alpha"],
    slaves: ["beta"],
    interval: 1000,
    async start(ctx) {
      ctx.log(`start because ${ctx.reason}; beta has web ${ctx.peerState("beta")}`);
      try {
        await ctx.takeover("198.19.0.1/24", { device: "eth0" });
      } catch (e) {
        ctx.log(`refused: ${e instanceof PolicyDeniedError} ${(e as Error).message}`);
      }
      const out = await ctx.run(["echo", "x"], { timeoutMs: 100 });
      return out.code === 0 ? "UP" : "FAIL";
    },
    stop: () => Promise.resolve("DOWN" as never),
  });
  const c = channel();
  const served = serveChild(r, c.io);
  try {
    await t.step("the declaration is sent first", async () => {
      const decl = await c.next("decl");
      assertEquals(decl.decl.services.map((s) => s.name), ["web"]);
    });
    await t.step(
      "a handler's requests go to the supervisor and its replies come back",
      async () => {
        c.push({
          t: "invoke",
          id: 7,
          timeoutMs: 5000,
          call: {
            service: "web",
            kind: "start",
            self: "alpha",
            reason: "no master is up",
            peers: {
              beta: [{
                name: "web",
                state: "RECOVER",
                lastChange: 0,
                changes: 1,
                detail: "",
                setBy: "x",
              }],
            },
          },
        });
        assertEquals(
          (await c.next("log")).msg,
          "start because no master is up; beta has web RECOVER",
        );
        const takeover = await c.next("req");
        assertEquals([takeover.op, takeover.inv, takeover.args], ["takeover", 7, {
          address: "198.19.0.1/24",
          device: "eth0",
        }]);
        c.push({
          t: "reply",
          id: takeover.id,
          ok: false,
          error: {
            name: "PolicyDeniedError",
            message: "Cannot take over 198.19.0.1/24: address is outside the policy",
          },
        });
        assertEquals(
          (await c.next("log")).msg,
          "refused: true Cannot take over 198.19.0.1/24: address is outside the policy",
        );
        const run = await c.next("req");
        assertEquals([run.op, run.args], ["run", { argv: ["echo", "x"], timeoutMs: 100 }]);
        c.push({
          t: "reply",
          id: run.id,
          ok: true,
          value: {
            code: 0,
            stdout: "x\n",
            stderr: "",
            truncated: false,
            timedOut: false,
            durationMs: 1,
          },
        });
        assertEquals(await c.next("result"), { t: "result", id: 7, state: "UP" });
      },
    );
    await t.step("a handler returning something else than a state is an error", async () => {
      c.push({
        t: "invoke",
        id: 8,
        timeoutMs: 5000,
        call: { service: "web", kind: "stop", self: "alpha", reason: "", peers: {} },
      });
      const e = await c.next("error");
      assertEquals(e.id, 8);
      assertMatch(
        e.error.message,
        /^Handler stop of web returned "DOWN": it must return "UP", "RECOVER" or "FAIL"$/,
      );
    });
    await t.step("an undefined reclaim runs start; an unknown service is an error", async () => {
      c.push({
        t: "invoke",
        id: 9,
        timeoutMs: 5000,
        call: { service: "nope", kind: "start", self: "alpha", reason: "", peers: {} },
      });
      assertMatch((await c.next("error")).error.message, /no start handler for nope/);
      assert(r.handler("web", "reclaim") === r.handler("web", "start"));
    });
  } finally {
    c.close();
    await served;
  }
});

Deno.test("serveChild() reports invalid declarations instead of serving", async () => {
  const r = new ScriptRegistry();
  r.service("web", { masters: ["ghost"], interval: 1000, ...handlers });
  const c = channel();
  c.close();
  await serveChild(r, c.io);
  assertMatch((await c.next("fatal")).problems[0]!, /masters names host "ghost"/);
});
