//! Rolling windows of the golden metrics proxies report: per series (a reporting Service,
//! a direction, a peer and a route), three rings of time slots: 6 of 10 s (the last
//! minute), 10 of 1 min (the last 10 minutes) and 6 of 10 min (the last hour). A report is
//! added to the current slot of each ring; a slot is reset when its time comes round again.
//! So a series costs the same whatever its traffic: 22 slots.

use std::time::Duration;
use weft_api::v1::TrafficStat;
use weft_api::LATENCY_BUCKETS;

/// The windows `weft stat` and the dashboard ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    OneMinute,
    TenMinutes,
    OneHour,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "1m" => Some(Window::OneMinute),
            "10m" => Some(Window::TenMinutes),
            "1h" => Some(Window::OneHour),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::TenMinutes => "10m",
            Window::OneHour => "1h",
        }
    }

    pub fn duration(self) -> Duration {
        let (slot, slots) = self.ring();
        Duration::from_secs(slot * slots as u64)
    }

    /// Slot width in seconds, and slots.
    fn ring(self) -> (u64, usize) {
        match self {
            Window::OneMinute => (10, 6),
            Window::TenMinutes => (60, 10),
            Window::OneHour => (600, 6),
        }
    }

    const ALL: [Window; 3] = [Window::OneMinute, Window::TenMinutes, Window::OneHour];
}

/// Counts over some time: summed reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub denied: u64,
    pub mtls: u64,
    pub retries: u64,
    pub tcp_opened: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Counts {
    /// Adds `other`, saturating: a report is the proxy's word, and a hostile one must not
    /// wrap a count.
    pub fn add(&mut self, other: &Counts) {
        let add = |sum: &mut u64, count: u64| *sum = sum.saturating_add(count);
        add(&mut self.requests, other.requests);
        add(&mut self.client_errors, other.client_errors);
        add(&mut self.server_errors, other.server_errors);
        add(&mut self.denied, other.denied);
        add(&mut self.mtls, other.mtls);
        add(&mut self.retries, other.retries);
        add(&mut self.tcp_opened, other.tcp_opened);
        add(&mut self.bytes_received, other.bytes_received);
        add(&mut self.bytes_sent, other.bytes_sent);
        for (sum, count) in self.latency.iter_mut().zip(&other.latency) {
            add(sum, *count);
        }
    }

    /// Takes `other` away, saturating: what a longer window held besides a shorter one.
    pub fn sub(&mut self, other: &Counts) {
        let sub = |sum: &mut u64, count: u64| *sum = sum.saturating_sub(count);
        sub(&mut self.requests, other.requests);
        sub(&mut self.client_errors, other.client_errors);
        sub(&mut self.server_errors, other.server_errors);
        sub(&mut self.denied, other.denied);
        sub(&mut self.mtls, other.mtls);
        sub(&mut self.retries, other.retries);
        sub(&mut self.tcp_opened, other.tcp_opened);
        sub(&mut self.bytes_received, other.bytes_received);
        sub(&mut self.bytes_sent, other.bytes_sent);
        for (sum, count) in self.latency.iter_mut().zip(&other.latency) {
            sub(sum, *count);
        }
    }

    pub fn of(stat: &TrafficStat) -> Counts {
        let mut latency = [0; LATENCY_BUCKETS];
        for (bucket, count) in latency.iter_mut().zip(&stat.latency) {
            *bucket = *count;
        }
        Counts {
            requests: stat.requests,
            client_errors: stat.client_errors,
            server_errors: stat.server_errors,
            denied: stat.denied,
            mtls: stat.mtls,
            retries: stat.retries,
            tcp_opened: stat.tcp_opened,
            bytes_received: stat.bytes_received,
            bytes_sent: stat.bytes_sent,
            latency,
        }
    }

    /// The latency under which `quantile` of the requests were answered, in milliseconds,
    /// interpolated within its bucket as Prometheus's `histogram_quantile` does; `None`
    /// without requests. Beyond the last bound, the last bound.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        let total = self
            .latency
            .iter()
            .fold(0u64, |sum, count| sum.saturating_add(*count));
        if total == 0 {
            return None;
        }
        let rank = quantile * total as f64;
        let bounds = weft_api::LATENCY_BUCKETS_US;
        let mut below = 0u64;
        for (at, count) in self.latency.iter().enumerate() {
            if *count > 0 && below.saturating_add(*count) as f64 >= rank {
                let Some(upper) = bounds.get(at) else {
                    return Some(bounds[bounds.len() - 1] as f64 / 1000.0);
                };
                let lower = if at == 0 { 0 } else { bounds[at - 1] };
                let within = (rank - below as f64) / *count as f64;
                let micros = lower as f64 + (upper - lower) as f64 * within;
                return Some(micros / 1000.0);
            }
            below += count;
        }
        Some(bounds[bounds.len() - 1] as f64 / 1000.0)
    }
}

/// Now against before: see [`Rings::recent`].
#[derive(Clone, Debug, Default)]
pub struct Recent {
    pub latest: Counts,
    pub latest_secs: f64,
    pub before: Counts,
    pub before_secs: f64,
    /// When the series was first reported (seconds since the epoch).
    pub since: u64,
}

