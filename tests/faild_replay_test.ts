/**
 * Replays across a restart of faild (finding 8): a signed write captured on the wire must not be
 * accepted again once faild has restarted, whether it was accepted before the restart or held
 * back by the attacker, with a state file or without one. A client that kept running across the
 * restart goes on working.
 */
import assert from "node:assert/strict";
import { FaildClient, FaildError } from "../lib/client.ts";
import { NonceSequence } from "../lib/sign.ts";
import { exchange, signedRequest } from "../bench/_raw_http.ts";
import { type FaildProcess, spawnFaild } from "./_faild_process.ts";

const KEY = "replay-test-community";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "faild-replay-" });
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function portOf(f: FaildProcess): number {
  return Number(new URL(f.url).port);
}

const FAIL = JSON.stringify({ state: "FAIL", detail: "captured" });

for (const stop of ["SIGKILL", "SIGTERM"] as const) {
  Deno.test(`a write accepted before a restart (${stop}) is refused when replayed after it`, async () => {
    await withDir(async (dir) => {
      const args = ["-c", `${dir}/community`, "-s", `${dir}/state`];
      let faild = await spawnFaild(args);
      const nonces = new NonceSequence();
      // A client that runs across the restart, with its own nonce session.
      let client = new FaildClient(faild.url, { key: KEY });
      try {
        await client.set("web", "UP");
        // The attacker captures this write (sequenced nonce, as every FaildClient sends) and a
        // randomly signed one, each also from a client whose clock is 10 s ahead of faild's (so
        // signed "after" the restart: only the nonces saved with the state stop those).
        const ahead = Date.now() + 10_000;
        const captured = [
          signedRequest(KEY, "PUT", "/v1/services/web", { body: FAIL, nonces }).text,
          signedRequest(KEY, "PUT", "/v1/services/web", { body: FAIL }).text,
          signedRequest(KEY, "PUT", "/v1/services/web", { body: FAIL, nonces, now: ahead }).text,
          signedRequest(KEY, "PUT", "/v1/services/web", { body: FAIL, now: ahead }).text,
        ];
        for (const text of captured) {
          assert.equal((await exchange(portOf(faild), text))?.status, 200);
          await client.set("web", "UP", { detail: "after the captured write" });
        }
        if (stop === "SIGKILL") await faild.kill();
        else assert.equal(await faild.stop(), 0);
        faild = await spawnFaild(args);
        client.close();
        client = new FaildClient(faild.url, { key: KEY });
        for (const [i, text] of captured.entries()) {
          const answer = await exchange(portOf(faild), text);
          assert.equal(answer?.status, 401, `replay answered ${answer?.status}: ${answer?.body}`);
          assert.match(answer!.body, i < 2 ? /before faild started/ : /Replayed request/);
        }
        const web = await client.get("web");
        assert.equal(web.state, "UP");
        assert.equal(web.detail, "after the captured write");
        // The legitimate session goes on after the restart.
        const next = signedRequest(KEY, "GET", "/v1/services/web", { nonces });
        assert.equal((await exchange(portOf(faild), next.text))?.status, 200);
      } finally {
        client.close();
        await faild.stop();
      }
    });
  });
}

Deno.test("a write held back by an attacker is refused after a restart, state file or not", async () => {
  await withDir(async (dir) => {
    for (
      const args of [["-c", `${dir}/community`, "-s", `${dir}/state`], ["-c", `${dir}/community`]]
    ) {
      let faild = await spawnFaild(args);
      const client = new FaildClient(faild.url, { key: KEY });
      try {
        await client.set("web", "UP");
        // Signed and captured, but never delivered before the restart.
        const held = signedRequest(KEY, "PUT", "/v1/services/web", { body: FAIL }).text;
        await faild.kill();
        faild = await spawnFaild(args);
        const answer = await exchange(portOf(faild), held);
        assert.equal(answer?.status, 401, `${args.join(" ")}: ${answer?.status} ${answer?.body}`);
        const fresh = new FaildClient(faild.url, { key: KEY });
        try {
          const web = await fresh.get("web").catch((e) => e);
          if (args.includes("-s")) assert.equal(web.state, "UP");
          else assert.ok(web instanceof FaildError && web.status === 404, String(web));
        } finally {
          fresh.close();
        }
      } finally {
        client.close();
        await faild.stop();
      }
    }
  });
});
