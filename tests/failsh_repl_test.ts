/** `deno task repl`: the REPL starts with the client and helpers preloaded. */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("deno task repl preloads faild(), decide() and the client", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/repl.ts`],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(
    new TextEncoder().encode(
      [
        'faild("http://127.0.0.1:7100") instanceof FaildClient',
        'decide({ service: { name: "web", masters: ["a"], slaves: ["b"], preempt: true }, self: "b", local: "FAIL", peers: [{ name: "a", reachable: false, state: null }], graceOver: true, handlerRunning: false, deferredMs: 0, maxDeferMs: 0 }).action',
        "close()",
        "",
      ].join("\n"),
    ),
  );
  await w.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /failover REPL/);
  assert.match(text, /\btrue\b/);
  assert.match(text, /"start"/);
});
