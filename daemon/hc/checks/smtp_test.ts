import assert from "node:assert/strict";
import { parseReply, probeSmtp } from "./smtp.ts";
import { startSmtpServer } from "../_test_servers.ts";

Deno.test("parseReply() waits for the last line of a multi-line reply", () => {
  assert.equal(parseReply("250-mx\r\n250-SIZE 1\r\n"), null);
  const r = parseReply("250-mx\r\n250 HELP\r\n221");
  assert.deepEqual(r?.reply, { code: 250, lines: ["mx", "HELP"] });
  assert.equal(r?.used, 18);
  assert.throws(() => parseReply("hello\r\n"), /not an SMTP reply/);
});

Deno.test("smtp check against a real listener", async (t) => {
  const smtp = startSmtpServer();
  const options = { host: "127.0.0.1", port: smtp.port, helo: "hc.example.test" };
  try {
    await t.step("passes on a 220 banner and a 250 EHLO answer", async () => {
      const r = await probeSmtp(options, AbortSignal.timeout(1000));
      assert.equal(r.ok, true, r.detail);
      assert.match(r.detail, /^220 mx.example.test ESMTP ready; EHLO 250 in \d+ ms$/);
      assert.deepEqual(smtp.ehlos, ["hc.example.test"]);
    });
    await t.step("fails on a 554 banner", async () => {
      smtp.behaviour.banner = "554 no service";
      const r = await probeSmtp(options, AbortSignal.timeout(1000));
      assert.equal(r.ok, false);
      assert.equal(r.detail, "banner is 554 no service, expected 220");
      smtp.behaviour.banner = "220 mx.example.test ESMTP ready";
    });
    await t.step("fails when EHLO is refused", async () => {
      smtp.behaviour.ehloCode = 502;
      const r = await probeSmtp(options, AbortSignal.timeout(1000));
      assert.equal(r.ok, false);
      assert.match(r.detail, /^EHLO answered 502 no, expected 250$/);
      smtp.behaviour.ehloCode = 250;
    });
    await t.step("fails when the banner comes after the timeout", async () => {
      smtp.behaviour.delayMs = 400;
      const r = await probeSmtp(options, AbortSignal.timeout(100));
      assert.equal(r.ok, false);
      assert.equal(r.detail, "banner failed: timed out");
      smtp.behaviour.delayMs = 0;
    });
  } finally {
    await smtp.close();
  }
  await t.step("fails when the listener is stopped", async () => {
    const r = await probeSmtp(options, AbortSignal.timeout(1000));
    assert.equal(r.ok, false);
    assert.match(r.detail, /^connect failed: /);
  });
});
