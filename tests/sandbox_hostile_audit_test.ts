/**
 * Hostile scripts against the audit log: a flood of refused requests, a flood of allowed
 * privileged requests, request fields that try to rewrite their own record, and a full disk
 * (a small tmpfs mounted here, filled, unmounted after). Each runs the real sandbox and child.
 */
import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import { call, type Harness, makeHarness, type Probe, probes } from "./_sandbox_util.ts";
import { MAX_PRIVILEGED_BURST, REFUSED_PER_SECOND } from "../shell/sandbox/audit.ts";

/** {@linkcode probes} with a 60 s handler limit (the floods run for seconds). */
const probesLong = (body: string) => probes(body, { timeouts: "60s" });

type Line = {
  service: string | null;
  request: Record<string, unknown>;
  verdict: string;
  reason: string;
};

function results(h: Harness): Record<string, Probe> {
  const last = h.logs.at(-1);
  if (!last) throw new Error(`the handler logged nothing: ${JSON.stringify(h.output)}`);
  return JSON.parse(last.message);
}

function lines(path: string): Line[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

const POLICY = {
  addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }],
  programs: [{ name: "echo", path: "/bin/echo", args: ["[a-z]+"] }],
};

Deno.test("a flood of refused requests is summarised, not written one line each", async () => {
  const h = await makeHarness(
    probesLong(`
    const big = "x".repeat(4000);
    let refused = 0;
    const started = Date.now();
    // 3000 refusals, paced under the channel's bound (a child sending more than 1000
    // requests in one second is killed: tests/sandbox_hostile_flood_test.ts).
    for (let i = 0; i < 3000; i++) {
      if (i > 0 && i % 600 === 0) await new Promise((r) => setTimeout(r, 1000));
      try { await ctx.run(["rm", big]); } catch (e) { if (e.name === "PolicyDeniedError") refused++; }
    }
    P.refused = { ok: true, value: String(refused) };
    P.ms = { ok: true, value: String(Date.now() - started) };
    `),
    POLICY,
  );
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("web"), 60_000);
    const r = results(h);
    assertEquals(r.refused?.value, "3000", "every request was refused");
    await h.sandbox.close(); // writes the last summary
    const all = lines(h.policy.audit);
    const one = all.filter((l) => l.request.op === "run" && l.verdict === "refused");
    const summaries = all.filter((l) => l.request.op === "refused-summary");
    const summarised = summaries.reduce(
      (n, l) => n + Number((l.request.counts as Record<string, number>).run ?? 0),
      0,
    );
    assertEquals(one.length + summarised, 3000, "each refusal is a line or counted in a summary");
    const seconds = Math.ceil(Number(r.ms?.value) / 1000) + 1;
    assert(
      one.length <= REFUSED_PER_SECOND * seconds,
      `${one.length} lines in ${seconds} s, at most ${REFUSED_PER_SECOND} a second`,
    );
    assertMatch(
      summaries[0]?.reason ?? "",
      /^\d+ more refused requests of (web|pool-\d+) \(run: \d+\) were not recorded one by one: at most \d+ a second per child, \d+ in all$/,
    );
    const size = Deno.statSync(h.policy.audit).size;
    assert(size < 256 * 1024, `the log grew by ${size} bytes for 3000 refusals of 4 KB`);
  } finally {
    await h.close();
  }
});

Deno.test("a flood of allowed privileged requests is refused beyond the budget, never unrecorded", async () => {
  const h = await makeHarness(
    probesLong(`
    let done = 0, refused = 0, message = "";
    const started = Date.now();
    for (let i = 0; i < 400; i++) {
      try { await ctx.takeover("127.0.0.100/8", { device: "lo" }); done++; }
      catch (e) { refused++; message = e.message; }
    }
    P.done = { ok: true, value: String(done) };
    P.refused = { ok: true, value: String(refused) };
    P.message = { ok: true, value: message };
    P.ms = { ok: true, value: String(Date.now() - started) };
    `),
    POLICY,
  );
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("web"), 60_000);
    const r = results(h);
    const done = Number(r.done?.value);
    const seconds = Number(r.ms?.value) / 1000;
    assert(done >= MAX_PRIVILEGED_BURST, `the burst is allowed: ${done}`);
    assert(
      done <= MAX_PRIVILEGED_BURST + Math.ceil(seconds * 20) + 1,
      `${done} takeovers in ${seconds} s`,
    );
    assertEquals(done + Number(r.refused?.value), 400);
    assertMatch(
      r.message?.value ?? "",
      /^Cannot take over: the script made more than \d+ privileged requests \(at most \d+ a second\); the audit log keeps a record of each, so the rest are refused$/,
    );
    await h.sandbox.close();
    const all = lines(h.policy.audit);
    const allowed = all.filter((l) => l.request.op === "takeover" && l.verdict === "allowed");
    const acted = all.filter((l) => l.request.op === "sim-addr-add");
    assertEquals(allowed.length, done, "every takeover carried out has its allowed record");
    assertEquals(acted.length, done, "and its action record");
  } finally {
    await h.close();
  }
});

