//! Checked strings: names, hostnames, header names, methods, paths, regexes, SPIFFE ids.
//!
//! Each is checked where it is read, so a bad one is reported with its line and field.

use super::checked::{deserialize_with, FromText};
use std::borrow::Borrow;
use std::fmt;

macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $expecting:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `text` and keeps it (normalized where the type says so).
            pub fn new(text: &str) -> Result<$name, String> {
                $check(text).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromText for $name {
            const EXPECTING: &'static str = $expecting;

            fn from_text(text: &str) -> Result<Self, String> {
                $name::new(text)
            }
        }

        deserialize_with!(text: $name);
    };
}

string_type!(
    /// A resource or namespace name: a DNS label (RFC 1123).
    Name,
    "a name (lower-case letters, digits and '-')",
    check_name
);

string_type!(
    /// A host name with no wildcard, as in a redirect (RFC 1123 subdomain).
    Hostname,
    "a host name",
    check_hostname
);

string_type!(
    /// An HTTP header name, stored lower-case.
    HeaderName,
    "an HTTP header name",
    check_header_name
);

string_type!(
    /// An HTTP method, stored upper-case.
    Method,
    "an HTTP method",
    check_method
);

string_type!(
    /// An absolute HTTP path (`/api/users`).
    HttpPath,
    "a path starting with '/'",
    check_path
);

string_type!(
    /// A regular expression (Rust `regex` syntax) known to compile.
    RegexPattern,
    "a regular expression",
    check_regex
);

string_type!(
    /// A SPIFFE trust domain (`weft.local`, `prod.example.com`).
    TrustDomain,
    "a SPIFFE trust domain",
    check_trust_domain
);

string_type!(
    /// A SPIFFE id: `spiffe://<trust domain>/<path>`.
    SpiffeId,
    "a SPIFFE id like spiffe://weft.local/ns/default/svc/web",
    check_spiffe_id
);

string_type!(
    /// Who a caller may be in an authorization rule: a SPIFFE id, or one ending in `*`
    /// (`spiffe://weft.local/ns/prod/*`), which matches every id starting with what comes
    /// before the `*`. A lone `*` matches any authenticated caller.
    SpiffeIdPattern,
    "a SPIFFE id, or one ending in '*', like spiffe://weft.local/ns/prod/*",
    check_spiffe_id_pattern
);

impl Name {
    /// The namespace of a resource that names none.
    pub fn default_namespace() -> Name {
        Name("default".to_owned())
    }
}

impl TrustDomain {
    pub fn default_trust_domain() -> TrustDomain {
        TrustDomain("weft.local".to_owned())
    }
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok)
        && bytes.iter().all(|b| edge_ok(b) || *b == b'-')
}

fn check_name(text: &str) -> Result<String, String> {
    if is_dns_label(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid name {text:?}: use at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

pub(crate) fn check_hostname(text: &str) -> Result<String, String> {
    if text.len() <= 253 && text.split('.').all(is_dns_label) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid host name {text:?}: use dot-separated lower-case labels of letters, \
             digits and '-'"
        ))
    }
}

fn check_header_name(text: &str) -> Result<String, String> {
    // RFC 9110 token characters.
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !text.is_empty() && text.len() <= 256 && text.chars().all(token) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid header name {text:?}: use letters, digits and !#$%&'*+-.^_`|~"
        ))
    }
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn check_method(text: &str) -> Result<String, String> {
    let upper = text.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "unknown HTTP method {text:?}; expected one of {}",
            METHODS.join(", ")
        ))
    }
}

/// Checks an absolute request path (match values, redirect targets, health checks).
pub(crate) fn check_path(text: &str) -> Result<String, String> {
    let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || c == '?' || c == '#';
    if !text.starts_with('/') {
        Err(format!("invalid path {text:?}: it must start with '/'"))
    } else if let Some(c) = text.chars().find(|c| bad(*c)) {
        Err(format!("invalid path {text:?}: it must not contain {c:?}"))
    } else {
        Ok(text.to_owned())
    }
}

pub(crate) fn check_regex(text: &str) -> Result<String, String> {
    match regex::Regex::new(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(err) => Err(format!(
            "invalid regular expression {text:?}: {}",
            regex_reason(&err)
        )),
    }
}

/// The one-line reason out of the regex crate's multi-line message (which draws a caret
/// under the pattern, useless once the pattern is quoted inside a YAML error).
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(&text)
        .to_owned()
}

fn check_trust_domain(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
    if !text.is_empty() && text.len() <= 255 && text.chars().all(allowed) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid trust domain {text:?}: use lower-case letters, digits, '.', '-' and '_'"
        ))
    }
}

