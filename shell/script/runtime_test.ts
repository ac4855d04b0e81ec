import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  throws,
} from "node:assert/strict";
import {
  checkDecl,
  type ChildMessage,
  parseDuration,
  readLines,
  ScriptRegistry,
  serveChild,
  type SupervisorMessage,
} from "./runtime.ts";
import { PolicyDeniedError } from "../errors.ts";

function registry(): ScriptRegistry {
  const r = new ScriptRegistry();
  r.host("alpha", { address: "127.0.0.1" });
  r.host("beta", { address: "::1", port: 7200, protocol: "https", key: "cluster" });
  return r;
}

const handlers = {
  start: () => Promise.resolve("UP" as const),
  stop: () => Promise.resolve("FAIL" as const),
};

Deno.test("parseDuration() accepts milliseconds and unit strings", () => {
  assertEquals(parseDuration(250, "x"), 250);
  assertEquals(parseDuration("250ms", "x"), 250);
  assertEquals(parseDuration("1.5s", "x"), 1500);
  assertEquals(parseDuration("2m", "x"), 120_000);
  assertEquals(parseDuration("1h", "x"), 3_600_000);
  throws(
    () => parseDuration("soon", "interval of service web"),
    /^TypeError: Invalid interval of service web: "soon" is not a duration/,
  );
  throws(() => parseDuration(Infinity, "x"), /not a finite number/);
});

Deno.test("host() and service() build the declaration with defaults", () => {
  const r = registry();
  r.service("web", { masters: ["alpha"], slaves: ["beta"], interval: "500ms", ...handlers });
  r.trap(() => {});
  assertEquals(r.validate(), []);
  assertEquals(r.decl(), {
    hosts: [
      { name: "alpha", address: "127.0.0.1", port: 7100, protocol: "http", key: null },
      { name: "beta", address: "::1", port: 7200, protocol: "https", key: "cluster" },
    ],
    services: [{
      name: "web",
      masters: ["alpha"],
      slaves: ["beta"],
      intervalMs: 500,
      fall: 3,
      rise: 2,
      preempt: true,
      graceMs: 1000,
      timeouts: { start: 30000, stop: 30000, reclaim: 30000 },
      handlers: ["start", "stop"],
    }],
    traps: 1,
  });
});

