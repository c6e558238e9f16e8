//! Installing and removing a `Plan` with `iptables-restore`, in the calling process's
//! network namespace.
//!
//! Each family's rules go in as one `iptables-restore --noflush` transaction, so a host
//! never holds half of them. Install first removes whatever Weft rules are there (so a
//! second install with other flags replaces the first), and remove finds Weft's rules by
//! their chains in `iptables-save`, so it needs no memory of what was installed and
//! running it twice is harmless.

use super::plan::{Family, Plan, CHAIN_PREFIX};
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// One rule added or removed, as `iptables-save` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub family: Family,
    pub rule: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} nat {}", self.family, self.rule)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot run {tool}: {source} (install Debian's iptables package)")]
    Missing {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} failed: {message} (capture needs root or CAP_NET_ADMIN in the workload's network namespace)")]
    Failed { tool: String, message: String },
}

/// The families this namespace has: IPv4, and IPv6 when the kernel has it here.
fn families() -> Vec<Family> {
    let mut families = vec![Family::V4];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        families.push(Family::V6);
    }
    families
}

/// Installs `plan` for every family, replacing Weft rules already there. Returns the rules
/// added.
pub fn install(plan: &Plan) -> Result<Vec<Change>, CaptureError> {
    let mut added = Vec::new();
    for family in families() {
        remove_family(family)?;
        let rules = plan.rules(family);
        restore(family, &rules)?;
        added.extend(
            rules
                .lines()
                .filter(|line| line.starts_with("-A "))
                .map(|rule| Change {
                    family,
                    rule: rule.to_string(),
                }),
        );
    }
    Ok(added)
}

/// Removes every Weft rule and chain. Returns what was removed: nothing when there was
/// nothing to remove.
pub fn remove() -> Result<Vec<Change>, CaptureError> {
    let mut removed = Vec::new();
    for family in families() {
        removed.extend(remove_family(family)?);
    }
    Ok(removed)
}

/// Whether any Weft chain is in this namespace's nat table.
pub fn installed() -> Result<bool, CaptureError> {
    for family in families() {
        if !Owned::find(&save(family)?).chains.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_family(family: Family) -> Result<Vec<Change>, CaptureError> {
    let owned = Owned::find(&save(family)?);
    if owned.chains.is_empty() && owned.jumps.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = String::from("*nat\n");
    for jump in &owned.jumps {
        input.push_str(&jump.replacen("-A ", "-D ", 1));
        input.push('\n');
    }
    // Every chain is emptied before any is deleted: they jump to each other.
    for verb in ["-F", "-X"] {
        for chain in &owned.chains {
            input.push_str(&format!("{verb} {chain}\n"));
        }
    }
    input.push_str("COMMIT\n");
    restore(family, &input)?;
    Ok(owned
        .jumps
        .into_iter()
        .chain(owned.rules)
        .map(|rule| Change { family, rule })
        .collect())
}

/// Weft's part of an `iptables-save -t nat` listing.
#[derive(Default)]
struct Owned {
    chains: Vec<String>,
    /// Rules in other chains that jump to Weft's.
    jumps: Vec<String>,
    /// Rules in Weft's chains.
    rules: Vec<String>,
}

impl Owned {
    fn find(saved: &str) -> Owned {
        let mut owned = Owned::default();
        for line in saved.lines() {
            if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or("");
                if name.starts_with(CHAIN_PREFIX) {
                    owned.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                if rule.starts_with(CHAIN_PREFIX) {
                    owned.rules.push(line.to_string());
                } else if jumps_to_weft(rule) {
                    owned.jumps.push(line.to_string());
                }
            }
        }
        owned
    }
}

fn jumps_to_weft(rule: &str) -> bool {
    let mut words = rule.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-j" || word == "-g" {
            return words.next().is_some_and(|t| t.starts_with(CHAIN_PREFIX));
        }
    }
    false
}

fn save(family: Family) -> Result<String, CaptureError> {
    run(&format!("{}-save", family.tool()), &["-t", "nat"], None)
}

fn restore(family: Family, input: &str) -> Result<String, CaptureError> {
    run(
        &format!("{}-restore", family.tool()),
        &["--noflush", "--wait=10"],
        Some(input),
    )
}

fn run(tool: &str, args: &[&str], input: Option<&str>) -> Result<String, CaptureError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CaptureError::Missing {
            tool: tool.to_string(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A failed write shows as the tool's own error below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| CaptureError::Missing {
            tool: tool.to_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CaptureError::Failed {
            tool: tool.to_string(),
            message: format!("{} ({})", stderr.trim(), output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_weft_chains_and_the_jumps_to_them() {
        let saved = "\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:WEFT_OUTPUT - [0:0]
:WEFT_REDIRECT - [0:0]
-A OUTPUT -d 10.0.0.1/32 -j DOCKER
-A OUTPUT -p tcp -j WEFT_OUTPUT
-A WEFT_OUTPUT -j WEFT_REDIRECT
-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";
        let owned = Owned::find(saved);
        assert_eq!(owned.chains, ["WEFT_OUTPUT", "WEFT_REDIRECT"]);
        assert_eq!(owned.jumps, ["-A OUTPUT -p tcp -j WEFT_OUTPUT"]);
        assert_eq!(owned.rules.len(), 2);
    }
}
