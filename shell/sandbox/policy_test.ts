import {
  deepEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  throws,
} from "node:assert/strict";
import { checkArp, checkRelease, checkRun, checkTakeover } from "./checks.ts";
import { parsePolicy, PolicyError } from "./policy.ts";
import { childUserIds, readableBy } from "./read_paths.ts";
import { PolicyDeniedError } from "../errors.ts";
import { isValidName } from "../../lib/types.ts";

const SOURCE = "/etc/failover/policy.json";

function policy(extra: Record<string, unknown> = {}) {
  return parsePolicy(JSON.stringify({ host: "alpha", ...extra }), SOURCE);
}

function problemsOf(text: string): string[] {
  try {
    parsePolicy(text, SOURCE);
  } catch (e) {
    if (e instanceof PolicyError) return e.problems;
    throw e;
  }
  throw new Error("expected the policy to be refused");
}

Deno.test("parsePolicy() fills in the defaults and makes paths absolute", () => {
  const p = policy({ keys: { cluster: { file: "keys/cluster.key" } }, read: ["conf"] });
  assertEquals(p.netDriver, "linux");
  assertEquals(p.arp, { count: 3, refreshMs: 0 });
  assertEquals(p.onExit, "release");
  assertEquals(p.monitor, "127.0.0.1:1848");
  assertEquals(p.debug, null);
  assertEquals(p.debugKey, null);
  assertEquals(p.faild, { url: "http://127.0.0.1:7100", key: null });
  assertEquals(p.audit, "/etc/failover/failsh-audit.log");
  assertEquals(p.dumpFile, "/etc/failover/failsh.dump");
  assertEquals(p.keys.cluster?.file, "/etc/failover/keys/cluster.key");
  assertEquals(p.read, ["/etc/failover/conf"]);
  assertEquals(p.addresses, []);
  assertEquals(p.programs, []);
  assertEquals(p.net, []);
});

