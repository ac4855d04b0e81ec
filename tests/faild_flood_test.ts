/**
 * A flood of connections must neither exhaust faild's file descriptors nor stop it: faild holds
 * at most its connection limit (lowered to fit the descriptor limit), answers the others 503
 * and closes them, keeps serving the clients it has, and takes new ones once the flood ends.
 */
import assert from "node:assert/strict";
import { FaildClient } from "../lib/client.ts";
import { spawnFaild } from "./_faild_process.ts";

const KEY = "flood-test-community";

Deno.test("faild survives a connection flood beyond its descriptor limit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-flood-" });
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  const faild = await spawnFaild(["-c", `${dir}/community`], { maxFiles: 128 });
  const client = new FaildClient(faild.url, { key: KEY, timeoutMs: 2000 });
  const port = Number(new URL(faild.url).port);
  const conns: Deno.Conn[] = [];
  try {
    await client.set("web", "UP", { detail: "before the flood" });
    // 300 connections that send half a request and wait: more than faild's 128 descriptors.
    const partial = new TextEncoder().encode("GET /v1/health HTTP/1.1\r\nHo");
    for (let i = 0; i < 300; i++) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(c);
        await c.write(partial);
      } catch {
        // Refused by the kernel once the backlog is full.
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    const fds = [...Deno.readDirSync(`/proc/${faild.pid}/fd`)].length;
    assert.ok(fds < 128, `faild holds ${fds} descriptors, at its limit of 128`);
    // The client connected before the flood is still served, on its kept-alive connection.
    assert.equal((await client.get("web")).detail, "before the flood");
    assert.ok(faild.logs.some((l) => l.includes("connection refused: too many connections")));
    assert.ok(faild.logs.some((l) => l.includes("connection limit lowered")));
    assert.ok(!faild.logs.some((l) => l.includes("cannot accept")), "faild ran out of descriptors");
    for (const c of conns.splice(0)) c.close();
    // New clients are taken again once the flood is gone.
    const fresh = new FaildClient(faild.url, { key: KEY, timeoutMs: 2000 });
    try {
      assert.equal((await fresh.get("web")).state, "UP");
    } finally {
      fresh.close();
    }
  } finally {
    for (const c of conns) c.close();
    client.close();
    await faild.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
