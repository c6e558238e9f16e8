#!/usr/bin/env python3
"""Turn one run directory of bench/run.sh into the Markdown report (docs/benchmarks.md).

Usage: report.py RUN_DIR OUT.md

Reads only files written by run.sh: meta/*, lat/*, max/*, tcp/*, final.json.
Every number in the report is a median over the run's repetitions.
"""

import glob
import json
import os
import re
import statistics
import sys

NAMES = {"direct": "direct", "nginx": "nginx pair", "haproxy": "HAProxy pair", "weft": "Weft pair"}
PCTS = ["p50", "p90", "p99", "p99.9"]


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()
    except OSError:
        return default


def load(path):
    with open(path) as f:
        return json.load(f)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".3f", none="–"):
    return none if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or not b else a / b


def ok_count(oha):
    return sum(int(v) for k, v in (oha.get("statusCodeDistribution") or {}).items() if str(k).startswith("2"))


def reps(kind, path, run):
    """Repetition numbers present for one measurement kind and path, in order."""
    files = glob.glob(os.path.join(run, kind, f"{path}-r*.oha.json" if kind != "tcp" else f"{path}-r*.json"))
    out = []
    for f in files:
        m = re.search(r"-r(\d+)\.(oha\.)?json$", f)
        if m and not f.endswith(("before.json", "after.json", "warmup.json")):
            out.append(int(m.group(1)))
    return sorted(set(out))


def cpu_delta(before, after, role, key="ticks"):
    """CPU seconds used by a role's processes between two samples (all of it, or with
    key="user_ticks" only user space), and the wall time. None for samples without key."""
    if role not in before["roles"] or role not in after["roles"]:
        return None, None
    if any(key not in p for p in before["roles"][role] + after["roles"][role]):
        return None, None
    b = {p["pid"]: p[key] for p in before["roles"][role]}
    ticks = sum(p[key] - b[p["pid"]] for p in after["roles"][role] if p["pid"] in b)
    return ticks / after["clk_tck"], after["time"] - before["time"]


def mem(sample, role, key):
    """Memory (MB) of a role: worker processes if it has any (nginx), else the process itself.
    Also returns the master's memory separately (nginx), or None."""
    procs = (sample or {}).get("roles", {}).get(role)
    if not procs:
        return None, None
    workers = [p for p in procs if not p["root"]]
    root = [p for p in procs if p["root"]]
    if workers:
        return sum(p[key] for p in workers) / 1024, sum(p[key] for p in root) / 1024
    return sum(p[key] for p in root) / 1024, None


