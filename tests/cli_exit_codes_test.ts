/**
 * Every tool speaks the one exit-code table of `lib/cli.ts`: `--help` exits 0 and lists the
 * codes, a bad option exits 64 (EX_USAGE) and points to `--help`, whatever the tool.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/** Every tool, by the module `failover TOOL` runs. */
const TOOLS: Record<string, string> = {
  faild: "daemon/faild/faild.ts",
  hc: "daemon/hc/hc.ts",
  failsh: "shell/failsh.ts",
  failc: "scripts/failc.ts",
  failstat: "scripts/failstat.ts",
  failmon: "scripts/failmon.ts",
  faildebug: "scripts/faildebug.ts",
  hcmon: "scripts/hcmon.ts",
  repl: "scripts/repl.ts",
  demo: "scripts/demo.ts",
  failover: "scripts/cli.ts",
};

async function run(module: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}${module}`, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs every tool at once (the machine has two cores: the runs wait on deno's start-up). */
async function runAll(args: (tool: string) => string[]) {
  return await Promise.all(
    Object.entries(TOOLS).map(async ([tool, module]) => ({
      tool,
      ...await run(module, args(tool)),
    })),
  );
}

Deno.test("every tool's --help exits 0 and lists its exit codes, usage as 64", async (t) => {
  for (const r of await runAll(() => ["--help"])) {
    await t.step(r.tool, () => {
      assert.equal(r.code, 0, `${r.tool} --help: ${r.stderr}`);
      assert.match(r.stdout, /Usage: /, r.tool);
      if (r.tool === "failover") return;
      assert.match(
        r.stdout,
        /Exit codes:\n( {2}\d+ +\S.*\n?)+/,
        `${r.tool} --help lists exit codes`,
      );
      assert.match(r.stdout, /^ {2}64 +/m, `${r.tool} --help names 64 for usage`);
    });
  }
});

Deno.test("every tool exits 64 on an unknown option and says where the usage is", async (t) => {
  const results = await runAll((tool) => tool === "failover" ? ["frobnicate"] : ["--frobnicate"]);
  for (const r of results) {
    await t.step(r.tool, () => {
      assert.equal(r.code, 64, `${r.tool}: ${r.stderr}`);
      assert.match(r.stderr, /--help|Unknown tool/, r.tool);
    });
  }
});
