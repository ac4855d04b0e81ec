/**
 * hc feeding faild: a web check's state is set in a faild started in-process, signed with the
 * community from a key file, so failsh can fail over from a host that is up but sick. A blocked
 * check (its dependency failing) does not fire its fail action; a wrong key is an action failure.
 */
import assert from "node:assert/strict";
import { startFaild } from "../daemon/faild/faild.ts";
import { HealthChecker } from "../daemon/hc/checker.ts";
import { parseHcfile } from "../daemon/hc/hcfile.ts";
import { startHttpServer } from "../daemon/hc/_test_servers.ts";
import { memoryLogger, waitFor } from "../daemon/hc/_test_util.ts";
import { Logger } from "../lib/log.ts";

const COMMUNITY = "hc-test-community-7f3a";

Deno.test("hc sets the web service FAIL in faild when the web check fails, and UP again", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "hc_faild_" });
  const faild = await startFaild({
    listen: "127.0.0.1:0",
    community: `* ${COMMUNITY} RW\n`,
    name: "web1",
    logger: new Logger({ sink: () => {} }),
  });
  const gw = startHttpServer();
  const web = startHttpServer();
  await Deno.writeTextFile(`${dir}/key`, COMMUNITY + "\n");
  await Deno.writeTextFile(`${dir}/wrong`, "not-the-community\n");
  const { config, diagnostics } = parseHcfile(
    [
      "defaults interval=100ms timeout=100ms rise=1 fall=2",
      "gateway:",
      `\thttp url=${gw.url}/`,
      "web: gateway",
      `\thttp url=${web.url}/health body=/ok/`,
      `\ton fail: faild url=${faild.url} key-file=key service=web`,
      `\ton up: faild url=${faild.url} key-file=key service=web`,
      "intruder:",
      `\thttp url=${web.url}/other`,
      `\ton up: faild url=${faild.url} key-file=wrong service=db`,
      "",
    ].join("\n"),
    { file: `${dir}/Hcfile` },
  );
  assert.deepEqual(diagnostics, []);
  const { logger, lines } = memoryLogger();
  const hc = new HealthChecker(config, { name: "hc-web1", logger });
  try {
    hc.start();
    await t.step("web UP is set in faild, signed with the key file's community", async () => {
      await waitFor("faild web UP", () => faild.store.get("web")?.state === "UP");
      const r = faild.store.get("web")!;
      assert.match(r.detail, /^hc hc-web1: web UP: HTTP 200 in \d+ ms$/);
      assert.notEqual(r.setBy, "anonymous");
    });
    await t.step("the web check fails: faild's web becomes FAIL with the reason", async () => {
      web.behaviour.status = 503;
      await waitFor("faild web FAIL", () => faild.store.get("web")?.state === "FAIL");
      assert.match(faild.store.get("web")!.detail, /web FAIL: HTTP 503 .*status is not 200/);
      // The action is logged once faild has answered (just after the store changed).
      await waitFor(
        "the action's log line",
        () =>
          lines.map((l) => JSON.parse(l)).some((l) =>
            l.msg === "action faild done" && l.state === "FAIL" && l.facility === "hc"
          ),
      );
    });
    await t.step("it recovers: UP again", async () => {
      web.behaviour.status = 200;
      await waitFor("faild web UP", () => faild.store.get("web")?.state === "UP");
    });
    await t.step("a failing dependency blocks web; its fail action does not fire", async () => {
      const changes = faild.store.get("web")!.changes;
      gw.behaviour.status = 500;
      web.behaviour.status = 503;
      await waitFor("web BLOCKED", () => hc.check("web")?.state === "BLOCKED");
      assert.equal(hc.check("web")?.rootCause, "gateway");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(faild.store.get("web")?.state, "UP");
      assert.equal(faild.store.get("web")?.changes, changes);
    });
    await t.step("a wrong key is refused by faild and counted as a failed action", async () => {
      await waitFor("intruder action ran", () => (hc.check("intruder")?.actionsRun ?? 0) > 0);
      const c = hc.check("intruder")!;
      assert.ok(c.actionsFailed >= 1);
      assert.equal(c.actionsFailed, c.actionsRun, "an action signed with the wrong key succeeded");
      assert.equal(c.lastAction?.ok, false);
      assert.equal(c.lastAction?.kind, "faild");
      assert.equal(faild.store.get("db"), undefined);
    });
  } finally {
    await hc.stop();
    await gw.close();
    await web.close();
    await faild.close();
    await Deno.remove(dir, { recursive: true });
  }
});
