"""Where a proxy's CPU goes, from perf's samples with call stacks: user space, and the
kernel's work split by what it was doing for the proxy.

Usage: cpu-profile.py OUT.json PERF_DATA ROLE=PID[,PID...]...

PERF_DATA is a system-wide `perf record -a -g` (a per-process recording samples a task
when it is switched in and out, and so puts too much in the scheduler); each ROLE counts
the samples of its processes (a proxy's whole process tree). A sample counts
in user space when its innermost frame is not the kernel's; a kernel sample is put in the
first of these that its stack shows:

  wakeup      waking the task at the other end (sock_def_readable, ep_poll_callback,
              try_to_wake_up ...): on a VM whose idle vCPUs halt, an inter-processor
              interrupt, paid by the sender
  sk_msg      the socket-to-socket path of the eBPF capture (tcp_bpf_sendmsg/recvmsg)
  tcp         TCP/IP, sending and receiving, over either hop: the device's receive
              work runs in a softirq after the send, so the stack does not tell the
              loopback hop from the veth's
  wait        epoll_wait and the scheduler switching away and back
  syscall     any other system call's own work
  other       interrupts and whatever else

OUT.json holds {ROLE: {"samples": N, CATEGORY: count, ...}}.
"""
import json
import subprocess
import sys

CATEGORIES = ("user", "wakeup", "sk_msg", "tcp", "wait", "syscall", "other")

# (category, the functions whose presence in a kernel stack puts a sample in it), in order.
KERNEL_RULES = (
    ("wakeup", {"sock_def_readable", "ep_poll_callback", "try_to_wake_up", "__wake_up_sync_key",
                "sk_psock_data_ready", "__wake_up_common"}),
    ("sk_msg", {"tcp_bpf_sendmsg", "tcp_bpf_recvmsg", "tcp_bpf_sendmsg_redir", "sk_psock_backlog"}),
    ("tcp", {"tcp_sendmsg", "tcp_recvmsg", "net_rx_action", "tcp_v4_rcv", "tcp_write_timer_handler",
             "tcp_delack_timer_handler"}),
    ("wait", {"do_epoll_wait", "__schedule", "schedule"}),
    ("syscall", {"do_syscall_64"}),
)


def samples(data):
    """Yields each sample's pid and frames as (symbol, dso), innermost first."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    for block in out.split("\n\n"):
        lines = block.strip().split("\n")
        frames = []
        for line in lines[1:]:
            parts = line.split()
            if len(parts) >= 3:
                frames.append((parts[1].split("+")[0], parts[-1].strip("()")))
        if frames:
            yield int(lines[0].split()[0]), frames


def category(frames):
    symbol, dso = frames[0]
    if "kernel" not in dso and not symbol.startswith("bpf_prog"):
        return "user"
    names = {name for name, _ in frames}
    for name, functions in KERNEL_RULES:
        if names & functions:
            return name
    return "other"


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out, data, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    role_of = {}
    result = {}
    for spec in specs:
        role, pids = spec.split("=", 1)
        role_of.update((int(pid), role) for pid in pids.split(","))
        result[role] = dict.fromkeys(CATEGORIES, 0)
    for pid, frames in samples(data):
        if pid in role_of:
            result[role_of[pid]][category(frames)] += 1
    for counts in result.values():
        counts["samples"] = sum(counts[c] for c in CATEGORIES)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
