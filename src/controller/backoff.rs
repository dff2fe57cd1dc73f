//! Per-object backoff after transient failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;
use crate::lock;
use crate::status::Next;

/// Consecutive transient failures per object (`namespace/name`, or a store's id).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The wait after the n-th consecutive transient failure of `key`: 2 s, 4 s, ... capped at
    /// 5 min, with up to 20% jitter.
    pub fn next(&self, key: &str) -> Duration {
        let n = {
            let mut f = lock(&self.failures);
            let n = f.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let base = Duration::from_secs(2u64.saturating_pow(n.min(9))).min(Duration::from_secs(300));
        base + base.mul_f64(jitter_fraction(key, n) * 0.2)
    }

    /// How a reconcile of `key` ended, for [`crate::status::next_action`], counting its
    /// consecutive transient failures: a success or a permanent failure starts the count again.
    pub fn settle(&self, key: &str, failed: Option<&Error>, restart_in: Option<Duration>) -> Next {
        match failed {
            Some(e) if e.is_transient() => Next::Transient { backoff: self.next(key) },
            Some(_) => {
                self.reset(key);
                Next::Permanent
            }
            None => {
                self.reset(key);
                Next::Synced { restart_in }
            }
        }
    }

    /// Forget the failures of `key` (it succeeded, failed permanently, or is gone).
    pub fn reset(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

/// A fraction in [0, 1) that differs between keys, attempts and processes (the hasher is seeded
/// randomly), so that objects failing together do not retry together.
pub fn jitter_fraction(key: &str, n: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.as_bytes());
    h.write_u32(n);
    (h.finish() % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_and_starts_over() {
        let b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next("x")).collect();
        assert!(waits[0] >= Duration::from_secs(2) && waits[0] < Duration::from_millis(2500));
        assert!(waits[1] >= Duration::from_secs(4));
        assert!(waits[9] >= Duration::from_secs(300) && waits[9] <= Duration::from_secs(360));
        b.reset("x");
        assert!(b.next("x") < Duration::from_millis(2500));
    }

    #[test]
    fn settling_counts_transient_failures_only() {
        let b = Backoff::default();
        assert!(matches!(b.settle("x", Some(&Error::Throttled), None), Next::Transient { .. }));
        let Next::Transient { backoff } = b.settle("x", Some(&Error::Throttled), None) else { panic!("transient") };
        assert!(backoff >= Duration::from_secs(4), "the second in a row waits longer");
        assert_eq!(b.settle("x", Some(&Error::InvalidValue(String::new())), None), Next::Permanent);
        let Next::Transient { backoff } = b.settle("x", Some(&Error::Throttled), None) else { panic!("transient") };
        assert!(backoff < Duration::from_millis(2500), "a permanent failure started the count again");
        let wait = Some(Duration::from_secs(3));
        assert_eq!(b.settle("x", None, wait), Next::Synced { restart_in: wait });
    }
}
