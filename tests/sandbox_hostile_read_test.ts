/**
 * Hostile scripts that try to read files through the module graph: deno loads the modules a
 * script imports literally (static imports, literal dynamic imports, template literals, import
 * attributes `text` and `json`, `data:` modules) before the read permission applies to the
 * script, so the sandbox checks the graph before the child runs it. Each test runs the real
 * sandbox (a real `deno info` and, for what is allowed, a real child).
 */
import {
  deepEqual as assertEquals,
  doesNotMatch as assertNotMatch,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, makeHarness, MOD_URL } from "./_sandbox_util.ts";
import { ScriptError } from "../shell/errors.ts";
import { startFaild } from "../daemon/faild/faild.ts";
import { Logger } from "../lib/log.ts";

const KEY = "cluster-key-6f1d2c9a0b7e4d3f";
const SHADOW_LINE = "root:$6$hostile$T0pS3cr3tHashOfTheRootPassword:19000:0:99999:7:::";
const COMMUNITY = "community-word-5e8a";
const JSON_SECRET = "json-secret-71c4";

/** A directory outside the script's, like /etc/failover/keys, holding root's 0600 secrets. */
async function secretsDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "failsh_secrets_" });
  await Deno.writeTextFile(`${dir}/cluster.key`, KEY + "\n", { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/shadow`, SHADOW_LINE + "\n", { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/secret.json`, JSON.stringify({ s: JSON_SECRET }), {
    mode: 0o600,
  });
  await Deno.mkdir(`${dir}/code`);
  await Deno.writeTextFile(`${dir}/code/stolen.ts`, `export const s = ${JSON.stringify(KEY)};`);
  return dir;
}

const HEADER = `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });
`;

/** A service whose start handler runs `body` and logs what it returns. */
function serviceRunning(body: string): string {
  return `
service("web", {
  masters: ["alpha"],
  slaves: ["beta"],
  interval: "1s",
  async start(ctx) {
    let out;
    try { out = await (async () => { ${body} })(); } catch (e) { out = "ERR " + e.name + ": " + e.message; }
    ctx.log("RESULT " + String(out));
    return "UP";
  },
  stop: () => "FAIL",
});
`;
}

/** Every secret the tests plant, to check that none leaks anywhere. */
const SECRETS = [KEY, "T0pS3cr3tHashOfTheRootPassword", COMMUNITY, JSON_SECRET];

/**
 * Starts the sandbox around `script` and expects it to refuse: a ScriptError naming the import
 * and the rule, an audit line, and no secret in any output, log or message.
 */
async function expectRefused(
  script: string,
  dir: string,
  expected: RegExp[],
  options: { policy?: Record<string, unknown>; prepare?: (scriptDir: string) => Promise<void> } =
    {},
): Promise<void> {
  const h = await makeHarness(script.replaceAll("SECRETS_DIR", dir), {
    keys: { cluster: { file: `${dir}/cluster.key` } },
    ...options.policy,
  });
  try {
    await options.prepare?.(h.dir);
    let message = "";
    await rejects(h.sandbox.start(), (e: Error) => {
      assert(e instanceof ScriptError, `${e.name}: ${e.message}`);
      message = e.message;
      return true;
    });
    assertMatch(message, /^Cannot run the script /);
    for (const re of expected) assertMatch(message, re);
    const audit = h.auditLines();
    const refusals = audit.filter((l) =>
      (l.request as Record<string, unknown>).op === "import" && l.verdict === "refused"
    );
    assert(refusals.length >= 1, `an audit line for the refused import: ${JSON.stringify(audit)}`);
    assertEquals(h.sandbox.counters().children.started, 0, "the child never ran");
    const everything = [message, JSON.stringify(audit), ...h.output, JSON.stringify(h.events)]
      .join("\n");
    for (const s of SECRETS) assertNotMatch(everything, new RegExp(s.replaceAll("$", "\\$")));
  } finally {
    await h.close();
  }
}

