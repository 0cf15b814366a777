//! A per-receiver rate limit: POSTs are spaced at least `1 / rate` apart
//! (no burst). Each caller reserves the next free slot under a lock and
//! sleeps until it, so waiting callers are served in order.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct RateLimit {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn per_second(rate: f64) -> Self {
        RateLimit {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_interval() {
        let limit = RateLimit::per_second(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            limit.acquire().await;
        }
        // Slots at 0, 100, 200, 300, 400 ms (paused clock: exact).
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
