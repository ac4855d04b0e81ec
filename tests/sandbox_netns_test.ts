/**
 * The `linux` network driver against real interfaces: two network namespaces joined by a veth
 * pair, created here and always deleted. Needs root, iproute2, iputils-arping and procps (skipped
 * otherwise, naming what is missing).
 */
import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects,
} from "node:assert/strict";
import { LinuxNetDriver } from "../shell/sandbox/netops.ts";
import { parseCidr } from "../shell/sandbox/cidr.ts";
import { AuditLog } from "../shell/sandbox/audit.ts";
import { call, makeHarness } from "./_sandbox_util.ts";
import { needs } from "./_programs.ts";

/** The driver runs ip, arping and sysctl (for IPv6's unsolicited neighbour advertisements). */
const SKIP = needs({ root: true, programs: ["ip", "arping", "sysctl"] });
const ROOT = SKIP === "";

async function ip(...args: string[]): Promise<string> {
  const out = await new Deno.Command("/usr/sbin/ip", { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

async function waitFor(what: string, fn: () => Promise<boolean>, ms = 6000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

for (
  const [fast, how] of [
    [true, "without starting a process (ip -batch, packet socket)"],
    [false, "by starting ip and arping (the fallback)"],
  ] as const
) {
  Deno.test({
    name: `the linux driver adds, announces and removes addresses in a namespace ${how}${SKIP}`,
    ignore: !ROOT,
    async fn(t) {
      const tag = `${fast ? 1 : 2}${Deno.pid % 10000}`;
      const nsA = `fsh3-a-${tag}`;
      const nsB = `fsh3-b-${tag}`;
      const devA = `f3a${tag}`;
      const devB = `f3b${tag}`;
      const lines: string[] = [];
      const audit = new AuditLog({ script: "/test.ts", sink: (l) => lines.push(l) });
      const errors: string[] = [];
      // Created once the namespace exists: the driver starts its ip -batch and opens its packet
      // socket in it at once.
      let net: LinuxNetDriver | null = null;
      try {
        await ip("netns", "add", nsA);
        await ip("netns", "add", nsB);
        await ip(
          "link",
          "add",
          devA,
          "netns",
          nsA,
          "type",
          "veth",
          "peer",
          "name",
          devB,
          "netns",
          nsB,
        );
        await ip("-n", nsA, "link", "set", devA, "up");
        await ip("-n", nsB, "link", "set", devB, "up");
        await ip("-n", nsB, "addr", "add", "198.18.203.2/24", "dev", devB);
        await ip("-n", nsB, "-6", "addr", "add", "2001:db8:203::2/64", "dev", devB, "nodad");
        const macA = /link\/ether ([0-9a-f:]{17})/.exec(await ip("-n", nsA, "link", "show", devA))
          ?.[1];
        assert(macA, "the veth has a MAC address");
        net = new LinuxNetDriver({
          netns: nsA,
          audit,
          onError: (m) => errors.push(m),
          ipBatch: fast,
          packetAnnouncer: fast,
        });
        const driver = net;
        // The peer remembers a stale, wrong MAC for the addresses, as after a failover.
        for (const a of ["198.18.203.100", "2001:db8:203::100"]) {
          await ip(
            "-n",
            nsB,
            "neigh",
            "add",
            a,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            devB,
            "nud",
            "stale",
          );
        }

        await t.step("takeover puts the IPv4 address on the device", async () => {
          await driver.takeover(parseCidr("198.18.203.100/24")!, devA, {
            arpCount: 2,
            refreshMs: 0,
            service: "web",
          });
          assertMatch(
            await ip("-n", nsA, "-4", "addr", "show", "dev", devA),
            /inet 198\.18\.203\.100\/24 /,
          );
          assertEquals(driver.held().map((h) => [h.address, h.device, h.service]), [[
            "198.18.203.100/24",
            devA,
            "web",
          ]]);
        });
        await t.step("the gratuitous ARP updates the peer's neighbour table", async () => {
          await waitFor(
            "the peer to learn the new MAC",
            async () =>
              (await ip("-n", nsB, "neigh", "show", "198.18.203.100", "dev", devB)).includes(macA),
          );
        });
        await t.step("taking an address already present succeeds", async () => {
          await driver.takeover(parseCidr("198.18.203.100/24")!, devA, {
            arpCount: 0,
            refreshMs: 0,
            service: "web",
          });
          assertEquals(driver.held().length, 1);
        });
        await t.step(
          "an IPv6 takeover is announced by an unsolicited neighbour advertisement",
          async () => {
            await driver.takeover(parseCidr("2001:db8:203::100/64")!, devA, {
              arpCount: 3,
              refreshMs: 0,
              service: "web6",
            });
            assertMatch(
              await ip("-n", nsA, "-6", "addr", "show", "dev", devA),
              /inet6 2001:db8:203::100\/64 /,
            );
            await waitFor(
              "the peer to learn the new MAC over NDP",
              async () =>
                (await ip("-n", nsB, "-6", "neigh", "show", "2001:db8:203::100", "dev", devB))
                  .includes(
                    macA,
                  ),
            );
          },
        );
        await t.step("release removes the addresses", async () => {
          await driver.release(parseCidr("198.18.203.100/24")!, devA);
          assert(!(await ip("-n", nsA, "addr", "show", "dev", devA)).includes("198.18.203.100"));
          assertEquals(await driver.releaseAll(), []);
          assert(!(await ip("-n", nsA, "addr", "show", "dev", devA)).includes("2001:db8:203::100"));
          assertEquals(driver.held(), []);
          // Releasing an absent address is not an error.
          await driver.release(parseCidr("198.18.203.100/24")!, devA);
        });
        await t.step("a device that does not exist is a clear failure", async () => {
          try {
            await driver.takeover(parseCidr("198.18.203.101/24")!, "nosuchdev0", {
              arpCount: 0,
              refreshMs: 0,
              service: null,
            });
            throw new Error("expected a failure");
          } catch (e) {
            // ip's own reason, from the batch or from the process.
            assertMatch(
              (e as Error).message,
              /^Cannot take over 198\.18\.203\.101\/24 on nosuchdev0: .*Cannot find device "nosuchdev0"/,
            );
          }
          assertEquals(driver.held(), []);
        });
        await t.step("every command is in the audit log with its argv", async () => {
          if (fast) {
            const records = lines.map((l) => JSON.parse(l));
            assertEquals(driver.paths, { change: "ip-batch", announce: "packet" });
            const changes = records.filter((r) => /^ip-addr-/.test(r.request.op));
            assert(changes.length >= 4);
            for (const r of changes) assertMatch(r.request.batch, /^addr (add|del) \S+ dev /);
            // The takeover record: decision, added and first-announcement times, in that order.
            const takes = records.filter((r) =>
              r.request.op === "takeover" && r.verdict === "done"
            );
            const v4 = takes.find((r) => r.request.address === "198.18.203.100/24");
            assertEquals([v4.request.change, v4.request.announce], ["ip-batch", "packet"]);
            assert(v4.request.addedMs >= 0 && v4.request.announcedMs >= v4.request.addedMs);
            const v6 = takes.find((r) => r.request.address === "2001:db8:203::100/64");
            assertEquals(v6.request.announce, "packet");
            assertMatch(
              records.find((r) => r.request.batch?.startsWith("addr add 2001:db8:203::100/64"))
                .request.batch,
              / nodad$/,
            );
            return;
          }
          // arping runs in the background (one packet a second): wait for its outcome. The
          // first packet comes from a one-shot arping, the rest of the burst from another.
          const arpings = () =>
            lines.map((l) => JSON.parse(l)).filter((r) =>
              r.request.op === "arping" && r.request.argv.includes("198.18.203.100")
            );
          await waitFor("the arping bursts to end", () => Promise.resolve(arpings().length === 2));
          const records = lines.map((l) => JSON.parse(l));
          const ops = records.map((r) => r.request.op);
          for (const op of ["ip-addr-add", "arping", "ndisc-notify", "ip-addr-del"]) {
            assert(ops.includes(op), op);
          }
          let packets = 0;
          for (const arping of arpings()) {
            const argv = arping.request.argv.slice(4);
            assertEquals(argv.slice(0, 3), ["/usr/bin/arping", "-U", "-c"]);
            assertEquals(argv.slice(4), ["-I", devA, "198.18.203.100"]);
            packets += Number(argv[3]);
            // The release above stops a burst still running (so a released address is never
            // announced again): the burst either ended or was aborted, never failed.
            assert(["done", "aborted"].includes(arping.verdict), arping.verdict);
          }
          assertEquals(packets, 2, "arpCount packets in all");
        });
        assertEquals(errors, []);
      } finally {
        await net?.close();
        await ip("netns", "del", nsA).catch(() => "");
        await ip("netns", "del", nsB).catch(() => "");
      }
    },
  });
}

Deno.test({
  name: `the periodic ARP refresh keeps announcing a held address${SKIP}`,
  ignore: !ROOT,
  async fn() {
    const tag = String(Deno.pid % 100000);
    const ns = `fsh3-r-${tag}`;
    const dev = `f3r${tag}`;
    const lines: string[] = [];
    const net = new LinuxNetDriver({
      netns: ns,
      audit: new AuditLog({ script: "/t.ts", sink: (l) => lines.push(l) }),
      onError: () => {},
      // The fallback's refresh (arping); the packet socket's is tested below.
      packetAnnouncer: false,
    });
    try {
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
      await ip("-n", ns, "link", "set", dev, "up");
      await ip("-n", ns, "link", "set", `${dev}p`, "up");
      await net.takeover(parseCidr("198.18.204.10/24")!, dev, {
        arpCount: 0,
        refreshMs: 1000,
        service: "web",
      });
      await waitFor(
        "two refreshes",
        () =>
          Promise.resolve(lines.filter((l) => JSON.parse(l).request.op === "arping").length >= 2),
        8000,
      );
      await net.release(parseCidr("198.18.204.10/24")!, dev);
      const count = lines.filter((l) => JSON.parse(l).request.op === "arping").length;
      await new Promise((r) => setTimeout(r, 1500));
      assertEquals(
        lines.filter((l) => JSON.parse(l).request.op === "arping").length,
        count,
        "no refresh after release",
      );
    } finally {
      await net.close();
      await ip("netns", "del", ns).catch(() => "");
    }
  },
});

Deno.test({
  name: `a sandboxed script takes over an address through the policy, and only that one${SKIP}`,
  ignore: !ROOT,
  async fn() {
    const tag = String(Deno.pid % 100000);
    const ns = `fsh3-s-${tag}`;
    const dev = `f3s${tag}`;
    const lines: string[] = [];
    const audit = new AuditLog({ script: "/t.ts", sink: (l) => lines.push(l) });
    const net = new LinuxNetDriver({ netns: ns, audit, onError: () => {} });
    const h = await makeHarness(
      `
import { host, service, PolicyDeniedError } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("vip", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    await ctx.takeover("198.18.205.100/24", { device: "${dev}", arpCount: 1 });
    try {
      await ctx.takeover("198.18.206.100/24", { device: "${dev}" });
    } catch (e) {
      ctx.log("refused " + (e instanceof PolicyDeniedError));
    }
    return "UP";
  },
  async stop(ctx) {
    await ctx.release("198.18.205.100/24", { device: "${dev}" });
    return "FAIL";
  },
});
`,
      { netDriver: "linux", addresses: [{ prefix: "198.18.205.0/24", devices: [dev] }] },
      { net, audit },
    );
    try {
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
      await ip("-n", ns, "link", "set", dev, "up");
      await ip("-n", ns, "link", "set", `${dev}p`, "up");
      await h.sandbox.start();
      assertEquals(await h.sandbox.invoke(call("vip"), 10_000), "UP");
      const shown = await ip("-n", ns, "addr", "show", "dev", dev);
      assertMatch(shown, /inet 198\.18\.205\.100\/24 /);
      assert(!shown.includes("198.18.206.100"), "the refused address was not added");
      assertEquals(h.logs.map((l) => l.message), ["refused true"]);
      const commands = lines.map((l) => JSON.parse(l)).filter((r) =>
        r.request.op === "ip-addr-add"
      );
      assertEquals(commands.length, 1, "ip ran once: for the allowed address only");
      assertEquals(h.sandbox.heldAddresses().map((a) => a.address), ["198.18.205.100/24"]);
      assertEquals(await h.sandbox.invoke(call("vip", "stop"), 10_000), "FAIL");
      assert(!(await ip("-n", ns, "addr", "show", "dev", dev)).includes("198.18.205.100"));
    } finally {
      await h.close();
      await net.close();
      await ip("netns", "del", ns).catch(() => "");
    }
  },
});

for (const family of [4, 6] as const) {
  Deno.test({
    name:
      `the periodic refresh moves the client's IPv${family} neighbour entry back to the holder${SKIP}`,
    ignore: !ROOT,
    async fn() {
      const tag = `${family}${Deno.pid % 10000}`;
      const nsH = `fsh3-h-${tag}`;
      const nsC = `fsh3-c-${tag}`;
      const devH = `f3h${tag}`;
      const devC = `f3c${tag}`;
      const vip = family === 4 ? "198.18.213.100" : "2001:db8:213::100";
      const neigh = (...a: string[]) =>
        ip("-n", nsC, ...(family === 6 ? ["-6"] : []), "neigh", ...a);
      const lines: string[] = [];
      let net: LinuxNetDriver | null = null;
      try {
        await ip("netns", "add", nsH);
        await ip("netns", "add", nsC);
        await ip(
          "link",
          "add",
          devH,
          "netns",
          nsH,
          "type",
          "veth",
          "peer",
          "name",
          devC,
          "netns",
          nsC,
        );
        await ip("-n", nsH, "link", "set", devH, "up");
        await ip("-n", nsC, "link", "set", devC, "up");
        await ip("-n", nsC, "addr", "add", "198.18.213.1/24", "dev", devC);
        await ip("-n", nsC, "-6", "addr", "add", "2001:db8:213::1/64", "dev", devC, "nodad");
        const macH = /link\/ether ([0-9a-f:]{17})/.exec(await ip("-n", nsH, "link", "show", devH))
          ?.[1];
        assert(macH, "the veth has a MAC address");
        // The client knows the address at another host's MAC, as before a failover.
        await neigh("add", vip, "lladdr", "02:00:00:00:00:99", "dev", devC, "nud", "stale");
        net = new LinuxNetDriver({
          netns: nsH,
          audit: new AuditLog({ script: "/t.ts", sink: (l) => lines.push(l) }),
          onError: () => {},
        });
        const cidr = parseCidr(`${vip}/${family === 4 ? 24 : 64}`)!;
        await net.takeover(cidr, devH, { arpCount: 1, refreshMs: 1000, service: "web" });
        const atHolder = async () => (await neigh("show", vip, "dev", devC)).includes(macH);
        await waitFor("the client to learn the holder's MAC at takeover", atHolder);
        // Another host announces the address (a stale backup, a misconfigured box): the
        // client's entry points there until the holder's next refresh.
        await neigh("replace", vip, "lladdr", "02:00:00:00:00:98", "dev", devC, "nud", "stale");
        assert(!(await atHolder()));
        await waitFor("the refresh to move the client's entry back to the holder", atHolder);
        await net.release(cidr, devH);
      } finally {
        await net?.close();
        await ip("netns", "del", nsH).catch(() => "");
        await ip("netns", "del", nsC).catch(() => "");
      }
    },
  });
}

/** The pids of this process's `ip -force -batch -` children. */
function batchChildren(): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      if (ppid === Deno.pid && cmd.includes("-batch") && !/\) Z/.test(stat)) {
        pids.push(Number(e.name));
      }
    } catch {
      // gone
    }
  }
  return pids;
}

