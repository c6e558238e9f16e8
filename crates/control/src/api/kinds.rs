//! Kind names as users type them: any case, singular or plural (`httproutes`).

use super::ApiError;
use weft_model::resources::Kind;

/// Short names, as kubectl and istioctl users type them.
const SHORT_NAMES: [(&str, Kind); 5] = [
    ("svc", Kind::Service),
    ("hr", Kind::HttpRoute),
    ("gr", Kind::GrpcRoute),
    ("tp", Kind::TrafficPolicy),
    ("ap", Kind::AuthorizationPolicy),
];

pub(super) fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    let wanted = text.to_ascii_lowercase();
    if let Some((_, kind)) = SHORT_NAMES.iter().find(|(short, _)| *short == wanted) {
        return Ok(*kind);
    }
    Kind::ALL
        .into_iter()
        .find(|kind| {
            let singular = kind.as_str().to_ascii_lowercase();
            wanted == singular || wanted == plural(&singular)
        })
        .ok_or_else(|| {
            let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            let short: Vec<_> = SHORT_NAMES.iter().map(|(s, _)| *s).collect();
            ApiError::bad_request(format!(
                "unknown kind {text:?}; use one of {} (any case, singular or plural), or a \
                 short name: {}",
                known.join(", "),
                short.join(", ")
            ))
        })
}

fn plural(singular: &str) -> String {
    if let Some(stem) = singular.strip_suffix('y') {
        format!("{stem}ies")
    } else if singular.ends_with("sh") || singular.ends_with('s') {
        format!("{singular}es")
    } else {
        format!("{singular}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_in_any_case_and_number() {
        for (text, kind) in [
            ("HTTPRoute", Kind::HttpRoute),
            ("httproutes", Kind::HttpRoute),
            ("GRPCROUTE", Kind::GrpcRoute),
            ("mesh", Kind::Mesh),
            ("meshes", Kind::Mesh),
            ("services", Kind::Service),
            ("trafficpolicies", Kind::TrafficPolicy),
            ("AuthorizationPolicies", Kind::AuthorizationPolicy),
            ("svc", Kind::Service),
            ("SVC", Kind::Service),
            ("ap", Kind::AuthorizationPolicy),
        ] {
            assert_eq!(parse_kind(text).unwrap(), kind, "{text}");
        }
        assert!(parse_kind("virtualservice").is_err());
    }
}
