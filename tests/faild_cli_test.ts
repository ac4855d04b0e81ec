/**
 * Integration: faild as a real process, driven by failc and failstat as real processes.
 */
import assert from "node:assert/strict";
import { runTool, spawnFaild } from "./_faild_process.ts";

const RW = "cli-test-rw-community";
const RO = "cli-test-ro-community";

async function tempSetup() {
  const dir = await Deno.makeTempDir({ prefix: "faild-cli-" });
  const community = `${dir}/community`;
  await Deno.writeTextFile(community, `*  ${RW}  RW\n*  ${RO}  RO\n`, { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/key`, `${RW}\n`, { mode: 0o600 });
  return { dir, community, keyFile: `${dir}/key` };
}

Deno.test("failc sets, gets, lists and deletes services on a faild process", async (t) => {
  const { dir, community, keyFile } = await tempSetup();
  const faild = await spawnFaild(["-c", community, "-s", `${dir}/state`, "--name", "cli-host"]);
  const failc = (...args: string[]) => runTool("failc", ["--url", faild.url, ...args]);
  try {
    await t.step("set prints the record as a table", async () => {
      const r = await failc("--key-file", keyFile, "set", "web", "UP", "--detail", "by hand");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /│ service +│ web +│/);
      assert.match(r.stdout, /│ state +│ UP +│/);
      assert.match(r.stdout, /│ detail +│ by hand +│/);
    });
    await t.step("get --json prints the record for scripts, key from the environment", async () => {
      const r = await runTool("failc", ["--url", faild.url, "get", "web", "--json"], {
        FAILOVER_KEY: RO,
      });
      assert.equal(r.code, 0, r.stderr);
      const record = JSON.parse(r.stdout);
      assert.equal(record.state, "UP");
      assert.equal(record.detail, "by hand");
      assert.equal(record.changes, 0);
    });
    await t.step("a state change counts", async () => {
      assert.equal((await failc("--key", RW, "set", "web", "FAIL")).code, 0);
      assert.equal((await failc("--key", RW, "set", "db", "RECOVER")).code, 0);
      const r = await failc("--key", RW, "--json", "list");
      const list = JSON.parse(r.stdout);
      assert.equal(list.host, "cli-host");
      assert.deepEqual(
        list.services.map((s: { name: string; state: string; changes: number }) => [
          s.name,
          s.state,
          s.changes,
        ]),
        [["db", "RECOVER", 0], ["web", "FAIL", 1]],
      );
    });
    await t.step("list prints a table with one row per service", async () => {
      const r = await failc("--key", RW, "list");
      assert.equal(r.code, 0);
      assert.match(r.stdout, /host cli-host, boot [0-9a-f-]{36}, 2 service\(s\)/);
      assert.match(r.stdout, /│ SERVICE │ STATE +│ CHANGES │/);
      assert.match(r.stdout, /│ db +│ RECOVER │ 0 +│/);
      assert.match(r.stdout, /│ web +│ FAIL +│ 1 +│/);
      assert.ok(!r.stdout.includes("\x1b["), "no colour outside a terminal");
    });
    await t.step("exit code 1: service not found", async () => {
      const r = await failc("--key", RW, "get", "nothing");
      assert.equal(r.code, 1);
      assert.match(r.stderr, /failc: Service not found: nothing/);
    });
    await t.step("exit code 77: read-only key writing, or no key at all", async () => {
      const ro = await failc("--key", RO, "set", "web", "UP");
      assert.equal(ro.code, 77);
      assert.match(ro.stderr, /Read-only access/);
      const anon = await failc("list");
      assert.equal(anon.code, 77);
      assert.match(anon.stderr, /Unsigned request/);
    });
    await t.step("exit code 64: usage errors", async () => {
      const state = await failc("--key", RW, "set", "web", "DOWN");
      assert.equal(state.code, 64);
      assert.match(state.stderr, /Invalid state "DOWN": expected UP, RECOVER or FAIL/);
      assert.equal((await failc("--key", RW, "get", "../etc")).code, 64);
      assert.equal((await failc("frobnicate")).code, 64);
      assert.equal((await failc("--key-file", `${dir}/missing`, "list")).code, 64);
      assert.equal((await failc("--key", RW, "get")).code, 64, "a missing argument");
      assert.equal((await failc("--key", RW, "--timeout", "0", "list")).code, 64);
    });
    await t.step("--help documents the exit codes", async () => {
      const r = await failc("--help");
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Exit codes:[\s\S]*69 +faild unreachable/);
    });
    await t.step("delete removes the service", async () => {
      assert.equal((await failc("--key", RW, "delete", "db")).code, 0);
      assert.equal((await failc("--key", RW, "get", "db")).code, 1);
    });
    await t.step("failstat shows a reachable and an unreachable faild", async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const deadUrl = `http://127.0.0.1:${listener.addr.port}`;
      listener.close();
      const r = await runTool("failstat", ["--key", RW, faild.url, deadUrl]);
      assert.equal(r.code, 69);
      assert.match(r.stdout, new RegExp(`${faild.url}: host cli-host, faild `));
      assert.match(r.stdout, /│ web +│ FAIL +│/);
      assert.match(r.stdout, new RegExp(`${deadUrl}: UNREACHABLE: .*Connection refused`));
      const j = await runTool("failstat", ["--json", "--key", RW, faild.url, deadUrl]);
      const statuses = JSON.parse(j.stdout);
      assert.equal(statuses[0].reachable, true);
      assert.equal(statuses[0].services[0].name, "web");
      assert.equal(statuses[1].reachable, false);
      assert.equal(statuses[1].code, 69);
      const ok = await runTool("failstat", ["--key", RW, faild.url]);
      assert.equal(ok.code, 0);
    });
  } finally {
    await faild.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failc exits 69 when no faild listens", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${listener.addr.port}`;
  listener.close();
  const r = await runTool("failc", ["--url", url, "--key", RW, "list"]);
  assert.equal(r.code, 69);
  assert.match(r.stderr, /Cannot reach faild at/);
});

