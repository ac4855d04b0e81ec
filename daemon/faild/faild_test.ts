import assert from "node:assert/strict";
import { FaildClient } from "../../lib/client.ts";
import { Logger } from "../../lib/log.ts";
import { nonceSlotsFor, parseFaildArgs, parseListen, startFaild } from "./faild.ts";
import { needs } from "../../tests/_programs.ts";

const KEY = "faild-test-community";
const quiet = () => new Logger({ sink: () => {} });

Deno.test("parseFaildArgs() reads the original's short options and the new long ones", () => {
  const a = parseFaildArgs([
    "-c",
    "/etc/c",
    "-s",
    "/var/s",
    "-r",
    "/run/p",
    "-F",
    "--listen=127.0.0.1:0",
    "--max-services",
    "10",
    "--log-level",
    "http=debug",
    "--log-level",
    "warn",
  ]);
  assert.equal(a.community, "/etc/c");
  assert.equal(a.state, "/var/s");
  assert.equal(a.pid, "/run/p");
  assert.equal(a.listen, "127.0.0.1:0");
  assert.equal(a.maxServices, 10);
  assert.deepEqual(a.logLevel, ["http=debug", "warn"]);
  assert.equal(parseFaildArgs([]).listen, "0.0.0.0:7100");
  const limits = parseFaildArgs([
    "--max-connections",
    "64",
    "--header-timeout",
    "2.5",
    "--body-timeout=0.5",
  ]);
  assert.equal(limits.maxConnections, 64);
  assert.equal(limits.headerTimeout, 2.5);
  assert.equal(limits.bodyTimeout, 0.5);
});

Deno.test("parseFaildArgs() explains bad options", () => {
  assert.throws(() => parseFaildArgs(["--frob"]), /Unknown option '--frob'.*faild --help/);
  assert.throws(() => parseFaildArgs(["-c"]), /Option '-c, --community <value>' argument missing/);
  assert.throws(() => parseFaildArgs(["stray"]), /Unexpected argument "stray"/);
  assert.throws(() => parseFaildArgs(["--max-services", "0"]), /integer from 1 to/);
  assert.throws(
    () => parseFaildArgs(["--listen", "7100"]),
    /Invalid address "7100": the port is missing/,
  );
  assert.throws(() => parseFaildArgs(["--name", "a b"]), /Invalid --name/);
  assert.throws(() => parseFaildArgs(["-u", "nobody"]), /Unsupported option "-u" of the original/);
  assert.throws(
    () => parseFaildArgs(["--header-timeout", "0"]),
    /Invalid --header-timeout "0": expected seconds from 0\.1 to 3600/,
  );
  assert.throws(() => parseFaildArgs(["--max-connections", "x"]), /integer from 1 to/);
});

Deno.test("parseListen() handles IPv4, IPv6 and an empty host", () => {
  assert.deepEqual(parseListen("[::1]:7100"), { hostname: "::1", port: 7100 });
  assert.deepEqual(parseListen(":7100"), { hostname: "0.0.0.0", port: 7100 });
  assert.throws(() => parseListen("host:70000"), TypeError);
  assert.equal(nonceSlotsFor(1000), 2048);
});

