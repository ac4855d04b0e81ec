import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { checkDecl } from "./decl.ts";

import { handlers, registry } from "../script/_test_registry.ts";

Deno.test("checkDecl() accepts what the registry sends and nothing else", async (t) => {
  const r = registry();
  r.service("web", { masters: ["alpha"], slaves: ["beta"], interval: "2s", ...handlers });
  r.trap(() => {});
  const good = r.decl();
  await t.step("a registry's declaration", () => {
    assertEquals(checkDecl(JSON.parse(JSON.stringify(good))), good);
  });
  await t.step("a host with a liveness probe", () => {
    const d = JSON.parse(JSON.stringify(good));
    d.hosts[0].liveness = { intervalMs: 10, fall: 5, stallGraceMs: 250 };
    assertEquals(checkDecl(d).hosts[0]!.liveness, { intervalMs: 10, fall: 5, stallGraceMs: 250 });
  });
  // deno-lint-ignore no-explicit-any
  const forged = (patch: (d: Record<string, any>) => void) => {
    const d = JSON.parse(JSON.stringify(good));
    patch(d);
    return () => checkDecl(d);
  };
  await t.step("values a registry refuses", () => {
    throws(
      forged((d) => (d.services[0].intervalMs = 0)),
      /^TypeError: Invalid declaration from the script: Invalid interval of service web/,
    );
    throws(forged((d) => (d.hosts[0].name = "../etc")), /Invalid host name/);
    throws(
      forged((d) => (d.services[0].masters = ["mallory"])),
      /masters names host "mallory", which is not declared/,
    );
    throws(forged((d) => (d.traps = -1)), /traps must be a count/);
    throws(
      forged((d) => (d.hosts[0].liveness = { intervalMs: 10, fall: 5, stallGraceMs: -1 })),
      /Invalid declaration from the script: Invalid liveness\.stallGrace of host alpha/,
    );
    throws(
      forged((d) => (d.hosts[0].liveness = { intervalMs: 1, fall: 5 })),
      /Invalid declaration from the script: Invalid liveness\.interval of host alpha/,
    );
    throws(
      forged((d) => (d.hosts[0].liveness = { intervalMs: 10, fall: 1000 })),
      /liveness\.fall must be an integer 1-100/,
    );
    throws(forged((d) => (d.hosts[0].liveness = null)), /liveness must be an object/);
    throws(() => checkDecl("decl"), /not an object/);
  });
  await t.step("fields a registry never sends", () => {
    throws(forged((d) => (d.services[0].priority = 1)), /fields or values mod\.ts never sends/);
    throws(
      forged((d) => (d.hosts[0].liveness = { intervalMs: "10ms", fall: 5 })),
      /never sends/,
    );
    throws(
      forged((d) => (d.hosts[0].liveness = { intervalMs: 10, fall: 5, address: "10.0.0.1" })),
      /never sends/,
    );
    throws(
      forged((d) => (d.services[0].handlers = ["start", "stop", "reclaim", "start"])),
      /never sends/,
    );
  });
});

Deno.test("checkDecl() replays the arbiter: a child cannot send a timing the registry refuses", () => {
  const r = registry();
  r.service("web", { masters: ["alpha"], slaves: ["beta"], interval: "2s", ...handlers });
  r.arbiter({ endpoints: ["http://198.18.1.11:2379"], ttl: "6s" });
  const good = r.decl();
  assertEquals(checkDecl(JSON.parse(JSON.stringify(good))), good);
  const forged = JSON.parse(JSON.stringify(good));
  forged.arbiter.marginMs = 50; // would let the holder keep the address until etcd hands it over
  throws(() => checkDecl(forged), /Invalid arbiter timing: marginMs 50 is below 100 ms/);
  const extra = JSON.parse(JSON.stringify(good));
  extra.arbiter.endpoints = ["http://198.18.1.11:2379/"]; // normalised by the registry: not sent so
  throws(() => checkDecl(extra), /fields or values mod\.ts never sends/);
  const bad = JSON.parse(JSON.stringify(good));
  bad.arbiter = "etcd";
  throws(() => checkDecl(bad), /the arbiter is not an object/);
});
