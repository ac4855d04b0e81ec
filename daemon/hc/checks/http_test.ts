import assert from "node:assert/strict";
import { httpCheck, httpsCheck, parseStatus } from "./http.ts";
import { startHttpServer } from "../_test_servers.ts";
import { parseHcfile } from "../hcfile.ts";
import { needs } from "../../../tests/_programs.ts";

function make(line: string, baseDir = "/") {
  const { config, diagnostics } = parseHcfile(`t:\n\t${line}\n`, { file: `${baseDir}/Hcfile` });
  assert.deepEqual(diagnostics.filter((d) => d.severity === "error"), []);
  const spec = config.checks[0]!;
  const def = spec.kind === "https" ? httpsCheck : httpCheck;
  return def.create(spec.values, spec.argv, {
    allowPrograms: [],
    baseDir,
    timeoutMs: spec.timeoutMs,
  });
}

Deno.test("parseStatus() accepts codes and classes", () => {
  const m = parseStatus("200,3xx");
  assert.deepEqual([200, 204, 301, 399, 404].map(m), [true, false, true, true, false]);
  assert.throws(() => parseStatus("20x"), /not a status/);
});

Deno.test("http check against a real server", async (t) => {
  const web = startHttpServer();
  try {
    await t.step("passes on status and body", async () => {
      const c = make(`http url=${web.url}/health status=200 body=/^ok/`);
      const r = await c.run(AbortSignal.timeout(1000));
      assert.equal(r.ok, true, r.detail);
      assert.match(r.detail, /^HTTP 200 in \d+ ms$/);
      assert.equal(web.paths.at(-1), "/health");
    });
    await t.step("fails on a wrong status", async () => {
      web.behaviour.status = 503;
      const r = await make(`http url=${web.url}/ status=2xx`).run(AbortSignal.timeout(1000));
      assert.equal(r.ok, false);
      assert.match(r.detail, /HTTP 503 .*status is not 2xx/);
      web.behaviour.status = 200;
    });
    await t.step("fails when the body does not match", async () => {
      web.behaviour.body = "database down";
      const r = await make(`http url=${web.url}/ body=/^ok/`).run(AbortSignal.timeout(1000));
      assert.equal(r.ok, false);
      assert.match(r.detail, /body does not match \/\^ok\//);
      web.behaviour.body = "ok\n";
    });
    await t.step("fails when slower than max-latency", async () => {
      web.behaviour.delayMs = 150;
      const r = await make(`http url=${web.url}/ max-latency=50ms timeout=2s`).run(
        AbortSignal.timeout(2000),
      );
      assert.equal(r.ok, false);
      assert.match(r.detail, /slower than max-latency 50 ms/);
    });
    await t.step("fails when the answer comes after the timeout", async () => {
      web.behaviour.delayMs = 500;
      const r = await make(`http url=${web.url}/`).run(AbortSignal.timeout(100));
      assert.equal(r.ok, false);
      assert.equal(r.detail, "no answer: timed out");
      web.behaviour.delayMs = 0;
    });
  } finally {
    await web.close();
  }
  await t.step("fails when the server is stopped", async () => {
    const r = await make(`http url=${web.url}/`).run(AbortSignal.timeout(1000));
    assert.equal(r.ok, false);
    assert.match(r.detail, /^request failed: /);
  });
});

async function makeCa(dir: string): Promise<{ cert: string; key: string; ca: string }> {
  const run = async (args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    })
      .output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  };
  await run([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=hc test CA",
  ]);
  await run([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "srv.key",
    "-out",
    "srv.csr",
    "-subj",
    "/CN=127.0.0.1",
  ]);
  await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=IP:127.0.0.1\n");
  await run([
    "x509",
    "-req",
    "-in",
    "srv.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "srv.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ]);
  return {
    cert: await Deno.readTextFile(`${dir}/srv.pem`),
    key: await Deno.readTextFile(`${dir}/srv.key`),
    ca: `${dir}/ca.pem`,
  };
}

const NO_OPENSSL = needs({ programs: ["openssl"] });

Deno.test({
  name: `https check trusts the CA of ca-file${NO_OPENSSL}`,
  ignore: NO_OPENSSL !== "",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "hc_tls_" });
    try {
      const { cert, key } = await makeCa(dir);
      const web = startHttpServer({ cert, key });
      try {
        const trusted = make(`https url=${web.url}/ ca-file=ca.pem body=/ok/`, dir);
        const r = await trusted.run(AbortSignal.timeout(3000));
        trusted.close?.();
        assert.equal(r.ok, true, r.detail);
        const untrusted = make(`https url=${web.url}/`, dir);
        const u = await untrusted.run(AbortSignal.timeout(3000));
        assert.equal(u.ok, false);
        assert.match(u.detail, /request failed/);
      } finally {
        await web.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