Deno.test("startFaild() restores the state file: same records and counters, new boot id", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const options = {
      listen: "127.0.0.1:0",
      community: `* ${KEY} RW\n`,
      stateFile: `${dir}/state`,
      logger: quiet(),
    };
    const first = await startFaild(options);
    const client1 = new FaildClient(first.url, { key: KEY });
    await client1.set("web", "UP");
    await client1.set("web", "FAIL", { detail: "down for the test" });
    const before = await client1.get("web");
    client1.close();
    await first.close();

    const second = await startFaild(options);
    const client2 = new FaildClient(second.url, { key: KEY });
    try {
      assert.notEqual(second.bootId, first.bootId);
      const list = await client2.list();
      assert.equal(list.bootId, second.bootId);
      assert.deepEqual(list.services, [before]);
      const after = await client2.set("web", "UP");
      assert.equal(after.changes, before.changes + 1);
    } finally {
      client2.close();
      await second.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startFaild() refuses a broken state file and names it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/state`, '{"format":"failover-faild-state","version":1');
    await assert.rejects(
      startFaild({ listen: "127.0.0.1:0", stateFile: `${dir}/state`, logger: quiet() }),
      new RegExp(`Invalid state file ${dir}/state: `),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startFaild() writes and removes its pid file, and refuses a running faild's", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const pidFile = `${dir}/faild.pid`;
    const f = await startFaild({ listen: "127.0.0.1:0", pidFile, logger: quiet() });
    assert.equal((await Deno.readTextFile(pidFile)).trim(), String(Deno.pid));
    await f.close();
    await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
    // A stale pid file (no such process) is replaced.
    await Deno.writeTextFile(pidFile, "999999999\n");
    const g = await startFaild({ listen: "127.0.0.1:0", pidFile, logger: quiet() });
    assert.equal((await Deno.readTextFile(pidFile)).trim(), String(Deno.pid));
    await g.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload() applies a new community file and keeps the old rules when it is broken", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/community`;
    await Deno.writeTextFile(file, `* ${KEY} RO\n`, { mode: 0o600 });
    const lines: string[] = [];
    const f = await startFaild({
      listen: "127.0.0.1:0",
      communityFile: file,
      logger: new Logger({ sink: (l) => lines.push(l) }),
    });
    const client = new FaildClient(f.url, { key: KEY });
    try {
      await assert.rejects(client.set("web", "UP"), /Read-only access/);
      await Deno.writeTextFile(file, `* ${KEY} RW\n`);
      await f.reload();
      assert.equal((await client.set("web", "UP")).state, "UP");
      await Deno.writeTextFile(file, `* ${KEY} RW\nbroken line\n`);
      await assert.rejects(f.reload(), /line 2/);
      assert.ok(lines.some((l) => l.includes("keeping the old rules")));
      assert.equal((await client.set("web", "FAIL")).state, "FAIL");
    } finally {
      client.close();
      await f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A test CA and a certificate for 127.0.0.1 signed by it (rustls refuses a self-signed leaf). */
async function makeCertificates(dir: string): Promise<boolean> {
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const steps = [
    [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=test-ca",
    ],
    ["req", ...ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"],
    [
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "cert.pem",
      "-days",
      "1",
      "-extfile",
      "ext.cnf",
    ],
  ];
  for (const args of steps) {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "null",
      signal: AbortSignal.timeout(20_000),
    }).output().catch(() => null);
    if (out === null || !out.success) return false;
  }
  return true;
}

const NO_OPENSSL = needs({ programs: ["openssl"] });

Deno.test({
  name: "startFaild() serves HTTPS with --cert and --key" + NO_OPENSSL,
  ignore: NO_OPENSSL !== "",
}, async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    assert.ok(await makeCertificates(dir), "openssl made the test certificates");
    const f = await startFaild({
      listen: "127.0.0.1:0",
      community: `* ${KEY} RW\n`,
      certFile: `${dir}/cert.pem`,
      keyFile: `${dir}/key.pem`,
      logger: quiet(),
    });
    const client = new FaildClient(f.url, {
      key: KEY,
      caCerts: [await Deno.readTextFile(`${dir}/ca.pem`)],
    });
    try {
      assert.match(f.url, /^https:\/\//);
      await t.step("a client trusting the certificate", async () => {
        assert.equal((await client.set("web", "UP")).state, "UP");
      });
      await t.step("a client that does not trust it cannot connect", async () => {
        const untrusting = new FaildClient(f.url, { key: KEY });
        await assert.rejects(untrusting.health(), /Cannot reach faild/);
        untrusting.close();
      });
    } finally {
      client.close();
      await f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
