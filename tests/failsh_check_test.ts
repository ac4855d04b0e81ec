/**
 * `failsh --check`: exit code by severity (0 ok, 1 warnings, 2 errors), each problem printed with
 * where it is, and every sample passes.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const FAILSH = `${ROOT}shell/failsh.ts`;

async function check(
  script: string,
  policy: string,
  extra: string[] = [],
): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILSH, "--check", "--policy", policy, ...extra, script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, out: text };
}

Deno.test("failsh --check passes the loopback demo sample cleanly", async (t) => {
  for (const host of ["alpha", "beta"]) {
    await t.step(host, async () => {
      const r = await check(
        `${ROOT}samples/loopback_demo/failover.ts`,
        `${ROOT}samples/loopback_demo/policy_${host}.json`,
      );
      // The sample names /usr/bin/deno as its program; without it that is one warning.
      let hasDeno = false;
      try {
        hasDeno = Deno.statSync("/usr/bin/deno").isFile;
      } catch {
        hasDeno = false;
      }
      if (hasDeno) assert.equal(r.code, 0, r.out);
      else assert.ok(r.code <= 1 && !/^error:/m.test(r.out), r.out);
      assert.match(r.out, /services: web|warning/);
    });
  }
});

Deno.test("failsh --check passes the symmetric sample (warnings only for missing host files)", async (t) => {
  for (const host of ["alpha", "beta"]) {
    await t.step(host, async () => {
      const r = await check(
        `${ROOT}samples/symmetric/failover.ts`,
        `${ROOT}samples/symmetric/policy_${host}.json`,
      );
      assert.ok(r.code <= 1, r.out);
      assert.doesNotMatch(r.out, /^error:/m);
      for (const line of r.out.split("\n").filter((l) => l.startsWith("warning:"))) {
        assert.match(line, /cluster\.key|\/var\/lib\/failover|systemctl/, line);
      }
    });
  }
});

Deno.test("failsh --check exits 2 with each problem and where it is", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-check-test-" });
  try {
    const mod = `${ROOT}mod.ts`;
    await Deno.writeTextFile(`${dir}/key`, "secret\n", { mode: 0o600 });
    const policy = (over: Record<string, unknown>) =>
      JSON.stringify({
        host: "alpha",
        faild: { url: "http://127.0.0.1:7100", key: "k" },
        keys: { k: { file: `${dir}/key` } },
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/dump.json`,
        ...over,
      });
    const good = `import { host, service } from ${JSON.stringify(mod)};
host("alpha", { address: "127.0.0.1", key: "k" });
host("beta", { address: "127.0.0.2", key: "k" });
service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s",
  start: async () => "UP", stop: async () => "FAIL" });
`;
    await Deno.writeTextFile(`${dir}/good.ts`, good);
    await Deno.writeTextFile(`${dir}/policy.json`, policy({}));

    await t.step("a clean script and policy exit 0", async () => {
      const r = await check(`${dir}/good.ts`, `${dir}/policy.json`);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^ok: /m);
    });
    await t.step("a policy error names the policy file and the field", async () => {
      await Deno.writeTextFile(`${dir}/bad_policy.json`, policy({ onExit: "explode" }));
      const r = await check(`${dir}/good.ts`, `${dir}/bad_policy.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.out, /^error: .*bad_policy\.json: .*onExit/m);
    });
    await t.step("a script naming an undeclared host is an error in the script", async () => {
      await Deno.writeTextFile(
        `${dir}/bad.ts`,
        good.replace('slaves: ["beta"]', 'slaves: ["zeta"]'),
      );
      const r = await check(`${dir}/bad.ts`, `${dir}/policy.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.out, /^error: .*bad\.ts: .*zeta/m);
    });
    await t.step("a script that throws at load is an error", async () => {
      await Deno.writeTextFile(`${dir}/throws.ts`, 'throw new Error("boom at load");\n');
      const r = await check(`${dir}/throws.ts`, `${dir}/policy.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.out, /^error: .*throws\.ts/m);
    });
    await t.step("a policy host missing from the script is an error", async () => {
      await Deno.writeTextFile(`${dir}/other_host.json`, policy({ host: "gamma" }));
      const r = await check(`${dir}/good.ts`, `${dir}/other_host.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.out, /host: "gamma" is not one of the script's hosts \(alpha, beta\)/);
    });
    await t.step("warnings only exit 1", async () => {
      await Deno.writeTextFile(
        `${dir}/warn.json`,
        policy({ keys: { k: { file: `${dir}/missing.key` } } }),
      );
      const r = await check(`${dir}/good.ts`, `${dir}/warn.json`);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /^warning: .*keys\.k: cannot read .*missing\.key/m);
    });
    await t.step(
      "a liveness probe: a clean one passes, a bad or useless one is reported",
      async () => {
        await Deno.writeTextFile(
          `${dir}/live.ts`,
          good.replace(
            'host("beta", { address: "127.0.0.2", key: "k" });',
            'host("beta", { address: "127.0.0.2", key: "k", liveness: { interval: "10ms", fall: 5 } });',
          ),
        );
        const ok = await check(`${dir}/live.ts`, `${dir}/policy.json`);
        assert.equal(ok.code, 0, ok.out);
        await Deno.writeTextFile(
          `${dir}/live_bad.ts`,
          good.replace(
            'host("beta", { address: "127.0.0.2", key: "k" });',
            'host("beta", { address: "127.0.0.2", key: "k", liveness: { interval: "2ms" } });',
          ),
        );
        const bad = await check(`${dir}/live_bad.ts`, `${dir}/policy.json`);
        assert.equal(bad.code, 2, bad.out);
        assert.match(
          bad.out,
          /^error: .*live_bad\.ts: .*RangeError: Invalid liveness\.interval of host beta: "2ms" is out of range: a duration here is from 10ms to 10s \(under 10 ms iputils ping busy-waits between requests: a whole CPU core per peer\)$/m,
        );
        await Deno.writeTextFile(
          `${dir}/live_slow.ts`,
          good.replace(
            'host("beta", { address: "127.0.0.2", key: "k" });',
            'host("beta", { address: "127.0.0.2", key: "k", liveness: { interval: "1s", fall: 5 } });',
          ),
        );
        const slow = await check(`${dir}/live_slow.ts`, `${dir}/policy.json`);
        assert.equal(slow.code, 1, slow.out);
        assert.match(
          slow.out,
          /^warning: .*host beta: liveness detects a silent kernel after 5000 ms, no sooner than the polls \(3000 ms\): it adds nothing$/m,
        );
      },
    );
    await t.step("more peers with liveness than failsh probes is an error", async () => {
      const hosts = Array.from({ length: 34 }, (_, i) => `h${i}`);
      await Deno.writeTextFile(
        `${dir}/live_many.ts`,
        `import { host, service } from ${JSON.stringify(mod)};
host("alpha", { address: "127.0.0.1", key: "k" });
${
          hosts.map((h, i) =>
            `host("${h}", { address: "127.0.1.${
              i + 1
            }", key: "k", liveness: { interval: "10ms" } });`
          ).join("\n")
        }
service("web", { masters: ["alpha"], slaves: ${JSON.stringify(hosts)}, interval: "1s",
  start: async () => "UP", stop: async () => "FAIL" });
`,
      );
      const r = await check(`${dir}/live_many.ts`, `${dir}/policy.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(
        r.out,
        /^error: .*live_many\.ts: liveness is declared for 34 peers of alpha: at most 32 are probed \(h32, h33 would be judged by polls alone\)$/m,
      );
    });
    await t.step("--json gives the code and the problems", async () => {
      const r = await check(`${dir}/bad.ts`, `${dir}/policy.json`, ["--json"]);
      const report = JSON.parse(r.out.slice(r.out.indexOf("{")));
      assert.equal(report.code, 2);
      assert.equal(report.problems[0].severity, "error");
    });
    await t.step("a missing script is an error, not a crash", async () => {
      const r = await check(`${dir}/nope.ts`, `${dir}/policy.json`);
      assert.equal(r.code, 2, r.out);
      assert.match(r.out, /^error: .*nope\.ts/m);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failsh --help and bad usage", async () => {
  const help = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILSH, "--help"],
    stdout: "piped",
  }).output();
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /failsh simulate SCRIPT SCENARIO/);
  const bad = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILSH, "--bogus"],
    stderr: "piped",
  }).output();
  assert.equal(bad.code, 64);
});
