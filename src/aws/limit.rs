//! A client-side token bucket per store, so a cold start of thousands of ExternalSecrets does not
//! trip AWS request quotas. (Throttled calls are also retried by the SDK's standard retry, with
//! exponential backoff and jitter.)

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Calls per second, with bursts.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A bucket refilled at `qps` tokens a second holding at most `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { qps: qps.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Wait for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let (tokens, at) = &mut *state;
                let now = Instant::now();
                *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.qps).min(self.burst);
                *at = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let l = RateLimiter::new(10.0, 5);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_millis(1), "the burst is free");
        for _ in 0..10 {
            l.acquire().await;
        }
        let spent = t0.elapsed();
        assert!(spent >= Duration::from_millis(900) && spent <= Duration::from_millis(1100), "{spent:?}");
    }
}