Deno.test("a script cannot read a file through the module graph", async (t) => {
  const dir = await secretsDir();
  try {
    await t.step("a static import of the cluster key as text", async () => {
      await expectRefused(
        `import k from "SECRETS_DIR/cluster.key" with { type: "text" };\nconsole.log("LEAK " + k);\n${HEADER}`,
        dir,
        [
          /failover\.ts:1:\d+ imports "[^"]*cluster\.key" \(type "text"\)/,
          /secret of key "cluster"/,
        ],
      );
    });
    await t.step("a static JSON import and a JSON re-export", async () => {
      await expectRefused(
        `import j from "SECRETS_DIR/secret.json" with { type: "json" };\nexport * from "SECRETS_DIR/secret.json" with { type: "json" };\nconsole.log("LEAK " + j.s);\n${HEADER}`,
        dir,
        [/imports "[^"]*secret\.json" \(type "json"\)/, /outside the directories/],
      );
    });
    await t.step("a literal dynamic import of /etc/shadow and of a shadow-like file", async () => {
      await expectRefused(
        `${HEADER}${
          serviceRunning(
            `await import("/etc/shadow", { with: { type: "text" } }); await import("SECRETS_DIR/secret.json", { with: { type: "bytes" } }); return (await import("SECRETS_DIR/shadow")).default;`,
          )
        }`,
        dir,
        [
          /imports "\/etc\/shadow" \(type "text"\)/,
          /imports "[^"]*\/shadow": .*outside/,
          /imports "[^"]*\/secret\.json" \(type "bytes"\)/,
        ],
      );
    });
    await t.step("a computed import of a path written literally in dead code", async () => {
      await expectRefused(
        `${HEADER}if (Date.now() < 0) await import("SECRETS_DIR/cluster.key", { with: { type: "text" } });\n${
          serviceRunning(
            `return (await import(["SECRETS_DIR", "cluster.key"].join("/"), { with: { type: "text" } })).default;`,
          )
        }`,
        dir,
        [/cluster\.key/],
      );
    });
    await t.step("template literals, with and without expressions", async () => {
      // deno expands a template with expressions under "./" to every matching file, following
      // symlinked directories.
      await expectRefused(
        `${HEADER}const n = "stolen";\n${
          serviceRunning(
            "return (await import(`SECRETS_DIR/cluster.key`, { with: { type: 'text' } })).default + (await import(`./linked/${n}.ts`)).s;",
          )
        }`,
        dir,
        [
          /cluster\.key/,
          /imports "\.\/linked\/stolen\.ts": it is a link to [^ ]*code\/stolen\.ts, outside/,
        ],
        { prepare: (d) => Deno.symlink(`${dir}/code`, `${d}/linked`) },
      );
    });
    await t.step("a device that never ends (/dev/zero) is refused, not read forever", async () => {
      await expectRefused(
        `import "/dev/zero";\n${HEADER}`,
        dir,
        [/imports "\/dev\/zero": outside the directories/],
      );
    });
    await t.step("a data: module that re-exports the key", async () => {
      await expectRefused(
        `${HEADER}${
          serviceRunning(
            `return (await import('data:application/javascript,export { default } from "file://SECRETS_DIR/cluster.key" with { type: "text" };')).default;`,
          )
        }`,
        dir,
        [/data:application\/javascript,[^\n]* imports "file:\/\/[^"]*cluster\.key"/],
      );
    });
    await t.step(
      "a file beside the script that is not code (deno's parse error would quote it)",
      async () => {
        await expectRefused(
          `${HEADER}${serviceRunning(`return String(await import("./community"));`)}`,
          dir,
          [/imports "\.\/community": only JavaScript and TypeScript files/],
          {
            prepare: (d) => Deno.writeTextFile(`${d}/community`, `${COMMUNITY}\n`),
          },
        );
      },
    );
    await t.step("a symlink beside the script, named like code, to the key", async () => {
      await expectRefused(
        `${HEADER}${serviceRunning(`return String(await import("./helper.ts"));`)}`,
        dir,
        [/imports "\.\/helper\.ts": it is a link to [^ ]*cluster\.key/],
        { prepare: (d) => Deno.symlink(`${dir}/cluster.key`, `${d}/helper.ts`) },
      );
    });
    await t.step("a hard link to the key beside the script, named like code", async () => {
      // deno would run the key as TypeScript: `cluster-key-…` throws a ReferenceError naming it.
      await expectRefused(
        `${HEADER}${serviceRunning(`return String(await import("./k.ts"));`)}`,
        dir,
        [/imports "\.\/k\.ts": the secret of key "cluster"/],
        { prepare: (d) => Deno.link(`${dir}/cluster.key`, `${d}/k.ts`) },
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the graph check lets code in the script's directory, the project and read paths load", async () => {
  const readable = await Deno.makeTempDir({ prefix: "failsh_readable_" });
  const h = await makeHarness(
    `import { helper } from "./lib/helper.ts";
import { shared } from "${readable}/shared.js";
import type { ServiceState } from "MOD";
${HEADER}${
      serviceRunning(`const m = await import("./lib/late.ts"); return helper + shared + m.late;`)
    }`,
    { read: [readable] },
  );
  try {
    await Deno.mkdir(`${h.dir}/lib`);
    await Deno.writeTextFile(`${h.dir}/lib/helper.ts`, `export const helper = "h";`);
    await Deno.writeTextFile(`${h.dir}/lib/late.ts`, `export const late = "l";`);
    await Deno.writeTextFile(`${readable}/shared.js`, `export const shared = "s";`);
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 20_000), "UP");
    assertEquals(h.logs.map((l) => l.message), ["RESULT hsl"]);
  } finally {
    await h.close();
    await Deno.remove(readable, { recursive: true });
  }
});

