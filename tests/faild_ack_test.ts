/**
 * Acknowledged writes (finding 10): a 200 or 201 to a PUT or DELETE means the change is on disk,
 * even when the value was already in memory (another client's write still being saved, or a
 * save that failed), and a save that failed is reported, not forgotten. Checked with real
 * SIGKILLs of a real faild at the moment of the acknowledgement, and with a full disk.
 */
import assert from "node:assert/strict";
import { FaildClient, FaildError } from "../lib/client.ts";
import { parseStateFile } from "../daemon/faild/persist.ts";
import { RawConnection, signedRequest } from "../bench/_raw_http.ts";
import { spawnFaild } from "./_faild_process.ts";

const KEY = "ack-test-community";

async function stateOnDisk(file: string) {
  return parseStateFile(await Deno.readTextFile(file), { file });
}

Deno.test("a PUT acknowledged while an equal write is being saved is on disk at a SIGKILL", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-ack-" });
  const stateFile = `${dir}/state`;
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  const lost: string[] = [];
  try {
    for (let round = 0; round < 12; round++) {
      const faild = await spawnFaild(["-c", `${dir}/community`, "-s", stateFile]);
      const port = Number(new URL(faild.url).port);
      const a = await RawConnection.open(port);
      const b = await RawConnection.open(port);
      try {
        // Two clients send the same write at once: the first one changes the store and starts
        // the save, the second finds the value already in memory.
        const body = JSON.stringify({ state: "FAIL", detail: `round ${round}` });
        const first = signedRequest(KEY, "PUT", "/v1/services/web", { body }).text;
        const second = signedRequest(KEY, "PUT", "/v1/services/web", { body }).text;
        await Promise.all([a.write(first), b.write(second)]);
        const answer = await Promise.race([a.read(), b.read()]);
        // Killed the moment one of them is acknowledged.
        Deno.kill(faild.pid, "SIGKILL");
        await faild.kill();
        if (answer?.status !== 200 && answer?.status !== 201) continue;
        const web = (await stateOnDisk(stateFile)).services.find((s) => s.name === "web");
        if (web?.detail !== `round ${round}`) {
          lost.push(`round ${round}: acknowledged, disk holds ${JSON.stringify(web?.detail)}`);
        }
      } finally {
        a.close();
        b.close();
      }
    }
    assert.deepEqual(lost, [], `acknowledged writes lost:\n${lost.join("\n")}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a write whose save failed is refused again until it is on disk, then saved", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-ack-" });
  const stateDir = `${dir}/state.d`;
  await Deno.mkdir(stateDir);
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  let faild = await spawnFaild(["-c", `${dir}/community`, "-s", `${stateDir}/state`]);
  let client = new FaildClient(faild.url, { key: KEY });
  try {
    await client.set("web", "UP");
    await client.set("db", "UP");
    // The state directory goes away: every save fails.
    await Deno.rename(stateDir, `${dir}/moved`);
    for (const attempt of ["first", "retry"]) {
      await assert.rejects(
        client.set("web", "FAIL"),
        (e) => e instanceof FaildError && e.status === 500,
        `the ${attempt} PUT was acknowledged though nothing could be saved`,
      );
      await assert.rejects(
        client.delete("db"),
        (e) => e instanceof FaildError && e.status === 500,
        `the ${attempt} DELETE was acknowledged though nothing could be saved`,
      );
    }
    // The disk comes back: faild saves the held changes by itself, and answers again.
    await Deno.rename(`${dir}/moved`, stateDir);
    let disk = await stateOnDisk(`${stateDir}/state`);
    for (let i = 0; i < 100 && disk.services.find((s) => s.name === "web")?.state !== "FAIL"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      disk = await stateOnDisk(`${stateDir}/state`);
    }
    assert.equal(disk.services.find((s) => s.name === "web")?.state, "FAIL");
    assert.equal(disk.services.find((s) => s.name === "db"), undefined);
    assert.equal((await client.set("web", "FAIL")).state, "FAIL");
    await faild.kill();
    faild = await spawnFaild(["-c", `${dir}/community`, "-s", `${stateDir}/state`]);
    client.close();
    client = new FaildClient(faild.url, { key: KEY });
    assert.equal((await client.get("web")).state, "FAIL");
  } finally {
    client.close();
    await faild.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

const ROOT = Deno.uid() === 0;

Deno.test({
  name: "on a full disk a PUT is never acknowledged, and a SIGKILL loses nothing acknowledged",
  ignore: !ROOT,
  // Skipped unless root: it mounts a 64 KiB tmpfs (mount, util-linux) and fills it.
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "faild-full-" });
    const mnt = `${dir}/mnt`;
    await Deno.mkdir(mnt);
    await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
    const run = async (args: string[]) => {
      const out = await new Deno.Command(args[0]!, { args: args.slice(1), stderr: "piped" })
        .output();
      if (!out.success) {
        throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
      }
    };
    await run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]);
    const args = ["-c", `${dir}/community`, "-s", `${mnt}/state`];
    let faild = await spawnFaild(args);
    let client = new FaildClient(faild.url, { key: KEY });
    try {
      await client.set("web", "UP");
      // Fill the disk.
      const filler = await Deno.open(`${mnt}/filler`, { write: true, create: true });
      try {
        const block = new Uint8Array(4096);
        while (true) await filler.write(block);
      } catch {
        // No space left.
      } finally {
        filler.close();
      }
      for (let i = 0; i < 3; i++) {
        await assert.rejects(
          client.set("web", "FAIL", { detail: "disk full" }),
          (e) =>
            e instanceof FaildError && e.status === 500 && /Cannot save state file/.test(e.message),
        );
      }
      await faild.kill();
      faild = await spawnFaild(args);
      client.close();
      client = new FaildClient(faild.url, { key: KEY });
      assert.equal((await client.get("web")).state, "UP", "an unacknowledged write survived");
      await Deno.remove(`${mnt}/filler`);
      assert.equal((await client.set("web", "FAIL", { detail: "disk back" })).state, "FAIL");
      await faild.kill();
      faild = await spawnFaild(args);
      client.close();
      client = new FaildClient(faild.url, { key: KEY });
      assert.equal((await client.get("web")).detail, "disk back");
    } finally {
      client.close();
      await faild.stop();
      await run(["umount", mnt]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
