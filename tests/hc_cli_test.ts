/**
 * The hc command line as a user runs it: `--check` exit codes by severity with file:line
 * messages, `--once`, and the daemon serving its status until SIGTERM.
 */
import assert from "node:assert/strict";
import { freePort, startHttpServer } from "../daemon/hc/_test_servers.ts";
import { waitFor } from "../daemon/hc/_test_util.ts";

const HC = new URL("../daemon/hc/hc.ts", import.meta.url).pathname;
const SAMPLE = new URL("../samples/hc/Hcfile", import.meta.url).pathname;

async function hc(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", HC, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function withFile<T>(text: string, f: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ prefix: "Hcfile_" });
  try {
    await Deno.writeTextFile(path, text);
    return await f(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("hc --check exits by severity with one file:line message per problem", async (t) => {
  await t.step("a clean file: 0", async () => {
    await withFile("web:\n\ttcp host=127.0.0.1 port=80\n", async (p) => {
      const r = await hc(["--check", p]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout.trim(), `${p}: 1 checks, 0 errors, 0 warnings`);
    });
  });
  await t.step("warnings only: 1", async () => {
    await withFile("web:\n\ttcp host=127.0.0.1 port=80 interval=1s timeout=2s\n", async (p) => {
      const r = await hc(["--check", p]);
      assert.equal(r.code, 1);
      assert.match(
        r.stdout,
        new RegExp(`^${p}:2: warning: timeout 2000ms is longer than interval 1000ms`, "m"),
      );
    });
  });
  await t.step("errors: 2, unknown dependency and cycle included", async () => {
    await withFile(
      "a: b\n\ttcp host=h port=1\nb: a\n\ttcp host=h port=1\nc: ghost\n\tping\n",
      async (p) => {
        const r = await hc(["--check", p]);
        assert.equal(r.code, 2);
        const lines = r.stdout.trim().split("\n");
        assert.deepEqual(lines, [
          `${p}:1: error: dependency cycle: a -> b -> a: dependencies must not loop`,
          `${p}:5: error: check c depends on ghost, which is not defined: define "ghost:" or remove it`,
          `${p}:6: error: a ping check needs host=: host name or IP address to ping`,
          `${p}: 3 checks, 3 errors, 0 warnings`,
        ]);
        const json = JSON.parse((await hc(["--check", "--json", p])).stdout);
        assert.equal(json.errors, 3);
        assert.equal(json.diagnostics[0].line, 1);
      },
    );
  });
  await t.step("a missing file: 2 with the reason", async () => {
    const r = await hc(["--check", "/nonexistent/Hcfile"]);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /^\/nonexistent\/Hcfile:0: error: cannot read the Hcfile: /);
  });
  await t.step("the sample has no errors", async () => {
    const r = await hc(["--check", SAMPLE]);
    assert.ok(r.code <= 1, r.stdout);
    assert.match(r.stdout, /5 checks, 0 errors/);
  });
  await t.step("the loopback sample is clean", async () => {
    const r = await hc([
      "--check",
      new URL("../samples/hc/loopback.Hcfile", import.meta.url).pathname,
    ]);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /3 checks, 0 errors, 0 warnings/);
  });
  await t.step("hc refuses to start a file with errors", async () => {
    await withFile("a:\n\ttcp host=h\n", async (p) => {
      const r = await hc([p]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /has errors: fix them \(hc --check/);
    });
  });
  await t.step("bad usage: 64", async () => {
    assert.equal((await hc([])).code, 64);
    assert.equal((await hc(["--bogus", "x"])).code, 64);
  });
});

Deno.test("hc --once runs every check once and exits 0 only when all are UP", async () => {
  const web = startHttpServer();
  try {
    const text = `web:\n\thttp url=${web.url}/ body=/ok/\n`;
    await withFile(text, async (p) => {
      const up = await hc(["--once", "--json", p]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal(JSON.parse(up.stdout).checks[0].state, "UP");
      web.behaviour.body = "down";
      const down = await hc(["--once", p]);
      assert.equal(down.code, 1);
      assert.match(down.stdout, /│ web\s+│ FAIL\s+│/);
    });
  } finally {
    await web.close();
  }
});

Deno.test("hc serves its status on --listen and stops cleanly on SIGTERM", async () => {
  const web = startHttpServer();
  const port = await freePort();
  const dir = await Deno.makeTempDir({ prefix: "hc_cli_" });
  const file = `${dir}/Hcfile`;
  await Deno.writeTextFile(
    file,
    `name cli-test\ndefaults interval=200ms timeout=200ms rise=1 fall=1\nweb:\n\thttp url=${web.url}/\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", HC, file, "--listen", `127.0.0.1:${port}`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  let log = "";
  const reading = (async () => {
    for await (const chunk of stderr) if (log.length < 65536) log += chunk;
  })();
  let exited = false;
  try {
    await waitFor("status API", async () => {
      try {
        const s = await (await fetch(`http://127.0.0.1:${port}/v1/checks`)).json();
        return s.checks[0].state === "UP";
      } catch {
        return false;
      }
    }, 20_000);
    const s = await (await fetch(`http://127.0.0.1:${port}/v1/checks`)).json();
    assert.equal(s.name, "cli-test");
    child.kill("SIGTERM");
    const status = await child.status;
    exited = true;
    assert.equal(status.code, 0);
    await reading;
    const lines = log.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.facility === "hc" && l.msg === "check web is UP"));
    assert.equal(lines.at(-1).msg, "stopped");
  } finally {
    if (!exited) {
      child.kill("SIGKILL");
      await child.status;
    }
    await reading.catch(() => {});
    await web.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hc refuses to start when a faild action's key file is missing", async () => {
  await withFile(
    "web:\n\ttcp host=127.0.0.1 port=80\n\ton fail: faild url=http://127.0.0.1:7100 key-file=/nonexistent/key\n",
    async (p) => {
      const r = await hc([p]);
      assert.equal(r.code, 1, "could not start: 1, as every tool");
      assert.match(r.stderr, /hc: Cannot start: .*\/nonexistent\/key/);
    },
  );
});

