//! `weft cert`: a CA and workload certificates as files, for local mode and tests. In mesh
//! mode the control plane's CA issues and renews certificates automatically.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_identity::{format_utc, CertificateAuthority, SpiffeId};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

/// Certificates from files, for `weft proxy --local` and tests. In mesh mode the control
/// plane's CA issues and renews every proxy's certificate automatically; you do not need this.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a certificate authority for local mode and tests: DIR/ca.pem and DIR/ca-key.pem.
    ///
    /// Give ca.pem to every proxy (`weft proxy --ca`); keep ca-key.pem private, it signs
    /// certificates with `weft cert issue`. In mesh mode the control plane has its own CA.
    Ca {
        /// Directory to write ca.pem and ca-key.pem to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,

        /// Trust domain of the mesh: every id this CA signs is
        /// spiffe://<trust-domain>/ns/<namespace>/svc/<service>.
        #[arg(long, value_name = "DOMAIN", default_value = "weft.local")]
        trust_domain: String,

        /// Replace an existing CA in DIR. Certificates the old CA issued are no longer trusted
        /// by proxies given the new ca.pem.
        #[arg(long)]
        force: bool,
    },

    /// Issue a workload certificate for local mode and tests: DIR/<service>.pem and
    /// DIR/<service>-key.pem.
    ///
    /// The certificate names the service by its SPIFFE id (in the CA's trust domain) and is
    /// valid as both TLS server and client, as a proxy needs. Pass the files to
    /// `weft proxy --cert --key`, with the CA's ca.pem as `--ca`. In mesh mode the control
    /// plane issues these automatically.
    Issue {
        /// Directory holding ca.pem and ca-key.pem, as written by `weft cert ca`.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,

        /// Service the certificate identifies.
        #[arg(long, value_name = "NAME")]
        service: String,

        /// Namespace of the service.
        #[arg(long, value_name = "NS", default_value = "default")]
        namespace: String,

        /// How long the certificate is valid: a whole number with s, m, h or d (90s, 10m, 24h,
        /// 7d). It starts a minute in the past to allow for clock skew.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,

        /// Directory to write <service>.pem and <service>-key.pem to (created if missing);
        /// existing files for the service are replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub fn run(cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Ca {
            out,
            trust_domain,
            force,
        } => create_ca(&out, &trust_domain, force),
        CertCommand::Issue {
            ca_dir,
            service,
            namespace,
            ttl,
            out,
        } => issue(&ca_dir, &namespace, &service, ttl, &out),
    }
}

fn create_ca(out: &Path, trust_domain: &str, force: bool) -> Result<()> {
    let cert_path = out.join(CA_CERT_FILE);
    let key_path = out.join(CA_KEY_FILE);
    // Checked up front so a refusal leaves both files as they were, not just the first.
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                bail!(
                    "{} already exists: refusing to replace the CA, since certificates it issued \
                     would stop being trusted; pass --force to replace it anyway",
                    path.display()
                );
            }
        }
    }
    let ca = CertificateAuthority::generate(trust_domain)?;
    create_dir(out)?;
    write_file(&key_path, ca.key_pem(), Access::OwnerOnly, force)?;
    write_file(&cert_path, ca.cert_pem(), Access::Readable, force)?;
    println!("created a CA for trust domain {trust_domain}");
    println!("  certificate  {}", cert_path.display());
    println!("  private key  {}", key_path.display());
    Ok(())
}

