//! What the demo reports at the end: each edge's golden metrics, as the sidecars saw them.

use crate::metrics::{self, EdgeTraffic};
use crate::topology::Workload;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Traffic on one edge of the call graph, measured by the caller's sidecar.
#[derive(Debug)]
pub struct EdgeSummary {
    /// `name.namespace` of the caller, e.g. `frontend.default`.
    pub source: String,
    /// `name.namespace` of the service called, e.g. `reviews.default`.
    pub destination: String,
    pub requests: u64,
    /// Share of requests not answered with a 5xx, from 0 to 1; `None` without requests.
    pub success_rate: Option<f64>,
    /// Latency estimates in seconds, from histogram buckets.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug)]
pub struct Summary {
    /// In the order requests flow: from the load generator towards ratings.
    pub edges: Vec<EdgeSummary>,
    /// How long the load generator ran.
    pub traffic_for: Duration,
}

impl Summary {
    /// Builds the summary from the last `/metrics` text of each sidecar.
    pub fn from_scrapes<'a>(
        scrapes: impl IntoIterator<Item = &'a str>,
        traffic_for: Duration,
    ) -> Self {
        let mut traffic = BTreeMap::new();
        for text in scrapes {
            metrics::add_outbound(&mut traffic, text);
        }
        let mut edges: Vec<EdgeSummary> = traffic
            .into_iter()
            .map(|((source, destination), traffic)| edge_summary(source, destination, &traffic))
            .collect();
        edges.sort_by_key(|edge| {
            (
                flow_position(&edge.source),
                edge.source.clone(),
                edge.destination.clone(),
            )
        });
        Summary { edges, traffic_for }
    }
}

fn edge_summary(source: String, destination: String, traffic: &EdgeTraffic) -> EdgeSummary {
    EdgeSummary {
        source,
        destination,
        // Counters are whole numbers; the text format writes them as floats.
        requests: traffic.requests.round() as u64,
        success_rate: (traffic.requests > 0.0).then(|| 1.0 - traffic.failures / traffic.requests),
        p50: traffic.latency_quantile(0.5),
        p99: traffic.latency_quantile(0.99),
    }
}

/// Where a `name.namespace` label's workload sits in the flow of requests; anything else
/// (a service a user added to the mesh file) comes after.
fn flow_position(label: &str) -> usize {
    let name = label.split('.').next().unwrap_or(label);
    Workload::ALL
        .iter()
        .position(|workload| workload.service() == name)
        .unwrap_or(Workload::ALL.len())
}

fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.edges.is_empty() {
            return writeln!(f, "No requests were measured by the sidecars.");
        }
        writeln!(
            f,
            "Traffic over {:.1}s, as each caller's sidecar measured it:\n",
            self.traffic_for.as_secs_f64()
        )?;
        let edge_names: Vec<String> = self
            .edges
            .iter()
            .map(|edge| format!("{} -> {}", edge.source, edge.destination))
            .collect();
        let width = edge_names
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max("EDGE".len());
        writeln!(
            f,
            "  {:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            "EDGE", "REQUESTS", "SUCCESS", "P50", "P99"
        )?;
        for (edge, name) in self.edges.iter().zip(&edge_names) {
            let success = edge
                .success_rate
                .map_or_else(|| "-".to_owned(), |rate| format!("{:.2}%", rate * 100.0));
            writeln!(
                f,
                "  {name:<width$}  {:>8}  {success:>8}  {:>8}  {:>8}",
                edge.requests,
                latency(edge.p50),
                latency(edge.p99),
            )?;
        }
        writeln!(
            f,
            "\nSuccess means not a 5xx; latencies are estimated from histogram buckets and\n\
             include everything downstream of the edge."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(source: &str, destination: &str, status: u16, count: u32) -> String {
        format!(
            "weft_http_requests_total{{direction=\"outbound\",source=\"{source}\",destination=\"{destination}\",route=\"r\",status_code=\"{status}\"}} {count}\n"
        )
    }

    #[test]
    fn edges_follow_the_flow_of_requests() {
        let ratings = requests("reviews-v1.default", "ratings.default", 200, 5);
        let frontend = requests("loadgen.default", "frontend.default", 200, 9)
            + &requests("loadgen.default", "frontend.default", 502, 1);
        let extra = requests("added.default", "elsewhere.default", 200, 1);
        let summary = Summary::from_scrapes(
            [ratings.as_str(), &extra, &frontend],
            Duration::from_secs(5),
        );
        let order: Vec<&str> = summary.edges.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(
            order,
            ["loadgen.default", "reviews-v1.default", "added.default"]
        );
        assert_eq!(summary.edges[0].requests, 10);
        assert_eq!(summary.edges[0].success_rate, Some(0.9));
        assert_eq!(summary.edges[0].p50, None, "no histogram in this scrape");
    }

    #[test]
    fn renders_a_table() {
        let summary = Summary {
            edges: vec![EdgeSummary {
                source: "loadgen.default".into(),
                destination: "frontend.default".into(),
                requests: 100,
                success_rate: Some(0.995),
                p50: Some(0.0042),
                p99: Some(1.5),
            }],
            traffic_for: Duration::from_secs(5),
        };
        let text = summary.to_string();
        let row = text
            .lines()
            .find(|l| l.contains("loadgen.default -> frontend.default"))
            .unwrap();
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns[3..], ["100", "99.50%", "4.2ms", "1.50s"]);
        assert!(text.starts_with("Traffic over 5.0s"));
    }
}
