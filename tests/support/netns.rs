//! Network namespaces made by a test, as a workload's "pod": its own interfaces, routes and
//! iptables rules, joined to another by a veth pair. Needs root; deleted on drop.

use super::{weft_bin, ChildGuard, LoggedChild, Proxy};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether this process may make namespaces and change iptables.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Says why a test is skipped, so a run without root shows what it did not check.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, iptables); CI runs it as root");
    true
}

pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The uid an unmodified app runs as in these tests: not the proxies' (root).
pub const APP_UID: &str = "65534";

/// The prefix that runs a command as `APP_UID`.
const AS_APP: &[&str] = &[
    "setpriv",
    "--reuid",
    APP_UID,
    "--regid",
    APP_UID,
    "--clear-groups",
];

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "weft-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        host(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {args:?} in {}: {e}", self.name))
    }

    /// Runs `args` here and panics with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `weft proxy ARGS` here, once it has said where it listens. Its admin address is
    /// this namespace's: read it with `curl` run here, not `Proxy::metrics`.
    pub fn spawn_proxy(&self, args: &[String]) -> Proxy {
        let mut command = self.command(weft_bin());
        command.args(args);
        Proxy::listening(LoggedChild::spawn_command(command, true), 0)
    }

    /// `weft proxy ARGS` here, in `cgroup` (as a pod's sidecar is in the pod's).
    pub fn spawn_proxy_in(&self, cgroup: &Cgroup, args: &[String]) -> Proxy {
        let mut command = self.command("sh");
        command.args(["-c", &cgroup.enter_and_exec(), "sh", weft_bin()]);
        command.args(args);
        Proxy::listening(LoggedChild::spawn_command(command, true), 0)
    }

    /// `weft proxy ARGS` here as user and group `uid`, unprivileged, from a copy of the
    /// binary in `dir` (the build's own may be in a directory only root can enter).
    pub fn spawn_proxy_as(&self, uid: &str, dir: &std::path::Path, args: &[String]) -> Proxy {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("weft");
        if std::fs::hard_link(weft_bin(), &bin).is_err() {
            std::fs::copy(weft_bin(), &bin).expect("copying weft for another user");
        }
        for path in [dir, bin.as_path()] {
            let mut mode = std::fs::metadata(path).unwrap().permissions();
            mode.set_mode(mode.mode() | 0o755);
            std::fs::set_permissions(path, mode).unwrap();
        }
        let mut command = self.command("setpriv");
        command
            .args(["--reuid", uid, "--regid", uid, "--clear-groups"])
            .arg(&bin)
            .args(args);
        Proxy::listening(LoggedChild::spawn_command(command, true), 0)
    }

    /// Any long-running program here, killed on drop.
    pub fn spawn(&self, args: &[&str]) -> ChildGuard {
        let child = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a program in a namespace");
        ChildGuard(child)
    }

    /// An HTTP GET by curl as an unmodified app would make it, run as `APP_UID`: the
    /// status code (0 when no answer came) and the body.
    pub fn curl_as_app(&self, url: &str) -> (u16, String) {
        self.curl(AS_APP, url)
    }

    /// `args` run here as `APP_UID`, as an unmodified app: its standard output, which it
    /// must exit 0 to give.
    pub fn ok_as_app(&self, args: &[&str]) -> String {
        let mut all = AS_APP.to_vec();
        all.extend(args);
        self.ok(&all)
    }

    /// The same, run from `cgroup` (the workload's, where eBPF capture is attached).
    pub fn ok_as_app_in(&self, cgroup: &Cgroup, args: &[&str]) -> String {
        let enter = cgroup.enter_and_exec();
        let mut all = vec!["sh", "-c", enter.as_str(), "sh"];
        all.extend(AS_APP);
        all.extend(args);
        self.ok(&all)
    }

    /// Gives processes started here from now on this `/etc/resolv.conf` (`ip netns exec`
    /// mounts `/etc/netns/NAME/resolv.conf` over it); removed with the namespace.
    pub fn resolv_conf(&self, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }

    /// The same, run from `cgroup` (the workload's, where eBPF capture is attached).
    pub fn curl_as_app_in(&self, cgroup: &Cgroup, url: &str) -> (u16, String) {
        self.curl_as_user_in(cgroup, APP_UID, url)
    }

    /// The same as user and group `uid`.
    pub fn curl_as_user_in(&self, cgroup: &Cgroup, uid: &str, url: &str) -> (u16, String) {
        let enter = cgroup.enter_and_exec();
        let prefix = [
            "sh",
            "-c",
            enter.as_str(),
            "sh",
            "setpriv",
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
        ];
        self.curl(&prefix, url)
    }

    /// The same as root, which is the proxies' user: never captured.
    pub fn curl_as_root(&self, url: &str) -> (u16, String) {
        self.curl(&[], url)
    }

    fn curl(&self, prefix: &[&str], url: &str) -> (u16, String) {
        let mut args: Vec<&str> = prefix.to_vec();
        args.extend([
            "curl",
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            url,
        ]);
        let output = self.run(&args);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The nat table as `iptables-save` and `ip6tables-save` print it, without the
    /// comment lines that carry a time.
    pub fn nat_rules(&self) -> String {
        let mut rules = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let saved = self.ok(&[tool, "-t", "nat"]);
            for line in saved.lines().filter(|l| !l.starts_with('#')) {
                rules.push_str(line);
                rules.push('\n');
            }
        }
        rules
    }

    /// Waits until `url` answers 200 here (fetched as root).
    pub fn wait_http_ok(&self, url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.curl_as_root(url);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} in {} did not answer 200 within {within:?} (last: {status} {body})",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A cgroup (v2) of the test's own, as a workload's: removed on drop (once its processes,
