import assert from "node:assert/strict";
import type { ServiceRecord } from "../../lib/types.ts";
import {
  loadStateFile,
  parseStateFile,
  serializeState,
  StateWriter,
  writeFileAtomic,
} from "./persist.ts";

const WEB: ServiceRecord = {
  name: "web",
  state: "UP",
  lastChange: 1_764_000_000_000,
  changes: 4,
  detail: "ok",
  setBy: "0123456789abcdef",
};

Deno.test("serializeState() and parseStateFile() round-trip the services", () => {
  const text = serializeState("node-1", [WEB], 42);
  const state = parseStateFile(text);
  assert.equal(state.host, "node-1");
  assert.equal(state.savedAt, 42);
  assert.deepEqual(state.services, [WEB]);
});

Deno.test("parseStateFile() names what is wrong with a bad file", () => {
  assert.throws(
    () => parseStateFile('{"format":"failover-faild-state"', { file: "/s" }),
    /Invalid state file \/s: /,
  );
  assert.throws(() => parseStateFile("{}"), /"format" must be "failover-faild-state"/);
  assert.throws(
    () => parseStateFile('{"format":"failover-faild-state","version":2,"services":[]}'),
    /version 2 is not 1/,
  );
  const twice = serializeState("h", [WEB, WEB]);
  assert.throws(() => parseStateFile(twice), /service web appears twice/);
  const bad = serializeState("h", [{ ...WEB, state: "DOWN" as "UP" }]);
  assert.throws(() => parseStateFile(bad), /services\[0\]: state "DOWN"/);
});

Deno.test("writeFileAtomic() replaces the file and leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/state`;
    await writeFileAtomic(path, "old");
    await writeFileAtomic(path, "new");
    assert.equal(await Deno.readTextFile(path), "new");
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["state"]);
    await assert.rejects(writeFileAtomic(`${dir}/missing/state`, "x"), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadStateFile() returns null without a file and removes leftover temporary files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/faild.state`;
    await Deno.writeTextFile(`${dir}/.faild.state.999.tmp`, "{torn");
    assert.equal(await loadStateFile(path), null);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, []);
    await Deno.writeTextFile(path, serializeState("h", [WEB]));
    assert.deepEqual((await loadStateFile(path))?.services, [WEB]);
    await Deno.writeTextFile(path, "{torn");
    await assert.rejects(loadStateFile(path), SyntaxError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateWriter coalesces saves and every save sees its own state on disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/state`;
    let value = 0;
    let snapshots = 0;
    const writer = new StateWriter(path, () => {
      snapshots++;
      return String(value);
    });
    const saves: Promise<void>[] = [];
    for (let i = 1; i <= 50; i++) {
      value = i;
      saves.push(
        writer.save().then(async () => {
          // When a save resolves, the file holds that value or a later one.
          assert.ok(Number(await Deno.readTextFile(path)) >= i);
        }),
      );
    }
    await Promise.all(saves);
    await writer.flush();
    assert.equal(await Deno.readTextFile(path), "50");
    assert.ok(snapshots < 50, `expected coalesced writes, got ${snapshots}`);
    assert.equal(writer.writes, snapshots);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateWriter rejects the saves of a failed write and recovers afterwards", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const writer = new StateWriter(`${dir}/sub/state`, () => "x");
    await assert.rejects(writer.save(), /Cannot save state file .*sub\/state/);
    assert.equal(writer.errors, 1);
    await Deno.mkdir(`${dir}/sub`);
    await writer.save();
    assert.equal(await Deno.readTextFile(`${dir}/sub/state`), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateWriter.settle() returns at once when the disk holds memory, else writes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    let version = 1;
    let content = "one";
    let writes = 0;
    const writer = new StateWriter(`${dir}/state`, () => {
      writes++;
      return content;
    }, { version: () => version });
    await writer.save();
    assert.equal(writes, 1);
    await writer.settle();
    assert.equal(writes, 1, "nothing new: no write");
    // A write running for the current version: settle waits for it, no second write.
    version = 2;
    content = "two";
    const running = writer.save();
    await writer.settle();
    await running;
    assert.equal(writes, 2);
    assert.equal(await Deno.readTextFile(`${dir}/state`), "two");
    assert.equal(writer.behind, false);
    writer.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateWriter retries a failed write by itself and reports it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    let version = 1;
    const errors: string[] = [];
    let recovered = 0;
    const writer = new StateWriter(`${dir}/sub/state`, () => `v${version}`, {
      version: () => version,
      onError: (e) => errors.push(e.message),
      onRecovered: () => recovered++,
    });
    await assert.rejects(writer.save(), /Cannot save state file .*sub\/state/);
    assert.equal(writer.behind, true);
    // Memory did not change, yet the disk is behind: settle writes (and fails) again.
    await assert.rejects(writer.settle(), /Cannot save state file/);
    version = 2;
    await Deno.mkdir(`${dir}/sub`);
    // The background retry (1 s, then 2 s…) writes without being asked.
    for (let i = 0; i < 50 && writer.behind; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await Deno.readTextFile(`${dir}/sub/state`), "v2");
    assert.equal(recovered, 1);
    assert.ok(errors.length >= 2);
    writer.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the state file keeps the replay marks of recent writes, and checks them", () => {
  const replay = {
    sessions: [["0123456789abcdef", "fedcba9876543210", 7, 1_764_000_030_000]] as [
      string,
      string,
      number,
      number,
    ][],
    nonces: [["0123456789abcdef", "ab".repeat(16), 1_764_000_030_000]] as [
      string,
      string,
      number,
    ][],
  };
  const text = serializeState("h1", [], 1_764_000_000_000, replay);
  assert.deepEqual(parseStateFile(text).replay, replay);
  assert.equal(parseStateFile(serializeState("h1", [], 1)).replay, undefined);
  const bad = text.replace('"fedcba9876543210"', '"not-hex"');
  assert.throws(() => parseStateFile(bad, { file: "s" }), /replay\.sessions\[0\] must be/);
});
