#!/usr/bin/env python3
"""Small helpers for bench/run.sh (standard library only, so a fresh machine needs just python3).

Subcommands:
  ports N                      print N distinct free loopback TCP ports (one per line)
  sample OUT ROLE=PID...       snapshot CPU ticks and memory of each PID's whole process tree
  check-oha FILE ...           fail loudly if an oha JSON result shows non-2xx answers, errors,
                               a wrong body size or too few requests
  tcp-sink PORT LOG            accept connections forever; per connection count bytes until EOF
                               and append {"bytes", "seconds"} as one JSON line to LOG
  tcp-send PORT BYTES LOG      send BYTES on one connection, then wait for the sink's line in LOG
  wait-http URL TIMEOUT        poll URL until it answers 200
  busy SECONDS PID...          list processes outside the given PIDs' trees using >5% of a core
  git-commit REPO_DIR          print the checked-out commit by reading .git (no git command)
"""

import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"benchlib: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- ports

def cmd_ports(args):
    # Bind all sockets at once so the N ports are distinct; the OS picks unused ones.
    # There is a small window between close() and the server's bind(); acceptable on a quiet box.
    n = int(args[0])
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
    for s in socks:
        s.close()


# ---------------------------------------------------------------- /proc sampling

def _read_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm is in parentheses and may contain spaces: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    comm = data[data.index("(") + 1:data.rindex(")")]
    # Fields after comm start at field 3 (state); utime=14, stime=15, ppid=4.
    return {
        "comm": comm,
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
    }


def _read_status_kb(pid):
    out = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in out:
                out[key] = int(val.split()[0])
    return out


