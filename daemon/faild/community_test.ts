import assert from "node:assert/strict";
import { keyId } from "../../lib/sign.ts";
import {
  accessFor,
  globToRegExp,
  hasRulesFor,
  loadCommunityFile,
  parseCommunity,
} from "./community.ts";

const RW = "peers-secret-123";
const OPS = "ops-secret-4567";

Deno.test("parseCommunity() reads rules, comments and the unsigned community", () => {
  const c = parseCommunity(`
# service  community  right
web*   ${RW}   RW
db     ${RW}   ro     # lower case is accepted
*      -       RO
`);
  assert.equal(c.rules.length, 3);
  assert.deepEqual(c.rules.map((r) => [r.pattern, r.right, r.line]), [
    ["web*", "RW", 3],
    ["db", "RO", 4],
    ["*", "RO", 5],
  ]);
  assert.equal(c.keys.get(keyId(RW)), RW);
  assert.equal(c.rules[2]!.keyId, null);
  assert.deepEqual(c.warnings, []);
});

Deno.test("parseCommunity() names the file and line of a bad rule", () => {
  assert.throws(
    () => parseCommunity("web x1234567 RW\nweb x1234567\n", { file: "/etc/c" }),
    /Invalid \/etc\/c line 2: expected "service-or-glob {2}community {2}RO\|RW", found 2 field/,
  );
  assert.throws(() => parseCommunity("web x1234567 RX\n"), /line 1: right "RX" must be RO or RW/);
  assert.throws(() => parseCommunity("we/b x1234567 RW\n"), /line 1: "we\/b" is not a service/);
  assert.throws(() => parseCommunity("a b c d\n"), /found 4 field/);
});

Deno.test("parseCommunity() warns about unsigned write access and short communities", () => {
  const c = parseCommunity("* - RW\nweb short RO\n");
  assert.equal(c.warnings.length, 2);
  assert.match(c.warnings[0]!, /unsigned requests write \*/);
  assert.match(c.warnings[1]!, /shorter than 8/);
});

Deno.test("accessFor() applies the first matching rule of the caller's community", () => {
  const c = parseCommunity(`
web-admin  ${RW}   RO
web*       ${RW}   RW
*          ${OPS}  RW
db         -       RO
`);
  const peers = keyId(RW);
  const ops = keyId(OPS);
  assert.equal(accessFor(c, "web-1", peers), "RW");
  assert.equal(accessFor(c, "web-admin", peers), "RO"); // first match wins
  assert.equal(accessFor(c, "db", peers), null); // not covered for this community
  assert.equal(accessFor(c, "db", ops), "RW");
  assert.equal(accessFor(c, "db", null), "RO");
  assert.equal(accessFor(c, "web-1", null), null);
  assert.equal(accessFor(c, "*", ops), "RW");
  assert.equal(accessFor(c, "*", peers), null); // web* does not match the literal "*"
  assert.equal(hasRulesFor(c, null), true);
  assert.equal(hasRulesFor(parseCommunity(`* ${OPS} RW`), null), false);
});

Deno.test("globToRegExp() matches * and ? and nothing else specially", () => {
  assert.equal(globToRegExp("web?").test("web1"), true);
  assert.equal(globToRegExp("web?").test("web12"), false);
  assert.equal(globToRegExp("a.b").test("axb"), false);
  assert.equal(globToRegExp("*").test("anything"), true);
});

Deno.test("loadCommunityFile() warns when every user may read the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/community`;
    await Deno.writeTextFile(path, `* ${RW} RW\n`, { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    assert.match((await loadCommunityFile(path)).warnings.join(), /readable by every user/);
    await Deno.chmod(path, 0o600);
    assert.deepEqual((await loadCommunityFile(path)).warnings, []);
    await assert.rejects(loadCommunityFile(`${dir}/missing`), /Cannot read community file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
