//! A retry budget: retries may add at most `ratio` of the live request rate (plus a small
//! floor so low-traffic services can still retry). Without it, retries multiply load on a
//! service that is already failing.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft_model::config::RetryBudget as RetryBudgetConfig;

const SLOTS: usize = 10;

pub struct RetryBudget {
    settings: RetryBudgetConfig,
    ratio: f64,
    floor: f64,
    slot_len: Duration,
    window: Mutex<Window>,
}

/// Requests and retries counted in `SLOTS` time slots covering the window.
struct Window {
    requests: [u32; SLOTS],
    retries: [u32; SLOTS],
    current: usize,
    slot_started: Instant,
}

impl RetryBudget {
    pub fn new(config: &RetryBudgetConfig) -> Self {
        let window = Duration::from_millis(config.window_ms.max(SLOTS as u64));
        Self {
            settings: config.clone(),
            ratio: config.ratio,
            floor: f64::from(config.min_retries_per_second) * window.as_secs_f64(),
            slot_len: window / SLOTS as u32,
            window: Mutex::new(Window {
                requests: [0; SLOTS],
                retries: [0; SLOTS],
                current: 0,
                slot_started: Instant::now(),
            }),
        }
    }

    fn advance(&self, window: &mut Window, now: Instant) {
        let mut steps = 0;
        while now.saturating_duration_since(window.slot_started) >= self.slot_len && steps < SLOTS {
            window.current = (window.current + 1) % SLOTS;
            window.requests[window.current] = 0;
            window.retries[window.current] = 0;
            window.slot_started += self.slot_len;
            steps += 1;
        }
        if steps == SLOTS {
            window.slot_started = now;
        }
    }

    pub fn settings(&self) -> &RetryBudgetConfig {
        &self.settings
    }

    pub fn record_request(&self) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        self.advance(&mut window, Instant::now());
        let slot = window.current;
        window.requests[slot] = window.requests[slot].saturating_add(1);
    }

    /// Takes one retry from the budget if there is room.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    fn try_withdraw_at(&self, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        self.advance(&mut window, now);
        let requests: u32 = window.requests.iter().sum();
        let retries: u32 = window.retries.iter().sum();
        let allowed = self.floor + self.ratio * f64::from(requests);
        if f64::from(retries) + 1.0 <= allowed {
            let slot = window.current;
            window.retries[slot] += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_ratio() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 0.2,
            min_retries_per_second: 0,
            window_ms: 10_000,
        });
        for _ in 0..100 {
            budget.record_request();
        }
        let now = Instant::now();
        let granted = (0..100).filter(|_| budget.try_withdraw_at(now)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_floor_allows_retries_at_low_traffic() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 0.2,
            min_retries_per_second: 1,
            window_ms: 10_000,
        });
        let now = Instant::now();
        assert_eq!((0..100).filter(|_| budget.try_withdraw_at(now)).count(), 10);
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 1.0,
            min_retries_per_second: 0,
            window_ms: 1_000,
        });
        for _ in 0..50 {
            budget.record_request();
        }
        let later = Instant::now() + Duration::from_secs(5);
        assert!(!budget.try_withdraw_at(later));
    }
}
