/**
 * `docs/decisions.md` against the code: its two rule tables name every rule `decide()` and
 * `handOver()` can answer with, and no other; the rule numbers its prose refers to exist.
 *
 * @module
 */
import assert from "node:assert/strict";
import { DECISION_RULES } from "./decide.ts";
import { HANDOVER_RULES } from "./handover.ts";

const DOC = await Deno.readTextFile(new URL("../../docs/decisions.md", import.meta.url));

/** The cells of the first table under the heading `heading` (header row first). */
function table(markdown: string, heading: string): string[][] {
  const lines = markdown.split("\n");
  const at = lines.findIndex((l) => /^#+ /.test(l) && l.replace(/^#+ /, "") === heading);
  assert.ok(at >= 0, `docs/decisions.md has no heading "${heading}"`);
  const start = lines.findIndex((l, i) => i > at && l.startsWith("|"));
  assert.ok(start > at, `docs/decisions.md has no table under "${heading}"`);
  const rows: string[][] = [];
  for (let i = start; i < lines.length && lines[i]!.startsWith("|"); i++) {
    if (i === start + 1) continue; // the | --- | separator
    rows.push(lines[i]!.slice(1, -1).split("|").map((c) => c.trim()));
  }
  return rows;
}

/** The rule names (in backquotes) of a table's `rule` column. */
function ruleNames(rows: string[][]): Set<string> {
  const column = rows[0]!.indexOf("rule");
  assert.ok(column >= 0, `no "rule" column in ${rows[0]!.join(" | ")}`);
  return new Set(
    rows.slice(1).flatMap((r) => [...(r[column] ?? "").matchAll(/`([^`]+)`/g)].map((m) => m[1]!)),
  );
}

const DECIDE_TABLE = table(DOC, "Rules, in the order they are tried");
const HANDOVER_TABLE = table(DOC, "Hand-over without a gap");

Deno.test("docs/decisions.md has a row for every rule of decide()", () => {
  const documented = ruleNames(DECIDE_TABLE);
  assert.deepEqual(DECISION_RULES.filter((r) => !documented.has(r)), []);
});

Deno.test("every rule docs/decisions.md names for decide() is one it answers with", () => {
  const real = new Set<string>(DECISION_RULES);
  assert.deepEqual([...ruleNames(DECIDE_TABLE)].filter((r) => !real.has(r)), []);
});

Deno.test("every rule number docs/decisions.md refers to is a row of its table", () => {
  const numbers = new Set(DECIDE_TABLE.slice(1).map((r) => r[0]!).filter((n) => /^\d/.test(n)));
  const cited = [...DOC.matchAll(/\brules? (\d+\w*)/g)].map((m) => m[1]!);
  assert.ok(cited.length > 0, "the prose refers to rows by number");
  assert.deepEqual(cited.filter((n) => !numbers.has(n)), []);
});

Deno.test("docs/decisions.md has a row for every rule of handOver(), in order", () => {
  assert.deepEqual([...ruleNames(HANDOVER_TABLE)], [...HANDOVER_RULES]);
});
