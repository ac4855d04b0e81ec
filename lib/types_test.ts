import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { parseDuration } from "./types.ts";

Deno.test("parseDuration() reads milliseconds and numbers with a unit", () => {
  assertEquals(parseDuration(250), 250);
  assertEquals(parseDuration(12.6), 13);
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("1.5s"), 1500);
  assertEquals(parseDuration(" 2m "), 120_000);
  assertEquals(parseDuration("1h"), 3_600_000);
});

Deno.test("parseDuration() names what is wrong and what is allowed", () => {
  throws(
    () => parseDuration("soon", { what: "interval of service web" }),
    /^TypeError: Invalid interval of service web: "soon" is not a duration \(use a number and a unit, ms, s, m or h/,
  );
  // A string needs its unit: "5" could be seconds as well as milliseconds.
  throws(() => parseDuration("5"), /^TypeError: "5" is not a duration/);
  throws(() => parseDuration(Infinity), /not a finite number of milliseconds/);
  throws(
    () => parseDuration(true as unknown as string, { what: "grace" }),
    /^TypeError: Invalid grace: true is not a duration \(use milliseconds or a string/,
  );
  throws(
    () => parseDuration("0.1ms", { min: 1, max: 86_400_000 }),
    /^RangeError: "0.1ms" is out of range: a duration here is from 1ms to 24h$/,
  );
  throws(() => parseDuration("25h", { min: 1, max: 86_400_000 }), /out of range/);
});
