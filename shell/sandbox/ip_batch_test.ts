import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import {
  batchLine,
  DEATH_WINDOW_MS,
  IpBatch,
  type IpBatchChild,
  IpBatchUnavailableError,
  MAX_ERROR_LINES,
  MAX_LINE,
  MAX_QUEUED,
  SENTINEL,
} from "./ip_batch.ts";

/** What the fake `ip` does with one line. */
type Behaviour = "ok" | "fail" | "hang" | "die" | "noise" | "chatty";

/**
 * A fake `ip -force -batch -`: numbers the lines it reads like `ip` and answers on stderr as
 * `behave` says (the sentinel always fails, as with the real `ip`).
 */
function fakeIp(behave: (line: string) => Behaviour) {
  const seen: string[] = [];
  const vanishers: (() => void)[] = [];
  let spawned = 0;
  let exitOnWrite = false;
  const spawn = (): IpBatchChild => {
    spawned++;
    let errCtl!: ReadableStreamDefaultController<Uint8Array>;
    let exit!: (s: { code: number; signal: string | null }) => void;
    let done = false;
    const status = new Promise<{ code: number; signal: string | null }>((r) => exit = r);
    const stderr = new ReadableStream<Uint8Array>({ start: (c) => void (errCtl = c) });
    const end = (code: number, signal: string | null) => {
      if (done) return;
      done = true;
      try {
        errCtl.close();
      } catch {
        // closed
      }
      exit({ code, signal });
    };
    const say = (s: string) => {
      if (!done) errCtl.enqueue(new TextEncoder().encode(s));
    };
    let n = 0;
    let rest = "";
    let hanging = false;
    const stdin = new WritableStream<Uint8Array>({
      write(chunk) {
        if (done) throw new Error("Broken pipe");
        if (exitOnWrite) {
          // Its exit is seen first; the write fails a little later.
          exitOnWrite = false;
          end(137, "SIGKILL");
          return new Promise((_, reject) => setTimeout(() => reject(new Error("Broken pipe")), 5));
        }
        rest += new TextDecoder().decode(chunk);
        let nl;
        while ((nl = rest.indexOf("\n")) >= 0) {
          const line = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          n++;
          if (hanging) continue;
          if (line === SENTINEL) {
            say(`Object "${SENTINEL}" is unknown, try "ip help".\nCommand failed -:${n}\n`);
            continue;
          }
          seen.push(line);
          const b = behave(line);
          if (b === "fail") say(`RTNETLINK answers: File exists\nCommand failed -:${n}\n`);
          if (b === "noise") say(`Warning: something\n`);
          if (b === "chatty") say(`${"e".repeat(5000)}\n`.repeat(20) + `Command failed -:${n}\n`);
          if (b === "hang") hanging = true;
          if (b === "die") {
            // Like ip: it has read the line (the write is complete) and dies running it.
            hanging = true;
            setTimeout(() => {
              say("Error: boom\n");
              end(255, null);
            }, 0);
            return;
          }
        }
      },
    });
    vanishers.push(() => {
      done = true;
      errCtl.close();
    });
    return { stdin, stderr, status, kill: () => end(137, "SIGKILL") };
  };
  /** Closes the last child's pipes without its exit being seen yet (a zombie not reaped). */
  const vanish = () => vanishers.at(-1)?.();
  /** The next write finds the child dead, its exit seen before the write fails. */
  const exitOnNextWrite = () => void (exitOnWrite = true);
  return { spawn, seen, spawned: () => spawned, vanish, exitOnNextWrite };
}

async function rejects(p: Promise<unknown>, type: new (...a: never[]) => Error, re: RegExp) {
  try {
    await p;
  } catch (e) {
    assert(e instanceof type, `expected ${type.name}, got ${(e as Error).name}`);
    assertMatch((e as Error).message, re);
    return;
  }
  throw new Error("expected a rejection");
}