Deno.test("a request's own fields cannot rewrite its audit record", async () => {
  const h = await makeHarness(
    probesLong(`
    await probe("forged", () => ctx.takeover("127.0.0.100/8", {
      device: "lo", op: "poll", verdict: "refused", reason: "made up", service: "db", time: "1970",
    }));
    await probe("forgedRun", () => ctx.run(["rm", "-rf", "/"], { op: "poll", timeoutMs: 1000 }));
    `),
    POLICY,
  );
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("web"), 20_000);
    assertEquals(results(h).forged?.ok, true);
    const all = h.auditLines() as unknown as Line[];
    const takeover = all.filter((l) => l.request.address === "127.0.0.100/8");
    assertEquals(takeover.map((l) => [l.request.op, l.verdict]), [
      ["takeover", "allowed"],
      ["sim-addr-add", "done"],
      ["takeover", "done"],
    ]);
    for (const l of takeover) {
      assertEquals(l.service, "web");
      assert(!("verdict" in l.request) && !("reason" in l.request), JSON.stringify(l));
    }
    assertEquals(takeover[0]!.request.extra, ["op", "verdict", "reason", "service", "time"]);
    const run = all.filter((l) => Array.isArray(l.request.argv));
    assertEquals(run.map((l) => [l.request.op, l.verdict]), [["run", "refused"]]);
  } finally {
    await h.close();
  }
});

function canMount(): string {
  if (Deno.build.os !== "linux") return " (skipped: needs Linux tmpfs)";
  try {
    if (Deno.uid() !== 0) return " (skipped: mounting a tmpfs needs root)";
    if (!Deno.statSync("/usr/bin/mount").isFile) throw new Error();
  } catch {
    return " (skipped: needs /usr/bin/mount, Debian package mount)";
  }
  return "";
}
const SKIP_MOUNT = canMount();

async function sh(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Fills the file system of `dir` with one file until the kernel says it is full. */
function fill(path: string): void {
  const f = Deno.openSync(path, { write: true, create: true });
  const chunk = new Uint8Array(4096);
  try {
    for (;;) f.writeSync(chunk);
  } catch (e) {
    if (!(e instanceof Error) || !/space/i.test(e.message)) throw e;
  } finally {
    f.close();
  }
}

Deno.test({
  name: `on a full disk no privileged action runs without its audit record${SKIP_MOUNT}`,
  ignore: SKIP_MOUNT !== "",
  fn: async () => {
    const mnt = await Deno.makeTempDir({ prefix: "failsh_fulldisk_" });
    const marks = await Deno.makeTempDir({ prefix: "failsh_marks_" });
    await sh("/usr/bin/mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", mnt);
    let h: Harness | null = null;
    try {
      h = await makeHarness(
        probesLong(`
        await probe("takeover", () => ctx.takeover("127.0.0.100/8", { device: "lo" }));
        await probe("run", () => ctx.run(["mark", "${marks}/ran"]));
        await probe("release", () => ctx.release("127.0.0.100/8", { device: "lo" }));
        await probe("setState", () => ctx.setState("UP", "from the script"));
        await probe("refused", () => ctx.takeover("10.0.0.1/8", { device: "lo" }));
        `),
        {
          ...POLICY,
          programs: [{ name: "mark", path: "/usr/bin/touch", args: [`${marks}/ran`] }],
          audit: `${mnt}/audit.log`,
        },
        { setState: () => Promise.resolve() },
      );
      await h.sandbox.start();
      fill(`${mnt}/filler`);
      await h.sandbox.invoke(call("web"), 20_000);
      const full = results(h);
      for (const op of ["takeover", "run", "release", "setState"]) {
        assertEquals(full[op]?.name, "PolicyDeniedError", `${op}: ${JSON.stringify(full[op])}`);
        assertMatch(
          full[op]?.message ?? "",
          new RegExp(
            `: the audit log ${mnt}/audit\\.log cannot be written \\(.*space.*\\), and no privileged action runs without its record$`,
            "i",
          ),
        );
      }
      assertEquals(full.refused?.name, "PolicyDeniedError", "a refusal is still a refusal");
      assertEquals(h.sandbox.heldAddresses(), [], "no address was taken");
      let ran = true;
      try {
        Deno.statSync(`${marks}/ran`);
      } catch {
        ran = false;
      }
      assertEquals(ran, false, "the program did not run");

      // Space again: the next takeover runs, with its records.
      await Deno.remove(`${mnt}/filler`);
      h.logs.length = 0;
      await h.sandbox.invoke(call("web"), 20_000);
      const again = results(h);
      assertEquals(again.takeover?.ok, true, JSON.stringify(again.takeover));
      assertEquals(again.run?.ok, true, JSON.stringify(again.run));
      const all = lines(`${mnt}/audit.log`);
      assert(
        all.some((l) => l.request.op === "takeover" && l.verdict === "allowed"),
        "the takeover's record is in the log",
      );
    } finally {
      await h?.sandbox.close();
      await sh("/usr/bin/umount", mnt);
      await h?.close();
      await Deno.remove(mnt, { recursive: true });
      await Deno.remove(marks, { recursive: true });
    }
  },
});