Deno.test({
  name: `the ip -batch path refuses hostile device text and survives its child being killed${SKIP}`,
  ignore: !ROOT,
  async fn(t) {
    const tag = `7${Deno.pid % 10000}`;
    const ns = `fsh3-k-${tag}`;
    const dev = `f3k${tag}`;
    const lines: string[] = [];
    const errors: string[] = [];
    let net: LinuxNetDriver | null = null;
    try {
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
      await ip("-n", ns, "link", "set", dev, "up");
      await ip("-n", ns, "link", "set", `${dev}p`, "up");
      net = new LinuxNetDriver({
        netns: ns,
        audit: new AuditLog({ script: "/t.ts", sink: (l) => lines.push(l) }),
        onError: (m) => errors.push(m),
      });
      const driver = net;
      const opts = { arpCount: 1, refreshMs: 0, service: "web" };
      await t.step("a device name carrying a second command never reaches ip", async () => {
        for (const hostile of [`${dev}\nlink set ${dev} down`, `${dev} # x`, `${dev}"`]) {
          await rejects(
            driver.takeover(parseCidr("198.18.214.100/24")!, hostile, opts),
            (e: Error) =>
              e instanceof TypeError && /^Cannot send to ip -batch: argument 5/.test(e.message),
          );
        }
        const shown = await ip("-n", ns, "addr", "show", "dev", dev);
        assertMatch(shown, /state UP|,UP/, "the link is still up");
        assert(!shown.includes("198.18.214.100"));
        assertEquals(driver.held(), []);
      });
      await t.step("a killed ip -batch is replaced, and the takeover still happens", async () => {
        await driver.takeover(parseCidr("198.18.214.100/24")!, dev, opts);
        const before = batchChildren();
        assertEquals(before.length, 1, "one ip -batch child");
        Deno.kill(before[0]!, "SIGKILL");
        await waitFor("the child to die", () => Promise.resolve(batchChildren().length === 0));
        await driver.takeover(parseCidr("198.18.214.101/24")!, dev, opts);
        assertMatch(await ip("-n", ns, "addr", "show", "dev", dev), /inet 198\.18\.214\.101\/24 /);
        // That takeover may have gone to a fresh child or, when its line was already written when
        // the death was seen, to a spawned ip (it cannot know whether the dead child ran it); the
        // batch is back by the next one either way.
        await driver.takeover(parseCidr("198.18.214.103/24")!, dev, opts);
        const after = batchChildren();
        assertEquals(after.length, 1, "a new ip -batch child");
        assert(after[0] !== before[0]);
        await driver.releaseAll();
        assert(!(await ip("-n", ns, "addr", "show", "dev", dev)).includes("198.18.214.10"));
      });
      await t.step("a release stops the packet burst: nothing is announced after it", async () => {
        const a = parseCidr("198.18.214.102/24")!;
        await driver.takeover(a, dev, { arpCount: 3, refreshMs: 1000, service: "web" });
        await driver.release(a, dev);
        const released = lines.length;
        // The burst's next packets were due 1 s and 2 s later, the refresh every second.
        await new Promise((r) => setTimeout(r, 2500));
        const late = lines.slice(released).map((l) => JSON.parse(l)).filter((r) =>
          ["announce-burst", "refresh"].includes(r.request.op)
        );
        assertEquals(late, [], "no gratuitous ARP for an address given up");
      });
    } finally {
      await net?.close();
      await ip("netns", "del", ns).catch(() => "");
    }
  },
});
