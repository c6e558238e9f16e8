//! Kind names as users type them: any case, singular or plural (`httproutes`).

use super::ApiError;
use weft_model::resources::Kind;

pub(super) fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    let wanted = text.to_ascii_lowercase();
    Kind::ALL
        .into_iter()
        .find(|kind| {
            let singular = kind.as_str().to_ascii_lowercase();
            wanted == singular || wanted == plural(&singular)
        })
        .ok_or_else(|| {
            let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown kind {text:?}; use one of {} (any case, singular or plural)",
                known.join(", ")
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
        ] {
            assert_eq!(parse_kind(text).unwrap(), kind, "{text}");
        }
        assert!(parse_kind("virtualservice").is_err());
    }
}
