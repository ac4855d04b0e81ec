/**
 * Proof that a sandboxed failover script cannot escape the operator's policy: each probe runs
 * inside a real child `deno run` started by the sandbox, and reports what happened.
 */
import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, makeHarness, MOD_URL } from "./_sandbox_util.ts";
import { needs } from "./_programs.ts";

const PROBES = `
import { host, service, PolicyDeniedError } from "MOD";
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });

async function probe(fn) {
  try {
    const value = await fn();
    return { ok: true, value: value === undefined ? null : String(value).slice(0, 200) };
  } catch (e) {
    return { ok: false, name: e.name, message: e.message, denied: e instanceof PolicyDeniedError };
  }
}

const P = JSON.parse(await Deno.readTextFile(new URL("./probes.json", import.meta.url)).catch(() => "{}"));

service("probe", {
  masters: ["alpha"],
  slaves: ["beta"],
  interval: "1s",
  async start(ctx) {
    const r = {};
    r.readOutside = await probe(() => Deno.readTextFile(P.secret));
    r.readInside = await probe(() => Deno.readTextFile(P.allowed));
    r.readProcEnviron = await probe(() => Deno.readTextFile("/proc/self/environ"));
    r.importOutside = await probe(() => import(P.secret));
    r.write = await probe(() => Deno.writeTextFile(P.dir + "/written.txt", "x"));
    r.envGet = await probe(() => Deno.env.get("HOME"));
    r.envAll = await probe(() => JSON.stringify(Deno.env.toObject()));
    r.spawn = await probe(async () => (await new Deno.Command("/bin/true").output()).code);
    r.ffi = await probe(() => Deno.dlopen("libc.so.6", {}));
    r.sys = await probe(() => Deno.hostname());
    r.connectDenied = await probe(async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: P.deniedPort });
      c.close();
    });
    r.fetchDenied = await probe(async () => (await fetch("http://127.0.0.1:" + P.deniedPort + "/")).status);
    r.connectAllowed = await probe(async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: P.allowedPort });
      c.close();
      return "connected";
    });
    r.runUnlisted = await probe(() => ctx.run(["rm", "-rf", "/tmp/nothing"]));
    r.runBadArgs = await probe(() => ctx.run(["echo", "hello; rm -rf /"]));
    r.runExtraArgs = await probe(() => ctx.run(["echo", "hello", "world"]));
    r.runListed = await probe(async () => (await ctx.run(["echo", "hello"])).stdout);
    r.takeoverOutside = await probe(() => ctx.takeover("198.19.0.100/24", { device: "lo" }));
    r.takeoverNoPrefix = await probe(() => ctx.takeover("127.0.0.100", { device: "lo" }));
    r.takeoverBadDevice = await probe(() => ctx.takeover("127.0.0.100/8", { device: "eth9" }));
    r.takeoverAllowed = await probe(() => ctx.takeover("127.0.0.100/8", { device: "lo" }));
    r.releaseOutside = await probe(() => ctx.release("10.0.0.1/8", { device: "lo" }));
    r.pollUndeclared = await probe(() => ctx.poll("mallory"));
    ctx.log(JSON.stringify(r));
    return "UP";
  },
  stop: () => "FAIL",
});
`;

type ProbeResult = {
  ok: boolean;
  value?: string;
  name?: string;
  message?: string;
  denied?: boolean;
};

