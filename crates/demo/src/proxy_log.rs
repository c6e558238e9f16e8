//! Reading a sidecar's log. Sidecars run with `--log-json`, so a line is one JSON object
//! as tracing-subscriber writes it, e.g.
//! `{"level":"INFO","fields":{"message":"listening","listener":"inbound","addr":"127.0.0.1:40123"},...}`;
//! JSON rather than text because text logs may carry colour codes between key and value.

use std::fmt;
use std::net::SocketAddr;

pub struct LogLine {
    level: String,
    message: String,
    /// The structured fields other than the message, by name.
    fields: Vec<(String, String)>,
}

/// `None` for a line that is not a JSON log record (a panic message, say).
pub fn parse(line: &str) -> Option<LogLine> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    let level = record.get("level")?.as_str()?.to_owned();
    let mut message = String::new();
    let mut fields = Vec::new();
    for (name, value) in record.get("fields")?.as_object()? {
        let value = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if name == "message" {
            message = value;
        } else {
            fields.push((name.clone(), value));
        }
    }
    Some(LogLine {
        level,
        message,
        fields,
    })
}

impl LogLine {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Which listener is bound where, from the proxy's `listening` lines.
    pub fn listening(&self) -> Option<(&str, SocketAddr)> {
        if self.message != "listening" {
            return None;
        }
        Some((self.field("listener")?, self.field("addr")?.parse().ok()?))
    }

    /// Worth showing the user while the demo runs: problems, and the sidecar picking up
    /// an edited mesh file.
    pub fn is_notable(&self) -> bool {
        matches!(self.level.as_str(), "WARN" | "ERROR") || self.message == "configuration loaded"
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.level != "INFO" {
            write!(f, "{} ", self.level)?;
        }
        f.write_str(&self.message)?;
        for (name, value) in &self.fields {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listener_addresses() {
        let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"listening","listener":"inbound","addr":"127.0.0.1:40123"},"target":"weft_proxy"}"#;
        let parsed = parse(line).unwrap();
        assert_eq!(
            parsed.listening(),
            Some(("inbound", "127.0.0.1:40123".parse().unwrap()))
        );
        assert!(!parsed.is_notable());
        assert_eq!(
            parsed.to_string(),
            "listening addr=127.0.0.1:40123 listener=inbound"
        );
    }

    #[test]
    fn shows_problems_with_their_level() {
        let line = r#"{"level":"ERROR","fields":{"message":"configuration rejected","error":"mesh.yaml:3: bad weight","generation":2}}"#;
        let parsed = parse(line).unwrap();
        assert!(parsed.listening().is_none());
        assert!(parsed.is_notable());
        assert_eq!(
            parsed.to_string(),
            "ERROR configuration rejected error=mesh.yaml:3: bad weight generation=2"
        );
    }

    #[test]
    fn plain_text_is_not_a_record() {
        assert!(parse("thread 'main' panicked at src/main.rs:1:1").is_none());
        assert!(parse("{\"no\":\"level\"}").is_none());
    }
}
