//! The formats every `/metrics` Weft serves (proxies' admin port, the control plane) speaks:
//! OpenMetrics 1.0 when the scraper asks for it in `Accept` (Prometheus does, first), else
//! the Prometheus text format 0.0.4, which every other tool reads. Metrics are encoded once,
//! as OpenMetrics, and rewritten to 0.0.4 when that is what is wanted.

/// What a `/metrics` answer is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    PrometheusText,
}

impl Exposition {
    /// From the request's `Accept` header: OpenMetrics only when asked for by name.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => {
                Exposition::OpenMetrics
            }
            _ => Exposition::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics`, as this format writes it.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::PrometheusText => to_prometheus_text(&openmetrics),
        }
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: no `# EOF` or `# UNIT`; a counter family is
/// named by its `_total` samples; `info` becomes a gauge of its `_info` samples, and
/// `unknown` is `untyped`.
fn to_prometheus_text(openmetrics: &str) -> String {
    // Families whose samples carry a suffix the 0.0.4 metadata must name.
    let mut renamed: Vec<(&str, &'static str, &'static str)> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                match kind {
                    "counter" => renamed.push((name, "_total", "counter")),
                    "info" => renamed.push((name, "_info", "gauge")),
                    "unknown" => renamed.push((name, "", "untyped")),
                    _ => {}
                }
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        if let Some((prefix, rest)) = metadata {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((_, suffix, kind)) = renamed.iter().find(|(n, _, _)| *n == name) {
                let tail = if prefix == "# TYPE " { *kind } else { tail };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP weft_requests Requests.\n\
# TYPE weft_requests counter\n\
weft_requests_total{code=\"200\"} 3\n\
# HELP weft_open Open now.\n\
# TYPE weft_open gauge\n\
# UNIT weft_open connections\n\
weft_open 1\n\
# HELP weft_build Build.\n\
# TYPE weft_build info\n\
weft_build_info{version=\"1\"} 1\n\
# EOF\n";

    #[test]
    fn prometheus_text_names_counters_by_their_samples_and_has_no_eof() {
        let text = Exposition::PrometheusText.render(OPENMETRICS.to_owned());
        assert_eq!(
            text,
            "# HELP weft_requests_total Requests.\n\
# TYPE weft_requests_total counter\n\
weft_requests_total{code=\"200\"} 3\n\
# HELP weft_open Open now.\n\
# TYPE weft_open gauge\n\
weft_open 1\n\
# HELP weft_build_info Build.\n\
# TYPE weft_build_info gauge\n\
weft_build_info{version=\"1\"} 1\n"
        );
        assert_eq!(
            Exposition::OpenMetrics.render(OPENMETRICS.to_owned()),
            OPENMETRICS
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::negotiate(Some("*/*")),
            Exposition::PrometheusText
        );
        assert_eq!(Exposition::negotiate(None), Exposition::PrometheusText);
    }
}