Deno.test("IpBatch answers each command line, success or ip's error", async () => {
  const ip = fakeIp((l) =>
    l.includes("198.18.0.2") ? "fail" : l.includes("noise") ? "noise" : "ok"
  );
  const batch = new IpBatch({ spawn: ip.spawn });
  try {
    const a = await batch.run(["addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    assertEquals([a.ok, a.stderr], [true, ""]);
    const b = await batch.run(["addr", "add", "198.18.0.2/24", "dev", "eth0"]);
    assertEquals([b.ok, b.stderr], [false, "RTNETLINK answers: File exists"]);
    // A warning without "Command failed" is text, not a failure.
    const c = await batch.run(["noise"]);
    assertEquals([c.ok, c.stderr], [true, "Warning: something"]);
    // Concurrent requests are answered in order, each with its own outcome.
    const many = await Promise.all(
      ["198.18.0.3", "198.18.0.2", "198.18.0.4"].map((a) =>
        batch.run(["addr", "add", `${a}/24`, "dev", "eth0"])
      ),
    );
    assertEquals(many.map((m) => m.ok), [true, false, true]);
    assertEquals(ip.spawned(), 1, "one child for every request");
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch refuses hostile argument text before it reaches ip", async (t) => {
  const ip = fakeIp(() => "ok");
  const batch = new IpBatch({ spawn: ip.spawn });
  try {
    for (
      const [what, arg] of [
        ["a newline (a second command)", "198.18.0.1/24\nlink set eth0 down"],
        ["a blank (an extra argument)", "eth0 down"],
        ["a quote", 'eth0"'],
        ["a comment", "eth0#x"],
        ["a line continuation", "eth0\\"],
        ["an empty argument", ""],
        ["a very long argument", "a".repeat(65)],
      ]
    ) {
      await t.step(`an argument with ${what}`, async () => {
        await rejects(
          batch.run(["addr", "add", "198.18.0.1/24", "dev", arg as string]),
          TypeError,
          /^Cannot send to ip -batch: argument 5 .* is not 1 to 64 characters/,
        );
      });
    }
    assertEquals(ip.seen, [], "nothing was written to ip");
    assertEquals(ip.spawned(), 0);
    assertEquals(
      batchLine(["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"]),
      "addr add 2001:db8::1/64 dev eth0 nodad",
    );
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch fails a request whose child dies, and restarts for the next", async () => {
  const ip = fakeIp((l) => l.includes("die") ? "die" : "ok");
  const batch = new IpBatch({ spawn: ip.spawn });
  try {
    await batch.run(["link", "show"]);
    await rejects(batch.run(["die"]), IpBatchUnavailableError, /it exited with code 255/);
    assert(!batch.running);
    const after = await batch.run(["link", "show"]);
    assert(after.ok);
    assertEquals(ip.spawned(), 2, "a new child after the death");
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch sends a line again to a fresh child when the pipe was already broken", async () => {
  const ip = fakeIp(() => "ok");
  const batch = new IpBatch({ spawn: ip.spawn });
  try {
    assert((await batch.run(["link", "show"])).ok);
    ip.vanish(); // killed while idle; its exit not seen yet
    const a = await batch.run(["addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    assert(a.ok, "answered by the new child");
    assertEquals(ip.spawned(), 2);
    assertEquals(ip.seen, ["link show", "addr add 198.18.0.1/24 dev eth0"], "run once");
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch sends a line again to a fresh child when the child's exit is seen before the write fails", async () => {
  const ip = fakeIp(() => "ok");
  const batch = new IpBatch({ spawn: ip.spawn });
  try {
    assert((await batch.run(["link", "show"])).ok);
    ip.exitOnNextWrite();
    const a = await batch.run(["addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    assert(a.ok, "answered by the new child");
    assertEquals(ip.spawned(), 2);
    assertEquals(ip.seen, ["link show", "addr add 198.18.0.1/24 dev eth0"], "run once");
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch kills a child that does not answer in time", async () => {
  const ip = fakeIp((l) => l.includes("hang") ? "hang" : "ok");
  const batch = new IpBatch({ spawn: ip.spawn, timeoutMs: 50 });
  try {
    const waiting = batch.run(["link", "show"]); // queued behind the hanging one
    const hung = batch.run(["hang"]);
    assert((await waiting).ok);
    await rejects(hung, IpBatchUnavailableError, /no answer within 50 ms/);
    assert((await batch.run(["link", "show"])).ok, "a fresh child answers the next request");
    assertEquals(ip.spawned(), 2);
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch stays down after repeated deaths, so the caller falls back to spawning", async () => {
  let t = 0;
  const ip = fakeIp(() => "die");
  const batch = new IpBatch({ spawn: ip.spawn, now: () => t });
  try {
    for (let i = 0; i < 3; i++) {
      await rejects(batch.run(["x"]), IpBatchUnavailableError, /exited/);
    }
    await rejects(
      batch.run(["x"]),
      IpBatchUnavailableError,
      /died 3 times within 60 s .*down for 60 s/,
    );
    assertEquals(ip.spawned(), 3, "no fourth child while down");
    t += DEATH_WINDOW_MS;
    await rejects(batch.run(["x"]), IpBatchUnavailableError, /exited/);
    assertEquals(ip.spawned(), 4, "tried again after the window");
  } finally {
    await batch.close();
  }
});

Deno.test("IpBatch bounds its queue and each request's error text", async () => {
  const ip = fakeIp((l) => l.includes("hang") ? "hang" : "ok");
  const batch = new IpBatch({ spawn: ip.spawn, timeoutMs: 200 });
  try {
    const first = batch.run(["hang"]).catch((e) => e);
    const queued = Array.from({ length: MAX_QUEUED }, () => batch.run(["x"]).catch((e) => e));
    await rejects(batch.run(["x"]), RangeError, /64 requests already waiting/);
    assert((await first) instanceof IpBatchUnavailableError);
    await Promise.all(queued);
  } finally {
    await batch.close();
  }
  // Error text: at most MAX_ERROR_LINES lines, each cut at MAX_LINE characters.
  const chatty = fakeIp(() => "chatty");
  const b2 = new IpBatch({ spawn: chatty.spawn });
  try {
    const a = await b2.run(["x"]);
    assert(!a.ok);
    const lines = a.stderr.split("\n");
    assertEquals(lines.length, MAX_ERROR_LINES);
    assert(lines.every((l) => l.length === MAX_LINE), "each line cut");
  } finally {
    await b2.close();
  }
});

Deno.test("IpBatch with the real ip: errors are read per line and ip keeps going", async () => {
  const ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (ipPath === undefined) return; // iproute2 absent: the fakes above cover the logic
  const batch = new IpBatch({ argv: [ipPath, "-force", "-batch", "-"] });
  try {
    const bad = await batch.run(["link", "show", "dev", "nosuchdev0"]);
    assert(!bad.ok);
    assertMatch(bad.stderr, /nosuchdev0/);
    const good = await batch.run(["link", "show", "dev", "lo"]);
    assertEquals([good.ok, good.stderr], [true, ""]);
  } finally {
    await batch.close();
  }
});