Deno.test("a worker outside the graph needs the read permission", async () => {
  const dir = await secretsDir();
  const h = await makeHarness(
    `${HEADER}${
      serviceRunning(`return await new Promise((resolve) => {
      const w = new Worker(${JSON.stringify(`file://${dir}/code/stolen.ts`)}, { type: "module" });
      w.onerror = (e) => { e.preventDefault(); w.terminate(); resolve("ERR " + e.message); };
      w.onmessage = (m) => { w.terminate(); resolve(String(m.data)); };
    });`)
    }`,
    {},
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 20_000), "UP");
    const result = h.logs.map((l) => l.message).join("\n");
    // Workers are refused outright now; were they not, the read permission would still apply.
    assertMatch(result, /^RESULT ERR .*(Requires read access|Cannot start a Worker)/);
    assertNotMatch(result, new RegExp(KEY));
  } finally {
    await h.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a script holding the key cannot sign its own writes to faild", async () => {
  // The attack end to end: the key read through the graph, then FaildClient (exported by mod.ts)
  // signing a forged veto to the faild the policy's `net` lets the script reach.
  const dir = await secretsDir();
  const faild = await startFaild({
    listen: "127.0.0.1:0",
    community: `* ${KEY} RW\n`,
    logger: new Logger({ sink: () => {} }),
  });
  const h = await makeHarness(
    `import k from "${dir}/cluster.key" with { type: "text" };
import { FaildClient, host, service } from "${MOD_URL}";
host("alpha", { address: "127.0.0.1" });
host("beta", { address: "127.0.0.2" });
const c = new FaildClient(${JSON.stringify(faild.url)}, { key: k.trim() });
await c.set("web", "FAIL", { detail: "forged veto" }).catch(() => {});
c.close();
service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s", start: () => "UP", stop: () => "FAIL" });
`,
    {
      keys: { cluster: { file: `${dir}/cluster.key` } },
      net: [new URL(faild.url).host],
    },
  );
  try {
    await rejects(h.sandbox.start(), ScriptError);
    const client = new (await import("../lib/client.ts")).FaildClient(faild.url, { key: KEY });
    try {
      assertEquals((await client.list()).services.map((s) => s.name), [], "no forged record");
    } finally {
      client.close();
    }
  } finally {
    await h.close();
    await faild.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failsh --check reports an import outside the rules as an error", async () => {
  const dir = await secretsDir();
  const work = await Deno.makeTempDir({ prefix: "failsh_check_hostile_" });
  try {
    await Deno.writeTextFile(
      `${work}/failover.ts`,
      `import k from "${dir}/cluster.key" with { type: "text" };
${HEADER.replaceAll("MOD", MOD_URL)}
service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s", start: () => k ? "UP" : "FAIL", stop: () => "FAIL" });
`,
    );
    await Deno.writeTextFile(
      `${work}/policy.json`,
      JSON.stringify({
        host: "alpha",
        netDriver: "simulated",
        monitor: null,
        keys: { cluster: { file: `${dir}/cluster.key` } },
      }),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../shell/failsh.ts", import.meta.url).pathname,
        "--check",
        "--policy",
        `${work}/policy.json`,
        `${work}/failover.ts`,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 2, text);
    assertMatch(text, /^error: .*failover\.ts: failover\.ts:1:\d+ imports "[^"]*cluster\.key"/m);
    assertNotMatch(text, /^ok:/m);
    assertNotMatch(text, new RegExp(KEY));
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(work, { recursive: true });
  }
});

