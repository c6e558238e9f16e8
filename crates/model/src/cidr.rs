//! Address ranges: `10.0.0.0/8`, `fd00::/8`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The `n`th address after the range's first (`n` = 1 is the first usable host), if
    /// the range has it.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        match self.address {
            IpAddr::V4(base) => {
                let size = 1u128 << (32 - u32::from(self.prefix));
                let start = u32::from(base)
                    & (u32::MAX
                        .checked_shl(32 - u32::from(self.prefix))
                        .unwrap_or(0));
                (n < size).then(|| IpAddr::V4((start + n as u32).into()))
            }
            IpAddr::V6(base) => {
                let size = 1u128
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(u128::MAX);
                let start = u128::from(base)
                    & (u128::MAX
                        .checked_shl(128 - u32::from(self.prefix))
                        .unwrap_or(0));
                (n < size).then(|| IpAddr::V6((start + n).into()))
            }
        }
    }

    /// How many addresses the range has, at most `u128::MAX`.
    pub fn size(&self) -> u128 {
        let bits = if self.address.is_ipv4() { 32 } else { 128 };
        1u128
            .checked_shl(bits - u32::from(self.prefix))
            .unwrap_or(u128::MAX)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address range such as 10.0.0.0/8"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(prefix) if prefix <= max => prefix,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_printed_and_counted() {
        let range: Cidr = "240.240.0.0/16".parse().unwrap();
        assert_eq!(range.to_string(), "240.240.0.0/16");
        assert_eq!(range.nth(1), Some("240.240.0.1".parse().unwrap()));
        assert_eq!(range.nth(65535), Some("240.240.255.255".parse().unwrap()));
        assert_eq!(range.nth(65536), None);
        assert_eq!(range.size(), 65536);
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        let v6: Cidr = "fd00:10::/112".parse().unwrap();
        assert_eq!(v6.nth(2), Some("fd00:10::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }
}
