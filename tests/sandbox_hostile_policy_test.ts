/**
 * Hostile scripts against the policy's limits: ARP counts and refresh periods above the
 * policy's, and symlinks that lead out of the directories the policy lets the script read.
 * Each test runs the real sandbox with a real child.
 */
import {
  deepEqual as assertEquals,
  doesNotMatch as assertNotMatch,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { call, makeHarness, type Probe, probes } from "./_sandbox_util.ts";
import { ScriptError } from "../shell/errors.ts";

Deno.test("the policy's arp count and refresh period are caps a script cannot exceed", async () => {
  const h = await makeHarness(
    probes(`
    await probe("countAbove", () => ctx.takeover("127.0.0.101/8", { device: "lo", arpCount: 50 }));
    await probe("refreshFaster", () => ctx.takeover("127.0.0.102/8", { device: "lo", refreshMs: 1000 }));
    await probe("countBelow", () => ctx.takeover("127.0.0.103/8", { device: "lo", arpCount: 1, refreshMs: 0 }));
    await probe("refreshSlower", () => ctx.takeover("127.0.0.104/8", { device: "lo", refreshMs: 60000 }));
    await probe("defaults", () => ctx.takeover("127.0.0.105/8", { device: "lo" }));
    await probe("countNegative", () => ctx.takeover("127.0.0.106/8", { device: "lo", arpCount: -1 }));
    `),
    {
      addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }],
      arp: { count: 2, refreshMs: 5000 },
    },
  );
  try {
    await h.sandbox.start();
    assertEquals(await h.sandbox.invoke(call("web"), 20_000), "UP");
    const r = JSON.parse(h.logs.at(-1)!.message) as Record<string, Probe>;
    assertEquals(r.countAbove?.name, "PolicyDeniedError");
    assertEquals(
      r.countAbove?.message,
      "Cannot take over 127.0.0.101/8: arpCount 50 is above the policy's arp.count 2",
    );
    assertEquals(r.refreshFaster?.name, "PolicyDeniedError");
    assertEquals(
      r.refreshFaster?.message,
      "Cannot take over 127.0.0.102/8: refreshMs 1000 is more often than the policy's arp.refreshMs 5000 allows",
    );
    assertEquals(r.countNegative?.name, "PolicyDeniedError");
    assertMatch(r.countNegative?.message ?? "", /arpCount must be an integer from 0 to 2/);
    for (const name of ["countBelow", "refreshSlower", "defaults"]) {
      assertEquals(r[name]?.ok, true, `${name}: ${JSON.stringify(r[name])}`);
    }
    // What the driver was asked for: the script's smaller values, or the policy's.
    const added = h.auditLines().filter((l) =>
      (l.request as Record<string, unknown>).op === "sim-addr-add"
    ).map((
      l,
    ) => [
      (l.request as Record<string, unknown>).address,
      (l.request as Record<string, unknown>).arpCount,
    ]);
    assertEquals(added, [["127.0.0.103/8", 1], ["127.0.0.104/8", 2], ["127.0.0.105/8", 2]]);
    assertEquals(h.sandbox.heldAddresses().length, 3);
  } finally {
    await h.close();
  }
});

Deno.test("the policy's arp.refreshMs 0 forbids a refresh", async () => {
  const h = await makeHarness(
    probes(
      `await probe("refresh", () => ctx.takeover("127.0.0.101/8", { device: "lo", refreshMs: 3600000 }));`,
    ),
    { addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }], arp: { count: 3, refreshMs: 0 } },
  );
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("web"), 20_000);
    const r = JSON.parse(h.logs.at(-1)!.message) as Record<string, Probe>;
    assertEquals(r.refresh?.name, "PolicyDeniedError");
    assertEquals(
      r.refresh?.message,
      "Cannot take over 127.0.0.101/8: refreshMs 3600000 is refused: the policy's arp.refreshMs is 0 (no refresh)",
    );
    assertEquals(h.sandbox.heldAddresses(), []);
  } finally {
    await h.close();
  }
});

/** A readable directory and, beside it, a secret the script must never read. */
async function readableWithSecret(): Promise<{ base: string; readable: string; secret: string }> {
  const base = await Deno.makeTempDir({ prefix: "failsh_symlink_" });
  await Deno.mkdir(`${base}/readable/sub`, { recursive: true });
  await Deno.mkdir(`${base}/private`);
  await Deno.writeTextFile(`${base}/readable/ok.txt`, "OK");
  await Deno.writeTextFile(`${base}/private/secret.txt`, "SECRET-4b1e", { mode: 0o600 });
  await Deno.writeTextFile(`${base}/private/cluster.key`, "KEY-77aa", { mode: 0o600 });
  return { base, readable: `${base}/readable`, secret: `${base}/private/secret.txt` };
}