/// which the tests wait for, are gone).
pub struct Cgroup {
    pub path: std::path::PathBuf,
}

impl Cgroup {
    /// Under a cgroup v2 mount of the test's own outside `/sys`: `ip netns exec` mounts a
    /// fresh sysfs for the namespace, where `/sys/fs/cgroup` is empty, and both the proxy
    /// and the app's shell must see the cgroup.
    pub fn new(tag: &str) -> Cgroup {
        let root = std::path::Path::new("/run/weft-test-cgroup2");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        if !mounts.contains(&format!(" {} cgroup2 ", root.display())) {
            std::fs::create_dir_all(root).unwrap();
            host(&["mount", "-t", "cgroup2", "none", root.to_str().unwrap()]);
        }
        let path = root.join(format!(
            "weft-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Cgroup { path }
    }

    /// A shell script that moves itself into this cgroup and then runs its arguments
    /// (`sh -c SCRIPT sh PROGRAM ARGS...`), so the program starts there: its sockets
    /// belong to the cgroup from the first one.
    fn enter_and_exec(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            self.path.display()
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

/// Joins `a` and `b` with a veth pair named `veth0` on both sides, with these addresses
/// (`10.0.0.1/24`, `fd00::1/64`) on each side.
pub fn link(a: &Netns, a_addresses: &[&str], b: &Netns, b_addresses: &[&str]) {
    host(&[
        "ip", "link", "add", "veth0", "netns", &a.name, "type", "veth", "peer", "name", "veth0",
        "netns", &b.name,
    ]);
    for (ns, addresses) in [(a, a_addresses), (b, b_addresses)] {
        for address in addresses {
            // `nodad`: an IPv6 address is usable at once, not after duplicate detection.
            let mut args = vec!["ip", "addr", "add", address, "dev", "veth0"];
            if address.contains(':') {
                args.push("nodad");
            }
            ns.ok(&args);
        }
        ns.ok(&["ip", "link", "set", "veth0", "up"]);
    }
}

fn host(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