Deno.test("declarations are validated with errors that name the problem", async (t) => {
  await t.step("duplicate names", () => {
    const r = registry();
    throws(
      () => r.host("alpha", { address: "127.0.0.3" }),
      /^Error: Cannot declare host alpha: it is declared twice$/,
    );
    r.service("web", { masters: ["alpha"], interval: 1000, ...handlers });
    throws(
      () => r.service("web", { masters: ["alpha"], interval: 1000, ...handlers }),
      /Cannot declare service web: it is declared twice/,
    );
  });
  await t.step("bad names and addresses", () => {
    const r = new ScriptRegistry();
    throws(
      () => r.host("../etc", { address: "1.2.3.4" }),
      /^TypeError: Invalid host name "\.\.\/etc"/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4; rm" }),
      /Invalid host a: address must be an IP address or a DNS name/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4", port: 70000 }),
      /^RangeError: Invalid host a: port must be 1-65535, got 70000/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4", protocol: "ftp" as "http" }),
      /protocol must be "http" or "https"/,
    );
  });
  await t.step("bad interval, hysteresis and timeouts", () => {
    const r = registry();
    throws(
      () => r.service("a", { masters: ["alpha"], interval: 0, ...handlers }),
      /^RangeError: Invalid interval of service a: 0 ms is outside 10-3600000 ms/,
    );
    throws(
      () => r.service("b", { masters: ["alpha"], interval: "often", ...handlers }),
      /Invalid interval of service b: "often" is not a duration/,
    );
    throws(
      () => r.service("c", { masters: ["alpha"], interval: 1000, fall: 0, ...handlers }),
      /Invalid service c: fall must be an integer 1-100, got 0/,
    );
    throws(
      () =>
        r.service("d", {
          masters: ["alpha"],
          interval: 1000,
          timeouts: { begin: 5 } as never,
          ...handlers,
        }),
      /timeouts\.begin is not a handler/,
    );
    throws(
      () => r.service("e", { masters: ["alpha"], interval: 1000, timeouts: "2h", ...handlers }),
      /timeouts\.start of service e: 7200000 ms is outside/,
    );
    throws(
      () => r.service("f", { interval: 1000, ...handlers } as never),
      /Invalid service f: masters must be a list of host names/,
    );
    throws(
      () => r.service("g", { masters: [], interval: 1000, ...handlers }),
      /masters must name at least one host/,
    );
    throws(
      () => r.service("h", { masters: ["alpha"], slaves: ["alpha"], interval: 1000, ...handlers }),
      /alpha cannot be both master and slave/,
    );
    throws(
      () =>
        r.service(
          "i",
          { masters: ["alpha"], interval: 1000, start: () => Promise.resolve("UP") } as never,
        ),
      /Invalid service i: stop must be a function returning the new state/,
    );
  });
  await t.step("unknown hosts are found when the script has loaded", () => {
    const r = registry();
    r.service("web", { masters: ["alpha", "gamma"], interval: 1000, ...handlers });
    assertEquals(r.validate(), [
      'Invalid service web: masters names host "gamma", which is not declared (declared: alpha, beta)',
    ]);
    assertEquals(new ScriptRegistry().validate(), ["The script declares no service"]);
  });
  await t.step("nothing can be declared once the script has loaded", () => {
    const r = registry();
    r.seal();
    throws(
      () => r.host("late", { address: "1.2.3.4" }),
      /Cannot declare host late: the script has already loaded \(declare hosts, services and traps while the script loads, not later\)/,
    );
  });
});

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

Deno.test("readLines() drops lines longer than the bound", async () => {
  const enc = new TextEncoder();
  const stream = ReadableStream.from([
    enc.encode("short\n" + "x".repeat(50)),
    enc.encode("y".repeat(60) + "\nok\nlast"),
  ]);
  const dropped: number[] = [];
  const lines: string[] = [];
  for await (const l of readLines(stream, 80, (n) => dropped.push(n))) lines.push(l);
  assertEquals(lines, ["short", "ok", "last"]);
  assertEquals(dropped, [110]);
});

Deno.test("checkDecl() accepts what the registry sends and nothing else", async (t) => {
  const r = registry();
  r.service("web", { masters: ["alpha"], slaves: ["beta"], interval: "2s", ...handlers });
  r.trap(() => {});
  const good = r.decl();
  await t.step("a registry's declaration", () => {
    assertEquals(checkDecl(JSON.parse(JSON.stringify(good))), good);
  });
  // deno-lint-ignore no-explicit-any
  const forged = (patch: (d: Record<string, any>) => void) => {
    const d = JSON.parse(JSON.stringify(good));
    patch(d);
    return () => checkDecl(d);
  };
  await t.step("values a registry refuses", () => {
    throws(
      forged((d) => (d.services[0].intervalMs = 0)),
      /^TypeError: Invalid declaration from the script: Invalid interval of service web/,
    );
    throws(forged((d) => (d.hosts[0].name = "../etc")), /Invalid host name/);
    throws(
      forged((d) => (d.services[0].masters = ["mallory"])),
      /masters names host "mallory", which is not declared/,
    );
    throws(forged((d) => (d.traps = -1)), /traps must be a count/);
    throws(() => checkDecl("decl"), /not an object/);
  });
  await t.step("fields a registry never sends", () => {
    throws(forged((d) => (d.services[0].priority = 1)), /fields or values mod\.ts never sends/);
    throws(
      forged((d) => (d.services[0].handlers = ["start", "stop", "reclaim", "start"])),
      /never sends/,
    );
  });
});
