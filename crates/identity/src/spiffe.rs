//! SPIFFE ids of the one shape Weft uses: `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`.

use crate::IdentityError;
use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// The SPIFFE spec caps an id at 2048 bytes; longer input is refused before any other check.
const MAX_LEN: usize = 2048;
const TOO_LONG: &str = "it is longer than the 2048 bytes SPIFFE allows";

/// A workload's identity. Always valid: it can only be built through [`SpiffeId::parse`] or
/// [`SpiffeId::new`], so code holding one never re-checks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service: String,
}

impl SpiffeId {
    /// Builds the id of `service` in `namespace`, checking each part as [`SpiffeId::parse`] does.
    pub fn new(trust_domain: &str, namespace: &str, service: &str) -> Result<Self, IdentityError> {
        let invalid = |reason: String| IdentityError::InvalidSpiffeId {
            input: format!("{SCHEME}{trust_domain}/ns/{namespace}/svc/{service}"),
            reason,
        };
        let len = SCHEME.len() + trust_domain.len() + "/ns/".len() + namespace.len();
        if len + "/svc/".len() + service.len() > MAX_LEN {
            return Err(invalid(TOO_LONG.to_owned()));
        }
        check_trust_domain(trust_domain).map_err(invalid)?;
        check_segment("namespace", namespace).map_err(invalid)?;
        check_segment("service", service).map_err(invalid)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        })
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/svc/<service>` and nothing else: no
    /// query, fragment, port, user info, percent-encoding, extra or empty path segments.
    pub fn parse(input: &str) -> Result<Self, IdentityError> {
        let invalid = |reason: &str| IdentityError::InvalidSpiffeId {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.len() > MAX_LEN {
            return Err(invalid(TOO_LONG));
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("it must start with spiffe:// (lowercase)"))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("it has no path after the trust domain"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, svc_key, service] = segments[..] else {
            return Err(invalid(
                "the path must have exactly four segments, /ns/<namespace>/svc/<service>",
            ));
        };
        if ns_key != "ns" || svc_key != "svc" {
            return Err(invalid("the path must be /ns/<namespace>/svc/<service>"));
        }
        SpiffeId::new(trust_domain, namespace, service).map_err(|err| match err {
            // Report the caller's text, not the reassembled one.
            IdentityError::InvalidSpiffeId { reason, .. } => IdentityError::InvalidSpiffeId {
                input: input.to_owned(),
                reason,
            },
            other => other,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/svc/{}",
            self.trust_domain, self.namespace, self.service
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(input)
    }
}

/// Trust domain names per the SPIFFE spec: lowercase letters, digits, `.`, `-` and `_`.
/// Uppercase is refused rather than folded so one workload never has two spellings.
pub(crate) fn check_trust_domain(trust_domain: &str) -> Result<(), String> {
    if trust_domain.is_empty() {
        return Err("the trust domain is empty".to_owned());
    }
    match trust_domain
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(bad) => Err(format!(
            "the trust domain {trust_domain:?} contains {bad:?}; use lowercase letters, digits, '.', '-' and '_'"
        )),
        None => Ok(()),
    }
}

/// Path segments per the SPIFFE spec: letters, digits, `.`, `-` and `_`, and not `.` or `..`.
/// This also keeps a service name safe to use as a file name.
fn check_segment(what: &str, segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if segment == "." || segment == ".." {
        return Err(format!("the {what} must not be {segment:?}"));
    }
    match segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(bad) => Err(format!(
            "the {what} {segment:?} contains {bad:?}; use letters, digits, '.', '-' and '_'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_the_canonical_form() {
        let text = "spiffe://weft.local/ns/default/svc/web";
        let id = SpiffeId::parse(text).unwrap();
        assert_eq!(id.trust_domain(), "weft.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service(), "web");
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn accepts_every_allowed_character() {
        let id =
            SpiffeId::parse("spiffe://prod-1.example_co/ns/Team.A-1/svc/api_v2.Beta-3").unwrap();
        assert_eq!(id.namespace(), "Team.A-1");
        assert_eq!(id.service(), "api_v2.Beta-3");
    }

    #[test]
    fn new_builds_what_parse_reads() {
        let id = SpiffeId::new("weft.local", "shop", "cart").unwrap();
        assert_eq!(
            SpiffeId::parse(&id.to_string()).unwrap(),
            id,
            "Display and parse must round-trip"
        );
    }

    #[test]
    fn rejects_other_forms_with_a_reason() {
        let cases = [
            ("", "spiffe://"),
            ("http://weft.local/ns/a/svc/b", "spiffe://"),
            ("SPIFFE://weft.local/ns/a/svc/b", "spiffe://"),
            ("spiffe://weft.local", "no path"),
            ("spiffe://weft.local/", "four segments"),
            ("spiffe://weft.local/ns/a/svc/b/", "four segments"),
            ("spiffe://weft.local/ns/a/svc/b/extra", "four segments"),
            ("spiffe://weft.local/ns/a", "four segments"),
            ("spiffe://weft.local/ns//svc/b", "namespace is empty"),
            ("spiffe://weft.local/ns/a/svc/", "service is empty"),
            (
                "spiffe://weft.local/svc/b/ns/a",
                "/ns/<namespace>/svc/<service>",
            ),
            (
                "spiffe://weft.local/namespace/a/service/b",
                "/ns/<namespace>/svc/<service>",
            ),
            ("spiffe:///ns/a/svc/b", "trust domain is empty"),
            ("spiffe://Weft.Local/ns/a/svc/b", "'W'"),
            ("spiffe://weft.local:8443/ns/a/svc/b", "':'"),
            ("spiffe://user@weft.local/ns/a/svc/b", "'@'"),
            ("spiffe://weft.local/ns/a/svc/b?x=1", "'?'"),
            ("spiffe://weft.local/ns/a/svc/b#frag", "'#'"),
            ("spiffe://weft.local/ns/a%2Fb/svc/c", "'%'"),
            ("spiffe://weft.local/ns/../svc/b", "must not be \"..\""),
            ("spiffe://weft.local/ns/./svc/b", "must not be \".\""),
            ("spiffe://weft.local/ns/a b/svc/c", "' '"),
        ];
        for (input, reason) in cases {
            let err = SpiffeId::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(reason),
                "{input:?}: {err:?} should mention {reason:?}"
            );
            assert!(
                err.contains(&format!("{input:?}")),
                "{input:?}: {err:?} should quote the input"
            );
            assert!(
                err.contains("expected spiffe://<trust-domain>/ns/<namespace>/svc/<service>"),
                "{err:?} should say what is expected"
            );
        }
    }

    #[test]
    fn rejects_overlong_ids() {
        let long = format!("spiffe://weft.local/ns/a/svc/{}", "s".repeat(MAX_LEN));
        let err = SpiffeId::parse(&long).unwrap_err().to_string();
        assert!(err.contains("2048"), "{err}");
    }

    #[test]
    fn new_rejects_bad_parts() {
        assert!(SpiffeId::new("weft.local", "default", "web/admin").is_err());
        assert!(SpiffeId::new("weft.local", "", "web").is_err());
        assert!(SpiffeId::new("WEFT", "default", "web").is_err());
        assert!(SpiffeId::new("weft.local", "default", &"s".repeat(MAX_LEN)).is_err());
    }
}