class Run:
    def __init__(self, run):
        self.dir = run
        self.params = load(os.path.join(run, "meta", "params.json"))
        self.paths = [p for p in read(os.path.join(run, "meta", "paths.txt")).split(",") if p]
        self.proxies = [p for p in self.paths if p != "direct"]
        self.lat, self.cpu, self.rss, self.maxr, self.tcp = {}, {}, {}, {}, {}
        for p in self.paths:
            self._latency(p)
            self._max(p)
            self._tcp(p)
        end = self._sample("lat/end.json")
        final = self._sample("final.json")
        for p in self.proxies:
            r = {}
            for role in ("client", "server"):
                r[role + "_hwm_lat"], r[role + "_master"] = mem(end, f"{p}.{role}", "hwm_kb")
                r[role + "_hwm_end"], _ = mem(final, f"{p}.{role}", "hwm_kb")
                r[role + "_tcp_hwm"], _ = mem(final, f"{p}.tcp-{role}", "hwm_kb")
            self.rss.setdefault(p, {}).update(r)

    def _sample(self, rel):
        path = os.path.join(self.dir, rel)
        return load(path) if os.path.exists(path) else None

    def _latency(self, p):
        rows = []
        for r in reps("lat", p, self.dir):
            base = os.path.join(self.dir, "lat", f"{p}-r{r}")
            oha = load(base + ".oha.json")
            n = ok_count(oha)
            row = {k: oha["latencyPercentiles"][k] * 1e3 for k in PCTS}
            row["rps"] = n / oha["summary"]["total"]
            before, after = load(base + ".before.json"), load(base + ".after.json")
            for role in ("client", "server", "backend"):
                cpu, wall = cpu_delta(before, after, role)
                if cpu is not None:
                    row[role + "_core"] = cpu / wall
                    row[role + "_us"] = cpu / n * 1e6
                user, _ = cpu_delta(before, after, role, "user_ticks")
                if user is not None:
                    row[role + "_user_us"] = user / n * 1e6
                rss, _ = mem(after, role, "rss_kb")
                row[role + "_rss"] = rss
            rows.append(row)
        self.lat[p] = {k: med([row.get(k) for row in rows]) for k in (rows[0].keys() if rows else [])}
        self.lat[p]["n"] = len(rows)

    def _max(self, p):
        rows = []
        for r in reps("max", p, self.dir):
            base = os.path.join(self.dir, "max", f"{p}-r{r}")
            oha = load(base + ".oha.json")
            row = {"rps": ok_count(oha) / oha["summary"]["total"], "p50": oha["latencyPercentiles"]["p50"] * 1e3}
            before, after = load(base + ".before.json"), load(base + ".after.json")
            for role in ("client", "server", "backend"):
                cpu, wall = cpu_delta(before, after, role)
                if cpu is not None:
                    row[role + "_core"] = cpu / wall
            rows.append(row)
        self.maxr[p] = {k: med([row.get(k) for row in rows]) for k in (rows[0].keys() if rows else [])}

    def _tcp(self, p):
        rows = []
        for r in reps("tcp", p, self.dir):
            base = os.path.join(self.dir, "tcp", f"{p}-r{r}")
            res = load(base + ".json")
            row = {"mbps": res["mb_per_s"]}
            if os.path.exists(base + ".before.json"):
                before, after = load(base + ".before.json"), load(base + ".after.json")
                for role in ("client", "server"):
                    cpu, _ = cpu_delta(before, after, role)
                    if cpu is not None:
                        row[role + "_s_per_gb"] = cpu / (res["bytes"] / 1e9)
            rows.append(row)
        self.tcp[p] = {k: med([row.get(k) for row in rows]) for k in (rows[0].keys() if rows else [])}

    def added(self, p, k):
        a, d = self.lat.get(p, {}).get(k), self.lat.get("direct", {}).get(k)
        return None if a is None or d is None else a - d


def mem_gib(meminfo_line):
    try:
        return f"{int(meminfo_line.split()[1]) / 2**20:.1f} GiB"
    except (IndexError, ValueError):
        return "unknown"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def tls_line(run, p):
    txt = read(os.path.join(run, "meta", f"tls-{p}.txt"))
    proto = re.search(r"Protocol version: (\S+)", txt)
    ciph = re.search(r"Ciphersuite: (\S+)", txt)
    sig = re.search(r"^Signature type: (\S+)", txt, re.M)
    kx = re.search(r"Server Temp Key: ([^,\n]+)", txt)
    verify = re.search(r"Verification: (.+)", txt)
    bits = [m.group(1) for m in (proto, ciph) if m]
    if sig:
        bits.append(f"server signature {sig.group(1)}")
    if kx:
        bits.append(f"key exchange {kx.group(1)}")
    if verify:
        bits.append(f"server certificate verification against ca.pem: {verify.group(1).strip()}")
    return ", ".join(bits) if bits else "not confirmed (see meta/tls-%s.txt)" % p