Deno.test("faild stops cleanly on SIGTERM and reloads its community file on SIGHUP", async () => {
  const { dir, community } = await tempSetup();
  const pidFile = `${dir}/faild.pid`;
  const faild = await spawnFaild(["-c", community, "-s", `${dir}/state`, "-r", pidFile, "-F"]);
  try {
    assert.equal((await Deno.readTextFile(pidFile)).trim(), String(faild.pid));
    const late = "cli-test-late-community";
    assert.equal((await runTool("failc", ["--url", faild.url, "--key", late, "list"])).code, 77);
    await Deno.writeTextFile(community, `*  ${late}  RW\n`);
    faild.child.kill("SIGHUP");
    let code = -1;
    for (let i = 0; i < 50 && code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      code = (await runTool("failc", ["--url", faild.url, "--key", late, "set", "web", "UP"]))
        .code;
    }
    assert.equal(code, 0);
    // A broken file keeps the rules in force.
    await Deno.writeTextFile(community, "this line is broken\n");
    faild.child.kill("SIGHUP");
    for (let i = 0; i < 50 && !faild.logs.some((l) => l.includes("keeping the old rules")); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(faild.logs.some((l) => l.includes("keeping the old rules")));
    assert.equal(
      (await runTool("failc", ["--url", faild.url, "--key", late, "get", "web"])).code,
      0,
    );
  } finally {
    assert.equal(await faild.stop(), 0);
  }
  try {
    await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
    const state = JSON.parse(await Deno.readTextFile(`${dir}/state`));
    assert.equal(state.services[0].name, "web");
    assert.ok(faild.logs.some((l) => JSON.parse(l).msg === "faild stopped"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("faild refuses to start with a broken community file and says where", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/community`, "web  secret-secret  RW\nweb secret\n");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../daemon/faild/faild.ts", import.meta.url).pathname,
        "-c",
        `${dir}/community`,
        "--listen",
        "127.0.0.1:0",
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(out.code, 1);
    assert.match(
      new TextDecoder().decode(out.stderr),
      new RegExp(`faild: Invalid ${dir}/community line 2: expected "service-or-glob`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