def _tree(root):
    """root plus all its descendants (nginx master -> worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = _read_stat(entry)["ppid"]
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmd_sample(args):
    out_path, roles = args[0], args[1:]
    snap = {"time": time.monotonic(), "clk_tck": CLK_TCK, "roles": {}, "interrupts": _interrupts()}
    for spec in roles:
        role, _, pid = spec.partition("=")
        procs = []
        for p in _tree(int(pid)):
            try:
                st = _read_stat(p)
                mem = _read_status_kb(p)
            except OSError:
                continue  # exited between listing and reading
            procs.append({
                "pid": p,
                "comm": st["comm"],
                "root": p == int(pid),
                "ticks": st["utime"] + st["stime"],
                "user_ticks": st["utime"],
                "rss_kb": mem["VmRSS"],
                "hwm_kb": mem["VmHWM"],
            })
        if not procs:
            die(f"process {pid} ({role}) is gone")
        snap["roles"][role] = procs
    with open(out_path, "w") as f:
        json.dump(snap, f)


def _interrupts():
    """The machine's inter-processor interrupts so far, summed over CPUs: rescheduling (RES)
    and function call (CAL) interrupts, the two a wakeup on another CPU sends."""
    counts = {}
    try:
        with open("/proc/interrupts") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() in ("RES", "CAL"):
                    counts[name.strip()] = sum(int(x) for x in rest.split() if x.isdigit())
    except OSError:
        pass
    return counts


def cmd_tree(args):
    """The pids of a process and its descendants, comma-separated (for perf stat -p)."""
    print(",".join(str(pid) for pid in _tree(int(args[0]))))


# ---------------------------------------------------------------- oha result check

def cmd_check_oha(args):
    """check-oha FILE [--size N] [--min-requests N] [--label TEXT]"""
    path = args[0]
    opts = dict(zip(args[1::2], args[2::2]))
    label = opts.get("--label", path)
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{label}: cannot read oha output {path}: {e}")
    codes = {str(k): int(v) for k, v in (res.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    errors = res.get("errorDistribution") or {}
    problems = []
    if bad:
        problems.append(f"non-2xx answers: {bad}")
    if errors:
        problems.append(f"request errors: {errors}")
    if ok == 0:
        problems.append("no successful request at all")
    min_req = int(opts.get("--min-requests", "0"))
    if ok < min_req:
        problems.append(f"only {ok} successful requests, expected at least {min_req} "
                        "(the path could not keep up with the fixed rate)")
    size = opts.get("--size")
    spr = (res.get("summary") or {}).get("sizePerRequest")
    if size is not None and spr is not None and int(spr) != int(size):
        problems.append(f"body size per request {spr} bytes, expected {size} "
                        "(answers do not come from the 1 KB backend)")
    if problems:
        die(f"{label}: path failed to serve properly: " + "; ".join(problems))
    print(f"{label}: ok ({ok} x 2xx)")


# ---------------------------------------------------------------- TCP bulk transfer

def _sink_conn(conn, log_path, lock):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total, first, last = 0, None, None
    try:
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            now = time.monotonic()
            if first is None:
                first = now
            last = now
            total += n
    except OSError:
        pass
    finally:
        conn.close()
    if total == 0:
        return  # e.g. a connect-only probe; not a measurement
    secs = max((last or 0) - (first or 0), 1e-9)
    with lock, open(log_path, "a") as f:
        f.write(json.dumps({"bytes": total, "seconds": secs}) + "\n")


def cmd_tcp_sink(args):
    port, log_path = int(args[0]), args[1]
    open(log_path, "a").close()
    lock = threading.Lock()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_sink_conn, args=(conn, log_path, lock), daemon=True).start()


def _count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def cmd_tcp_send(args):
    port, nbytes, log_path = int(args[0]), int(args[1]), args[2]
    before = _count_lines(log_path)
    chunk = memoryview(os.urandom(1 << 20))  # random: nothing on the path can compress it
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    left = nbytes
    while left > 0:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    # Wait for the far side to close; proxies differ on half-close, so EOF or reset both end it.
    s.settimeout(120)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    sent_secs = time.monotonic() - t0
    # The sink measures first byte to EOF; its line appears once it has everything.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with open(log_path) as f:
            lines = f.read().splitlines()
        if len(lines) > before:
            rec = json.loads(lines[before])
            if rec["bytes"] != nbytes:
                die(f"tcp transfer lost data: sent {nbytes} bytes, sink got {rec['bytes']}")
            rec["sender_seconds"] = sent_secs
            rec["mb_per_s"] = nbytes / rec["seconds"] / 1e6
            print(json.dumps(rec))
            return
        time.sleep(0.05)
    die(f"tcp sink never reported the transfer on port {port} (see {log_path})")


# ---------------------------------------------------------------- misc

def _all_ticks():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = _read_stat(entry)
            except (OSError, ValueError):
                continue
            out[int(entry)] = (st["comm"], st["ppid"], st["utime"] + st["stime"])
    return out


def cmd_busy(args):
    secs = float(args[0])
    mine = set()
    for pid in args[1:]:
        mine.update(_tree(int(pid)))
    mine.add(os.getpid())
    a = _all_ticks()
    time.sleep(secs)
    b = _all_ticks()
    for pid, (comm, ppid, ticks) in sorted(b.items()):
        if pid in mine or pid not in a or ppid == 2 or pid == 2:
            continue
        share = (ticks - a[pid][2]) / CLK_TCK / secs
        if share > 0.05:
            print(f"{comm}[{pid}] {share * 100:.0f}% of a core")


def cmd_wait_http(args):
    url, timeout = args[0], float(args[1])
    deadline = time.monotonic() + timeout
    last = "no answer"
    # Never go through an HTTP proxy from the environment: this is loopback traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.1)
    die(f"{url} not ready after {timeout:.0f}s (last: {last})")


def cmd_git_commit(args):
    # Reads .git directly because the harness must not run git commands.
    gitdir = os.path.join(args[0], ".git")
    try:
        if os.path.isfile(gitdir):  # worktree: "gitdir: PATH"
            with open(gitdir) as f:
                gitdir = os.path.join(args[0], f.read().split(":", 1)[1].strip())
        with open(os.path.join(gitdir, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            print(head)
            return
        ref = head.split(None, 1)[1]
        common = gitdir
        cd = os.path.join(gitdir, "commondir")
        if os.path.exists(cd):
            with open(cd) as f:
                common = os.path.join(gitdir, f.read().strip())
        for base in (gitdir, common):
            p = os.path.join(base, ref)
            if os.path.exists(p):
                with open(p) as f:
                    print(f.read().strip())
                    return
        with open(os.path.join(common, "packed-refs")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    print(parts[0])
                    return
        print(f"unknown ({ref} not found)")
    except OSError:
        print("unknown (no .git)")


COMMANDS = {
    "ports": cmd_ports,
    "sample": cmd_sample,
    "tree": cmd_tree,
    "check-oha": cmd_check_oha,
    "tcp-sink": cmd_tcp_sink,
    "tcp-send": cmd_tcp_send,
    "wait-http": cmd_wait_http,
    "git-commit": cmd_git_commit,
    "busy": cmd_busy,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