Deno.test("a sandboxed script cannot escape the policy", async (t) => {
  const allowedListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deniedListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const acceptLoop = (async () => {
    for await (const conn of allowedListener) accepted.push(conn);
  })();
  let deniedConnections = 0;
  const deniedLoop = (async () => {
    for await (const conn of deniedListener) {
      deniedConnections++;
      conn.close();
    }
  })();
  const allowedPort = (allowedListener.addr as Deno.NetAddr).port;
  const deniedPort = (deniedListener.addr as Deno.NetAddr).port;
  const outside = await Deno.makeTempDir({ prefix: "failsh_outside_" });
  const readable = await Deno.makeTempDir({ prefix: "failsh_readable_" });
  const h = await makeHarness(PROBES, {
    read: [readable],
    net: [`127.0.0.1:${allowedPort}`],
    addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }],
    programs: [{ name: "echo", path: "/bin/echo", args: ["[a-z]+"] }],
  });
  try {
    await Deno.writeTextFile(`${outside}/secret.txt`, "SECRET");
    await Deno.writeTextFile(`${readable}/allowed.txt`, "ALLOWED");
    // The probes' parameters sit beside the script, which the child cannot read: use the
    // readable directory instead by symlinking is not allowed either, so put them there.
    const params = {
      secret: `${outside}/secret.txt`,
      allowed: `${readable}/allowed.txt`,
      dir: h.dir,
      allowedPort,
      deniedPort,
    };
    await Deno.writeTextFile(`${readable}/probes.json`, JSON.stringify(params));
    await Deno.writeTextFile(
      `${h.dir}/failover.ts`,
      (await Deno.readTextFile(`${h.dir}/failover.ts`)).replace(
        `new URL("./probes.json", import.meta.url)`,
        JSON.stringify(`${readable}/probes.json`),
      ),
    );
    await h.sandbox.start();
    const state = await h.sandbox.invoke(call("probe"), 20_000);
    assertEquals(state, "UP");
    const log = h.logs.find((l) => l.message.startsWith("{"));
    if (!log) throw new Error(`the probe handler logged no results: ${JSON.stringify(h.logs)}`);
    const r = JSON.parse(log.message) as Record<string, ProbeResult>;
    const denied = (name: string, pattern?: RegExp) => {
      const p = r[name];
      if (!p) throw new Error(`probe ${name} did not run`);
      assertEquals(p.ok, false, `${name} must fail, got ${JSON.stringify(p)}`);
      assertEquals(p.name, "NotCapable", `${name}: ${JSON.stringify(p)}`);
      if (pattern) assertMatch(p.message ?? "", pattern);
    };
    const refused = (name: string, pattern: RegExp) => {
      const p = r[name];
      if (!p) throw new Error(`probe ${name} did not run`);
      assertEquals(p.ok, false, `${name} must be refused, got ${JSON.stringify(p)}`);
      assertEquals(p.name, "PolicyDeniedError");
      assertEquals(p.denied, true, "the script sees a PolicyDeniedError instance");
      assertMatch(p.message ?? "", pattern);
    };

    await t.step("cannot read a file outside the policy", () => {
      denied("readOutside", /read access/);
      denied("readProcEnviron");
      assertEquals(r.importOutside?.ok, false);
      assertMatch(r.importOutside?.message ?? "", /read access/);
    });
    await t.step("can read a file the policy lists", () => {
      assertEquals(r.readInside, { ok: true, value: "ALLOWED" });
    });
    await t.step("cannot write files", () => {
      denied("write", /write access/);
    });
    await t.step("cannot read the environment", () => {
      denied("envGet", /env access/);
      denied("envAll", /env access/);
    });
    await t.step("cannot spawn processes, load libraries or query the system", () => {
      denied("spawn", /run access/);
      denied("ffi");
      denied("sys");
    });
    await t.step("cannot reach a host:port the policy does not allow", () => {
      denied("connectDenied", /net access/);
      denied("fetchDenied", /net access/);
      assertEquals(deniedConnections, 0, "no connection reached the denied listener");
    });
    await t.step("can reach the host:port the policy allows", () => {
      assertEquals(r.connectAllowed, { ok: true, value: "connected" });
    });
    await t.step("cannot run an unlisted program, nor a listed one with other arguments", () => {
      refused("runUnlisted", /^Cannot run rm: program is not in the policy/);
      refused("runBadArgs", /^Cannot run echo .*argument 1 .*does not match/);
      refused("runExtraArgs", /^Cannot run echo hello world: echo takes at most 1 arguments/);
      assertEquals(r.runListed, { ok: true, value: "hello\n" });
    });
    await t.step("cannot take an address outside the policy, nor on an unlisted device", () => {
      refused(
        "takeoverOutside",
        /^Cannot take over 198\.19\.0\.100\/24: address is outside the policy$/,
      );
      refused("takeoverNoPrefix", /must include its prefix length/);
      refused(
        "takeoverBadDevice",
        /^Cannot take over 127\.0\.0\.100\/8 on eth9: device is not allowed/,
      );
      refused("releaseOutside", /^Cannot release 10\.0\.0\.1\/8: address is outside the policy$/);
      assertEquals(r.takeoverAllowed, { ok: true, value: null });
      assertEquals(h.sandbox.heldAddresses().map((a) => [a.address, a.device, a.service]), [
        ["127.0.0.100/8", "lo", "probe"],
      ]);
    });
    await t.step("cannot make failsh poll a host it did not declare", () => {
      refused("pollUndeclared", /^Cannot poll mallory: the script declares no such host$/);
    });
    await t.step("every refusal is a line in the audit log", () => {
      const refusedLines = h.auditLines().filter((l) => l.verdict === "refused");
      const reasons = refusedLines.map((l) => l.reason as string);
      for (const pattern of [/Cannot run rm/, /address is outside the policy/, /eth9/, /mallory/]) {
        assert(reasons.some((s) => pattern.test(s)), `audit has a refusal matching ${pattern}`);
      }
      assert(refusedLines.every((l) => l.service === "probe" && typeof l.time === "string"));
      assertEquals(h.sandbox.counters().requests.run.refused, 3);
      assertEquals(h.sandbox.counters().requests.takeover.refused, 3);
    });
  } finally {
    await h.close();
    allowedListener.close();
    deniedListener.close();
    await acceptLoop.catch(() => {});
    await deniedLoop.catch(() => {});
    for (const c of accepted) c.close();
    await Deno.remove(outside, { recursive: true });
    await Deno.remove(readable, { recursive: true });
  }
});

