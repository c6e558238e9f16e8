"""The report of bench/capture.sh: medians per path, the targets of transparent capture,
written as RUN_DIR/results.json and RUN_DIR/section.md (and printed).

Usage: capture-report.py RUN_DIR HEADING
"""
import json
import os
import statistics
import sys

NAMES = {
    "direct-ns": "direct-ns (no proxy)",
    "nginx": "nginx pair",
    "haproxy": "HAProxy pair",
    "weft-explicit": "Weft, explicit (app calls 127.0.0.1)",
    "weft-iptables": "Weft, iptables capture",
    "weft-ebpf": "Weft, eBPF capture + sk_msg",
}


def load(path):
    with open(path) as f:
        return json.load(f)


def ticks(sample, role, key="ticks"):
    return sum(p[key] for p in sample["roles"].get(role, []))


def one_run(base):
    o, b, a = load(base + ".oha.json"), load(base + ".before.json"), load(base + ".after.json")
    codes = {str(k): int(v) for k, v in (o.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    r = {
        "ok": ok,
        "failed": sum(v for k, v in codes.items() if not k.startswith("2"))
        + sum((o.get("errorDistribution") or {}).values()),
        "p50_ms": o["latencyPercentiles"]["p50"] * 1e3,
        "p99_ms": o["latencyPercentiles"]["p99"] * 1e3,
    }
    if ok and "a" in a["roles"]:
        per_request = 1e6 / a["clk_tck"] / ok
        total = sum(ticks(a, role) - ticks(b, role) for role in ("a", "b"))
        user = sum(ticks(a, role, "user_ticks") - ticks(b, role, "user_ticks") for role in ("a", "b"))
        r["cpu_us"] = total * per_request
        r["user_us"] = user * per_request
        r["kernel_us"] = (total - user) * per_request
        r["cpu_a_us"] = (ticks(a, "a") - ticks(b, "a")) * per_request
        r["cpu_b_us"] = (ticks(a, "b") - ticks(b, "b")) * per_request
    # perf stat's counts per proxy in the warm-up: syscalls and context switches per
    # request answered then.
    warm = load(base + ".warmup.json")
    warm_ok = sum(int(v) for k, v in (warm.get("statusCodeDistribution") or {}).items() if str(k).startswith("2"))
    if warm_ok:
        for event, key in (("raw_syscalls:sys_enter", "syscalls"), ("context-switches", "switches")):
            counts = [perf_count(f"{base}.perf-{role}.csv", event) for role in ("a", "b")]
            if None not in counts:
                r[key] = sum(counts) / warm_ok
    if ok and "RES" in a.get("interrupts", {}):
        r["ipis"] = sum(a["interrupts"][k] - b["interrupts"].get(k, 0) for k in ("RES", "CAL")) / ok
    if ok and "backend" in a["roles"]:
        # The server pod's app: with eBPF its side of the local hop skips TCP/IP too.
        r["backend_us"] = (ticks(a, "backend") - ticks(b, "backend")) * 1e6 / a["clk_tck"] / ok
    return r


def perf_count(path, event):
    """A count from `perf stat -x,` output, or None without one."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[2] == event and fields[0].isdigit():
                    return int(fields[0])
    except OSError:
        pass
    return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


PROFILE_COLUMNS = (
    ("user", "user space"),
    ("wakeup", "waking the other side"),
    ("sk_msg", "sk_msg hops"),
    ("tcp", "TCP/IP, both hops"),
    ("wait", "epoll_wait, scheduler"),
    ("syscall", "other syscalls"),
    ("other", "other kernel"),
)


def cpu_profile_table(run, params, paths, s):
    """The --perf table: each pair's CPU per request (the measured runs' median) split in the
    shares of the profiled run's samples (bench/lib/cpu-profile.py)."""
    rows = []
    for path in paths:
        f = f"{run}/perf/{path}.json"
        if path == "direct-ns" or not os.path.exists(f) or not s(path, "cpu_us"):
            continue
        roles = load(f)
        total = sum(r["samples"] for r in roles.values())
        if not total:
            continue
        cells = []
        for key, _ in PROFILE_COLUMNS:
            share = sum(r[key] for r in roles.values()) / total
            cells.append(f"{share * s(path, 'cpu_us'):.1f} ({share * 100:.0f} %)")
        rows.append(f"| {NAMES[path]} | {total} | {s(path, 'cpu_us'):.1f} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"Where the pair's CPU goes: each path ran {params['perf_duration']} s more at the same rate under a "
        "system-wide `perf record -a -e cpu-clock -F 1999 -g`; each sample of either proxy's process tree is "
        "user space or kernel work put in the first of these its call stack shows: waking the task at the other end of a "
        "socket (sock_def_readable, ep_poll_callback, try_to_wake_up), the sk_msg socket-to-socket path, "
        "TCP/IP sending and receiving over either hop (the device's receive work runs in a softirq after "
        "the send, so a stack does not tell the loopback hop from the veth's), "
        "epoll_wait and the scheduler, other syscalls, other kernel work (`bench/lib/cpu-profile.py`). "
        "Cells are µs per request (the measured runs' median CPU per request times the share of samples) "
        "and the share.",
        "",
        "| path | samples (pair) | CPU µs/request | " + " | ".join(name for _, name in PROFILE_COLUMNS) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in PROFILE_COLUMNS) + " |",
        *rows,
        "",
    ]


