//! Which Service a `Host` or `:authority` names, as a calling proxy resolves it.

/// The Service named by a host: a bare name is in the caller's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTarget<'a> {
    /// `reviews`: in the caller's own namespace.
    Local(&'a str),
    /// `reviews.shop` (also written `reviews.shop.svc` or `reviews.shop.svc.cluster.local`,
    /// the forms apps already use in Kubernetes): `name.namespace`.
    Qualified(&'a str),
}

/// The Service `authority` names (port ignored). Case is kept: callers retry lower-case.
///
/// Runs on every request a calling proxy routes by host: it looks at bytes, as `str`'s
/// pattern searches cost more than the lookup they serve on names this short.
pub fn host_target(authority: &str) -> HostTarget<'_> {
    let host = strip_port(authority);
    let name = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    if name.as_bytes().contains(&b'.') {
        HostTarget::Qualified(name)
    } else {
        HostTarget::Local(name)
    }
}

/// `authority` without its `:port` (and without the brackets of an IPv6 literal).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    let bytes = authority.as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        // The colon is ASCII, so the slice ends on a character boundary.
        Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => &authority[..colon],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_apps_use_name_one_service() {
        assert_eq!(host_target("reviews"), HostTarget::Local("reviews"));
        assert_eq!(host_target("reviews:9080"), HostTarget::Local("reviews"));
        for qualified in [
            "reviews.shop",
            "reviews.shop:80",
            "reviews.shop.svc",
            "reviews.shop.svc.cluster.local:9080",
        ] {
            assert_eq!(
                host_target(qualified),
                HostTarget::Qualified("reviews.shop")
            );
        }
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
