//! `weft demo` end to end: the real binary starts the sample mesh, sends traffic for a few
//! seconds, prints a summary with traffic on every edge, and leaves no process or file
//! behind.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKLOADS: [&str; 6] = [
    "loadgen",
    "frontend",
    "catalog",
    "reviews-v1",
    "reviews-v2",
    "ratings",
];

const EDGES: [&str; 5] = [
    "loadgen.default -> frontend.default",
    "frontend.default -> reviews.default",
    "frontend.default -> catalog.default",
    "reviews-v1.default -> ratings.default",
    "reviews-v2.default -> ratings.default",
];

/// Runs `weft demo ARGS` to completion; a demo that hangs is killed and fails the test.
fn run_demo(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft demo");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "weft demo --duration did not end; stdout:\n{}",
                stdout.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// The sidecar pids from the demo's workload table (`WORKLOAD APP INBOUND OUTBOUND ADMIN PID`).
fn sidecar_pids(stdout: &str) -> Vec<u32> {
    stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == 6 && WORKLOADS.contains(&cells[0]))
        .map(|cells| cells[5].parse().expect("the last column is a pid"))
        .collect()
}

/// Whether `pid` is a running `weft proxy` (a pid the OS has given to something else since
/// is not a leftover sidecar).
fn is_proxy(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .contains(" proxy ")
}

/// `ip netns list`.
fn network_namespaces() -> String {
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8(listed.stdout).unwrap()
}

/// Every running process whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(text).then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// Every edge of the summary has requests, nearly all successful.
fn assert_every_edge_measured(stdout: &str) {
    for edge in EDGES {
        let row = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(edge))
            .unwrap_or_else(|| panic!("no {edge:?} row in the summary:\n{stdout}"));
        let columns: Vec<&str> = row.trim_start()[edge.len()..].split_whitespace().collect();
        let requests: u64 = columns[0].parse().unwrap();
        let success: f64 = columns[1].trim_end_matches('%').parse().unwrap();
        assert!(requests > 0, "no requests on {edge}:\n{stdout}");
        assert!(
            success > 90.0,
            "success rate {success}% on {edge}:\n{stdout}"
        );
    }
}

#[test]
fn demo_measures_every_edge_and_leaves_nothing_behind() {
    let (status, stdout, stderr) = run_demo(&["--duration", "5s"]);
    assert!(
        status.success(),
        "weft demo failed ({status}):\n{stdout}\n{stderr}"
    );
    assert_every_edge_measured(&stdout);

    let pids = sidecar_pids(&stdout);
    assert_eq!(
        pids.len(),
        WORKLOADS.len(),
        "one sidecar pid per workload:\n{stdout}"
    );
    for pid in pids {
        assert!(!is_proxy(pid), "sidecar {pid} is still running");
    }

    let workdir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("Demo files:"))
        .map(|rest| Path::new(rest.trim()))
        .unwrap_or_else(|| panic!("the demo did not say where its files are:\n{stdout}"));
    assert!(!workdir.exists(), "{} was not removed", workdir.display());
    let leftovers = processes_mentioning(&workdir.display().to_string());
    assert!(
        leftovers.is_empty(),
        "processes left behind:\n{}",
        leftovers.join("\n")
    );
}