Deno.test("hc reloads its Hcfile on SIGHUP, keeping unchanged checks' state, and dumps it on SIGUSR1", async () => {
  const web = startHttpServer();
  const port = await freePort();
  const dir = await Deno.makeTempDir({ prefix: "hc_reload_" });
  const file = `${dir}/Hcfile`;
  const base =
    `defaults interval=100ms timeout=100ms rise=1 fall=1\nweb:\n\thttp url=${web.url}/\n`;
  await Deno.writeTextFile(file, base);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", HC, file, "--listen", `127.0.0.1:${port}`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      if (log.length < 1 << 20) log += chunk;
    }
  })();
  const checks = async () => {
    try {
      return (await (await fetch(`http://127.0.0.1:${port}/v1/checks`)).json()).checks as {
        name: string;
        state: string;
        changes: number;
        runs: number;
      }[];
    } catch {
      return [];
    }
  };
  let exited = false;
  try {
    await waitFor("web UP", async () => (await checks())[0]?.state === "UP", 20_000);
    await Deno.writeTextFile(file, base + `api:\n\thttp url=${web.url}/api\n`);
    child.kill("SIGHUP");
    await waitFor("two checks UP", async () => {
      const c = await checks();
      return c.length === 2 && c.every((x) => x.state === "UP");
    }, 10_000);
    const web1 = (await checks()).find((c) => c.name === "web")!;
    assert.equal(web1.changes, 1, "web kept its state: no new PENDING -> UP change");
    assert.ok(web1.runs > 1);
    await Deno.writeTextFile(file, "broken line\n");
    child.kill("SIGHUP");
    await waitFor("reload refused", () => log.includes("reload refused"), 10_000);
    assert.equal((await checks()).length, 2, "the running checks go on after a bad reload");
    child.kill("SIGUSR1");
    await waitFor("state dump", () => log.includes('"msg":"state dump"'), 10_000);
    const dump = log.split("\n").find((l) => l.includes('"msg":"state dump"'))!;
    assert.equal(JSON.parse(dump).snapshot.checks.length, 2);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    exited = true;
  } finally {
    if (!exited) {
      child.kill("SIGKILL");
      await child.status;
    }
    await reading.catch(() => {});
    await web.close();
    await Deno.remove(dir, { recursive: true });
  }
});