fn issue(ca_dir: &Path, namespace: &str, service: &str, ttl: Duration, out: &Path) -> Result<()> {
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca = load_ca(ca_dir)?;
    let trust_domain = ca.trust_domain().with_context(|| {
        format!(
            "the CA in {} names no trust domain (it has no spiffe:// URI SAN): \
             create one with `weft cert ca`",
            ca_cert_path.display()
        )
    })?;
    let id = SpiffeId::new(trust_domain, namespace, service)?;
    let issued = ca.issue(&id, ttl)?;

    // The service name is a valid SPIFFE path segment, so it is a safe file name.
    let cert_path = out.join(format!("{service}.pem"));
    let key_path = out.join(format!("{service}-key.pem"));
    create_dir(out)?;
    write_file(&key_path, &issued.key_pem, Access::OwnerOnly, true)?;
    write_file(&cert_path, &issued.cert_pem, Access::Readable, true)?;
    println!("issued {id}");
    println!("  certificate  {}", cert_path.display());
    println!("  private key  {}", key_path.display());
    println!("  expires      {}", format_utc(issued.not_after));
    println!(
        "use it with: weft proxy --cert {} --key {} --ca {}",
        cert_path.display(),
        key_path.display(),
        ca_cert_path.display()
    );
    Ok(())
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|err| {
            let hint = match err.kind() {
                ErrorKind::NotFound => " (create a CA with `weft cert ca --out DIR` first)",
                _ => "",
            };
            anyhow::anyhow!("cannot read {}: {err}{hint}", path.display())
        })
    };
    let (cert_pem, key_pem) = (read(CA_CERT_FILE)?, read(CA_KEY_FILE)?);
    CertificateAuthority::from_pem(&cert_pem, &key_pem)
        .with_context(|| format!("cannot use the CA in {}", dir.display()))
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Private keys: mode 0600, so other users on the host cannot read them.
    OwnerOnly,
    /// Certificates: the process umask decides.
    Readable,
}

pub(crate) fn write_file(path: &Path, contents: &str, access: Access, replace: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        // Fails if the file appeared since we checked, rather than overwriting it.
        options.create_new(true);
    }
    #[cfg(unix)]
    if let Access::OwnerOnly = access {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` only applies to new files; a replaced key file must not keep looser permissions.
    #[cfg(unix)]
    if let Access::OwnerOnly = access {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A certificate's lifetime: `90s`, `10m`, `24h`, `7d`, `1d12h` (as every duration).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = crate::duration_flag::parse(text)?;
    if ttl.is_zero() {
        return Err("a certificate must be valid for longer than zero".to_owned());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_identity::TlsIdentity;

    #[test]
    fn parses_ttls() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "",
            "24",
            "h",
            "1.5h",
            "-1h",
            "24H",
            "24 h",
            "1w",
            "0s",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ca_then_issue_makes_files_a_proxy_can_load() {
        let dir = std::env::temp_dir().join(format!("weft-cert-cmd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca_dir = dir.join("ca");
        let out = dir.join("certs");
        let ca = || CertCommand::Ca {
            out: ca_dir.clone(),
            trust_domain: "test.local".to_owned(),
            force: false,
        };
        run(ca()).unwrap();
        let refused = run(ca()).unwrap_err().to_string();
        assert!(refused.contains("--force"), "{refused}");
        run(CertCommand::Ca {
            out: ca_dir.clone(),
            trust_domain: "test.local".to_owned(),
            force: true,
        })
        .unwrap();

        run(CertCommand::Issue {
            ca_dir: ca_dir.clone(),
            service: "web".to_owned(),
            namespace: "shop".to_owned(),
            ttl: Duration::from_secs(3600),
            out: out.clone(),
        })
        .unwrap();

        let identity = TlsIdentity::from_files(
            &out.join("web.pem"),
            &out.join("web-key.pem"),
            &ca_dir.join("ca.pem"),
        )
        .unwrap();
        assert_eq!(
            identity.id().to_string(),
            "spiffe://test.local/ns/shop/svc/web"
        );
        #[cfg(unix)]
        for key in [ca_dir.join("ca-key.pem"), out.join("web-key.pem")] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_without_a_ca_says_how_to_make_one() {
        let missing = std::env::temp_dir().join("weft-cert-cmd-no-such-dir");
        let err = run(CertCommand::Issue {
            ca_dir: missing.clone(),
            service: "web".to_owned(),
            namespace: "default".to_owned(),
            ttl: Duration::from_secs(60),
            out: missing,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("weft cert ca"), "{err}");
    }
}
