import {
  deepEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import {
  AuditLog,
  auditRequest,
  AuditWriteError,
  MAX_PRIVILEGED_BURST,
  PRIVILEGED_PER_SECOND,
  REFUSED_PER_SECOND,
  REFUSED_TOTAL_PER_SECOND,
} from "./audit.ts";

Deno.test("AuditLog appends one JSON object a line to its file", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/audit.log`;
  try {
    const audit = new AuditLog({ script: "/etc/failover/failover.ts", path });
    audit.write(
      "web",
      { op: "takeover", address: "198.19.0.100/24", device: "eth0" },
      "refused",
      "Cannot take over 198.19.0.100/24: address is outside the policy",
    );
    audit.write(
      null,
      { op: "run", argv: ["notify", "x".repeat(20_000)] },
      "allowed",
      "program /usr/bin/notify",
    );
    audit.close();
    // A second log on the same file appends.
    const again = new AuditLog({ script: "/s.ts", path });
    again.write("db", { op: "release" }, "done", "ok");
    again.close();
    const lines = (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines.length, 3);
    assertEquals(lines[0].script, "/etc/failover/failover.ts");
    assertEquals(lines[0].service, "web");
    assertEquals(lines[0].verdict, "refused");
    assertEquals(lines[0].request, { op: "takeover", address: "198.19.0.100/24", device: "eth0" });
    assert(!Number.isNaN(Date.parse(lines[0].time)));
    assertEquals(lines[1].request.op, "run");
    assert(JSON.stringify(lines[1]).length < 9000, "a huge request is cut");
    assertEquals(lines[2].service, "db");
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o640);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AuditLog reports once when its file cannot be written", () => {
  const errors: string[] = [];
  const audit = new AuditLog({
    script: "/s.ts",
    path: "/nonexistent-dir/audit.log",
    onError: (e) => errors.push(e.message),
  });
  audit.write(null, { op: "run" }, "refused", "x");
  audit.write(null, { op: "run" }, "refused", "y");
  assertEquals(errors.length, 1);
  assert(errors[0]!.startsWith("Cannot write audit log /nonexistent-dir/audit.log:"));
  assertEquals([audit.count, audit.dropped], [0, 2]);
  assertThrows(
    () => audit.writeOrThrow("web", { op: "takeover" }, "allowed", "x"),
    (e: Error) =>
      e instanceof AuditWriteError &&
      /^the audit log \/nonexistent-dir\/audit\.log cannot be written \(/.test(e.message),
  );
});

Deno.test("AuditLog rotates its file at maxBytes and keeps `keep` old files", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/audit.log`;
  try {
    const audit = new AuditLog({ script: "/s.ts", path, maxBytes: 4096, keep: 2 });
    for (let i = 0; i < 200; i++) {
      audit.write("web", { op: "run", argv: ["x".repeat(100), String(i)] }, "done", "ok");
    }
    audit.close();
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(names, ["audit.log", "audit.log.1", "audit.log.2"]);
    let total = 0;
    for (const n of names) {
      const size = Deno.statSync(`${dir}/${n}`).size;
      assert(size <= 4096, `${n} is ${size} bytes`);
      total += size;
      for (const line of Deno.readTextFileSync(`${dir}/${n}`).trim().split("\n")) JSON.parse(line);
    }
    assert(total <= 3 * 4096);
    // The newest record is in the current file.
    assert(Deno.readTextFileSync(path).includes('"199"'));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AuditLog.refused() writes a few lines a second per child, then one summary", () => {
  let now = 1_000_000;
  const lines: Record<string, unknown>[] = [];
  const audit = new AuditLog({
    script: "/s.ts",
    sink: (l) => lines.push(JSON.parse(l)),
    now: () => now,
  });
  for (let i = 0; i < 100; i++) {
    audit.refused("web", "web", { op: i % 2 ? "run" : "takeover" }, "Cannot: no");
  }
  audit.refused("db", "db", { op: "run" }, "Cannot: no"); // another child has its own budget
  assertEquals(lines.length, REFUSED_PER_SECOND + 1);
  now += 1000;
  audit.refused("web", "web", { op: "run" }, "Cannot: no");
  const summary = lines.find((l) => (l.request as { op: string }).op === "refused-summary")!;
  assertEquals(summary.request, {
    op: "refused-summary",
    source: "web",
    counts: { takeover: 45, run: 45 },
  });
  assertEquals(
    summary.reason,
    `90 more refused requests of web (takeover: 45, run: 45) were not recorded one by one: at most ${REFUSED_PER_SECOND} a second per child, ${REFUSED_TOTAL_PER_SECOND} in all`,
  );
  assertEquals(lines.at(-1)!.verdict, "refused");
  assertEquals(audit.dropped, 90);
  audit.close();
});

Deno.test("AuditLog.refused() bounds the lines of all children together", () => {
  const lines: string[] = [];
  const audit = new AuditLog({ script: "/s.ts", sink: (l) => lines.push(l), now: () => 5000 });
  for (let child = 0; child < 20; child++) {
    for (let i = 0; i < 20; i++) audit.refused(`s${child}`, null, { op: "run" }, "Cannot: no");
  }
  assertEquals(lines.length, REFUSED_TOTAL_PER_SECOND);
  audit.close();
  assertEquals(lines.length - REFUSED_TOTAL_PER_SECOND, 20, "one summary per child");
});

Deno.test("AuditLog.admit() gives each child a burst, then a steady rate", () => {
  let now = 0;
  const audit = new AuditLog({ script: "/s.ts", sink: () => {}, now: () => now });
  let n = 0;
  while (audit.admit("web")) n++;
  assertEquals(n, MAX_PRIVILEGED_BURST);
  assert(audit.admit("db"), "another child is not affected");
  now += 1000;
  n = 0;
  while (audit.admit("web")) n++;
  assertEquals(n, PRIVILEGED_PER_SECOND);
});

Deno.test("auditRequest() keeps the known fields under the real op and names the others", () => {
  assertEquals(
    auditRequest("takeover", {
      address: "198.18.0.1/24",
      device: "eth0",
      op: "poll",
      verdict: "refused",
      arpCount: "many",
    }),
    {
      op: "takeover",
      address: "198.18.0.1/24",
      device: "eth0",
      arpCount: { invalid: '"many"' },
      extra: ["op", "verdict"],
    },
  );
  assertEquals(auditRequest({ x: 1 }, {}), { op: '{"x":1}' });
  const run = auditRequest("run", { argv: ["a", "b".repeat(10_000)] });
  assertEquals((run.argv as string[])[1]!.length, 4097);
});
