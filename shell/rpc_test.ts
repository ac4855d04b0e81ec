import { deepEqual as assertEquals } from "node:assert/strict";
import { readLines } from "./rpc.ts";

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
