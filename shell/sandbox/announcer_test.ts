import { deepEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import {
  AnnouncerUnavailableError,
  garpFrame,
  icmpv6Checksum,
  PacketAnnouncer,
  unsolicitedNaFrame,
} from "./announcer.ts";

const MAC = new Uint8Array([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

Deno.test("garpFrame() is the broadcast ARP request arping -U sends", () => {
  const f = garpFrame(MAC, new Uint8Array([198, 18, 0, 100]));
  assertEquals(f.length, 42);
  assertEquals([...f.subarray(0, 6)], [255, 255, 255, 255, 255, 255], "to the broadcast");
  assertEquals([...f.subarray(6, 12)], [...MAC], "from the device");
  assertEquals([f[12], f[13]], [0x08, 0x06], "ARP");
  assertEquals([f[20], f[21]], [0, 1], "a request");
  assertEquals([...f.subarray(22, 28)], [...MAC], "sender hardware address");
  assertEquals([...f.subarray(28, 32)], [198, 18, 0, 100], "sender protocol address");
  assertEquals([...f.subarray(38, 42)], [198, 18, 0, 100], "target = sender: gratuitous");
});

Deno.test("unsolicitedNaFrame() is a valid unsolicited neighbour advertisement with Override", () => {
  const ip = new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]);
  const f = unsolicitedNaFrame(MAC, ip);
  assertEquals(f.length, 86);
  assertEquals([...f.subarray(0, 6)], [0x33, 0x33, 0, 0, 0, 1], "to all nodes");
  assertEquals([f[12], f[13]], [0x86, 0xdd], "IPv6");
  assertEquals([f[20], f[21]], [58, 255], "ICMPv6, hop limit 255 (else receivers drop it)");
  assertEquals([...f.subarray(22, 38)], [...ip], "from the address itself");
  const icmp = f.subarray(54);
  assertEquals([icmp[0], icmp[1]], [136, 0], "neighbour advertisement");
  assertEquals(icmp[4], 0x20, "Override, not Solicited, not Router");
  assertEquals([...icmp.subarray(8, 24)], [...ip], "target");
  assertEquals([icmp[24], icmp[25], ...icmp.subarray(26, 32)], [2, 1, ...MAC], "target MAC");
  // A correct checksum makes the sum over pseudo-header and message (checksum included) zero.
  assertEquals(icmpv6Checksum(ip, f.subarray(38, 54), icmp), 0);
  // A changed byte is caught.
  const bad = f.slice();
  bad[54 + 30] = (bad[54 + 30] as number) ^ 1;
  assert(icmpv6Checksum(ip, bad.subarray(38, 54), bad.subarray(54)) !== 0);
});

Deno.test("icmpv6Checksum() matches RFC 1071's example sum", () => {
  // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum (with end-around carry) to ddf2; the checksum
  // is its complement. With zero addresses, the pseudo-header adds the length (8) and 58.
  const words = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  const zero = new Uint8Array(16);
  assertEquals(icmpv6Checksum(zero, zero, words), ~(0xddf2 + 8 + 58) & 0xffff);
});

Deno.test("PacketAnnouncer refuses a namespace or device name that is not a plain name", () => {
  for (const ns of ["../../proc/1/ns/net", "a/b", "", "x".repeat(65)]) {
    throws(
      () => PacketAnnouncer.open({ netns: ns }),
      (e: Error) => e instanceof AnnouncerUnavailableError && /not a name/.test(e.message),
      ns,
    );
  }
  let a: PacketAnnouncer;
  try {
    a = PacketAnnouncer.open();
  } catch (e) {
    // Not root (no CAP_NET_RAW) or no FFI: the driver falls back to arping; nothing to test.
    assert(e instanceof AnnouncerUnavailableError);
    return;
  }
  try {
    for (const dev of ["eth0\n", "../x", "a".repeat(16), ""]) {
      throws(() => a.link(dev), TypeError, dev);
    }
    throws(() => a.announce("198.18.0.100", "nosuchdev0"), /Cannot announce on nosuchdev0: /);
    throws(() => a.announce("198.18.0.100", "lo"), /not an Ethernet device/);
  } finally {
    a.close();
  }
});
