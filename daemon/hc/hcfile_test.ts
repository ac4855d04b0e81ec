import assert from "node:assert/strict";
import { parseHcfile, tokenize } from "./hcfile.ts";
import { severityCode } from "./hc.ts";

function errorsOf(text: string): string[] {
  return parseHcfile(text, { file: "Hcfile" }).diagnostics
    .filter((d) => d.severity === "error")
    .map((d) => `${d.line}: ${d.message}`);
}

Deno.test("tokenize() splits on blanks and keeps quoted values whole", () => {
  assert.deepEqual(tokenize('http url=http://x/ body="/hello world/"'), [
    "http",
    "url=http://x/",
    "body=/hello world/",
  ]);
  assert.deepEqual(tokenize('expect="say \\"hi\\""'), ['expect=say "hi"']);
  assert.deepEqual(tokenize('body="/\\"ok\\":\\s*true/"'), ['body=/"ok":\\s*true/']);
  assert.throws(() => tokenize('body="/open'), /unclosed double quote/);
});

Deno.test("parseHcfile() reads the example of the issue", () => {
  const text = [
    "# target: dependencies",
    "allow-program /usr/bin/true",
    "gateway:",
    "\tping host=198.18.0.1 interval=1s timeout=500ms",
    "dns: gateway",
    "\tdns server=127.0.0.1:5353 name=www.example.test type=A expect=198.18.0.10 interval=2s",
    "web: dns",
    "\thttp url=http://127.0.0.1:8080/health status=200 body=/ok/ timeout=1s rise=2 fall=3",
    "\ton fail: faild url=http://127.0.0.1:7100 service=web state=FAIL",
    "\ton up: faild url=http://127.0.0.1:7100 service=web state=UP",
    "\ton change: run /usr/bin/true timeout=10s",
    "\ton change: webhook url=http://127.0.0.1:9000/hook timeout=2s",
    "",
  ].join("\n");
  const { config, diagnostics } = parseHcfile(text);
  assert.deepEqual(diagnostics.filter((d) => d.severity === "error"), []);
  assert.deepEqual(config.checks.map((c) => c.name), ["gateway", "dns", "web"]);
  const web = config.checks[2]!;
  assert.equal(web.kind, "http");
  assert.deepEqual(web.deps, ["dns"]);
  assert.equal(web.timeoutMs, 1000);
  assert.equal(web.rise, 2);
  assert.equal(web.fall, 3);
  assert.deepEqual(web.actions.map((a) => [a.line, a.kind, a.events.join()]), [
    [9, "faild", "fail"],
    [10, "faild", "up"],
    [11, "run", "change"],
    [12, "webhook", "change"],
  ]);
  assert.deepEqual(web.actions[2]!.argv, ["/usr/bin/true"]);
  assert.equal(web.actions[2]!.timeoutMs, 10_000);
  assert.equal(config.checks[0]!.intervalMs, 1000);
  assert.equal(config.checks[0]!.timeoutMs, 500);
});

Deno.test("parseHcfile() orders checks so that dependencies come first", () => {
  const { config } = parseHcfile(
    "web: dns db\n\ttcp host=h port=1\ndb:\n\ttcp host=h port=2\ndns: gw\n\ttcp host=h port=3\ngw:\n\ttcp host=h port=4\n",
  );
  assert.deepEqual(config.checks.map((c) => c.name), ["db", "gw", "dns", "web"]);
});

Deno.test("parseHcfile() applies defaults to the targets after them", () => {
  const { config } = parseHcfile(
    "a:\n\ttcp host=h port=1\ndefaults interval=3s rise=1\nb:\n\ttcp host=h port=1 fall=5\n",
  );
  assert.equal(config.checks[0]!.intervalMs, 10_000);
  assert.equal(config.checks[0]!.rise, 2);
  assert.equal(config.checks[1]!.intervalMs, 3000);
  assert.equal(config.checks[1]!.rise, 1);
  assert.equal(config.checks[1]!.fall, 5);
});