impl Recent {
    /// Adds another series' numbers to these.
    pub fn add(&mut self, other: &Recent) {
        self.latest.add(&other.latest);
        self.before.add(&other.before);
        self.latest_secs = self.latest_secs.max(other.latest_secs);
        self.before_secs = self.before_secs.max(other.before_secs);
        self.since = if self.since == 0 {
            other.since
        } else {
            self.since.min(other.since)
        };
    }
}

#[derive(Clone, Default)]
struct Slot {
    /// Which slot of time (seconds since the epoch / width) the counts are for.
    number: u64,
    counts: Counts,
}

/// One series' three rings.
pub struct Rings {
    rings: [Vec<Slot>; 3],
    /// When the series was first reported (seconds since the epoch): a window is never
    /// longer than the time there has been data for.
    since: u64,
}

impl Rings {
    pub fn new(now: u64) -> Rings {
        Rings {
            rings: Window::ALL.map(|window| vec![Slot::default(); window.ring().1]),
            since: now,
        }
    }

    /// Adds `counts` at `now` (seconds since the epoch).
    pub fn add(&mut self, counts: &Counts, now: u64) {
        for (ring, window) in self.rings.iter_mut().zip(Window::ALL) {
            let (width, slots) = window.ring();
            let number = now / width;
            let slot = &mut ring[(number % slots as u64) as usize];
            if slot.number != number {
                *slot = Slot {
                    number,
                    counts: Counts::default(),
                };
            }
            slot.counts.add(counts);
        }
    }

    /// The counts of `window` at `now`, and the seconds they cover.
    pub fn sum(&self, window: Window, now: u64) -> (Counts, f64) {
        let at = Window::ALL.iter().position(|w| *w == window).unwrap_or(0);
        let (width, slots) = window.ring();
        let current = now / width;
        let oldest = current.saturating_sub(slots as u64 - 1);
        let mut counts = Counts::default();
        for slot in &self.rings[at] {
            if (oldest..=current).contains(&slot.number) {
                counts.add(&slot.counts);
            }
        }
        // From the start of the oldest slot (or the first report) to now.
        let start = (oldest * width).max(self.since);
        let covered = (now.saturating_sub(start)).max(1) as f64;
        (counts, covered)
    }

    /// The counts of the last 10 to 20 s (this 10-s slot and the one before), and of the 10
    /// minutes before them, each with the seconds it covers: now against its recent
    /// baseline, for `weft diagnose`.
    pub fn recent(&self, now: u64) -> Recent {
        let (width, _) = Window::OneMinute.ring();
        let current = now / width;
        let mut latest = Counts::default();
        for slot in &self.rings[0] {
            if slot.number + 1 >= current && slot.number <= current {
                latest.add(&slot.counts);
            }
        }
        let latest_start = (current.saturating_sub(1) * width).max(self.since);
        let latest_secs = now.saturating_sub(latest_start).max(1) as f64;
        let (mut before, ten_minutes) = self.sum(Window::TenMinutes, now);
        before.sub(&latest);
        Recent {
            latest,
            latest_secs,
            before,
            before_secs: (ten_minutes - latest_secs).max(0.0),
            since: self.since,
        }
    }

    /// Whether nothing was added within the longest window.
    pub fn is_stale(&self, now: u64) -> bool {
        let (counts, _) = self.sum(Window::OneHour, now);
        counts == Counts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(n: u64) -> Counts {
        let mut counts = Counts {
            requests: n,
            ..Counts::default()
        };
        counts.latency[weft_api::latency_bucket(4_000)] = n;
        counts
    }

    #[test]
    fn each_window_sums_what_fell_in_it_and_forgets_the_rest() {
        let start = 1_000_000;
        let mut rings = Rings::new(start);
        rings.add(&requests(5), start);
        rings.add(&requests(7), start + 30);
        // 30 s later: both in every window.
        for window in Window::ALL {
            assert_eq!(rings.sum(window, start + 30).0.requests, 12, "{window:?}");
        }
        // 2 minutes on: gone from the minute, still in the others.
        let later = start + 150;
        assert_eq!(rings.sum(Window::OneMinute, later).0.requests, 0);
        assert_eq!(rings.sum(Window::TenMinutes, later).0.requests, 12);
        // Two hours on: gone everywhere; the slot is reused.
        let much_later = start + 7200;
        assert!(rings.is_stale(much_later));
        rings.add(&requests(1), much_later);
        assert_eq!(rings.sum(Window::OneHour, much_later).0.requests, 1);
    }

    #[test]
    fn recent_traffic_is_set_against_the_minutes_before_it() {
        let start = 1_000_000;
        let mut rings = Rings::new(start);
        rings.add(&requests(100), start);
        rings.add(&requests(3), start + 295);
        let recent = rings.recent(start + 300);
        assert_eq!(recent.latest.requests, 3);
        assert_eq!(recent.before.requests, 100);
        assert!(recent.before_secs > 200.0, "{recent:?}");
    }

    #[test]
    fn a_quantile_falls_in_the_bucket_of_its_requests() {
        let counts = requests(100);
        let p50 = counts.latency_ms(0.5).unwrap();
        assert!((3.0..=5.0).contains(&p50), "{p50}");
        assert_eq!(Counts::default().latency_ms(0.5), None);
    }
}
