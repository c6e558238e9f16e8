//! Reading the sidecars' `/metrics` (Prometheus text format) into per-edge traffic: who
//! called whom, how often, how often it failed, and a latency histogram.

use std::collections::BTreeMap;

const REQUESTS: &str = "weft_http_requests_total";
const DURATION_BUCKETS: &str = "weft_http_request_duration_seconds_bucket";

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses a sample line; `None` for comments, blank lines and anything malformed.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = rest.split_once("=\"")?;
            let (value, after_value) = unescape_label_value(after_key)?;
            labels.push((key.trim(), value));
            rest = after_value;
        }
    }
    // A timestamp may follow the value; it is not needed.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Reads a label value up to its closing quote, undoing the format's `\\`, `\"` and `\n`
/// escapes; returns the value and what follows the quote.
fn unescape_label_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

/// Requests from one service to another as the caller's sidecar measured them.
#[derive(Debug, Default, PartialEq)]
pub struct EdgeTraffic {
    pub requests: f64,
    /// Answered with a 5xx status (the sidecar's own errors included).
    pub failures: f64,
    /// `(upper bound in seconds, requests at or below it)`, by bound.
    buckets: Vec<(f64, f64)>,
}

impl EdgeTraffic {
    fn add_bucket(&mut self, bound: f64, count: f64) {
        // Cumulative counts of series with the same bounds add up bound by bound.
        match self.buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, total)) => *total += count,
            None => {
                self.buckets.push((bound, count));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// The `q` quantile of latency in seconds, estimated as Prometheus'
    /// `histogram_quantile` does: linearly within the bucket the rank falls in. A rank past
    /// the last finite bound gives that bound. `None` without observations.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let in_bucket = cumulative - below;
                let fraction = if in_bucket > 0.0 {
                    (rank - below) / in_bucket
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * fraction);
            }
            (lower, below) = (bound, cumulative);
        }
        Some(lower)
    }
}

/// `(source, destination)` labels, e.g. `("frontend.default", "reviews.default")`.
pub type Edge = (String, String);

/// Adds one sidecar's outbound request metrics to `edges`. Each sidecar only reports its own
/// workload's calls, so adding every sidecar's counts never counts a request twice.
pub fn add_outbound(edges: &mut BTreeMap<Edge, EdgeTraffic>, metrics_text: &str) {
    for sample in metrics_text.lines().filter_map(parse_sample) {
        if sample.name != REQUESTS && sample.name != DURATION_BUCKETS {
            continue;
        }
        if sample.label("direction") != Some("outbound") {
            continue;
        }
        let (Some(source), Some(destination)) =
            (sample.label("source"), sample.label("destination"))
        else {
            continue;
        };
        let traffic = edges
            .entry((source.to_owned(), destination.to_owned()))
            .or_default();
        if sample.name == REQUESTS {
            traffic.requests += sample.value;
            let status = sample
                .label("status_code")
                .and_then(|code| code.parse::<u16>().ok());
            if status.is_none_or(|code| code >= 500) {
                traffic.failures += sample.value;
            }
        } else if let Some(bound) = sample.label("le").and_then(|le| le.parse::<f64>().ok()) {
            traffic.add_bucket(bound, sample.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP weft_http_requests_total HTTP requests proxied, by outcome.
# TYPE weft_http_requests_total counter
weft_http_requests_total{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="200"} 97
weft_http_requests_total{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="503"} 3
weft_http_requests_total{direction="inbound",source="loadgen.default",destination="frontend.default",route="",status_code="200"} 100
# TYPE weft_http_request_duration_seconds histogram
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="200",le="0.01"} 50
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="200",le="0.1"} 97
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="200",le="+Inf"} 97
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="503",le="0.01"} 0
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="503",le="0.1"} 3
weft_http_request_duration_seconds_bucket{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="503",le="+Inf"} 3
weft_http_request_duration_seconds_sum{direction="outbound",source="frontend.default",destination="reviews.default",route="reviews-split",status_code="200"} 2.5
# EOF
"#;

    fn edge(source: &str, destination: &str) -> Edge {
        (source.to_owned(), destination.to_owned())
    }

    #[test]
    fn parses_names_labels_values_and_escapes() {
        let sample =
            parse_sample(r#"m_total{a="x",b="say \"hi\"\\\n",c=""} 1.5e3 1700000000"#).unwrap();
        assert_eq!(sample.name, "m_total");
        assert_eq!(
            sample.labels,
            vec![
                ("a", "x".to_owned()),
                ("b", "say \"hi\"\\\n".to_owned()),
                ("c", String::new())
            ]
        );
        assert_eq!(sample.value, 1500.0);
        assert_eq!(parse_sample("up 1").unwrap().value, 1.0);
        assert!(parse_sample("# EOF").is_none());
        assert!(parse_sample(r#"broken{a="unterminated} 1"#).is_none());
        assert!(parse_sample("no_value").is_none());
    }

    #[test]
    fn adds_up_outbound_edges_only() {
        let mut edges = BTreeMap::new();
        add_outbound(&mut edges, SCRAPE);
        assert_eq!(edges.len(), 1, "inbound samples are left out");
        let traffic = &edges[&edge("frontend.default", "reviews.default")];
        assert_eq!(traffic.requests, 100.0);
        assert_eq!(traffic.failures, 3.0);
        assert_eq!(
            traffic.buckets,
            vec![(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)]
        );

        // A second scrape of another sidecar adds its own edges beside.
        add_outbound(
            &mut edges,
            &SCRAPE.replace("frontend.default", "other.default"),
        );
        assert_eq!(edges.len(), 2);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut edges = BTreeMap::new();
        add_outbound(&mut edges, SCRAPE);
        let traffic = &edges[&edge("frontend.default", "reviews.default")];
        // 50 of 100 at or below 10 ms: the median is that bound.
        assert!((traffic.latency_quantile(0.5).unwrap() - 0.01).abs() < 1e-12);
        // Rank 99 is 49 of the 50 requests between 10 ms and 100 ms.
        let p99 = traffic.latency_quantile(0.99).unwrap();
        assert!((p99 - (0.01 + 0.09 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        // Rank 25 is half way through the first bucket, which starts at zero.
        assert!((traffic.latency_quantile(0.25).unwrap() - 0.005).abs() < 1e-12);
    }

    #[test]
    fn quantiles_past_the_last_bound_and_without_data() {
        let mut slow = EdgeTraffic::default();
        slow.add_bucket(f64::INFINITY, 10.0);
        slow.add_bucket(0.5, 2.0);
        assert_eq!(slow.latency_quantile(0.99), Some(0.5));
        assert_eq!(EdgeTraffic::default().latency_quantile(0.5), None);
        let mut idle = EdgeTraffic::default();
        idle.add_bucket(0.5, 0.0);
        idle.add_bucket(f64::INFINITY, 0.0);
        assert_eq!(idle.latency_quantile(0.5), None);
    }
}
