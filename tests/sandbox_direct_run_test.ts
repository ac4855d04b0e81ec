/**
 * `deno run -A script.ts --policy policy.json`: the script starts failsh's supervisor around
 * itself, which runs the same script again in the sandboxed child.
 */
import { ok as assert } from "node:assert/strict";
import { MOD_URL } from "./_sandbox_util.ts";

Deno.test("a script run directly starts the supervisor, which runs it sandboxed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh_direct_" });
  try {
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `
import { host, service } from ${JSON.stringify(MOD_URL)};
let env = "denied";
try {
  Deno.env.get("HOME");
  env = "allowed";
} catch {
  // sandboxed
}
console.log("PROBE env " + env);
host("alpha", { address: "127.0.0.1", port: 1 });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
    );
    await Deno.writeTextFile(
      `${dir}/policy.json`,
      JSON.stringify({
        host: "alpha",
        netDriver: "simulated",
        monitor: null,
        faild: { url: "http://127.0.0.1:1", key: null },
      }),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", `${dir}/failover.ts`, "--policy", `${dir}/policy.json`],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const decoder = new TextDecoder();
    let text = "";
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    };
    const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
    const deadline = Date.now() + 20_000;
    while (!text.includes(`"PROBE env denied"`) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGTERM");
    const status = await Promise.race([
      child.status,
      new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
    ]);
    if (status === null) child.kill("SIGKILL");
    await child.status;
    await readers;
    // The top level ran twice: once unsandboxed (the supervisor, run with -A) and once in the
    // sandboxed child, whose output the supervisor logs as JSON (facility "script").
    assert(text.includes("PROBE env allowed\n"), text.slice(0, 2000));
    assert(/"facility":"script","msg":"PROBE env denied"/.test(text), text.slice(0, 2000));
    assert(status !== null, "failsh exits on SIGTERM");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function until(what: string, fn: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

Deno.test("a script run directly takes every failsh option: --check, -m, -D, -l", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "failsh_direct_flags_" });
  try {
    await Deno.writeTextFile(`${dir}/key`, "direct-run-secret\n", { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `import { host, service } from ${JSON.stringify(MOD_URL)};
host("alpha", { address: "127.0.0.1", port: 1 });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
`,
    );
    // The policy turns the monitor and debug ports off: only the command line turns them on.
    await Deno.writeTextFile(
      `${dir}/policy.json`,
      JSON.stringify({
        host: "alpha",
        netDriver: "simulated",
        monitor: null,
        debug: null,
        keys: { k: { file: `${dir}/key` } },
        debugKey: "k",
        faild: { url: "http://127.0.0.1:1", key: null },
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/policy-dump.json`,
      }),
    );
    const run = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-config", `${dir}/failover.ts`, ...args],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      });

    await t.step("--check validates and exits instead of running", async () => {
      const out = await run(["--check"]).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      // The single-host service is worth a warning (exit 1); the report is the check's.
      assert(out.code === 1 && /^0 error\(s\), 1 warning\(s\)$/m.test(text), text);
    });

    await t.step("-m, -D and -l override the policy", async () => {
      const monitor = freePort();
      const debug = freePort();
      const dump = `${dir}/flag-dump.json`;
      const child = run([
        "-m",
        `127.0.0.1:${monitor}`,
        "-D",
        `127.0.0.1:${debug}`,
        "-l",
        dump,
      ]).spawn();
      try {
        await until("the monitor port of -m", async () => {
          const r = await fetch(`http://127.0.0.1:${monitor}/v1/snapshot`);
          return r.ok && (await r.json()).host === "alpha";
        });
        await until("the debug port of -D", async () => {
          const c = await Deno.connect({ hostname: "127.0.0.1", port: debug });
          c.close();
          return true;
        });
        child.kill("SIGUSR1");
        await until("the dump file of -l", async () => (await Deno.stat(dump)).size > 0);
      } finally {
        child.kill("SIGTERM");
        await child.output();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
