import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parsePolicy } from "../../shell/sandbox/policy.ts";

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));
const root = (name: string) => fileURLToPath(new URL(`../../${name}`, import.meta.url));

async function failshCheck(policy: string): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      root("shell/failsh.ts"),
      "--check",
      "--json",
      "--policy",
      policy,
      here("failover.ts"),
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    const out = await child.output();
    return { code: out.code, out: new TextDecoder().decode(out.stdout) };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("ip_failover_linux: failsh --check accepts the script with the sample policy, declaring alpha, beta and vip", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ipfo-sample-" });
  try {
    const policy = JSON.parse(await Deno.readTextFile(here("policy.json")));
    await Deno.writeTextFile(`${dir}/cluster.key`, "a-cluster-secret\n", { mode: 0o600 });
    policy.keys.cluster.file = `${dir}/cluster.key`;
    policy.audit = `${dir}/audit.log`;
    policy.dumpFile = `${dir}/failsh.dump`;
    await Deno.writeTextFile(`${dir}/policy.json`, JSON.stringify(policy));
    const { code, out } = await failshCheck(`${dir}/policy.json`);
    assert.equal(code, 0, out);
    const report = JSON.parse(out);
    assert.deepEqual(report.decl.hosts.map((h: { name: string }) => h.name), ["alpha", "beta"]);
    const vip = report.decl.services[0];
    assert.equal(vip.name, "vip");
    assert.deepEqual(vip.masters, ["alpha"]);
    assert.deepEqual(vip.slaves, ["beta"]);
    assert.deepEqual(vip.handlers.sort(), ["reclaim", "start", "stop"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ip_failover_linux: the policy allows exactly the VIP on eth0, the linux driver and no program", async () => {
  const policy = parsePolicy(await Deno.readTextFile(here("policy.json")), here("policy.json"));
  assert.equal(policy.host, "alpha");
  assert.equal(policy.netDriver, "linux");
  assert.deepEqual(policy.addresses, [{ prefix: "198.18.0.100/32", devices: ["eth0"] }]);
  assert.deepEqual(policy.programs, []);
  assert.equal(policy.onExit, "release");
  assert.equal(policy.faild.key, "cluster");
});

Deno.test("ip_failover_linux: the systemd units run the repository's faild and failsh with the sample's files", async () => {
  const faild = await Deno.readTextFile(here("faild.service"));
  const failsh = await Deno.readTextFile(here("failsh.service"));
  assert.match(faild, /^User=failover$/m, "faild runs unprivileged");
  assert.match(
    faild,
    /ExecStart=.* \/opt\/failover\/daemon\/faild\/faild\.ts --listen 0\.0\.0\.0:7100 -c \/etc\/failover\/community -s \S+ --name \$\{FAILOVER_NAME\}$/m,
  );
  assert.match(
    failsh,
    /ExecStart=.* \/opt\/failover\/shell\/failsh\.ts --policy \/etc\/failover\/policy\.json \/etc\/failover\/cluster\.ts$/m,
  );
  assert.match(
    failsh,
    /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW$/m,
    "no root, two capabilities",
  );
  assert.match(failsh, /^KillSignal=SIGTERM$/m, "SIGTERM makes failsh release the VIP");
  // The files the units name exist in the repository.
  for (
    const f of ["daemon/faild/faild.ts", "shell/failsh.ts", "samples/ip_failover_linux/failover.ts"]
  ) {
    await Deno.stat(root(f));
  }
  // The community example parses as community lines (service, secret, RO|RW).
  const lines = (await Deno.readTextFile(here("community.example"))).split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"));
  assert.ok(lines.length >= 1);
  for (const l of lines) assert.match(l, /^\S+\s+\S+\s+(RO|RW)$/);
});