Deno.test("parsePolicy() names the field of every problem", async (t) => {
  await t.step("not JSON", () => {
    throws(
      () => parsePolicy("{host: alpha}", SOURCE),
      /^PolicyError: Invalid policy \/etc\/failover\/policy.json: not valid JSON/,
    );
  });
  await t.step("unknown field", () => {
    assertMatch(
      problemsOf('{"host":"a","adresses":[]}')[0]!,
      /unknown field "adresses" \(known fields: host, faild/,
    );
  });
  await t.step("comments are allowed", () => {
    assertEquals(parsePolicy('{"host":"a","_comment":"x","$schema":"y"}', SOURCE).host, "a");
  });
  await t.step("missing host", () => {
    assertMatch(problemsOf("{}")[0]!, /^host must be this host's name/);
  });
  await t.step("bad prefix and devices", () => {
    const p = problemsOf(
      '{"host":"a","addresses":[{"prefix":"198.18.0.0/33","devices":["eth0"]},{"prefix":"198.18.0.0/24","devices":[]},{"prefix":"198.18.0.0/24","devices":["eth 0"]}]}',
    );
    assertMatch(
      p[0]!,
      /^addresses\[0\]\.prefix must be a CIDR prefix like 198\.18\.0\.0\/24 .*got "198\.18\.0\.0\/33"/,
    );
    assertMatch(p[1]!, /^addresses\[1\]\.devices must be a non-empty list/);
    assertMatch(p[2]!, /^addresses\[2\]\.devices must be a non-empty list.*"eth 0"/);
  });
  await t.step("bad programs", () => {
    const p = problemsOf(
      JSON.stringify({
        host: "a",
        programs: [
          { name: "ok", path: "relative/bin", args: [] },
          { name: "re", path: "/bin/x", args: ["(unclosed"] },
          { name: "re", path: "/bin/y", args: [], timeoutMs: 0 },
        ],
      }),
    );
    assertMatch(p[0]!, /^programs\[0\]\.path must be an absolute path/);
    assertMatch(p[1]!, /^programs\[1\]\.args\[0\] is not a valid regular expression/);
    assertMatch(p[2]!, /^programs\[2\]\.name "re" is listed twice/);
    assertMatch(p[3]!, /^programs\[2\]\.timeoutMs must be an integer from 1 to 3600000, got 0/);
  });
  await t.step("net entries cannot smuggle flags", () => {
    assertMatch(
      problemsOf('{"host":"a","net":["127.0.0.1:80,0.0.0.0"]}')[0]!,
      /^net\[0\] must be "host", "host:port"/,
    );
  });
  await t.step("read cannot expose a key file", () => {
    const p = problemsOf(
      '{"host":"a","keys":{"k":{"file":"/etc/failover/k.key"}},"read":["/etc/failover"]}',
    );
    assertMatch(
      p[0]!,
      /^read\[0\] "\/etc\/failover" would let the script read the secret of key "k"/,
    );
  });
  await t.step("key references must exist", () => {
    assertMatch(
      problemsOf('{"host":"a","faild":{"url":"http://127.0.0.1:7100","key":"nope"}}')[0]!,
      /^faild\.key must name a key of "keys" \(none defined\)/,
    );
  });
  await t.step("enums and numbers", () => {
    const p = problemsOf(
      '{"host":"a","netDriver":"bsd","onExit":"maybe","arp":{"count":-1,"refreshMs":10},"monitor":"1848"}',
    );
    assertEquals(p.length, 5);
    assertMatch(p.join("\n"), /netDriver must be "linux" or "simulated", got "bsd"/);
    assertMatch(p.join("\n"), /onExit must be "release" or "keep"/);
    assertMatch(p.join("\n"), /arp\.count must be an integer from 0 to 100, got -1/);
    assertMatch(p.join("\n"), /arp\.refreshMs must be 0 \(no refresh\) or an integer from 1000/);
    assertMatch(p.join("\n"), /monitor must be "address:port"/);
  });
  await t.step("several problems are listed together", () => {
    throws(() => parsePolicy('{"netDriver":"x"}', SOURCE), (e: Error) => {
      assertMatch(
        e.message,
        /^Invalid policy \/etc\/failover\/policy.json: 2 problems:\n {2}- host/,
      );
      return true;
    });
  });
});

Deno.test("checkTakeover() allows only listed prefixes on listed devices", async (t) => {
  const p = policy({
    addresses: [
      { prefix: "198.18.0.0/24", devices: ["eth0", "eth1"] },
      { prefix: "198.18.5.7/32", devices: ["eth2"] },
      { prefix: "2001:db8::/64", devices: ["eth0"] },
    ],
  });
  await t.step("inside a prefix, listed device", () => {
    const a = checkTakeover(p, "198.18.0.100/24", "eth1");
    assertEquals([a.cidr.text, a.device, a.rule.prefix], [
      "198.18.0.100/24",
      "eth1",
      "198.18.0.0/24",
    ]);
    assertEquals(checkTakeover(p, "198.18.5.7/24", "eth2").cidr.ip, "198.18.5.7");
    assertEquals(checkTakeover(p, "2001:DB8::10/64", "eth0").cidr.text, "2001:db8::10/64");
  });
  await t.step("outside every prefix", () => {
    throws(() => checkTakeover(p, "198.19.0.100/24", "eth0"), (e: Error) => {
      assert(e instanceof PolicyDeniedError);
      assertEquals(e.message, "Cannot take over 198.19.0.100/24: address is outside the policy");
      return true;
    });
    throws(() => checkTakeover(p, "198.18.5.8/24", "eth2"), /outside the policy/);
    throws(() => checkTakeover(p, "2001:db8:1::10/64", "eth0"), /outside the policy/);
  });
  await t.step("device not listed for the address", () => {
    throws(
      () => checkTakeover(p, "198.18.0.100/24", "eth2"),
      /^PolicyDeniedError: Cannot take over 198\.18\.0\.100\/24 on eth2: device is not allowed for this address \(allowed: eth0, eth1\)$/,
    );
  });
  await t.step("the prefix length may not make a wider network than the policy", () => {
    throws(
      () => checkTakeover(p, "198.18.0.100/16", "eth0"),
      /^PolicyDeniedError: Cannot take over 198\.18\.0\.100\/16: a \/16 network is wider than the policy allows for 198\.18\.0\.0\/24 \(at least \/24\)$/,
    );
    assertEquals(checkTakeover(p, "198.18.0.100/32", "eth0").cidr.prefixLength, 32);
    // Under a single-address rule, the subnet's length is the operator's usual choice.
    assertEquals(checkTakeover(p, "198.18.5.7/20", "eth2").cidr.prefixLength, 20);
    throws(() => checkTakeover(p, "198.18.5.7/1", "eth2"), /a \/1 network is wider .*at least \/8/);
    throws(() => checkTakeover(p, "2001:db8::10/48", "eth0"), /at least \/64/);
  });
  await t.step("the prefix length is required", () => {
    throws(
      () => checkTakeover(p, "198.18.0.100", "eth0"),
      /must include its prefix length, like 198\.18\.0\.100\/24/,
    );
  });
  await t.step("garbage is refused", () => {
    throws(
      () => checkTakeover(p, "eth0; reboot/24", "eth0"),
      /not an IP address with a prefix length/,
    );
    throws(() => checkTakeover(p, "198.18.0.1/24", "eth0 up"), /is not a network device name/);
    throws(() => checkTakeover(p, 42 as unknown as string, "eth0"), PolicyDeniedError);
  });
  await t.step("release follows the same rules", () => {
    assertEquals(checkRelease(p, "198.18.0.100/24", "eth0").cidr.text, "198.18.0.100/24");
    throws(
      () => checkRelease(p, "10.1.2.3/8", "eth0"),
      /^PolicyDeniedError: Cannot release 10\.1\.2\.3\/8: address is outside the policy$/,
    );
  });
});

Deno.test("checkRun() allows only listed programs with matching arguments", async (t) => {
  const p = policy({
    programs: [
      {
        name: "systemctl",
        path: "/usr/bin/systemctl",
        args: ["start|stop|restart", "nginx|haproxy"],
        timeoutMs: 20000,
      },
      {
        name: "notify",
        path: "/usr/local/bin/notify",
        args: ["[a-z]+", "(-v)?"],
        rest: "[A-Za-z0-9 ]*",
      },
    ],
  });
  await t.step("a matching call", () => {
    const r = checkRun(p, ["systemctl", "restart", "nginx"]);
    assertEquals([r.path, r.args, r.timeoutMs], [
      "/usr/bin/systemctl",
      ["restart", "nginx"],
      20000,
    ]);
  });
  await t.step("an unlisted program", () => {
    throws(
      () => checkRun(p, ["sh", "-c", "id"]),
      /^PolicyDeniedError: Cannot run sh: program is not in the policy \(allowed: systemctl, notify\)$/,
    );
  });
  await t.step("an argument that does not fully match", () => {
    throws(
      () => checkRun(p, ["systemctl", "restart", "nginx; reboot"]),
      /argument 2 "nginx; reboot" does not match the policy's pattern "nginx\|haproxy"/,
    );
    throws(() => checkRun(p, ["systemctl", "restartx", "nginx"]), /argument 1/);
  });
  await t.step("too many or too few arguments", () => {
    throws(
      () => checkRun(p, ["systemctl", "restart", "nginx", "sshd"]),
      /systemctl takes at most 2 arguments/,
    );
    throws(() => checkRun(p, ["systemctl", "restart"]), /systemctl needs 2 arguments/);
  });
  await t.step("optional and rest arguments", () => {
    assertEquals(checkRun(p, ["notify", "web"]).args, ["web"]);
    assertEquals(checkRun(p, ["notify", "web", "-v", "took over", "now"]).args.length, 4);
    throws(() => checkRun(p, ["notify", "web", "-v", "$(id)"]), /argument 3/);
  });
  await t.step("the script can shorten the time limit, not extend it", () => {
    assertEquals(checkRun(p, ["systemctl", "stop", "nginx"], { timeoutMs: 500 }).timeoutMs, 500);
    assertEquals(
      checkRun(p, ["systemctl", "stop", "nginx"], { timeoutMs: 999_999 }).timeoutMs,
      20000,
    );
    assertEquals(checkRun(p, ["notify", "x"]).timeoutMs, 10000);
  });
  await t.step("not an argv", () => {
    throws(() => checkRun(p, []), /empty command/);
    throws(
      () => checkRun(p, ["systemctl", 1 as unknown as string, "nginx"]),
      /every argument must be a string/,
    );
  });
});

Deno.test("every policy under samples/ is valid", async () => {
  const root = new URL("../../samples/", import.meta.url);
  const found: string[] = [];
  async function walk(dir: URL): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
      if (entry.isDirectory) await walk(url);
      else if (/^policy.*\.json$/.test(entry.name)) found.push(decodeURIComponent(url.pathname));
    }
  }
  await walk(root);
  assert(found.some((f) => f.endsWith("/samples/policy_example.json")));
  for (const path of found) {
    const p = parsePolicy(await Deno.readTextFile(path), path);
    assert(isValidName(p.host), path);
  }
});

