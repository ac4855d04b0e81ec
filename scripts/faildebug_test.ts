/**
 * faildebug against a real faild process (daemon/faild/faild.ts) on a free loopback port.
 */
import assert from "node:assert/strict";
import { formatLevels } from "./faildebug.ts";

const FAILDEBUG = new URL("./faildebug.ts", import.meta.url).pathname;
const FAILD = new URL("../daemon/faild/faild.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function faildebug(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILDEBUG, ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Starts faild with a community file; returns its URL and a stop function. */
async function startFaild(dir: string): Promise<{ url: string; stop(): Promise<void> }> {
  await Deno.writeTextFile(`${dir}/community`, "*  s3cret  RW\n*  viewer  RO\n");
  const ready = `${dir}/ready`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      FAILD,
      "-c",
      `${dir}/community`,
      "-s",
      `${dir}/state.json`,
      "--listen",
      "127.0.0.1:0",
      "--name",
      "testhost",
      "--ready-file",
      ready,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const stop = async () => {
    clearTimeout(killer);
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const url = (await Deno.readTextFile(ready)).trim();
      if (url) return { url: url.replace(/\/+$/, ""), stop };
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error("faild did not become ready within 20 s");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("formatLevels puts the default first and marks it", () => {
  assert.equal(
    formatLevels({ levels: { state: "warn", "*": "info", http: "debug" } }),
    "FACILITY  LEVEL\n*         info  (default)\nhttp      debug\nstate     warn\n",
  );
});

Deno.test("faildebug refuses a bad command line before sending anything", async (t) => {
  await t.step("unknown level", async () => {
    const r = await faildebug(["--key", "k", "set", "http", "loud"]);
    assert.equal(r.code, 64);
    assert.match(r.stderr, /Unknown level "loud": expected one of error, warn, info, debug, trace/);
  });
  await t.step("unknown command and missing arguments", async () => {
    assert.equal((await faildebug(["frob"])).code, 64);
    assert.match((await faildebug(["set", "http"])).stderr, /set needs FACILITY and LEVEL/);
    assert.equal((await faildebug([])).code, 64);
  });
  await t.step("--help documents the exit codes", async () => {
    const r = await faildebug(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /77 +authentication refused/);
  });
});

Deno.test("faildebug lists and sets log levels on a running faild, signed", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "faildebug-test-" });
  const faild = await startFaild(dir);
  try {
    await t.step("list shows a table with the default level", async () => {
      const r = await faildebug(["--url", faild.url, "--key", "s3cret", "list"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^FACILITY\s+LEVEL\n\*\s+info\s+\(default\)/);
    });
    await t.step("set changes the level while faild runs; list --json shows it", async () => {
      await Deno.writeTextFile(`${dir}/key`, "s3cret\n");
      const set = await faildebug([
        "--url",
        faild.url,
        "--key-file",
        `${dir}/key`,
        "set",
        "http",
        "debug",
      ]);
      assert.equal(set.code, 0, set.stderr);
      assert.match(set.stdout, /^http is now at level debug\n/);
      const list = await faildebug(["--url", faild.url, "--json", "list"], {
        FAILOVER_KEY: "s3cret",
      });
      assert.equal(list.code, 0, list.stderr);
      assert.equal(JSON.parse(list.stdout).levels.http, "debug");
    });
    await t.step("a wrong key is refused with exit code 77", async () => {
      const r = await faildebug(["--url", faild.url, "--key", "wrong", "list"]);
      assert.equal(r.code, 77);
      assert.match(r.stderr, /Authentication refused by http:\/\/127\.0\.0\.1:\d+/);
    });
    await t.step("a read-only key may list but not set", async () => {
      assert.equal((await faildebug(["--url", faild.url, "--key", "viewer", "list"])).code, 0);
      const r = await faildebug(["--url", faild.url, "--key", "viewer", "set", "http", "trace"]);
      assert.equal(r.code, 77, r.stderr);
      const after = await faildebug(["--url", faild.url, "--key", "s3cret", "--json", "list"]);
      assert.equal(JSON.parse(after.stdout).levels.http, "debug", "the level did not change");
    });
  } finally {
    await faild.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("faildebug says when the daemon cannot be reached (exit 69)", async () => {
  const r = await faildebug(["--url", `http://127.0.0.1:${freePort()}`, "--key", "k", "list"]);
  assert.equal(r.code, 69);
  assert.match(r.stderr, /Cannot reach faild at http:\/\/127\.0\.0\.1:\d+/);
});
