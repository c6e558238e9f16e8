//! The Gateway API `CORS` filter: which browser origins may call a route, with which
//! methods and headers, and what the answers expose to their scripts.

use super::checked::{self, deserialize_with, FromMap, FromText};
use super::names::{HeaderName, Method};
use serde::de::MapAccess;
use serde::Deserialize;

/// Preflight answers may be cached this long when `maxAge` is not set (the Gateway API
/// default).
pub const DEFAULT_MAX_AGE_SECONDS: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsSpec {
    pub allow_origins: Vec<CorsOrigin>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<Wildcard<Method>>,
    pub allow_headers: Vec<Wildcard<HeaderName>>,
    pub expose_headers: Vec<Wildcard<HeaderName>>,
    pub max_age_seconds: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCors {
    #[serde(default)]
    allow_origins: Vec<CorsOrigin>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    allow_methods: Vec<Wildcard<Method>>,
    #[serde(default)]
    allow_headers: Vec<Wildcard<HeaderName>>,
    #[serde(default)]
    expose_headers: Vec<Wildcard<HeaderName>>,
    #[serde(default)]
    max_age: Option<u32>,
}

impl FromMap for CorsSpec {
    const EXPECTING: &'static str =
        "a CORS filter like {allowOrigins: [\"https://app.example.com\"], allowMethods: [GET]}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawCors = checked::fields(map)?;
        if raw.allow_origins.is_empty() {
            return checked::checked(Err(
                "allowOrigins: list the origins that may call (\"https://app.example.com\", \
                 \"https://*.example.com\", or \"*\"); without any the filter allows nothing"
                    .to_owned(),
            ));
        }
        if raw.max_age == Some(0) {
            return checked::checked(Err(
                "maxAge: 0 would make browsers ask before every request; leave it out for the \
                 default of 5 seconds"
                    .to_owned(),
            ));
        }
        Ok(CorsSpec {
            allow_origins: raw.allow_origins,
            allow_credentials: raw.allow_credentials,
            allow_methods: raw.allow_methods,
            allow_headers: raw.allow_headers,
            expose_headers: raw.expose_headers,
            max_age_seconds: raw.max_age.unwrap_or(DEFAULT_MAX_AGE_SECONDS),
        })
    }
}

/// A list entry that may be `*` (everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wildcard<T> {
    Any,
    Only(T),
}

impl<T: FromText> FromText for Wildcard<T> {
    const EXPECTING: &'static str = T::EXPECTING;

    fn from_text(text: &str) -> Result<Self, String> {
        if text == "*" {
            Ok(Wildcard::Any)
        } else {
            T::from_text(text).map(Wildcard::Only)
        }
    }
}

impl<'de, T: FromText> Deserialize<'de> for Wildcard<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::text(d)
    }
}

/// An allowed origin: `*`, or `scheme://host[:port]` where the host may start with `*`
/// (any number of labels to its left). Kept normalized: lower case, without the scheme's
/// default port, so it compares with a request's `Origin` normalized the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsOrigin(String);

impl CorsOrigin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for CorsOrigin {
    const EXPECTING: &'static str = "an origin like https://app.example.com, or \"*\"";

    fn from_text(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(CorsOrigin(text.to_owned()));
        }
        let invalid = |why: &str| {
            Err(format!(
                "invalid origin {text:?}: {why}; write scheme://host[:port] \
                 (https://app.example.com, https://*.example.com) or \"*\""
            ))
        };
        let Some(origin) = parse_origin(text) else {
            return invalid("it is not scheme://host[:port] with scheme http or https");
        };
        let host = origin.host.strip_prefix('*').unwrap_or(&origin.host);
        let host = host.strip_prefix('.').unwrap_or(host);
        let labels_ok = (host.is_empty() && origin.host == "*")
            || host
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(is_host_byte));
        if !labels_ok {
            return invalid("the host must be DNS labels, with `*` only at its start");
        }
        Ok(CorsOrigin(origin.to_string()))
    }
}

deserialize_with!(text: CorsOrigin);

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// An origin taken apart: lower-case scheme and host, the port made explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
}

/// Reads `scheme://host[:port]` (what browsers send in `Origin`, and what `allowOrigins`
/// lists). `None` for anything else, `null` included.
pub fn parse_origin(text: &str) -> Option<Origin> {
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let (scheme, default_port) = match scheme {
        "http" => ("http", 80),
        "https" => ("https", 443),
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok().filter(|p| *p != 0)?),
        None => (rest, default_port),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| is_host_byte(b) || b == b'.' || b == b'*');
    host_ok.then(|| Origin {
        scheme,
        host: host.to_owned(),
        port,
    })
}

impl std::fmt::Display for Origin {
    /// `scheme://host`, with `:port` only when it is not the scheme's default.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        write!(f, "{}://{}", self.scheme, self.host)?;
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

deserialize_with!(map: CorsSpec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_normalized() {
        let origin = |text: &str| CorsOrigin::from_text(text).map(|o| o.0);
        assert_eq!(
            origin("https://App.Example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(origin("http://a.b:8080").unwrap(), "http://a.b:8080");
        assert_eq!(origin("https://*.bar.com").unwrap(), "https://*.bar.com");
        assert_eq!(origin("https://*").unwrap(), "https://*");
        assert_eq!(origin("*").unwrap(), "*");
        for bad in [
            "null",
            "app.example.com",
            "ftp://a.com",
            "https://a.com/path",
            "https://a.*.com",
            "https://a..com",
            "https://a.com:0",
            "https://a.com:99999",
            "https://",
        ] {
            assert!(origin(bad).is_err(), "{bad} was accepted");
        }
    }
}
