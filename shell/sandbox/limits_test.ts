import { deepEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import {
  cgroup2Unavailable,
  ChildCgroups,
  childLimits,
  CODE_RANGE_MB,
  limitPrefix,
  parseProcStat,
  readProcStat,
} from "./limits.ts";

Deno.test("childLimits() leaves room for V8's code range in RLIMIT_DATA, not for a second one", () => {
  const l = childLimits(256);
  assertEquals(l.dataBytes, (512 + 256 + 128) * 1024 * 1024);
  assert(l.dataBytes < 2 * CODE_RANGE_MB * 1024 * 1024 + 256 * 1024 * 1024);
  assert(l.memoryMaxBytes > 256 * 1024 * 1024);
  assertEquals(l.nice, 10);
});

Deno.test("limitPrefix() runs the child under prlimit and nice", () => {
  const { argv, missing } = limitPrefix(childLimits(64));
  if (missing.length > 0) return; // a bare machine: the sandbox logs what is missing
  const data = (512 + 64 + 128) * 1024 * 1024;
  assertEquals(argv, [
    "/usr/bin/prlimit",
    `--data=${data}:${data}`,
    "--core=0:0",
    "--",
    "/usr/bin/nice",
    "-n",
    "10",
  ]);
});

Deno.test("parseProcStat() counts fields after the last parenthesis of the name", () => {
  const line = "42 (a) b (c) S 1 42 42 0 -1 4194560 0 0 0 0 150 50 0 0 30 10 7 0 1 2 3";
  assertEquals(parseProcStat(line), { cpuMs: 2000, threads: 7 });
  assertEquals(parseProcStat("garbage"), null);
  assertEquals(parseProcStat("1 (x) S 1 2"), null);
});

Deno.test("readProcStat() reads this process", async () => {
  const s = await readProcStat(Deno.pid);
  assert(s !== null && s.threads >= 1 && s.cpuMs >= 0);
  assertEquals(await readProcStat(2 ** 30), null);
});

/** A fake cgroup v2 tree: a directory with the files the kernel would show. */
async function fakeTree(controllers: string, procs: string) {
  const root = await Deno.makeTempDir({ prefix: "failsh_cgroup_test_" });
  const own = `${root}/system.slice/failsh.service`;
  await Deno.mkdir(own, { recursive: true });
  await Deno.writeTextFile(`${own}/cgroup.controllers`, controllers);
  await Deno.writeTextFile(`${own}/cgroup.procs`, procs);
  const mountinfo = `35 24 0:30 / ${root} rw,nosuid - cgroup2 cgroup2 rw\n`;
  return {
    root,
    own,
    options: { mountinfo, selfCgroup: "0::/system.slice/failsh.service\n", pid: 4242 },
  };
}

Deno.test("ChildCgroups on a delegated cgroup v2: supervisor leaf, children with limits", async (t) => {
  const tree = await fakeTree("cpu memory pids\n", "4242\n");
  try {
    assertEquals(cgroup2Unavailable(tree.options), null);
    const cgroups = ChildCgroups.setup(tree.options);
    assert(typeof cgroups !== "string", String(cgroups));
    await t.step("failsh moves itself out of the way (no internal processes)", async () => {
      assertEquals(await Deno.readTextFile(`${tree.own}/supervisor/cgroup.procs`), "4242\n");
      assertEquals(
        await Deno.readTextFile(`${tree.own}/cgroup.subtree_control`),
        "+memory +pids +cpu",
      );
      assertEquals(
        await Deno.readTextFile(`${tree.own}/children/cgroup.subtree_control`),
        "+memory +pids +cpu",
      );
      assertEquals(await Deno.readTextFile(`${tree.own}/children/cpu.weight`), "20");
    });
    await t.step("a second setup returns the same tree", () => {
      assert(ChildCgroups.setup(tree.options) === cgroups);
    });
    await t.step("each child gets memory, task and CPU limits", async () => {
      const limits = childLimits(256);
      const dir = cgroups.create("pool-0-1", limits);
      assertEquals(dir, `${tree.own}/children/pool-0-1`);
      const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
      assertEquals(Number(await read("memory.max")), limits.memoryMaxBytes);
      assertEquals(await read("memory.swap.max"), "0");
      assertEquals(await read("memory.oom.group"), "1");
      assertEquals(Number(await read("pids.max")), limits.tasksMax);
      assertEquals(await read("cpu.max"), "100000 100000");
      assertEquals(cgroups.wrapper(dir), [
        "/bin/sh",
        "-c",
        'echo $$ > "$0/cgroup.procs" && exec "$@"',
        dir,
      ]);
      cgroups.kill(dir);
      assertEquals(await read("cgroup.kill"), "1");
    });
  } finally {
    await Deno.remove(tree.root, { recursive: true });
  }
});

Deno.test("ChildCgroups says why it cannot be used, and changes nothing then", async (t) => {
  await t.step("no memory controller delegated", async () => {
    const tree = await fakeTree("hugetlb\n", "4242\n");
    try {
      const why = ChildCgroups.setup(tree.options);
      assertMatch(
        String(why),
        /memory and pids controllers are not delegated .*\(it has: hugetlb\)/,
      );
      assertEquals([...Deno.readDirSync(tree.own)].map((e) => e.name).sort(), [
        "cgroup.controllers",
        "cgroup.procs",
      ]);
    } finally {
      await Deno.remove(tree.root, { recursive: true });
    }
  });
  await t.step("other processes share failsh's cgroup", async () => {
    const tree = await fakeTree("memory pids\n", "4242\n17\n");
    try {
      assertMatch(String(ChildCgroups.setup(tree.options)), /other processes share .*pids 17/);
    } finally {
      await Deno.remove(tree.root, { recursive: true });
    }
  });
  await t.step("the root cgroup, and no cgroup v2 at all", () => {
    assertMatch(
      String(cgroup2Unavailable({
        mountinfo: "1 1 0:1 / /nonexistent rw - cgroup2 cgroup2 rw\n",
        selfCgroup: "0::/\n",
      })),
      /not delegated/,
    );
    assertEquals(
      cgroup2Unavailable({ mountinfo: "1 1 0:1 / /sys rw - sysfs sysfs rw\n", selfCgroup: "" }),
      "no cgroup v2 file system is mounted",
    );
  });
});