def main():
    run, heading = sys.argv[1:]
    params, versions = load(f"{run}/meta/params.json"), load(f"{run}/meta/versions.json")
    paths = params["paths"]
    results = {}
    for path in paths:
        runs = [one_run(f"{run}/lat/{path}-r{rep}") for rep in range(1, params["reps"] + 1)]
        summary = {k: median([r.get(k) for r in runs])
                   for k in ("p50_ms", "p99_ms", "cpu_us", "user_us", "kernel_us", "cpu_a_us", "cpu_b_us",
                             "backend_us", "syscalls", "switches", "ipis")}
        summary["failed"] = sum(r["failed"] for r in runs)
        summary["short_runs"] = sum(1 for r in runs if r["ok"] < params["rate"] * params["duration"] * 0.95)
        results[path] = {"runs": runs, "summary": summary}
    base = results["direct-ns"]["summary"]["p50_ms"]
    for path in paths:
        s = results[path]["summary"]
        s["added_p50_ms"] = None if path == "direct-ns" else s["p50_ms"] - base
        s["kernel_share"] = s["kernel_us"] / s["cpu_us"] if s.get("cpu_us") else None
    with open(f"{run}/results.json", "w") as f:
        json.dump({"params": params, "versions": versions, "paths": results}, f, indent=1)

    def s(path, key):
        return results[path]["summary"].get(key) if path in results else None

    def ratio(a, b, key):
        x, y = s(a, key), s(b, key)
        return x / y if x is not None and y else None

    quick = " (QUICK smoke run: short runs, one repetition; not for conclusions)" if params["quick"] else ""
    out = [heading, ""]
    out.append(
        f"Measured by `{versions['command']}` on {versions['date']}{quick}: each pod a network namespace "
        f"holding its app and its proxy, a client pod and a server pod joined by a veth (MTU 65535); oha is the "
        f"client pod's app, an nginx serving 1 KiB the server pod's. {params['rate']} RPS over {params['conns']} "
        f"keep-alive connections for {params['duration']} s with `--latency-correction`, "
        f"{params['reps']} repetition(s) interleaved round-robin across the paths, medians shown. CPU/request "
        f"is utime+stime of both proxies (whole process trees) over the 2xx answers, split into user space and "
        f"kernel from the same counters; added p50 is the path's p50 minus direct-ns's. The backend app's "
        f"CPU per request is the server pod's app (the direct and explicit paths share one backend, each "
        f"capture mode has its own): eBPF's socket-to-socket hop saves the app's side of it too. "
        f"Syscalls and context switches per request are both proxies' (whole process trees), counted by "
        f"`perf stat` during the warm-up before each run (counting syscalls slows them, so never during "
        f"a measured run). IPIs per request are the whole machine's inter-processor interrupts "
        f"(rescheduling and function call, from /proc/interrupts) over the measured runs, what waking a task "
        f"on the other CPU sends: the app, load generator and backend are the same on every path, so the "
        f"differences are the proxies'.")
    out.append("")
    out.append("| path | p50 ms | p99 ms | added p50 ms | CPU µs/request (pair) | user / kernel µs | kernel share | client / server µs | vs nginx pair CPU | backend app µs/request | syscalls / ctx switches per request (pair) | IPIs per request (machine) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        x = results[path]["summary"]
        split = "—" if x.get("user_us") is None else f"{x['user_us']:.1f} / {x['kernel_us']:.1f}"
        sides = "—" if x.get("cpu_a_us") is None else f"{x['cpu_a_us']:.1f} / {x['cpu_b_us']:.1f}"
        share = "—" if x.get("kernel_share") is None else f"{x['kernel_share'] * 100:.0f} %"
        vs = ratio(path, "nginx", "cpu_us") if path != "nginx" else None
        calls = "—" if x.get("syscalls") is None else f"{x['syscalls']:.1f} / {x['switches']:.1f}"
        out.append(f"| {NAMES[path]} | {fmt(x['p50_ms'], '.3f')} | {fmt(x['p99_ms'], '.3f')} | "
                   f"{fmt(x['added_p50_ms'], '.3f')} | {fmt(x.get('cpu_us'), '.1f')} | {split} | {share} | "
                   f"{sides} | {fmt(vs, '.2f')}{'' if vs is None else '×'} | {fmt(x.get('backend_us'), '.1f')} | {calls} | "
                   f"{fmt(x.get('ipis'), '.1f')} |")
    out.append("")

    out += cpu_profile_table(run, params, paths, s)

    targets = []
    r = ratio("weft-ebpf", "nginx", "cpu_us")
    if r is not None:
        targets.append(f"Weft with eBPF at most 0.6× the nginx pair's CPU per request: {r:.2f}×, "
                       + ("met" if r <= 0.6 else "NOT met"))
    peers_cpu = [s(n, "cpu_us") for n in ("nginx", "haproxy") if s(n, "cpu_us")]
    if s("weft-ebpf", "cpu_us") is not None and peers_cpu:
        r = s("weft-ebpf", "cpu_us") / min(peers_cpu)
        targets.append(f"Weft with eBPF at most half the best peer's CPU per request (DESIGN.md's budget): "
                       f"{r:.2f}× the best, " + ("met" if r <= 0.5 else "NOT met"))
    e = s("weft-ebpf", "added_p50_ms")
    peers = [(n, s(n, "added_p50_ms")) for n in ("nginx", "haproxy") if s(n, "added_p50_ms") is not None]
    if e is not None and peers:
        met = all(e < v for _, v in peers)
        targets.append(f"Weft with eBPF a lower added p50 than either peer: {e:.3f} ms against "
                       + ", ".join(f"{NAMES[n]} {v:.3f} ms" for n, v in peers) + (", met" if met else ", NOT met"))
    r = ratio("weft-iptables", "weft-explicit", "cpu_us")
    if r is not None:
        targets.append(f"Weft with iptables within 5 % of explicit mode: {r:.2f}× its CPU per request, "
                       + ("met" if r <= 1.05 else "NOT met"))
    before, after = s("weft-iptables", "kernel_share"), s("weft-ebpf", "kernel_share")
    if before is not None and after is not None:
        targets.append(f"kernel share of the pair's CPU: {before * 100:.0f} % with iptables capture, "
                       f"{after * 100:.0f} % with eBPF capture and the socket-to-socket local hops")
    if targets:
        out.append("Targets: " + "; ".join(targets) + ".")
        out.append("")
    problems = [f"{p}: {results[p]['summary']['failed']} failed requests" for p in paths if results[p]["summary"]["failed"]]
    problems += [f"{p}: {results[p]['summary']['short_runs']} run(s) below 95 % of the rate" for p in paths
                 if results[p]["summary"]["short_runs"]]
    if problems:
        out.append("Problems seen in this run: " + "; ".join(problems) + ".")
        out.append("")
    out.append(
        f"Method. Weft `{versions['weft']}` (commit {versions['commit'][:12]}), {versions['nginx']}, "
        f"{versions['haproxy']}, {versions['oha']}, {versions['kernel']}, {versions['nproc']} × {versions['cpu']}. "
        "Every proxy runs one worker thread (nginx one worker, HAProxy `nbthread 1`); each pair speaks TLS 1.3 "
        "with ECDSA P-256 certificates from one CA and checks the other side's. The peers and Weft explicit are "
        "called by the app at 127.0.0.1 (nginx and HAProxy cannot be transparent); the captured paths call the "
        "server pod's address unmodified, as a user `nobody` app, and each capture mode has a pod pair of its "
        "own with the capture installed in both pods: the iptables pair's nat rules (and so conntrack) see every "
        "connection; in the eBPF pair the proxies and the apps run in their pod's cgroup, connect4 sends the "
        "app's connect to the proxy and sk_msg passes the bytes of the app <-> proxy hops socket to socket "
        "(checked before measuring: the programs' counters of redirects and of local messages rose in both pods). "
        f"Raw data: `bench/results/{run.rstrip('/').split('/')[-1]}/`.")
    text = "\n".join(out) + "\n"
    with open(f"{run}/section.md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
