//! Checked numbers: ports, weights, percentages, ratios, rates, status codes, gRPC codes,
//! socket addresses.
//!
//! Each is checked where it is read, so a bad one is reported with its line and field.

use super::checked::{checked, deserialize_with, FromFloat, FromInt, FromText};
use crate::address::Address;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// A TCP port, 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromInt for Port {
    const EXPECTING: &'static str = "a port number (1-65535)";

    fn from_int(value: u64) -> Result<Self, String> {
        match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(format!("invalid port {value}: use 1-65535")),
        }
    }
}

/// A backend's share of traffic, relative to the others in its rule (Gateway API:
/// 0-1,000,000; 0 takes no traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u32);

impl Weight {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Weight(1)
    }
}

impl FromInt for Weight {
    const EXPECTING: &'static str = "a weight (0-1000000)";

    fn from_int(value: u64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(weight) if weight <= 1_000_000 => Ok(Weight(weight)),
            _ => Err(format!("invalid weight {value}: use 0-1000000")),
        }
    }
}

/// A share of requests, 0-100 (fractions allowed: `0.5`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    pub const ALL: Percent = Percent(100.0);
    pub const ONE: Percent = Percent(1.0);

    pub(crate) fn of_fraction(numerator: u32, denominator: u32) -> Percent {
        Percent(f64::from(numerator) * 100.0 / f64::from(denominator))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromFloat for Percent {
    const EXPECTING: &'static str = "a percentage (0-100)";

    fn from_float(value: f64) -> Result<Self, String> {
        if (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(format!("invalid percentage {value}: use 0-100"))
        }
    }
}

/// A whole-number share, 0-100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WholePercent(u32);

impl WholePercent {
    pub(crate) const fn new_unchecked(value: u32) -> WholePercent {
        WholePercent(value)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromInt for WholePercent {
    const EXPECTING: &'static str = "a whole percentage (0-100)";

    fn from_int(value: u64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(percent) if percent <= 100 => Ok(WholePercent(percent)),
            _ => Err(format!("invalid percentage {value}: use 0-100")),
        }
    }
}

/// A ratio, 0-1 (`0.2` = 20 %).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Ratio {
    pub(crate) const fn new_unchecked(value: f64) -> Ratio {
        Ratio(value)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromFloat for Ratio {
    const EXPECTING: &'static str = "a ratio (0-1)";

    fn from_float(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(Ratio(value))
        } else {
            Err(format!("invalid ratio {value}: use 0-1 (0.2 means 20%)"))
        }
    }
}

/// Requests per second, above zero.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct RequestRate(f64);

impl RequestRate {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromFloat for RequestRate {
    const EXPECTING: &'static str = "a number of requests per second";

    fn from_float(value: f64) -> Result<Self, String> {
        if value > 0.0 && value <= 1e9 {
            Ok(RequestRate(value))
        } else {
            Err(format!("invalid rate {value}: use a number above 0"))
        }
    }
}

/// An HTTP status code within `MIN..=MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpStatus<const MIN: u16, const MAX: u16>(u16);

/// A status a fault injection answers with.
pub type AbortStatus = HttpStatus<200, 599>;
/// A status worth retrying (the Gateway API allows 400-599).
pub type RetryStatus = HttpStatus<400, 599>;

impl<const MIN: u16, const MAX: u16> HttpStatus<MIN, MAX> {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl<const MIN: u16, const MAX: u16> FromInt for HttpStatus<MIN, MAX> {
    const EXPECTING: &'static str = "an HTTP status code";

    fn from_int(value: u64) -> Result<Self, String> {
        match u16::try_from(value) {
            Ok(code) if (MIN..=MAX).contains(&code) => Ok(HttpStatus(code)),
            _ => Err(format!("invalid status code {value}: use {MIN}-{MAX}")),
        }
    }
}

impl<'de, const MIN: u16, const MAX: u16> Deserialize<'de> for HttpStatus<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked::int(d)
    }
}

/// A redirect's status: 301, 302, 303, 307 or 308 (the Gateway API's set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RedirectStatus(u16);

impl RedirectStatus {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for RedirectStatus {
    fn default() -> Self {
        RedirectStatus(302)
    }
}

impl FromInt for RedirectStatus {
    const EXPECTING: &'static str = "a redirect status code (301, 302, 303, 307 or 308)";

    fn from_int(value: u64) -> Result<Self, String> {
        match value {
            301 | 302 | 303 | 307 | 308 => Ok(RedirectStatus(value as u16)),
            _ => Err(format!(
                "invalid redirect status code {value}: use 301, 302, 303, 307 or 308"
            )),
        }
    }
}

/// Where a static endpoint listens: an IP address and port (`127.0.0.1:7143`,
/// `[::1]:7143`) or a host name and port the proxy resolves (`api.example.com:443`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointAddress(Address);

impl EndpointAddress {
    pub fn get(&self) -> &Address {
        &self.0
    }
}

impl FromText for EndpointAddress {
    const EXPECTING: &'static str =
        "an IP address or host name and a port, like 127.0.0.1:7143 or api.example.com:443";

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map(EndpointAddress)
    }
}

deserialize_with!(int: Port, Weight, WholePercent, RedirectStatus);
deserialize_with!(float: Percent, Ratio, RequestRate);
deserialize_with!(text: EndpointAddress);

/// A gRPC status code, written by name (`UNAVAILABLE`) or number (`14`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrpcCode(u32);

/// gRPC status names, indexed by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl GrpcCode {
    pub fn get(self) -> u32 {
        self.0
    }

    pub fn from_name(name: &str) -> Result<GrpcCode, String> {
        let upper = name.to_ascii_uppercase().replace('-', "_");
        match GRPC_CODES.iter().position(|known| *known == upper) {
            Some(code) => Ok(GrpcCode(code as u32)),
            None => Err(format!(
                "unknown gRPC status {name:?}; expected a number 0-16 or one of {}",
                GRPC_CODES.join(", ")
            )),
        }
    }

    pub fn from_number(code: u64) -> Result<GrpcCode, String> {
        match u32::try_from(code) {
            Ok(code) if (code as usize) < GRPC_CODES.len() => Ok(GrpcCode(code)),
            _ => Err(format!("unknown gRPC status {code}: use 0-16")),
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(GRPC_CODES[self.0 as usize])
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl Visitor<'_> for CodeVisitor {
            type Value = GrpcCode;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a gRPC status name or number")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<GrpcCode, E> {
                checked(GrpcCode::from_name(name))
            }

            fn visit_u64<E: de::Error>(self, code: u64) -> Result<GrpcCode, E> {
                checked(GrpcCode::from_number(code))
            }
        }

        d.deserialize_any(CodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(Port::from_int(0).unwrap_err().contains("1-65535"));
        assert!(Port::from_int(65_536).is_err());
        assert_eq!(Port::from_int(65_535).unwrap().get(), 65_535);
        assert!(Weight::from_int(1_000_001).is_err());
        assert_eq!(Weight::from_int(0).unwrap().get(), 0);
        assert!(Percent::from_float(100.5).unwrap_err().contains("0-100"));
        assert!(Percent::from_float(f64::NAN).is_err());
        assert!(Ratio::from_float(1.5).is_err());
        assert!(RequestRate::from_float(0.0).is_err());
        assert!(RetryStatus::from_int(200).unwrap_err().contains("400-599"));
        assert!(RedirectStatus::from_int(304).is_err());
        assert_eq!(RedirectStatus::from_int(308).unwrap().get(), 308);
        assert_eq!(Percent::of_fraction(1, 8).get(), 12.5);
    }

    #[test]
    fn grpc_codes_by_name_or_number() {
        assert_eq!(GrpcCode::from_name("UNAVAILABLE").unwrap().get(), 14);
        assert_eq!(GrpcCode::from_name("resource-exhausted").unwrap().get(), 8);
        assert!(GrpcCode::from_name("BROKEN")
            .unwrap_err()
            .contains("UNAVAILABLE"));
        assert_eq!(
            GrpcCode::from_number(4).unwrap().to_string(),
            "DEADLINE_EXCEEDED"
        );
        assert!(GrpcCode::from_number(17).is_err());
    }

    #[test]
    fn endpoint_addresses() {
        assert!(EndpointAddress::from_text("127.0.0.1:7143").is_ok());
        assert!(EndpointAddress::from_text("[::1]:80").is_ok());
        assert!(EndpointAddress::from_text("127.0.0.1:0").is_err());
        let named = EndpointAddress::from_text("Api.Example.com:443").unwrap();
        assert_eq!(named.get().to_string(), "api.example.com:443");
        assert!(EndpointAddress::from_text("api.example.com")
            .unwrap_err()
            .contains("host name and port"));
    }
}
