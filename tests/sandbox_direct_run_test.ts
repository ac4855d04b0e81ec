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
