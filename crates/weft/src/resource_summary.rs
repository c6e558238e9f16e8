//! What `weft get -o wide` shows of a resource's spec on one line: enough to tell resources
//! of a kind apart without opening each (ports, parents and backends with their weights,
//! targets, actions), read from the stored document.

use serde_json::Value;

/// One line about `item`'s spec, by its kind; empty for a kind with nothing to say.
pub fn summary(item: &Value) -> String {
    let spec = &item["spec"];
    let parts: Vec<String> = match item["kind"].as_str().unwrap_or_default() {
        "Service" => service(spec),
        "HTTPRoute" | "GRPCRoute" => route(spec),
        "TrafficPolicy" => vec![target(spec)],
        "AuthorizationPolicy" => policy(spec),
        "Mesh" => mesh(spec),
        _ => Vec::new(),
    };
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn service(spec: &Value) -> Vec<String> {
    let ports: Vec<String> = list(&spec["ports"])
        .iter()
        .map(|port| {
            let protocol = text(&port["protocol"]);
            match protocol.as_str() {
                "" => text(&port["port"]),
                _ => format!("{}/{protocol}", text(&port["port"])),
            }
        })
        .collect();
    let mut parts = vec![format!("ports {}", ports.join(","))];
    if let Some(calls) = spec["calls"].as_array() {
        let names: Vec<String> = calls.iter().map(text).collect();
        parts.push(format!("calls [{}]", names.join(",")));
    }
    parts
}

fn route(spec: &Value) -> Vec<String> {
    let parents: Vec<String> = list(&spec["parentRefs"])
        .iter()
        .map(|parent| text(&parent["name"]))
        .collect();
    let rules = list(&spec["rules"]);
    let mut backends: Vec<String> = Vec::new();
    for rule in rules {
        for backend in list(&rule["backendRefs"]) {
            let name = text(&backend["name"]);
            let named = match backend.get("weight") {
                Some(weight) => format!("{name}({})", text(weight)),
                None => name,
            };
            if !backends.contains(&named) {
                backends.push(named);
            }
        }
    }
    vec![
        format!("parents {}", parents.join(",")),
        format!("{} rules", rules.len()),
        format!("backends {}", backends.join(",")),
    ]
}

fn target(spec: &Value) -> String {
    let target = &spec["targetRef"];
    let kind = target["kind"].as_str().unwrap_or("Service");
    let mut named = format!("target {kind}/{}", text(&target["name"]));
    if let Some(port) = target.get("port") {
        named.push_str(&format!(":{}", text(port)));
    }
    named
}

fn policy(spec: &Value) -> Vec<String> {
    let action = spec["action"].as_str().unwrap_or("ALLOW").to_owned();
    let mut parts = vec![
        target(spec),
        action,
        format!("{} rules", list(&spec["rules"]).len()),
    ];
    if spec["mode"] == "dry-run" {
        parts.push("dry-run".to_owned());
    }
    parts
}

fn mesh(spec: &Value) -> Vec<String> {
    vec![
        text(&spec["trustDomain"]),
        format!("mtls {}", spec["mtls"]["mode"].as_str().unwrap_or("strict")),
        format!(
            "default {}",
            spec["defaultAuthorization"].as_str().unwrap_or("allow")
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_says_what_tells_it_apart() {
        let cases = [
            (
                json!({"kind": "Service", "spec": {"ports": [{"port": 80, "protocol": "http"}, {"port": 9000}], "calls": ["ratings"]}}),
                "ports 80/http,9000; calls [ratings]",
            ),
            (
                json!({"kind": "HTTPRoute", "spec": {"parentRefs": [{"name": "reviews"}], "rules": [
                    {"backendRefs": [{"name": "reviews-v1", "weight": 90}, {"name": "reviews-v2", "weight": 10}]},
                    {"backendRefs": [{"name": "reviews-v1", "weight": 90}]}]}}),
                "parents reviews; 2 rules; backends reviews-v1(90),reviews-v2(10)",
            ),
            (
                json!({"kind": "AuthorizationPolicy", "spec": {"targetRef": {"kind": "Service", "name": "api", "port": 8080}, "action": "DENY", "mode": "dry-run", "rules": [{}]}}),
                "target Service/api:8080; DENY; 1 rules; dry-run",
            ),
            (
                json!({"kind": "Mesh", "spec": {"mtls": {"mode": "permissive"}}}),
                "mtls permissive; default allow",
            ),
        ];
        for (item, expected) in cases {
            assert_eq!(summary(&item), expected);
        }
    }
}