Deno.test("parseHcfile() reports every error with its line and what is allowed", async (t) => {
  await t.step("unknown dependency", () => {
    assert.deepEqual(errorsOf("web: dns\n\ttcp host=h port=1\n"), [
      '1: check web depends on dns, which is not defined: define "dns:" or remove it',
    ]);
  });
  await t.step("cycle", () => {
    const e = errorsOf(
      "a: b\n\ttcp host=h port=1\nb: c\n\ttcp host=h port=1\nc: a\n\ttcp host=h port=1\n",
    );
    assert.deepEqual(e, ["1: dependency cycle: a -> b -> c -> a: dependencies must not loop"]);
  });
  await t.step("self dependency", () => {
    assert.match(errorsOf("a: a\n\ttcp host=h port=1\n")[0]!, /cycle: a -> a/);
  });
  await t.step("unknown kind", () => {
    assert.deepEqual(errorsOf("a:\n\ticmp host=h\n"), [
      '2: "icmp" is not a check kind: use tcp, http, https, dns, smtp, command, ping',
    ]);
  });
  await t.step("unknown option lists the allowed ones", () => {
    assert.deepEqual(errorsOf("a:\n\ttcp host=h port=1 colour=red\n"), [
      "2: a tcp check has no option colour: allowed are interval, timeout, rise, fall, host, port",
    ]);
  });
  await t.step("missing required option", () => {
    assert.deepEqual(errorsOf("a:\n\ttcp host=h\n"), [
      "2: a tcp check needs port=: TCP port, 1 to 65535",
    ]);
  });
  await t.step("bad values", () => {
    const e = errorsOf("a:\n\thttp url=https://x/ status=700 timeout=5 body=ok rise=0\n");
    assert.equal(e.length, 5);
    assert.match(e.join("\n"), /timeout: "5" is not a duration/);
    assert.match(e.join("\n"), /use the https check kind/);
    assert.match(e.join("\n"), /status: "700" is not a status/);
    assert.match(e.join("\n"), /body: "ok" is not a regex: write it as \/pattern\//);
    assert.match(e.join("\n"), /rise: 0 is out of range: use 1 to 100/);
  });
  await t.step("dns: tcp= is yes or no, and a server in brackets is IPv6", () => {
    assert.deepEqual(errorsOf("a:\n\tdns server=[::1]:5353 name=x.test tcp=yes\n"), []);
    assert.deepEqual(errorsOf("a:\n\tdns server=198.18.0.53 name=x.test tcp=no\n"), []);
    assert.deepEqual(errorsOf("a:\n\tdns server=198.18.0.53 name=x.test tcp=maybe\n"), [
      '2: option tcp: "maybe" is not yes or no',
    ]);
    assert.match(errorsOf("a:\n\tdns server=[::1]53 name=x.test\n")[0]!, /in brackets/);
  });
  await t.step("a command must be allow-listed", () => {
    assert.deepEqual(errorsOf("a:\n\tcommand /usr/bin/true\n"), [
      '2: program /usr/bin/true is not allowed: add "allow-program /usr/bin/true" to the Hcfile header',
    ]);
    assert.deepEqual(errorsOf("allow-program /usr/bin/true\na:\n\tcommand /usr/bin/true\n"), []);
    assert.match(errorsOf("a:\n\tcommand true\n")[0]!, /not an absolute path/);
  });
  await t.step("a repair program must be allow-listed", () => {
    assert.match(
      errorsOf("a:\n\ttcp host=h port=1\n\ton fail: run /bin/sh -c reboot\n")[0]!,
      /^3: program \/bin\/sh is not allowed/,
    );
  });
  await t.step("bad event and bad action", () => {
    const e = errorsOf("a:\n\ttcp host=h port=1\n\ton boom: run /x\n\ton fail: mail to=x\n");
    assert.deepEqual(e, [
      '3: "boom" is not an event: use up, fail, blocked, change (comma-separated)',
      '4: "mail" is not an action: use faild, run, webhook',
    ]);
  });
  await t.step("structure", () => {
    const e = errorsOf(
      "\ttcp host=h port=1\nstray words\na:\nb:\n\ttcp host=h port=1\n\ttcp host=h port=2\n",
    );
    assert.deepEqual(e, [
      '1: indented line outside a target: put it under a "name:" line, or unindent it',
      '2: "stray" is neither a target nor a directive: write "name: dependencies" or one of allow-program, listen, name, defaults',
      '3: check a has no check line: indent one below it, e.g. "  tcp host=127.0.0.1 port=80"',
      "6: check b already has its check at line 5: one check per target",
    ]);
  });
  await t.step("duplicate names", () => {
    assert.deepEqual(errorsOf("a:\n\ttcp host=h port=1\na:\n\ttcp host=h port=1\n"), [
      "3: check a is already defined at line 1: names must be unique",
    ]);
  });
  await t.step("dns expectations must fit the type", () => {
    assert.match(
      errorsOf("a:\n\tdns server=127.0.0.1 name=x.test expect=not-an-ip\n")[0]!,
      /not an IPv4 address/,
    );
    assert.match(errorsOf("a:\n\tdns server=localhost name=x.test\n")[0]!, /IP literal/);
  });
});

Deno.test("parseHcfile() warns about what works but looks wrong", () => {
  const { diagnostics } = parseHcfile(
    "allow-program /usr/bin/false\na:\n\ttcp host=h port=1 interval=1s timeout=2s\n\ton fail: faild url=http://127.0.0.1:7100\n",
  );
  assert.deepEqual(diagnostics.map((d) => `${d.line} ${d.severity}`), [
    "1 warning",
    "3 warning",
    "4 warning",
  ]);
  assert.match(diagnostics[0]!.message, /allowed but no check or action runs it/);
  assert.match(diagnostics[1]!.message, /longer than interval/);
  assert.match(diagnostics[2]!.message, /unsigned/);
  assert.equal(severityCode(diagnostics), 1);
});

Deno.test("severityCode() is 0 when clean, 1 with warnings, 2 with errors", () => {
  assert.equal(severityCode(parseHcfile("a:\n\ttcp host=h port=1\n").diagnostics), 0);
  assert.equal(severityCode(parseHcfile("a:\n\ttcp host=h\n").diagnostics), 2);
});

Deno.test("parseHcfile() resolves a relative ca-file against the Hcfile's directory", () => {
  const { diagnostics } = parseHcfile("a:\n\thttps url=https://x/ ca-file=nope.pem\n", {
    file: "/etc/hc/Hcfile",
  });
  assert.match(diagnostics[0]!.message, /ca-file \/etc\/hc\/nope.pem cannot be read/);
});