def main():
    run_dir, out_path = sys.argv[1], sys.argv[2]
    keep_from = sys.argv[3] if len(sys.argv) > 3 else None
    R = Run(run_dir)
    P = R.params
    m = lambda f: read(os.path.join(run_dir, "meta", f))  # noqa: E731
    quick = bool(P.get("quick"))
    pinned = P.get("pinned")
    skipped = [s for s in m("skipped.txt").split("\n") if s]
    certs_from = ("made by `weft cert ca` / `weft cert issue`" if m("certs.txt") == "weft"
                  else "made with openssl because the weft binary was not available")
    L = []
    w = L.append

    w("# Weft benchmarks\n")
    w("<!-- Generated by bench/run.sh (bench/lib/report.py). Do not edit by hand: rerun the bench. -->\n")
    if quick:
        w("> **Quick smoke run** (`--quick`): short runs, one repetition. The numbers show that every "
          "path works; they are not representative.\n")
    if skipped:
        w(f"> **Not measured in this run:** {', '.join(NAMES.get(s, s) for s in skipped)} "
          "(see the run log for why).\n")
    warnings = [x for x in m("warnings.txt").split("\n") if x]
    busy = [x for x in (m("busy-before.txt") + "\n" + m("busy-after.txt")).split("\n") if x]
    if busy:
        w("> **Warning:** other processes were using CPU during this run, so every number below is "
          "disturbed: " + "; ".join(busy) + ".\n")

    w("## Machine and versions\n")
    w(f"- Date: {m('date.txt')}")
    w(f"- CPU: {m('cpu.txt')}, {m('nproc.txt')} cores (`nproc`); memory: {mem_gib(m('mem.txt'))}")
    w(f"- Kernel: {m('kernel.txt')}")
    w(f"- Command: `{m('command.txt')}`")
    w(f"- Weft: commit `{m('commit.txt')}`" + (f" ({m('weft.txt')})" if m("weft.txt") else ""))
    w(f"- {m('nginx.txt')}; {m('haproxy.txt')}; {m('oha.txt')}; {m('openssl.txt')}")
    w(f"- Raw results: `bench/results/{os.path.basename(os.path.realpath(run_dir))}/` (not committed)\n")

    w("## Method\n")
    w(f"""Four paths are measured side by side in one run, on loopback, against the same backend: an
nginx serving a {P['body_size']}-byte file (access log off, keep-alive on, unpinned). **direct** is load
generator -> backend; each pair is client proxy (plain HTTP in) -> mutual TLS -> server proxy ->
backend. All pairs use TLS 1.3 with ECDSA P-256 certificates from one CA ({certs_from}), require and verify the peer's certificate on both sides, and keep pooled keep-alive
connections upstream. nginx runs `worker_processes 1`, HAProxy `nbthread 1`, each Weft proxy
`--threads 1`. nginx and HAProxy verify the server's name (`backend`, a DNS SAN on a certificate from
the same CA, since they cannot match a SPIFFE URI SAN); Weft verifies the SPIFFE id.

- **Latency**: `oha` at a fixed {P['rate']} RPS over {P['conns']} keep-alive connections for
  {P['lat_duration']} s with `--latency-correction` (coordinated omission corrected: latency counts
  from when a request should have been sent), after a {P['warmup']} s warm-up; {P['reps']}
  repetition(s), paths interleaved within each repetition; each percentile is the median over
  repetitions. "Added" is the path's median minus the direct path's median.
- **CPU and memory**: user+system CPU time from `/proc/PID/stat` of each proxy's process tree during
  the fixed-rate run, as a share of one core and as µs of CPU per request; VmRSS/VmHWM from
  `/proc/PID/status` (for nginx the worker; the master is listed separately). Most of a proxy's
  resident set is the binary's code mapped in around each page fault; Weft's release build packs
  the functions a proxy runs at the start of `.text` (`crates/weft/hot-symbols.txt`, made by
  `bench/hot-symbols.sh`).
- **Max RPS**: `oha` with {P['max_conns']} connections, no rate limit, {P['max_duration']} s, median of
  {P['reps']}. {"The client proxy is pinned to core 0 and the server proxy to core 1 with `taskset`; the backend and the load generator are unpinned and share both cores." if pinned else "Proxies were not pinned (fewer than 2 cores or no taskset)."}
- **TCP throughput**: one connection carrying {P['tcp_bytes'] / 2**30:g} GiB of random bytes through the
  mTLS hop (nginx `stream`, HAProxy `mode tcp`, a second Weft pair with `--upstream bulk=...` to a
  `protocol: tcp` service), measured at the receiving end, median of {P['tcp_reps']}; same pinning.
- Every run is checked: any non-2xx answer, request error, wrong body size or a path that falls
  short of the fixed rate stops the harness with an error, so no broken number is written.

Why p50 and CPU per request rather than p99: on a {m('nproc.txt')}-core machine the load generator,
both proxies and the backend share the cores, so the tail at a fixed rate is mostly scheduler
noise (who waits for a core), not the proxy. The median added latency and the CPU time each proxy
spends per request are what a proxy controls, and CPU per request predicts cost and max throughput
on a real host. p99/p99.9 are still reported, as medians of several runs.
""")

    w("## Reproduce\n")
    w("""As root on Debian/Ubuntu with a Rust toolchain: `bench/run.sh`. It installs nginx, HAProxy and the
nginx stream module with apt, `oha` with `cargo install --locked` (into `bench/.tools`), builds
`cargo build --release -p weft`, makes the certificates with `weft cert`, starts everything on
free loopback ports, measures, and rewrites this file. `bench/run.sh --quick` is a one-minute
smoke run (its report stays in `bench/results/`). Durations and sizes come from environment
variables (`BENCH_LAT_DURATION`, `BENCH_REPS`, `BENCH_MAX_DURATION`, `BENCH_TCP_BYTES`, ...; see
`bench/run.sh --help`). Nothing else should be running: the harness records other busy processes
and flags the report if it sees any.
""")

    # ---- latency
    w(f"## Latency at {P['rate']} RPS ({P['conns']} connections), ms\n")
    rows = []
    for p in R.paths:
        l = R.lat.get(p, {})
        row = [NAMES[p]] + [fmt(l.get(k)) for k in PCTS]
        row += ["–" if p == "direct" else fmt(R.added(p, k), "+.3f") for k in PCTS]
        row.append(fmt(l.get("rps"), ".0f"))
        rows.append(row)
    w(table(["path", "p50", "p90", "p99", "p99.9", "added p50", "added p90", "added p99", "added p99.9",
             "achieved RPS"], rows) + "\n")

    # ---- CPU
    w(f"## CPU per proxy at {P['rate']} RPS\n")
    rows = []
    for p in R.proxies:
        l = R.lat.get(p, {})
        pair = (l.get("client_us") or 0) + (l.get("server_us") or 0) if l.get("client_us") is not None else None
        rows.append([NAMES[p],
                     fmt(l.get("client_core") and l["client_core"] * 100, ".1f") + " %",
                     fmt(l.get("client_us"), ".0f"),
                     fmt(l.get("server_core") and l["server_core"] * 100, ".1f") + " %",
                     fmt(l.get("server_us"), ".0f"),
                     fmt(pair, ".0f"),
                     fmt(l.get("client_user_us"), ".0f") + " / " + fmt(l.get("server_user_us"), ".0f")])
    w(table(["pair", "client proxy, % of a core", "client µs CPU/req", "server proxy, % of a core",
             "server µs CPU/req", "pair µs CPU/req", "of which user space, client / server µs"], rows) + "\n")
    w("User space is the proxy's own work; the rest is the kernel's on its behalf (system "
      "calls, and on loopback most of the TCP work of both local hops).\n")
    if R.lat.get("direct", {}).get("backend_us") is not None:
        w(f"For scale: the nginx backend itself used {fmt(R.lat['direct']['backend_us'], '.0f')} µs of CPU "
          "per request on the direct path.\n")

    # ---- RSS
    w("## Memory per proxy (MB)\n")
    rows = []
    for p in R.proxies:
        l, r = R.lat.get(p, {}), R.rss.get(p, {})
        master = [x for x in (r.get("client_master"), r.get("server_master")) if x is not None]
        rows.append([NAMES[p],
                     fmt(l.get("client_rss"), ".1f"), fmt(r.get("client_hwm_lat"), ".1f"), fmt(r.get("client_hwm_end"), ".1f"),
                     fmt(l.get("server_rss"), ".1f"), fmt(r.get("server_hwm_lat"), ".1f"), fmt(r.get("server_hwm_end"), ".1f"),
                     " / ".join(fmt(x, ".1f") for x in master) if master else "–"])
    w(table(["pair", f"client VmRSS at {P['rate']} RPS", "client VmHWM (fixed rate)", "client VmHWM (whole run)",
             f"server VmRSS at {P['rate']} RPS", "server VmHWM (fixed rate)", "server VmHWM (whole run)",
             "nginx master (client / server)"], rows) + "\n")
    w("VmRSS is read right after each fixed-rate run (median); VmHWM is the peak resident size, after "
      "the fixed-rate phase and at the end of the run (which includes the max-RPS runs with "
      f"{P['max_conns']} connections). For nginx the numbers are the worker process; the master is a separate process.\n")

    # ---- max RPS
    others = [p for p in ("nginx", "haproxy") if R.maxr.get(p, {}).get("rps")]
    best_other = max(others, key=lambda p: R.maxr[p]["rps"]) if others else None
    w("## Max RPS\n")
    rows = []
    for p in R.paths:
        x = R.maxr.get(p, {})
        rows.append([NAMES[p], fmt(x.get("rps"), ".0f"), fmt(x.get("p50"), ".3f"),
                     fmt(x.get("client_core") and x["client_core"] * 100, ".0f") + (" %" if x.get("client_core") else ""),
                     fmt(x.get("server_core") and x["server_core"] * 100, ".0f") + (" %" if x.get("server_core") else ""),
                     fmt(x.get("backend_core") and x["backend_core"] * 100, ".0f") + (" %" if x.get("backend_core") else ""),
                     fmt(ratio(x.get("rps"), R.maxr.get("direct", {}).get("rps")), ".2f"),
                     fmt(ratio(x.get("rps"), best_other and R.maxr[best_other]["rps"]), ".2f") if p != "direct" else "–"])
    w(table(["path", "RPS", "p50 ms", "client proxy CPU", "server proxy CPU", "backend CPU", "x direct",
             f"x best of nginx/HAProxy ({NAMES.get(best_other, '–')})"], rows) + "\n")
    w("CPU columns are shares of one core during the run (100 % = the proxy saturates its pinned core). "
      "On 2 cores the load generator and backend compete with the proxies, so max RPS is a ratio between "
      "paths on this machine, not an absolute capacity.\n")

    # ---- TCP
    w(f"## Single-connection TCP throughput through the mTLS hop ({P['tcp_bytes'] / 2**30:g} GiB)\n")
    rows = []
    for p in R.paths:
        x = R.tcp.get(p, {})
        rows.append([NAMES[p], fmt(x.get("mbps"), ".0f"), fmt(x.get("mbps") and x["mbps"] * 8 / 1000, ".2f"),
                     fmt(x.get("client_s_per_gb"), ".2f"), fmt(x.get("server_s_per_gb"), ".2f")])
    w(table(["path", "MB/s", "Gbit/s", "client CPU s/GB", "server CPU s/GB"], rows) + "\n")

    # ---- TLS confirmation
    w("## mTLS check\n")
    w("Each server side was probed with `openssl s_client` using the client certificate, and with curl "
      "without a certificate (which must be refused):\n")
    for p in R.proxies:
        nocert = m(f"nocert-{p}.txt") or "not checked"
        w(f"- {NAMES[p]}: {tls_line(run_dir, p)}; client without a certificate: {nocert}")
    w("")

    # ---- ratios and budget
    w("## Weft against nginx and HAProxy\n")
    if "weft" not in R.paths:
        w("Weft was not measured in this run.\n")
    else:
        def val(p, what):
            if what == "p50":
                return R.added(p, "p50")
            if what == "cpu":
                l = R.lat.get(p, {})
                return None if l.get("client_us") is None else l["client_us"] + l["server_us"]
            if what == "rps":
                return R.maxr.get(p, {}).get("rps")
            if what == "rss":
                r = R.rss.get(p, {})
                xs = [r.get("client_hwm_lat"), r.get("server_hwm_lat")]
                return None if None in xs else max(xs)
            if what == "tcp":
                return R.tcp.get(p, {}).get("mbps")
        labels = [("p50", "added p50 latency (ms)", ".3f", "lower is better"),
                  ("cpu", "pair CPU per request (µs)", ".0f", "lower is better"),
                  ("rps", "max RPS", ".0f", "higher is better"),
                  ("rss", "largest proxy VmHWM at fixed rate (MB)", ".1f", "lower is better"),
                  ("tcp", "TCP throughput (MB/s)", ".0f", "higher is better")]
        rows = []
        for key, label, spec, note in labels:
            wv, nv, hv = val("weft", key), val("nginx", key), val("haproxy", key)
            rows.append([label, fmt(wv, spec), fmt(nv, spec), fmt(hv, spec),
                         fmt(ratio(wv, nv), ".2f"), fmt(ratio(wv, hv), ".2f"), note])
        w(table(["metric", "Weft", "nginx", "HAProxy", "Weft/nginx", "Weft/HAProxy", "note"], rows) + "\n")

        w("### Performance budget (DESIGN.md)\n")
        def verdict(ok):
            return "–" if ok is None else ("met" if ok else "**not met**")
        bud = []
        wp = R.added("weft", "p50")
        op = [R.added(p, "p50") for p in ("nginx", "haproxy") if R.added(p, "p50") is not None]
        bud.append(["p50 added below nginx's and HAProxy's", fmt(wp, ".3f") + " ms",
                    fmt(min(op) if op else None, ".3f") + " ms (best of the two)",
                    verdict(None if wp is None or not op else wp < min(op))])
        # Loopback mode (DESIGN.md): user-space CPU at most the best peer's, the kernel's
        # share (mostly TCP for the local hops) reported beside it.
        for role in ("client", "server"):
            wl = R.lat.get("weft", {})
            wu, wt = wl.get(role + "_user_us"), wl.get(role + "_us")
            ou = [R.lat[p].get(role + "_user_us") for p in ("nginx", "haproxy")
                  if R.lat.get(p, {}).get(role + "_user_us") is not None]
            kernel = None if wu is None or wt is None else wt - wu
            bud.append([f"{role} proxy user-space CPU/request at most the best of nginx's and HAProxy's "
                        f"(kernel: {fmt(kernel, '.0f')} µs more)",
                        fmt(wu, ".0f") + " µs", fmt(min(ou) if ou else None, ".0f") + " µs (the lower)",
                        verdict(None if wu is None or not ou else wu <= min(ou))])
        bud.append(["pair CPU/request at most half the best peer's, with eBPF capture in the namespace "
                    "topology", "–", "–", "measured by `bench/capture.sh`: see "
                    "[Transparent capture in the namespace topology](#transparent-capture-in-the-namespace-topology)"])
        wr = R.maxr.get("weft", {}).get("rps")
        br = best_other and R.maxr[best_other]["rps"]
        bud.append(["max RPS at least 1.25x the better of nginx/HAProxy", fmt(wr, ".0f"),
                    fmt(br and br * 1.25, ".0f"), verdict(None if wr is None or not br else wr >= 1.25 * br)])
        for role in ("client", "server"):
            x = R.rss.get("weft", {}).get(role + "_hwm_lat")
            bud.append([f"{role} proxy RSS under load below 10 MB (VmHWM, fixed rate)", fmt(x, ".1f") + " MB", "10 MB",
                        verdict(None if x is None else x < 10)])
        w(table(["target", "Weft", "threshold", "verdict"], bud) + "\n")

    if warnings:
        w("## Warnings from this run\n")
        for x in warnings:
            w(f"- {x}")
        w("")

    # bench/control-plane.sh and bench/tls.sh own the sections from this heading on, in the
    # docs file the report replaces (`keep_from`); keep them across data-plane runs.
    kept = ""
    marker = "## Control plane: config push at scale"
    if keep_from and os.path.exists(keep_from):
        previous = read(keep_from)
        if marker in previous:
            kept = "\n\n" + previous[previous.index(marker):].rstrip() + "\n"
    with open(out_path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n" + kept)


if __name__ == "__main__":
    main()
