import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import { checkFailsh } from "./check.ts";

const MOD = new URL("../mod.ts", import.meta.url).href;

/**
 * The checks `checkFailsh` used to make on a loaded declaration or a parsed policy that the
 * registry (`shell/script/registry.ts`, replayed by the supervisor's `checkDecl`) or
 * `parsePolicy` already refuse: each input that would have triggered one never reaches it, and
 * the earlier refusal is what `--check` reports.
 */
Deno.test("checkFailsh() gets from the registry and the policy parser what they make impossible", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "failsh_check_dead_" });
  try {
    await Deno.writeTextFile(`${dir}/key`, "secret\n", { mode: 0o600 });
    const policy = (over: Record<string, unknown> = {}) =>
      JSON.stringify({
        host: "alpha",
        keys: { k: { file: `${dir}/key` } },
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/dump.json`,
        ...over,
      });
    await Deno.writeTextFile(`${dir}/policy.json`, policy());
    const hosts = `import { host, service } from ${JSON.stringify(MOD)};
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });
`;
    const check = async (body: string, policyText?: string) => {
      await Deno.writeTextFile(`${dir}/failover.ts`, hosts + body);
      if (policyText) await Deno.writeTextFile(`${dir}/p.json`, policyText);
      const report = await checkFailsh(
        `${dir}/failover.ts`,
        policyText ? `${dir}/p.json` : `${dir}/policy.json`,
      );
      return { ...report, text: report.problems.map((p) => `${p.severity}: ${p.message}`) };
    };
    const web = `service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s",
  start: async () => "UP", stop: async () => "FAIL" });`;

    await t.step("a valid script loads", async () => {
      const r = await check(web);
      assert(r.code <= 1 && r.decl !== null, r.text.join("\n"));
    });
    await t.step("no service: the registry's error, no declaration", async () => {
      const r = await check("");
      assertEquals([r.code, r.decl, r.text], [2, null, ["error: The script declares no service"]]);
    });
    await t.step("a service naming an undeclared host", async () => {
      const r = await check(web.replace('slaves: ["beta"]', 'slaves: ["zeta"]'));
      assert(r.code === 2 && r.decl === null, r.text.join("\n"));
      assert(/slaves names host "zeta", which is not declared/.test(r.text.join("\n")));
    });
    await t.step("a service without master", async () => {
      const r = await check(web.replace('masters: ["alpha"]', "masters: []"));
      assert(r.code === 2 && r.decl === null, r.text.join("\n"));
      assert(/masters must name at least one host/.test(r.text.join("\n")), r.text.join("\n"));
    });
    await t.step("a service without a start or a stop handler", async () => {
      for (
        const [handler, body] of [
          ["start", web.replace('start: async () => "UP", ', "")],
          ["stop", web.replace(', stop: async () => "FAIL"', "")],
        ] as const
      ) {
        const r = await check(body);
        assert(r.code === 2 && r.decl === null, r.text.join("\n"));
        assert(
          new RegExp(`${handler} must be a function`).test(r.text.join("\n")),
          r.text.join("\n"),
        );
      }
    });
    await t.step("a faild.key or debugKey naming no key of the policy", async () => {
      for (
        const [field, over] of [
          ["faild.key", { faild: { url: "http://127.0.0.1:7100", key: "nope" } }],
          ["debugKey", { debug: "127.0.0.1:1849", debugKey: "nope" }],
        ] as const
      ) {
        const r = await check(web, policy(over));
        assert(r.code === 2 && r.policy === null, r.text.join("\n"));
        assert(
          r.text.some((l) => l.startsWith(`error: ${field} must name a key of "keys" (k)`)),
          r.text.join("\n"),
        );
      }
    });
    await t.step(
      "the arbiter: endpoints outside the policy's etcd and a bad timing are errors",
      async () => {
        const eps = [
          "http://198.18.1.11:2379",
          "http://198.18.1.12:2379",
          "http://198.18.1.13:2379",
        ];
        const withArbiter = (opts: string) =>
          web + `\nimport { arbiter } from ${JSON.stringify(MOD)};\narbiter(${opts});`;
        let r = await check(withArbiter(`{ endpoints: ${JSON.stringify(eps)} }`));
        assert(r.code === 2 && r.decl?.arbiter !== undefined, r.text.join("\n"));
        assert(
          r.text.includes(
            "error: endpoint http://198.18.1.11:2379 is not allowed by the policy's etcd (allowed: none)",
          ),
          r.text.join("\n"),
        );
        r = await check(
          withArbiter(`{ endpoints: ${JSON.stringify(eps)} }`),
          policy({ etcd: eps.slice(0, 2) }),
        );
        assertEquals(r.text.filter((l) => l.startsWith("error")), [
          "error: endpoint http://198.18.1.13:2379 is not allowed by the policy's etcd (allowed: http://198.18.1.11:2379, http://198.18.1.12:2379)",
        ]);
        r = await check(
          withArbiter(`{ endpoints: ${JSON.stringify(eps)} }`),
          policy({ etcd: eps }),
        );
        assertEquals(r.text.filter((l) => l.startsWith("error")), []);
        r = await check(
          withArbiter(`{ endpoints: ${JSON.stringify(eps)} }`),
          policy({ etcd: eps, onExit: "keep" }),
        );
        assert(r.text.some((l) => /^warning: keep with an arbiter/.test(l)), r.text.join("\n"));
        r = await check(
          withArbiter(`{ endpoints: ${JSON.stringify(eps)}, ttl: "3s", timeout: "1s" }`),
          policy({ etcd: eps }),
        );
        assert(r.code === 2 && r.decl === null, r.text.join("\n"));
        assert(
          r.text.some((l) =>
            /renewMs \+ 2 × timeoutMs \+ marginMs = 3500 ms exceeds ttlMs 3000 ms/.test(l)
          ),
          r.text.join("\n"),
        );
        r = await check(web, policy({ etcd: ["ftp://e1"] }));
        assert(r.code === 2 && r.policy === null, r.text.join("\n"));
        assert(
          r.text.some((l) => /etcd\[0\]: "ftp:\/\/e1" is not an etcd endpoint/.test(l)),
          r.text.join("\n"),
        );
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