Deno.test("the child's command line grants no run, write, env, FFI or sys permission", async () => {
  const h = await makeHarness(
    `import { host } from "MOD"; host("alpha", { address: "127.0.0.1" });`,
    {},
  );
  try {
    const argv = h.sandbox.childCommand();
    for (
      const flag of [
        "--allow-run",
        "--allow-write",
        "--allow-env",
        "--allow-ffi",
        "--allow-sys",
        "--allow-all",
        "-A",
      ]
    ) {
      assert(!argv.some((a) => a === flag || a.startsWith(flag + "=")), `${flag} is not passed`);
    }
    for (
      const flag of [
        "--no-prompt",
        "--deny-read",
        "--deny-net",
        "--deny-run",
        "--deny-env",
        "--no-remote",
        "--no-npm",
      ]
    ) {
      assert(argv.includes(flag), `${flag} is passed`);
    }
  } finally {
    await h.close();
  }
});

Deno.test("a script cannot forge its declaration or break the channel", async (t) => {
  const forge = (message: unknown) => `
import { host, service } from "MOD";
const line = "\\u001eFAILSH1 " + JSON.stringify(${JSON.stringify(message)}) + "\\n";
Deno.stdout.writeSync(new TextEncoder().encode(line));
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`;
  await t.step("a forged declaration with a 0 ms interval is refused", async () => {
    const decl = {
      hosts: [{ name: "alpha", address: "127.0.0.1", port: 7100, protocol: "http", key: null }],
      services: [{
        name: "web",
        masters: ["alpha"],
        slaves: [],
        intervalMs: 0,
        fall: 3,
        rise: 2,
        preempt: true,
        graceMs: 0,
        timeouts: { start: 1, stop: 1, reclaim: 1 },
        handlers: ["start", "stop"],
      }],
      traps: 0,
    };
    const h = await makeHarness(forge({ t: "decl", decl }), {});
    try {
      await rejects(
        h.sandbox.start(),
        /^ScriptError: Invalid declaration from the script: Invalid interval of service web: 0 ms/,
      );
    } finally {
      await h.close();
    }
  });
  await t.step("stray messages are ignored", async () => {
    const h = await makeHarness(forge({ t: "trapdone", id: 99, errors: null }), {});
    try {
      await h.sandbox.start();
      assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    } finally {
      await h.close();
    }
  });
  await t.step(
    "a malformed message gets the child killed, and the next call restarts it",
    async () => {
      const h = await makeHarness(
        `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("web", {
  masters: ["alpha"], interval: "1s",
  async start() {
    const bad = "\\u001eFAILSH1 " + JSON.stringify({ t: "error", id: 1, error: null }) + "\\n";
    Deno.stdout.writeSync(new TextEncoder().encode(bad));
    await new Promise((r) => setTimeout(r, 1000));
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
        {},
      );
      try {
        await h.sandbox.start();
        await rejects(
          h.sandbox.invoke(call("web"), 5000),
          /interrupted: it broke the sandbox protocol/,
        );
        assertEquals(await h.sandbox.invoke(call("web", "stop"), 5000), "FAIL");
      } finally {
        await h.close();
      }
    },
  );
});

/** The child drops its privileges through setpriv; the tests find its pid with pgrep. */
const NO_SETPRIV = needs({ programs: ["setpriv", "pgrep"] });

Deno.test({
  name: `the child runs with no capabilities and no new privileges${NO_SETPRIV}`,
  ignore: NO_SETPRIV !== "",
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
      assert(h.sandbox.childCommand().includes("--pdeathsig"));
      await h.sandbox.start();
      // The children of this test process are the sandbox's (setpriv execs deno: same pid).
      const out = new Deno.Command("/usr/bin/pgrep", {
        args: ["-P", String(Deno.pid)],
        stdout: "piped",
      })
        .outputSync();
      // Other test files run in this same process under --parallel: keep only this harness's
      // sandbox children (their command line names the harness's script).
      const pids = new TextDecoder().decode(out.stdout).trim().split("\n").filter((pid) => {
        if (pid === "") return false;
        try {
          return Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes(h.dir);
        } catch {
          return false;
        }
      });
      assert(pids.length >= 1);
      for (const pid of pids) {
        const status = await Deno.readTextFile(`/proc/${pid}/status`);
        assertMatch(status, /^CapEff:\s+0000000000000000$/m);
        assertMatch(status, /^NoNewPrivs:\s+1$/m);
        if (Deno.uid() === 0) assertMatch(status, /^CapBnd:\s+0000000000000000$/m);
      }
      assertEquals(await h.sandbox.invoke(call("web"), 5000), "UP");
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name: `a child stuck in a loop dies with its supervisor${NO_SETPRIV}`,
  ignore: NO_SETPRIV !== "",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "failsh_orphan_" });
    try {
      await Deno.writeTextFile(
        `${dir}/failover.ts`,
        `import { host, service } from ${JSON.stringify(MOD_URL)};
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start() { while (true) {} }, stop: async () => "FAIL" });
`,
      );
      // A supervisor in its own process: it starts the handler, prints the child's pid, exits.
      const supervisor = `
import { createSandbox } from ${
        JSON.stringify(new URL("../shell/sandbox/sandbox.ts", import.meta.url).href)
      };
import { parsePolicy } from ${
        JSON.stringify(new URL("../shell/sandbox/policy.ts", import.meta.url).href)
      };
const policy = parsePolicy('{"host":"alpha","netDriver":"simulated"}', ${
        JSON.stringify(`${dir}/policy.json`)
      });
const sandbox = createSandbox(${
        JSON.stringify(`${dir}/failover.ts`)
      }, policy, { onOutput: () => {} });
await sandbox.start();
sandbox.invoke({ service: "web", kind: "start", self: "alpha", reason: "", peers: {} }, 60000).catch(() => {});
await new Promise((r) => setTimeout(r, 300));
const ps = new Deno.Command("/usr/bin/pgrep", { args: ["-P", String(Deno.pid)], stdout: "piped" }).outputSync();
console.log(new TextDecoder().decode(ps.stdout).trim().split("\\n").join(","));
Deno.exit(0);
`;
      await Deno.writeTextFile(`${dir}/supervisor.ts`, supervisor);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-config", `${dir}/supervisor.ts`],
        stdout: "piped",
        stderr: "null",
      }).output();
      const pids = new TextDecoder().decode(out.stdout).trim().split(",").map(Number).filter((n) =>
        n > 0
      );
      assert(pids.length >= 1, "the supervisor had children");
      const alive = (pid: number) => {
        try {
          return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
        } catch {
          return false;
        }
      };
      const deadline = Date.now() + 5000;
      while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assertEquals(pids.filter(alive), [], "no child outlived the supervisor");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
