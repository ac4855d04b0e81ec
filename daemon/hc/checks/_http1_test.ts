import assert from "node:assert/strict";
import { Http1Client, Http1ProtocolError, MAX_HEAD_BYTES } from "./_http1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A TCP server whose every connection runs `serve`; counts connections and requests.
 */
function scripted(
  serve: (conn: Deno.Conn, readRequest: () => Promise<string | null>) => Promise<void>,
): { url: URL; connections: () => number; requests: string[]; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const requests: string[] = [];
  let connections = 0;
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      conns.add(conn);
      let pending = "";
      const readRequest = async (): Promise<string | null> => {
        const buf = new Uint8Array(4096);
        while (!pending.includes("\r\n\r\n")) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return null;
          pending += dec.decode(buf.subarray(0, n));
        }
        const at = pending.indexOf("\r\n\r\n") + 4;
        const req = pending.slice(0, at);
        pending = pending.slice(at);
        requests.push(req);
        return req;
      };
      tasks.push(
        serve(conn, readRequest).catch(() => {}).finally(() => {
          conns.delete(conn);
          try {
            conn.close();
          } catch { /* closed by the script */ }
        }),
      );
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    url: new URL(`http://127.0.0.1:${port}/health?x=1`),
    connections: () => connections,
    requests,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

async function write(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = enc.encode(text);
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

Deno.test("Http1Client keeps one connection across probes and reads chunked bodies", async () => {
  const srv = scripted(async (conn, readRequest) => {
    while (await readRequest() !== null) {
      await write(
        conn,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nok \r\n5;ext=1\r\nthere\r\n0\r\n\r\n",
      );
    }
  });
  const c = new Http1Client(srv.url, { method: "GET", headers: { "user-agent": "t" } });
  try {
    for (let i = 0; i < 3; i++) {
      const a = await c.request(AbortSignal.timeout(2000), 1024);
      assert.equal(a.status, 200);
      assert.equal(dec.decode(a.body!), "ok there");
    }
    assert.equal(srv.connections(), 1);
    assert.equal(srv.requests.length, 3);
    assert.match(srv.requests[0]!, /^GET \/health\?x=1 HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\n/);
    assert.match(srv.requests[0]!, /\r\nuser-agent: t\r\n/);
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client replaces a kept-alive connection the server has closed", async () => {
  const srv = scripted(async (conn, readRequest) => {
    await readRequest();
    // Says nothing about closing, then closes: the client's next probe finds it dead.
    await write(conn, "HTTP/1.1 204 No Content\r\n\r\n");
  });
  const c = new Http1Client(srv.url, { method: "GET" });
  try {
    assert.equal((await c.request(AbortSignal.timeout(2000), 0)).status, 204);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await c.request(AbortSignal.timeout(2000), 0)).status, 204);
    assert.equal(srv.connections(), 2);
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client refuses an endless head after MAX_HEAD_BYTES", async () => {
  const srv = scripted(async (conn, readRequest) => {
    await readRequest();
    await write(conn, "HTTP/1.1 200 OK\r\n");
    const line = `x-filler: ${"a".repeat(1000)}\r\n`;
    for (let i = 0; i < 200; i++) await write(conn, line);
  });
  const c = new Http1Client(srv.url, { method: "GET" });
  try {
    await assert.rejects(
      c.request(AbortSignal.timeout(5000), 1024),
      (e) => e instanceof Http1ProtocolError && e.message.includes(`${MAX_HEAD_BYTES} bytes`),
    );
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client keeps only the bytes asked for of a big body, then a new connection", async () => {
  const srv = scripted(async (conn, readRequest) => {
    while (await readRequest() !== null) {
      await write(conn, `HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n${"b".repeat(100000)}`);
    }
  });
  const c = new Http1Client(srv.url, { method: "GET" });
  try {
    const a = await c.request(AbortSignal.timeout(2000), 10);
    assert.equal(dec.decode(a.body!), "bbbbbbbbbb");
    // The rest was not read: that connection cannot carry another answer.
    await c.request(AbortSignal.timeout(2000), 10);
    assert.equal(srv.connections(), 2);
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client fails an answer cut in the middle and does not retry it", async () => {
  const srv = scripted(async (conn, readRequest) => {
    await readRequest();
    await write(conn, "HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nonly this");
  });
  const c = new Http1Client(srv.url, { method: "GET" });
  try {
    await assert.rejects(c.request(AbortSignal.timeout(2000), 1024), /in the middle of it/);
    assert.equal(srv.connections(), 1);
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client gives up at once when the signal aborts a silent server", async () => {
  const srv = scripted(async (_conn, readRequest) => {
    await readRequest();
    await readRequest(); // never answers; ends when the client closes
  });
  const c = new Http1Client(srv.url, { method: "GET" });
  try {
    // Without the abort the request would wait for ever: the server never answers.
    await assert.rejects(
      c.request(AbortSignal.timeout(100), 0),
      (e) => e instanceof DOMException && e.name === "TimeoutError",
    );
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client reads no body after HEAD and skips 1xx answers", async () => {
  const srv = scripted(async (conn, readRequest) => {
    while (await readRequest() !== null) {
      await write(
        conn,
        "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n",
      );
    }
  });
  const c = new Http1Client(srv.url, { method: "HEAD" });
  try {
    assert.equal((await c.request(AbortSignal.timeout(2000), 0)).status, 200);
    assert.equal((await c.request(AbortSignal.timeout(2000), 0)).status, 200);
    assert.equal(srv.connections(), 1);
    assert.match(srv.requests[0]!, /^HEAD /);
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("Http1Client rejects a malformed status line and a bad content-length", async () => {
  for (
    const answer of ["SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"]
  ) {
    const srv = scripted(async (conn, readRequest) => {
      await readRequest();
      await write(conn, answer);
    });
    const c = new Http1Client(srv.url, { method: "GET" });
    try {
      await assert.rejects(
        c.request(AbortSignal.timeout(2000), 0),
        (e) => e instanceof Http1ProtocolError,
      );
    } finally {
      c.close();
      await srv.close();
    }
  }
});