Deno.test("checkArp() treats the policy's arp values as caps", async (t) => {
  const p = policy({ arp: { count: 3, refreshMs: 5000 } });
  await t.step("defaults and smaller values pass", () => {
    assertEquals(checkArp(p, "198.18.0.1/24", {}), { arpCount: 3, refreshMs: 5000 });
    assertEquals(checkArp(p, "198.18.0.1/24", { arpCount: 0, refreshMs: 0 }), {
      arpCount: 0,
      refreshMs: 0,
    });
    assertEquals(checkArp(p, "198.18.0.1/24", { refreshMs: 60_000 }).refreshMs, 60_000);
  });
  await t.step("more, faster or malformed is refused", () => {
    throws(() => checkArp(p, "198.18.0.1/24", { arpCount: 4 }), PolicyDeniedError);
    throws(() => checkArp(p, "198.18.0.1/24", { arpCount: 1.5 }), /an integer from 0 to 3/);
    throws(() => checkArp(p, "198.18.0.1/24", { refreshMs: 4999 }), /more often than/);
    throws(() => checkArp(p, "198.18.0.1/24", { refreshMs: 3_600_001 }), /up to 3600000/);
    throws(() => checkArp(p, "198.18.0.1/24", { refreshMs: "1s" }), /got "1s"/);
  });
});

