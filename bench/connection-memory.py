#!/usr/bin/env python3
"""What one open connection costs a Weft proxy, by state.

Starts target/release/weft in local mode in front of a small HTTP/1.1 server, opens
N connections in one state at a time to the outbound listener (or to an --upstream
binding for opaque TCP), and reports the proxy's resident memory before and after:
(after - before) / N is the cost of one connection in that state. Each state runs in a
fresh proxy, so states do not share warmed-up allocations.

States: idle TCP (connected, nothing sent yet), half-sent HTTP/1.1 (a request head
started and never finished), idle HTTP/1.1 keep-alive (one request answered), HTTP/1.1
request in flight (sent on to the app, which holds it unanswered: the client's connection,
the request and the proxy's connection to the app), idle HTTP/2 (one request answered),
opaque TCP (one round trip through --upstream).

Usage: bench/connection-memory.py [N]     (default 2000; needs `ulimit -n` above 2N+100)
"""
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEFT = os.environ.get("WEFT_BIN", os.path.join(ROOT, "target/release/weft"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# SETTINGS (empty), then HEADERS on stream 1: GET, http, /, :authority "app" (literal,
# indexed name 1), END_STREAM | END_HEADERS.
H2_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
H2_GET = bytes([0, 0, 8, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41, 0x03]) + b"app"


# Requests the app holds unanswered now.
HELD = [0]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


async def answer(reader, writer):
    """A minimal keep-alive HTTP/1.1 server (the app), or an echo for opaque TCP."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            if head.startswith(b"GET /hold "):
                HELD[0] += 1
                await reader.read()  # Never answered: held until the proxy closes.
                HELD[0] -= 1
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()


async def echo(reader, writer):
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


def start_proxy(config, extra):
    process = subprocess.Popen(
        [WEFT, "proxy", "--service", "bench", "--app", "127.0.0.1:9", "--local", config,
         "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--max-connections", str(N * 2), "--log", "info", *extra],
        stderr=subprocess.PIPE, text=True)
    listeners = {}
    for line in process.stderr:
        found = re.search(r'listener="?(\w+)"? addr=([\d.:]+)', line)
        if found:
            listeners.setdefault(found.group(1), found.group(2))
        if "outbound" in listeners and ("--upstream" not in extra or "upstream" in listeners):
            break
    return process, listeners


async def open_in_state(address, state):
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    if state == "half-sent HTTP/1.1":
        writer.write(b"GET / HTTP/1.1\r\nHost: app\r\nx-slow: ")
    elif state == "idle HTTP/1.1 keep-alive":
        writer.write(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        await reader.readuntil(b"ok")
    elif state == "HTTP/1.1 request in flight":
        writer.write(b"GET /hold HTTP/1.1\r\nHost: app\r\n\r\n")
    elif state == "idle HTTP/2":
        writer.write(H2_PREFACE + H2_SETTINGS + H2_GET)
        await reader.read(1)  # The proxy's SETTINGS, at least.
        await asyncio.sleep(0)
    elif state == "opaque TCP":
        writer.write(b"ping")
        await reader.readexactly(4)
    await writer.drain()
    return writer


async def measure(state, app_port, echo_port):
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "mesh.yaml")
        with open(config, "w") as f:
            f.write("apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: app}\n"
                    f"spec:\n  ports: [{{port: 80, protocol: http}}]\n"
                    f"  endpoints: [{{address: \"127.0.0.1:{app_port}\"}}]\n---\n"
                    "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: store}\n"
                    f"spec:\n  ports: [{{port: 80, protocol: tcp}}]\n"
                    f"  endpoints: [{{address: \"127.0.0.1:{echo_port}\"}}]\n")
        extra = ["--upstream", "store=127.0.0.1:0"] if state == "opaque TCP" else []
        # Idle TCP must outlive detection (500 ms by default) to be measured idle.
        if state == "idle TCP":
            extra += ["--detect-timeout", "60s"]
        process, listeners = start_proxy(config, extra)
        try:
            target = listeners["upstream" if state == "opaque TCP" else "outbound"]
            # Warm up: one connection of the kind, so one-off allocations are not counted.
            warm = await open_in_state(target, state)
            await asyncio.sleep(0.5)
            before = rss_kib(process.pid)
            writers = []
            for _ in range(N):
                writers.append(await open_in_state(target, state))
            if state == "HTTP/1.1 request in flight":
                # Measured once every request has reached the app.
                deadline = time.monotonic() + 60
                while HELD[0] < N + 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if HELD[0] < N + 1:
                    sys.exit(f"only {HELD[0]} of {N + 1} requests reached the app")
            await asyncio.sleep(1.0)
            after = rss_kib(process.pid)
            for writer in writers + [warm]:
                writer.close()
            return before, after
        finally:
            process.terminate()
            process.wait(timeout=30)


async def main():
    # A backlog for the proxy's burst of connections to the app (asyncio's default is 100).
    app = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    tcp = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    app_port = app.sockets[0].getsockname()[1]
    echo_port = tcp.sockets[0].getsockname()[1]
    print(f"{N} connections per state, {WEFT}")
    print(f"{'state':28} {'RSS before':>11} {'RSS after':>10} {'per connection':>15}")
    for state in ["idle TCP", "half-sent HTTP/1.1", "idle HTTP/1.1 keep-alive",
                  "HTTP/1.1 request in flight", "idle HTTP/2", "opaque TCP"]:
        before, after = await measure(state, app_port, echo_port)
        print(f"{state:28} {before/1024:9.1f} MB {after/1024:8.1f} MB "
              f"{(after - before) / N:11.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
