import assert from "node:assert/strict";
import { Logger } from "./log.ts";

Deno.test("Logger writes one JSON object a line with level, facility and fields", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), fields: { host: "alpha" } });
  log.info("state", "service changed", { service: "web" });
  assert.equal(lines.length, 1);
  const entry = JSON.parse(lines[0]!);
  assert.equal(entry.level, "info");
  assert.equal(entry.facility, "state");
  assert.equal(entry.msg, "service changed");
  assert.equal(entry.service, "web");
  assert.equal(entry.host, "alpha");
});

Deno.test("Logger levels are per facility and change at run time", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l) });
  log.debug("http", "hidden");
  log.setLevel("http", "debug");
  log.debug("http", "shown");
  log.debug("auth", "still hidden");
  log.setLevel("*", "trace");
  log.trace("auth", "now shown");
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ["shown", "now shown"]);
  assert.deepEqual(log.levels(), { "*": "trace", http: "debug" });
});

Deno.test("Logger.setLevel() names the allowed levels when given a wrong one", () => {
  const log = new Logger({ sink: () => {} });
  assert.throws(() => log.setLevel("http", "verbose"), /"verbose" is not one of error, warn/);
});