fn check_spiffe_id(text: &str) -> Result<String, String> {
    let invalid = |why: &str| Err(format!("invalid SPIFFE id {text:?}: {why}"));
    let Some(rest) = text.strip_prefix("spiffe://") else {
        return invalid("it must start with spiffe://");
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if check_trust_domain(domain).is_err() {
        return invalid("the trust domain may hold only lower-case letters, digits, '.', '-', '_'");
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if path.is_empty() || !path.split('/').all(segment_ok) {
        return invalid("the path must be non-empty segments of letters, digits, '.', '-', '_'");
    }
    if text.len() > 2048 {
        return invalid("it is longer than 2048 bytes");
    }
    Ok(text.to_owned())
}

fn check_spiffe_id_pattern(text: &str) -> Result<String, String> {
    let Some(prefix) = text.strip_suffix('*') else {
        return check_spiffe_id(text);
    };
    if prefix.is_empty() {
        return Ok(text.to_owned());
    }
    if prefix.contains('*') {
        return Err(format!(
            "invalid SPIFFE id pattern {text:?}: '*' may only be the last character"
        ));
    }
    // What comes before the `*` must hold the whole trust domain (else
    // `spiffe://weft.local*` would match `spiffe://weft.local.evil/...`) and start a valid
    // id: complete it with one more path character and check that.
    let has_domain = prefix
        .strip_prefix("spiffe://")
        .is_some_and(|rest| rest.contains('/'));
    if !has_domain {
        return Err(format!(
            "invalid SPIFFE id pattern {text:?}: the '*' must come after the trust domain \
             and a '/', like spiffe://weft.local/ns/prod/*"
        ));
    }
    let completed = if prefix.ends_with('/') {
        format!("{prefix}x")
    } else {
        prefix.to_owned()
    };
    check_spiffe_id(&completed)
        .map(|_| text.to_owned())
        .map_err(|why| why.replace(&format!("{completed:?}"), &format!("{text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["a", "web", "web-v2", "0", &"a".repeat(63)] {
            assert!(Name::new(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "-web", "web-", "web_v2", "a.b", &"a".repeat(64)] {
            let err = Name::new(bad).unwrap_err();
            assert!(err.starts_with("invalid name"), "{bad}: {err}");
        }
    }

    /// Names from a small alphabet, compared with the DNS label rule written as a regex.
    #[test]
    fn name_check_agrees_with_the_dns_label_grammar() {
        let grammar = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        let alphabet: Vec<char> = "ab09-_.A ".chars().collect();
        let mut seed = 0x2545_f491_u64;
        for _ in 0..5_000 {
            // xorshift: a cheap, deterministic stream of candidates.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 70) as usize;
            let name: String = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            let expected = grammar.is_match(&name) && name.len() <= 63;
            assert_eq!(Name::new(&name).is_ok(), expected, "{name:?}");
        }
    }

    #[test]
    fn header_names_lower_case_and_methods_upper_case() {
        assert_eq!(HeaderName::new("X-User").unwrap().as_str(), "x-user");
        assert!(HeaderName::new("x user").is_err());
        assert!(HeaderName::new(":authority").is_err());
        assert_eq!(Method::new("get").unwrap().as_str(), "GET");
        assert!(Method::new("FETCH").unwrap_err().contains("GET, HEAD"));
    }

    #[test]
    fn regex_errors_are_one_line() {
        let err = RegexPattern::new("(").unwrap_err();
        assert_eq!(err, "invalid regular expression \"(\": unclosed group");
        assert!(RegexPattern::new("/api/v[0-9]+/.*").is_ok());
    }

    #[test]
    fn paths_hostnames_and_spiffe_ids() {
        assert!(HttpPath::new("/api").is_ok());
        assert!(HttpPath::new("api").is_err());
        assert!(HttpPath::new("/a b").is_err());
        assert!(Hostname::new("example.com").is_ok());
        assert!(Hostname::new("*.example.com").is_err());
        assert!(SpiffeId::new("spiffe://weft.local/ns/default/svc/web").is_ok());
        for bad in [
            "http://weft.local/x",
            "spiffe://weft.local",
            "spiffe://weft.local/",
            "spiffe://Weft/x",
            "spiffe://weft.local/a//b",
            "spiffe://weft.local/../x",
        ] {
            assert!(SpiffeId::new(bad).is_err(), "{bad}");
            assert!(SpiffeIdPattern::new(bad).is_err(), "{bad}");
        }
        for good in [
            "*",
            "spiffe://weft.local/*",
            "spiffe://weft.local/ns/prod/*",
            "spiffe://weft.local/ns/prod/svc/web-*",
            "spiffe://weft.local/ns/prod/svc/web",
        ] {
            assert!(SpiffeIdPattern::new(good).is_ok(), "{good}");
        }
        for bad in [
            "spiffe://*",
            "spiffe://weft.local*",
            "spiffe://weft.local/*/svc",
            "web*",
            "**",
        ] {
            assert!(SpiffeIdPattern::new(bad).is_err(), "{bad}");
        }
    }
}
