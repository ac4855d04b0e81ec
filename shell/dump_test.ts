import assert from "node:assert/strict";
import { type DumpData, writeDump } from "./dump.ts";
import { parsePolicy } from "./sandbox/policy.ts";

function data(): DumpData {
  return {
    snapshot: {
      host: "alpha",
      startedAt: 1,
      now: 2,
      hosts: [],
      services: [],
      addresses: [],
      events: [],
    },
    policy: parsePolicy('{"host":"alpha"}', "/etc/failover/policy.json"),
    script: "/etc/failover/failover.ts",
    pid: 42,
    sandbox: null,
    monitor: null,
    debug: null,
  };
}

Deno.test("writeDump() replaces a file atomically and leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-dump-test-" });
  try {
    await Deno.writeTextFile(`${dir}/dump.json`, "old");
    await writeDump(`${dir}/dump.json`, data());
    const d = JSON.parse(await Deno.readTextFile(`${dir}/dump.json`));
    assert.equal(d.snapshot.host, "alpha");
    assert.equal(d.pid, 42);
    assert.equal(typeof d.dumpedAt, "number");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["dump.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeDump() reports a directory that does not exist", async () => {
  await assert.rejects(
    writeDump("/nonexistent-failover-dir/dump.json", data()),
    /Cannot write dump \/nonexistent-failover-dir\/dump\.json/,
  );
});

const hasMkfifo = (() => {
  try {
    return Deno.statSync("/usr/bin/mkfifo").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "writeDump() writes into a FIFO that a reader opened" +
    (hasMkfifo ? "" : " (skipped: no /usr/bin/mkfifo)"),
  ignore: !hasMkfifo,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "failsh-dump-test-" });
    try {
      const fifo = `${dir}/dump.fifo`;
      await new Deno.Command("/usr/bin/mkfifo", { args: [fifo] }).output();
      const reading = Deno.readTextFile(fifo);
      await writeDump(fifo, data());
      const d = JSON.parse(await reading);
      assert.equal(d.snapshot.host, "alpha");
      assert.ok((await Deno.stat(fifo)).isFifo, "the FIFO is still a FIFO");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "writeDump() gives up on a FIFO nobody reads" +
    (hasMkfifo ? "" : " (skipped: no /usr/bin/mkfifo)"),
  ignore: !hasMkfifo,
  // The blocked open stays in a runtime thread until the test opens the FIFO to release it.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "failsh-dump-test-" });
    try {
      const fifo = `${dir}/dump.fifo`;
      await new Deno.Command("/usr/bin/mkfifo", { args: [fifo] }).output();
      await assert.rejects(
        writeDump(fifo, data(), { fifoTimeoutMs: 100 }),
        /no reader within 100 ms/,
      );
      // Unblock the pending open so nothing is left behind.
      const f = await Deno.open(fifo, { read: true });
      await new Promise((r) => setTimeout(r, 50));
      f.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
