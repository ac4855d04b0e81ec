import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import { AuditLog } from "./audit.ts";

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
  assertEquals(audit.count, 2);
});
