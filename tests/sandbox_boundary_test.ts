/**
 * The sandbox boundary in the tree: what the sandboxed child loads (a failover script, `mod.ts`
 * and the child's preloaded entry) is only the script API (`mod.ts`, `shell/script/`), the wire
 * (`shell/rpc.ts`, `shell/errors.ts`, `shell/contract.ts`) and `lib/types.ts`, plus the script's
 * own files: no supervisor module (failsh, the sandbox, the policy, the scheduler, the faild
 * client) and no `npm:` package. The child has no run, write, env, FFI or sys permission and
 * `--no-npm`: a supervisor module that crept into its graph would either fail to load there or
 * hand the script code it has no business running.
 */
import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** Project files the child may load, besides a script's own directory. */
const ALLOWED = [
  /^mod\.ts$/,
  /^shell\/script\/[a-z_]+\.ts$/,
  /^shell\/rpc\.ts$/,
  /^shell\/errors\.ts$/,
  /^shell\/contract\.ts$/,
  /^lib\/types\.ts$/,
];

interface Graph {
  modules: { specifier: string; kind?: string; error?: string }[];
  npmPackages?: Record<string, unknown>;
}

/** The static module graph of `path`, as deno loads it before the script runs. */
async function graph(path: string): Promise<Graph> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-config", "--no-lock", new URL(path, ROOT).pathname],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The graph's modules that the child may not load, as paths relative to the project. */
function outsiders(g: Graph, ownDir: string | null): string[] {
  const bad: string[] = [];
  for (const m of g.modules) {
    if (!m.specifier.startsWith(ROOT.href)) {
      bad.push(m.specifier);
      continue;
    }
    const rel = m.specifier.slice(ROOT.href.length);
    if (ownDir !== null && rel.startsWith(ownDir)) continue;
    if (!ALLOWED.some((re) => re.test(rel))) bad.push(rel);
  }
  return bad;
}

for (
  const sample of [
    "samples/loopback_demo/failover.ts",
    "samples/ip_failover_linux/failover.ts",
    "samples/symmetric/failover.ts",
  ]
) {
  Deno.test(`the module graph of ${sample} holds only the script API, the wire and lib/types.ts`, async () => {
    const g = await graph(sample);
    assertEquals(outsiders(g, sample.replace(/[^/]+$/, "")), []);
    assertEquals(Object.keys(g.npmPackages ?? {}), [], "no npm package");
    const loaded = g.modules.map((m) => m.specifier.slice(ROOT.href.length));
    assert(loaded.includes("mod.ts") && loaded.includes("shell/rpc.ts"), loaded.join(", "));
  });
}

Deno.test("the child's preloaded entry loads only the script API, the wire and lib/types.ts", async () => {
  const g = await graph("shell/script/child_main.ts");
  assertEquals(outsiders(g, null), []);
  assertEquals(Object.keys(g.npmPackages ?? {}), [], "no npm package");
});

Deno.test("the supervisor is outside the script's graph: failsh.ts is loaded only by a direct run", async () => {
  const g = await graph("mod.ts");
  const loaded = g.modules.map((m) => m.specifier.slice(ROOT.href.length)).sort();
  assertEquals(loaded, [
    "lib/types.ts",
    "mod.ts",
    "shell/contract.ts",
    "shell/errors.ts",
    "shell/rpc.ts",
    "shell/script/api.ts",
    "shell/script/arbiter_timing.ts",
    "shell/script/direct_run.ts",
    "shell/script/registry.ts",
  ]);
});