Deno.test("a symlink in a readable directory cannot lead the script out of it", async (t) => {
  const cases: {
    name: string;
    link: (b: string) => [target: string, path: string];
    read?: (b: string) => string;
    hard?: boolean;
    expected: RegExp;
  }[] = [
    {
      name: "a link to a file outside the read paths",
      link: (b) => [`${b}/private/secret.txt`, `${b}/readable/link.txt`],
      expected:
        /read\[0\] [^ ]*\/readable holds a symlink [^ ]*\/readable\/link\.txt to [^ ]*\/private\/secret\.txt, outside the read paths/,
    },
    {
      name: "a link to a directory outside the read paths",
      link: (b) => [`${b}/private`, `${b}/readable/sub/dir`],
      expected:
        /holds a symlink [^ ]*\/readable\/sub\/dir to [^ ]*\/private, outside the read paths/,
    },
    {
      name: "a link to the key file",
      link: (b) => [`${b}/private/cluster.key`, `${b}/readable/k`],
      expected:
        /holds a symlink [^ ]*\/readable\/k to [^ ]*\/private\/cluster\.key, the secret of key "cluster"/,
    },
    {
      name: "a hard link to the key file",
      link: (b) => [`${b}/private/cluster.key`, `${b}/readable/sub/notes.txt`],
      hard: true,
      expected:
        /holds [^ ]*\/readable\/sub\/notes\.txt, a hard link to the secret of key "cluster"/,
    },
    {
      name: "a read path that is itself a link to the key's directory",
      link: (b) => [`${b}/private`, `${b}/alias`],
      read: (b) => `${b}/alias`,
      expected: /read\[0\] [^ ]*\/alias is [^ ]*\/private, which holds the secret of key "cluster"/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { base } = await readableWithSecret();
      const [target, path] = c.link(base);
      if (c.hard) await Deno.link(target, path);
      else await Deno.symlink(target, path);
      const readPath = c.read?.(base) ?? `${base}/readable`;
      const h = await makeHarness(
        probes(`
        await probe("link", () => Deno.readTextFile(${JSON.stringify(path)}));
        await probe("viaDir", () => Deno.readTextFile(${JSON.stringify(`${path}/secret.txt`)}));
        `),
        { read: [readPath], keys: { cluster: { file: `${base}/private/cluster.key` } } },
      );
      try {
        let message = "";
        await rejects(h.sandbox.start(), (e: Error) => {
          assert(e instanceof ScriptError, `${e.name}: ${e.message}`);
          message = e.message;
          return true;
        });
        assertMatch(message, c.expected);
        assertEquals(h.sandbox.counters().children.started, 0);
        const audit = h.auditLines();
        assert(
          audit.some((l) =>
            (l.request as Record<string, unknown>).op === "read-path" && l.verdict === "refused"
          ),
          JSON.stringify(audit),
        );
        assertNotMatch(message + JSON.stringify(audit), /SECRET-4b1e|KEY-77aa/);
      } finally {
        await h.close();
        await Deno.remove(base, { recursive: true });
      }
    });
  }
});

Deno.test("links inside the read paths work, and deno opens a path with .. as it checked it", async () => {
  const { base, readable } = await readableWithSecret();
  // A link inside the read paths is fine. A link beside the readable directory (where the
  // script's `..` would lead the kernel elsewhere) does not matter: deno normalises the path
  // (`evil/../readable/ok.txt` is `readable/ok.txt`) and opens what it checked.
  await Deno.symlink(`${readable}/ok.txt`, `${readable}/sub/alias.txt`);
  await Deno.mkdir(`${base}/private/readable`);
  await Deno.writeTextFile(`${base}/private/readable/ok.txt`, "SECRET-4b1e", { mode: 0o600 });
  await Deno.symlink(`${base}/private/x`, `${base}/evil`);
  await Deno.mkdir(`${base}/private/x`);
  const h = await makeHarness(
    probes(`
    await probe("alias", () => Deno.readTextFile(${JSON.stringify(`${readable}/sub/alias.txt`)}));
    await probe("dotdot", () => Deno.readTextFile(${
      JSON.stringify(`${base}/evil/../readable/ok.txt`)
    }));
    `),
    { read: [readable] },
  );
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("web"), 20_000);
    const r = JSON.parse(h.logs.at(-1)!.message) as Record<string, Probe>;
    assertEquals(r.alias, { ok: true, value: "OK" });
    assertEquals(r.dotdot, { ok: true, value: "OK" });
  } finally {
    await h.close();
    await Deno.remove(base, { recursive: true });
  }
});