/// `weft demo` running until it is killed, and its output lines as they come.
fn start_demo() -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting weft demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn sidecars_exit_even_when_the_demo_is_killed() {
    let (mut child, rx) = start_demo();
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sidecar_pids(&printed).len() < WORKLOADS.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the demo never listed its sidecars:\n{printed}");
            }
        }
    }
    // SIGKILL: the demo runs no cleanup at all.
    child.kill().unwrap();
    child.wait().unwrap();
    let pids = sidecar_pids(&printed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| is_proxy(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = pids.iter().filter(|pid| is_proxy(**pid)).collect();
    assert!(left.is_empty(), "sidecars outlived a killed demo: {left:?}");
}

/// The commands the guide prints to see the mesh, run against a running demo as a user
/// pastes them: `weft stat` shows every version taking traffic, `weft top` the busiest
/// edges, `weft diagnose` answers.
#[test]
fn the_guides_observability_commands_work_on_the_running_demo() {
    let (mut child, rx) = start_demo();
    let export = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.trim_start().starts_with("export WEFT_API=") => break line,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!("the demo never printed its export line");
            }
        }
    };
    let env: Vec<(String, String)> = export
        .trim_start()
        .trim_start_matches("export ")
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let weft = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let out = weft(&["stat", "-o", "json"]);
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let busy = |name: &str| {
            view["services"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|s| s["name"] == name && s["requests"].as_u64() > Some(0))
            })
        };
        if [
            "reviews-v1.default",
            "reviews-v2.default",
            "ratings.default",
            "catalog.default",
        ]
        .iter()
        .all(|name| busy(name))
        {
            break view;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weft stat never showed the demo's traffic: {view}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(view["services"].as_array().unwrap().len() >= 6, "{view}");
    let top = weft(&["top", "--count", "1"]);
    let table = String::from_utf8_lossy(&top.stdout);
    assert!(table.contains("frontend.default"), "{table}");
    let diagnosed = weft(&["diagnose", "--json"]);
    let findings: serde_json::Value = serde_json::from_slice(&diagnosed.stdout).unwrap();
    assert!(findings.is_array(), "{findings}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `weft demo --transparent`: the same sample mesh with each workload in a network namespace
/// of its own and its app unmodified. The apps call services by name only
/// (`http://ratings.default/`, gRPC to `catalog.default:80`), never a sidecar's address, so
/// an edge that a caller's sidecar measured was captured. Nothing is left behind: no
/// namespace, no link, no sidecar.
#[test]
fn the_transparent_demo_captures_unmodified_apps_and_leaves_nothing_behind() {
    if support::netns::skip_unless_root(
        "the_transparent_demo_captures_unmodified_apps_and_leaves_nothing_behind",
    ) {
        return;
    }
    let first = std::thread::spawn(|| run_demo(&["--transparent", "--duration", "6s"]));
    // A second one, while the first one's pods exist, is refused and leaves them alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !network_namespaces().contains("weft-demo-") {
        assert!(Instant::now() < deadline, "the demo made no namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (second, _, refusal) = run_demo(&["--transparent", "--duration", "1s"]);
    assert!(
        !second.success(),
        "a second transparent demo ran: {refusal}"
    );
    assert!(
        refusal.contains("another `weft demo --transparent`"),
        "{refusal}"
    );
    let (status, stdout, stderr) = first.join().unwrap();
    assert!(
        status.success(),
        "weft demo --transparent failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ip netns exec weft-demo-")
            && stdout.contains("curl http://frontend.default/"),
        "the guide says how to call the frontend from a pod:\n{stdout}"
    );
    assert_every_edge_measured(&stdout);
    // Each proxy's start-up check of its control-plane URL is not an operator's problem.
    assert!(!stderr.contains("refused a plain-text"), "{stderr}");

    let pids = sidecar_pids(&stdout);
    assert_eq!(pids.len(), WORKLOADS.len(), "{stdout}");
    let namespaces = network_namespaces();
    let pods: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("weft-demo-"))
        .collect();
    assert_eq!(
        pods.len(),
        WORKLOADS.len(),
        "one pod per workload:\n{stdout}"
    );
    for pod in pods {
        let name = format!("weft-demo-{}", pod.split_whitespace().next().unwrap());
        assert!(!namespaces.contains(&name), "{name} is left:\n{namespaces}");
    }
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !links.contains("10.251.0.1/24"),
        "the host's link is left:\n{links}"
    );
    for pid in pids {
        assert!(!is_proxy(pid), "sidecar {pid} is still running");
    }
}