Deno.test("parsePolicy() checks childUser; childUserIds() resolves it", () => {
  assertEquals(policy().childUser, null);
  assertEquals(childUserIds(policy({ childUser: "65534:65534" })), { uid: 65534, gid: 65534 });
  assertEquals(
    childUserIds(
      policy({ childUser: "failsh" }),
      "root:x:0:0::/root:/bin/sh\nfailsh:x:990:980::/:/x\n",
    ),
    { uid: 990, gid: 980 },
  );
  throws(() => childUserIds(policy({ childUser: "ghost" }), "root:x:0:0::/:/x\n"), /no such user/);
  const p = problemsOf('{"host":"a","childUser":"root"}').join("\n");
  assertMatch(p, /childUser "root" is root/);
  assertMatch(problemsOf('{"host":"a","childUser":"0:0"}').join("\n"), /is root/);
  assertMatch(
    problemsOf('{"host":"a","childUser":"x y"}').join("\n"),
    /childUser must be a user name like "nobody"/,
  );
});

Deno.test("readableBy() follows the mode bits of the path and the directories above it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.chmod(dir, 0o755);
    await Deno.writeTextFile(`${dir}/open`, "x", { mode: 0o644 });
    await Deno.writeTextFile(`${dir}/closed`, "x", { mode: 0o600 });
    await Deno.mkdir(`${dir}/private`, { mode: 0o700 });
    await Deno.writeTextFile(`${dir}/private/open`, "x", { mode: 0o644 });
    const other = { uid: 65534, gid: 65534 };
    assert(readableBy(`${dir}/open`, other));
    assert(!readableBy(`${dir}/closed`, other));
    assert(!readableBy(`${dir}/private/open`, other), "its directory is not searchable");
    assert(!readableBy(`${dir}/missing`, other));
    const owner = { uid: Deno.uid()!, gid: Deno.gid()! };
    assert(readableBy(`${dir}/private/open`, owner));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parsePolicy() checks children (the handlers' shared children)", () => {
  assertEquals(policy().children, 4);
  assertEquals(policy({ children: 1 }).children, 1);
  assertEquals(policy({ children: 16 }).children, 16);
  for (const bad of ["0", "17", "1.5", '"2"', "null"]) {
    assertMatch(
      problemsOf(`{"host":"a","children":${bad}}`).join("\n"),
      /children must be an integer from 1 to 16/,
    );
  }
});
