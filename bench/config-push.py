#!/usr/bin/env python3
"""Config pushes under load: what growing the mesh costs the traffic already flowing.

Starts a control plane and two proxies of target/release/weft on loopback (a client proxy
for service `load` and a server proxy for service `web` in front of a small HTTP/1.1
app), sends a steady RATE requests per second through them (open loop: each request's
latency counts from when it was due, so a stall is not hidden by waiting), and then grows
the mesh to SERVICES Services in BATCHES back-to-back `weft apply`s. Reports latency
before and during the pushes, each proxy's peak resident memory, and the size of the
config the client proxy ends up running.

With --scoped, the Services declare what they call (`load` calls `web`, `web` calls
nothing), so each proxy is sent just its slice of the mesh.

Usage: bench/config-push.py [--services N] [--batches B] [--rate R] [--scoped] [--json]
"""
import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEFT = os.environ.get("WEFT_BIN", os.path.join(ROOT, "target/release/weft"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


class Mesh:
    def __init__(self, work, scoped):
        self.work = work
        self.processes = []
        self.api = f"http://127.0.0.1:{free_port()}"
        grpc = free_port()
        self.data = os.path.join(work, "control")
        self.spawn("control", ["control", "--data-dir", self.data,
                               "--api-addr", self.api[7:], "--grpc-addr", f"127.0.0.1:{grpc}",
                               "--log", "warn"])
        self.grpc = f"https://127.0.0.1:{grpc}"
        token = os.path.join(self.data, "admin.token")
        self.wait("the admin token", lambda: os.path.exists(token) and os.path.getsize(token))
        self.wait("the API", lambda: self.client("get", "services").returncode == 0)
        web_calls, load_calls = ("\n  calls: []", "\n  calls: [web]") if scoped else ("", "")
        self.apply_text(
            "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\n"
            f"spec:\n  ports: [{{port: 80, protocol: http}}]{web_calls}\n---\n"
            "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: load}\n"
            f"spec:\n  ports: [{{port: 80, protocol: http}}]{load_calls}\n")
        self.ca = os.path.join(work, "ca.pem")
        with open(self.ca, "wb") as out:
            out.write(self.client("ca", "show", "--pem").stdout)

    def spawn(self, name, args):
        log = open(os.path.join(self.work, f"{name}.log"), "wb")
        process = subprocess.Popen([WEFT, *args], stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def client(self, *args, stdin=None):
        return subprocess.run([WEFT, *args, "--api", self.api, "--data-dir", self.data],
                              input=stdin, capture_output=True)

    def apply_text(self, text):
        done = self.client("apply", "-f", "-", stdin=text.encode())
        if done.returncode != 0:
            sys.exit(f"weft apply failed: {done.stderr.decode()}")

    def proxy(self, service, app):
        token_file = os.path.join(self.work, f"{service}.token")
        with open(token_file, "wb") as out:
            out.write(self.client("token", "create", "--service", service).stdout.strip())
        ports = {role: free_port() for role in ("inbound", "outbound", "admin")}
        process = self.spawn(service, [
            "proxy", "--service", service, "--app", f"127.0.0.1:{app}",
            "--inbound", f"127.0.0.1:{ports['inbound']}",
            "--outbound", f"127.0.0.1:{ports['outbound']}",
            "--admin", f"127.0.0.1:{ports['admin']}",
            "--control-plane", self.grpc, "--control-plane-ca", self.ca,
            "--token-file", token_file, "--log", "warn"])
        return process, ports

    def in_sync(self, name):
        answer = self.client("get", "service", name, "-o", "json")
        if answer.returncode != 0:
            return False
        status = json.loads(answer.stdout).get("status", {})
        return status.get("proxies") == 2 and status.get("inSync") == 2

    @staticmethod
    def wait(what, check, timeout=120):
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                sys.exit(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self):
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


async def app_server(reader, writer):
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()


class Load:
    """RATE requests per second over a few keep-alive connections, each timed from when it
    was due."""

    def __init__(self, port, rate, connections=4):
        self.port, self.rate, self.connections = port, rate, connections
        self.samples = []  # (due time, latency seconds, ok)
        self.running = True

    async def connection(self, index):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        interval = self.connections / self.rate
        due = time.monotonic() + index / self.rate
        while self.running:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            self.samples.append((due, time.monotonic() - due, head.startswith(b"HTTP/1.1 200")))
            due += interval

    async def run(self):
        await asyncio.gather(*(self.connection(i) for i in range(self.connections)))

    def summary(self, start, end):
        window = [(lat, ok) for due, lat, ok in self.samples if start <= due < end]
        latencies = [lat * 1000 for lat, _ in window]
        return {
            "requests": len(window),
            "failed": sum(1 for _, ok in window if not ok),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2),
        }


def services_yaml(first, count):
    return "".join(
        f"apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
        f"spec:\n  ports: [{{port: 80, protocol: http}}]\n"
        f"  endpoints: [{{address: \"127.0.0.{1 + i // 250}:{20000 + i % 250}\"}}]\n---\n"
        for i in range(first, first + count))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds before pushing")
    parser.add_argument("--scoped", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="weft-config-push-")
    app = await asyncio.start_server(app_server, "127.0.0.1", 0)
    app_port = app.sockets[0].getsockname()[1]
    mesh = Mesh(work, args.scoped)
    try:
        web, _ = mesh.proxy("web", app_port)
        client, client_ports = mesh.proxy("load", free_port())
        mesh.wait("both proxies in sync", lambda: mesh.in_sync("web"))
        load = Load(client_ports["outbound"], args.rate)
        traffic = asyncio.create_task(load.run())
        memory = {"web": 0, "load": 0}

        async def sample_memory():
            while load.running:
                for name, process in (("web", web), ("load", client)):
                    memory[name] = max(memory[name], status_kib(process.pid, "VmRSS"))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample_memory())
        started = time.monotonic()
        await asyncio.sleep(args.baseline)
        before = {name: status_kib(p.pid, "VmRSS") for name, p in (("web", web), ("load", client))}
        push_start = time.monotonic()
        per_batch = args.services // args.batches
        for batch in range(args.batches):
            text = services_yaml(batch * per_batch, per_batch)
            done = await asyncio.create_subprocess_exec(
                WEFT, "apply", "-f", "-", "--api", mesh.api, "--data-dir", mesh.data,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await done.communicate(text.encode())
            if done.returncode != 0:
                sys.exit(f"apply failed: {err.decode()}")
        applied = time.monotonic()
        last = f"svc-{args.services - 1}"
        while not await asyncio.to_thread(mesh.in_sync, last):
            await asyncio.sleep(0.05)
        settled = time.monotonic()
        await asyncio.sleep(2)
        after = {name: status_kib(p.pid, "VmRSS") for name, p in (("web", web), ("load", client))}
        load.running = False
        await traffic
        await sampler
        with urllib.request.urlopen(f"http://127.0.0.1:{client_ports['admin']}/config") as r:
            config = json.loads(r.read())["config"]
        wire = json.dumps(config, separators=(",", ":"))
        result = {
            "services": args.services,
            "batches": args.batches,
            "rate": args.rate,
            "scoped": args.scoped,
            "baseline": load.summary(started + 1, push_start),
            "during_pushes": load.summary(push_start, settled + 2),
            "apply_seconds": round(applied - push_start, 1),
            "in_sync_seconds": round(settled - push_start, 1),
            "client_config_bytes": len(wire),
            "client_config_services": len(config["services"]),
            "rss_before_kib": before,
            "rss_peak_kib": memory,
            "rss_after_kib": after,
            "rss_hwm_kib": {n: status_kib(p.pid, "VmHWM") for n, p in (("web", web), ("load", client))},
        }
    finally:
        mesh.stop()
        app.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