const SKIP_NOT_ROOT = Deno.uid() === 0 && Deno.build.os === "linux"
  ? ""
  : " (skipped: switching the child's user needs root)";

Deno.test({
  name:
    `with childUser the child runs unprivileged: root's 0600 files stay unreadable${SKIP_NOT_ROOT}`,
  ignore: SKIP_NOT_ROOT !== "",
  fn: async () => {
    // Defence in depth: even a read the policy allows (or a graph trick the check missed)
    // cannot open a file only root may read.
    const readable = await Deno.makeTempDir({ prefix: "failsh_readable_" });
    await Deno.chmod(readable, 0o755);
    await Deno.writeTextFile(`${readable}/public.txt`, "PUBLIC", { mode: 0o644 });
    await Deno.writeTextFile(`${readable}/root-only.txt`, KEY, { mode: 0o600 });
    const h = await makeHarness(
      `${HEADER}${
        serviceRunning(`
        const pub = await Deno.readTextFile(${JSON.stringify(`${readable}/public.txt`)});
        let secret;
        try { secret = await Deno.readTextFile(${
          JSON.stringify(`${readable}/root-only.txt`)
        }); } catch (e) { secret = e.name; }
        return pub + " " + secret;`)
      }`,
      { read: [readable], childUser: "65534:65534" },
    );
    try {
      await t_start_fails_while_unreadable(h);
      await Deno.chmod(h.dir, 0o755);
      await Deno.chmod(`${h.dir}/failover.ts`, 0o644);
      await h.sandbox.start();
      assert(
        h.sandbox.childCommand().some((a) => a === "--reuid=65534"),
        h.sandbox.childCommand().join(" "),
      );
      assertEquals(await h.sandbox.invoke(call("web"), 20_000), "UP");
      assertEquals(h.logs.map((l) => l.message), ["RESULT PUBLIC PermissionDenied"]);
    } finally {
      await h.close();
      await Deno.remove(readable, { recursive: true });
    }
  },
});

/** A script only root may read cannot run as another user: start says so before any child. */
async function t_start_fails_while_unreadable(h: Awaited<ReturnType<typeof makeHarness>>) {
  await rejects(h.sandbox.start(), (e: Error) => {
    assert(e instanceof ScriptError, e.message);
    assertMatch(
      e.message,
      /failover\.ts is not readable by the child's user 65534:65534 \(childUser\)/,
    );
    return true;
  });
  assertEquals(h.sandbox.counters().children.started, 0);
}

Deno.test("failsh --check warns when others could change the script after the graph check", async () => {
  const work = await Deno.makeTempDir({ prefix: "failsh_check_writable_" });
  try {
    await Deno.chmod(work, 0o777);
    await Deno.writeTextFile(
      `${work}/failover.ts`,
      `${HEADER.replaceAll("MOD", MOD_URL)}
service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s", start: () => "UP", stop: () => "FAIL" });
`,
    );
    await Deno.writeTextFile(
      `${work}/policy.json`,
      JSON.stringify({ host: "alpha", netDriver: "simulated", monitor: null }),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../shell/failsh.ts", import.meta.url).pathname,
        "--check",
        "--policy",
        `${work}/policy.json`,
        `${work}/failover.ts`,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 1, text);
    assertMatch(
      text,
      /^warning: [^ ]*failover\.ts: its directory [^ ]+ is writable by others than its owner: someone could change the code between failsh's check of the module graph and a child loading it$/m,
    );
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
