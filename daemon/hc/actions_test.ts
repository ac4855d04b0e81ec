import assert from "node:assert/strict";
import { ActionRunner, type ActionSpec, type ChangeInfo, faildStateFor } from "./actions.ts";
import { startHttpServer } from "./_test_servers.ts";
import { memoryLogger } from "./_test_util.ts";

const info: ChangeInfo = {
  hc: "web1",
  check: "web",
  state: "FAIL",
  previous: "UP",
  rootCause: null,
  detail: "HTTP 503 in 2 ms",
  at: 1_764_000_000_000,
};

function spec(
  kind: ActionSpec["kind"],
  values: Record<string, unknown>,
  argv: string[] = [],
  timeoutMs = 2000,
): ActionSpec {
  return { line: 7, events: ["change"], kind, values, argv, timeoutMs };
}

Deno.test("faildStateFor() maps BLOCKED to FAIL unless state= says otherwise", () => {
  assert.equal(faildStateFor({ values: {} }, "UP"), "UP");
  assert.equal(faildStateFor({ values: {} }, "FAIL"), "FAIL");
  assert.equal(faildStateFor({ values: {} }, "BLOCKED"), "FAIL");
  assert.equal(faildStateFor({ values: {} }, "PENDING"), null);
  assert.equal(faildStateFor({ values: { state: "RECOVER" } }, "UP"), "RECOVER");
});

Deno.test("a webhook action POSTs the change as JSON and logs it", async () => {
  const hook = startHttpServer();
  const { logger, lines } = memoryLogger();
  const runner = new ActionRunner({ baseDir: "/", allowPrograms: [], logger });
  try {
    const out = await runner.run(spec("webhook", { url: new URL(`${hook.url}/hook`) }), info);
    assert.equal(out.ok, true, out.detail);
    assert.deepEqual(hook.posts, [{ event: "hc.change", ...info }]);
    hook.behaviour.status = 500;
    const bad = await runner.run(spec("webhook", { url: new URL(`${hook.url}/hook`) }), info);
    assert.equal(bad.ok, false);
    assert.match(bad.detail, /answered 500/);
    const logged = lines.map((l) => JSON.parse(l));
    assert.equal(logged.length, 2);
    assert.equal(logged[0].facility, "hc");
    assert.equal(logged[0].msg, "action webhook done");
    assert.equal(logged[1].level, "warn");
  } finally {
    runner.close();
    await hook.close();
  }
});

Deno.test("a webhook action gives up at its timeout", async () => {
  const hook = startHttpServer();
  hook.behaviour.delayMs = 1000;
  const runner = new ActionRunner({
    baseDir: "/",
    allowPrograms: [],
    logger: memoryLogger().logger,
  });
  try {
    const out = await runner.run(spec("webhook", { url: new URL(hook.url) }, [], 100), info);
    assert.equal(out.ok, false);
    assert.equal(out.detail, "timed out after 100 ms");
  } finally {
    runner.close();
    await hook.close();
  }
});

Deno.test("a run action gets the change in HC_* variables; a slow one is killed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hc_run_" });
  const out = `${dir}/out`;
  const runner = new ActionRunner({
    baseDir: dir,
    allowPrograms: ["/usr/bin/sh", "/usr/bin/sleep"],
    logger: memoryLogger().logger,
  });
  try {
    const r = await runner.run(
      spec("run", {}, [
        "/usr/bin/sh",
        "-c",
        `echo "$HC_NAME $HC_CHECK $HC_STATE $HC_PREVIOUS" > ${out}`,
      ]),
      info,
    );
    assert.equal(r.ok, true, r.detail);
    assert.equal(await Deno.readTextFile(out), "web1 web FAIL UP\n");
    const failing = await runner.run(
      spec("run", {}, ["/usr/bin/sh", "-c", "echo broken >&2; exit 3"]),
      info,
    );
    assert.equal(failing.ok, false);
    assert.equal(failing.detail, "/usr/bin/sh exit 3: broken");
    const slow = await runner.run(spec("run", {}, ["/usr/bin/sleep", "30"], 150), info);
    assert.equal(slow.ok, false);
    assert.match(slow.detail, /killed after 150 ms/);
    const refused = await runner.run(spec("run", {}, ["/usr/bin/rm", "-rf", dir]), info);
    assert.equal(refused.ok, false);
    assert.match(refused.detail, /not allowed/);
  } finally {
    runner.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prepare() refuses to start when a key file is missing", () => {
  const runner = new ActionRunner({
    baseDir: "/",
    allowPrograms: [],
    logger: memoryLogger().logger,
  });
  assert.throws(
    () =>
      runner.prepare([
        spec("faild", { url: "http://127.0.0.1:7100", "key-file": "/nonexistent/key" }),
      ]),
    /\/nonexistent\/key/,
  );
  runner.close();
});
