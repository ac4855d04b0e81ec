import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import { LinuxNetDriver, runFixed, SimulatedNetDriver } from "./netops.ts";
import { parseCidr } from "./cidr.ts";
import { AuditLog } from "./audit.ts";

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Field 3 is the state; a zombie (Z) is dead, merely not reaped.
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/**
 * Whether a process is still alive after up to 2 s: a SIGKILL is delivered when the process is
 * next scheduled, which on a loaded machine is not at once (a `sleep 30` that was not killed is
 * still there after 2 s).
 */
async function survives(pid: number): Promise<boolean> {
  const deadline = Date.now() + 2000;
  while (alive(pid)) {
    if (Date.now() > deadline) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

Deno.test("runFixed() runs an argv without a shell and captures its output", async () => {
  const r = await runFixed("/bin/echo", ["$HOME", "a b", ";", "id"], { timeoutMs: 5000 });
  assertEquals([r.code, r.stdout, r.timedOut, r.truncated], [0, "$HOME a b ; id\n", false, false]);
});

Deno.test("runFixed() gives the program a clean environment", async () => {
  Deno.env.set("FAILSH_TEST_SECRET", "hunter2");
  try {
    const r = await runFixed("/usr/bin/env", [], { timeoutMs: 5000 });
    assert(!r.stdout.includes("hunter2"));
    assertMatch(r.stdout, /^PATH=/m);
  } finally {
    Deno.env.delete("FAILSH_TEST_SECRET");
  }
});

Deno.test("runFixed() bounds the captured output", async () => {
  const r = await runFixed("/bin/sh", ["-c", "head -c 200000 /dev/zero | tr '\\0' x"], {
    timeoutMs: 5000,
    maxOutput: 1000,
  });
  assertEquals([r.code, r.stdout.length, r.truncated], [0, 1000, true]);
});

Deno.test("runFixed() kills the program and its children at the time limit", async () => {
  const r = await runFixed("/bin/sh", ["-c", "sleep 30 & echo $!; wait"], { timeoutMs: 300 });
  assert(r.timedOut);
  assertEquals(r.signal, "SIGKILL");
  const grandchild = Number(r.stdout.trim());
  assert(grandchild > 0, `the grandchild's pid was printed: ${JSON.stringify(r.stdout)}`);
  assert(!(await survives(grandchild)), "the background sleep was killed too");
});

Deno.test("runFixed() kills on abort", async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const r = await runFixed("/bin/sleep", ["30"], { timeoutMs: 30_000, signal: ac.signal });
  assert(r.aborted && !r.timedOut);
});

Deno.test("runFixed() reports a program that cannot start", async () => {
  const r = await runFixed("/nonexistent/prog", [], { timeoutMs: 1000 });
  assert(r.code !== 0);
});

Deno.test("the simulated driver records holdings and writes them atomically", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    const audit = new AuditLog({ script: "/s.ts", sink: (l) => lines.push(l) });
    const net = new SimulatedNetDriver({ audit, stateFile: `${dir}/held.json` });
    const a = parseCidr("127.0.0.100/8")!;
    await net.takeover(a, "lo", { arpCount: 3, refreshMs: 0, service: "web" });
    await net.takeover(a, "lo", { arpCount: 3, refreshMs: 0, service: "web" });
    await net.takeover(parseCidr("2001:db8::5/64")!, "lo", {
      arpCount: 0,
      refreshMs: 0,
      service: null,
    });
    assertEquals(net.held().map((h) => [h.address, h.device, h.service]), [
      ["127.0.0.100/8", "lo", "web"],
      ["2001:db8::5/64", "lo", null],
    ]);
    const file = JSON.parse(await Deno.readTextFile(`${dir}/held.json`));
    assertEquals(file.addresses.length, 2);
    await net.release(a, "lo");
    assertEquals(await net.releaseAll(), []);
    assertEquals(net.held(), []);
    assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/held.json`)).addresses, []);
    assertEquals(lines.map((l) => JSON.parse(l).request.op), [
      "sim-addr-add",
      "sim-addr-add",
      "sim-addr-add",
      "sim-addr-del",
      "sim-addr-del",
    ]);
    await net.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the linux driver runs one ARP burst per address: a new takeover replaces the running one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A stand-in arping that never ends by itself, and `ip` that always succeeds.
    await Deno.writeTextFile(`${dir}/arping`, "#!/bin/sh\nexec sleep 30\n", { mode: 0o755 });
    const lines: string[] = [];
    const audit = new AuditLog({ script: "/s.ts", sink: (l) => lines.push(l) });
    const net = new LinuxNetDriver({
      audit,
      ipPath: "/bin/true",
      arpingPath: `${dir}/arping`,
      onError: () => {},
      // The spawning path: arping bursts (the packet socket's bursts are timers).
      ipBatch: false,
      packetAnnouncer: false,
    });
    const a = parseCidr("198.18.0.100/24")!;
    const opts = { arpCount: 3, refreshMs: 0, service: "web" };
    for (let i = 0; i < 5; i++) await net.takeover(a, "lo", opts);
    // Let the replaced bursts end and be recorded.
    const deadline = Date.now() + 5000;
    const aborted = () =>
      lines.map((l) => JSON.parse(l)).filter((r) =>
        r.request.op === "arping" && r.verdict === "aborted"
      );
    while (aborted().length < 8 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assertEquals(aborted().length, 8, "four takeovers each replaced the two arpings before them");
    assertEquals(net.quiet(a, "lo"), 2, "one burst (its direct first packet and the rest) runs");
    await net.release(a, "lo");
    await net.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the linux driver spawns ip, with the reason logged, when ip -batch cannot answer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A stand-in `ip` that dies at once as a batch and succeeds as a one-off command.
    await Deno.writeTextFile(
      `${dir}/ip`,
      '#!/bin/sh\nfor a; do [ "$a" = -batch ] && exit 1; done\nexit 0\n',
      { mode: 0o755 },
    );
    const lines: string[] = [];
    const errors: string[] = [];
    const net = new LinuxNetDriver({
      audit: new AuditLog({ script: "/s.ts", sink: (l) => lines.push(l) }),
      ipPath: `${dir}/ip`,
      onError: (m) => errors.push(m),
      packetAnnouncer: false,
    });
    try {
      const a = parseCidr("198.18.0.100/24")!;
      await net.takeover(a, "lo", { arpCount: 0, refreshMs: 0, service: "web" });
      assertEquals(net.held().map((h) => h.address), ["198.18.0.100/24"]);
      const add = lines.map((l) => JSON.parse(l)).find((r) => r.request.op === "ip-addr-add");
      assertEquals(add.verdict, "done");
      assertEquals(add.request.argv, [`${dir}/ip`, "addr", "add", "198.18.0.100/24", "dev", "lo"]);
      assertMatch(
        add.reason,
        /^ip -batch could not answer \(.*exited with code 1.*\), spawned instead/,
      );
      assert(errors.some((m) => /^Spawning ip: /.test(m)), errors.join("\n"));
      const take = lines.map((l) => JSON.parse(l)).find((r) => r.request.op === "takeover");
      assertEquals(take.request.change, "spawn");
      await net.release(a, "lo");
      assertEquals(net.held(), []);
    } finally {
      await net.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
