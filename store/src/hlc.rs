//! Hybrid logical clock: wall-clock milliseconds in the high 48 bits, a counter
//! in the low 16. It never goes backwards, not even across restarts (the store
//! persists the high-water mark), and it moves past every remote timestamp it
//! accepts, so a local write always sorts after what the writer has seen.

use std::time::{SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn new(ms: u64, counter: u16) -> Self {
        Hlc((ms << COUNTER_BITS) | counter as u64)
    }
    pub fn ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }
}

/// This machine's wall clock in ms since the epoch. The test hook
/// `LATTICE_TEST_CLOCK_OFFSET_MS` (signed) moves it, so that a test can run a
/// node whose clock is wrong.
pub fn wall_ms() -> u64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("LATTICE_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_add_signed(offset)
}

/// The clock state of one node.
#[derive(Debug)]
pub struct Clock {
    last: Hlc,
    max_drift_ms: u64,
}

impl Clock {
    pub fn new(high_water: Hlc, max_drift_ms: u64) -> Self {
        Self {
            last: high_water,
            max_drift_ms,
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event, greater than every one issued or seen.
    pub fn tick(&mut self) -> Hlc {
        self.tick_at(wall_ms())
    }

    pub fn tick_at(&mut self, now_ms: u64) -> Hlc {
        // When the counter is spent within one millisecond, borrow the next one;
        // the drift bound keeps this from running away.
        let next = if now_ms > self.last.ms() {
            Hlc::new(now_ms, 0)
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last = next;
        next
    }

    /// How far `remote` is ahead of this machine's wall clock, if beyond the
    /// allowed drift.
    pub fn too_far_ahead(&self, remote: Hlc, now_ms: u64) -> Option<u64> {
        let drift = remote.ms().saturating_sub(now_ms);
        (drift > self.max_drift_ms).then_some(drift)
    }

    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The receive rule: after seeing `remote`, the next tick sorts after it.
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_wall_clock_stalls_or_goes_back() {
        let mut c = Clock::new(Hlc::default(), 1000);
        let a = c.tick_at(100);
        let b = c.tick_at(100);
        let d = c.tick_at(50);
        assert!(a < b && b < d);
        assert_eq!(d.ms(), 100);
        let e = c.tick_at(200);
        assert_eq!(e, Hlc::new(200, 0));
    }

    #[test]
    fn observe_moves_past_remote() {
        let mut c = Clock::new(Hlc::default(), 1000);
        c.observe(Hlc::new(500, 7));
        assert!(c.tick_at(100) > Hlc::new(500, 7));
    }

    #[test]
    fn drift_bound() {
        let c = Clock::new(Hlc::default(), 1000);
        assert_eq!(c.too_far_ahead(Hlc::new(1500, 0), 1000), None);
        assert_eq!(c.too_far_ahead(Hlc::new(2001, 0), 1000), Some(1001));
    }
}
