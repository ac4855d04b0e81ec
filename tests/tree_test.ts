/**
 * The tree's own rules, checked over every tracked TypeScript file: doc examples that claim a
 * result assert it (std's way) instead of printing it beside a comment, and no module of the
 * product (daemon/, shell/, lib/, scripts/) grows past 700 lines.
 *
 * @module
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

async function trackedFiles(): Promise<string[]> {
  const out = await new Deno.Command("git", {
    args: ["ls-files", "*.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => null);
  if (out === null || !out.success) return [];
  return new TextDecoder().decode(out.stdout).split("\n").filter((f) => f !== "");
}

/** `console.log(x); // 1500` inside a ```ts block that runs (not `ts ignore`). */
export function printedClaims(text: string): number[] {
  const lines = text.split("\n");
  const found: number[] = [];
  let running = false;
  for (const [i, line] of lines.entries()) {
    const fence = /^\s*\*\s?```(\S*)(.*)$/.exec(line);
    if (fence) {
      running = !running && /^(ts|typescript)$/.test(fence[1] ?? "") &&
        !/\bignore\b/.test(fence[2] ?? "");
      continue;
    }
    if (running && /^\s*\*\s?console\.log\(.*\);?\s*\/\/\s*\S/.test(line)) found.push(i + 1);
  }
  return found;
}

Deno.test("printedClaims() finds a printed claim in a running example and not in an ignored one", () => {
  const doc = [
    "/**",
    " * ```ts",
    " * console.log(1 + 1); // 2",
    " * ```",
    " * ```ts ignore",
    " * console.log(main()); // 0",
    " * ```",
    " */",
  ].join("\n");
  assert.deepEqual(printedClaims(doc), [3]);
});

Deno.test("doc examples assert what they claim (no console.log(x); // result)", async () => {
  const files = await trackedFiles();
  if (files.length === 0) {
    console.log("skipped: not a git checkout (the rule reads `git ls-files`)");
    return;
  }
  const bad: string[] = [];
  for (const f of files) {
    const text = await Deno.readTextFile(new URL(f, ROOT));
    for (const line of printedClaims(text)) bad.push(`${f}:${line}`);
  }
  assert.deepEqual(bad, [], "use assert's deepEqual/equal in the example instead");
});

Deno.test("no product module over 700 lines in daemon/, shell/, lib/, scripts/", async () => {
  const files = await trackedFiles();
  if (files.length === 0) {
    console.log("skipped: not a git checkout (the rule reads `git ls-files`)");
    return;
  }
  const long: string[] = [];
  for (const f of files) {
    if (!/^(daemon|shell|lib|scripts)\//.test(f) || /_test\.ts$/.test(f)) continue;
    const n = (await Deno.readTextFile(new URL(f, ROOT))).split("\n").length - 1;
    if (n > 700) long.push(`${f}: ${n} lines`);
  }
  assert.deepEqual(long, []);
});
