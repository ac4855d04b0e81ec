/**
 * A flood of connections that exhausts faild's file descriptors must not leave it dead: faild
 * drops the connections, listens again, and still holds its state.
 */
import assert from "node:assert/strict";
import { FaildClient } from "../lib/client.ts";
import { spawnFaild } from "./_faild_process.ts";

const KEY = "flood-test-community";

Deno.test("faild survives a connection flood that exhausts its file descriptors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-flood-" });
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  const faild = await spawnFaild(["-c", `${dir}/community`], { maxFiles: 128 });
  const client = new FaildClient(faild.url, { key: KEY, timeoutMs: 1000 });
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
        // Refused once the backlog is full or faild is between two listens.
      }
    }
    for (const c of conns.splice(0)) c.close();
    // faild listens again within a few seconds, with its state intact.
    let record;
    for (let i = 0; i < 100 && record === undefined; i++) {
      try {
        record = await client.get("web");
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.equal(record?.detail, "before the flood");
    assert.ok(
      faild.logs.some((l) => l.includes("HTTP server stopped accepting")),
      "the flood did not exhaust faild's descriptors, so this test proved nothing",
    );
    assert.ok(faild.logs.some((l) => l.includes("HTTP server listening again")));
  } finally {
    for (const c of conns) c.close();
    client.close();
    await faild.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
