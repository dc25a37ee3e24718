//! Parallel work for our kernels that does not collapse when another process holds a core.
//!
//! candle's barrier pool is fast because its threads spin: the caller hands out work items
//! through a shared cursor, then spins until every worker has finished the item it took. When
//! a worker has no core (another process is running there), the caller spins for the rest of
//! the worker's time slice, milliseconds for a matmul of microseconds, and decoding slows
//! down by an order of magnitude. `for_each_chunk` measures how long the caller waited on
//! each call. A wait longer than both [`STRAGGLE`] and half the call means a worker was
//! descheduled: calls then run on the calling thread alone (the pool's threads park) for a
//! while, after which one call tries the pool again. How long adapts: it starts at
//! [`MIN_SERIAL`], doubles with each straggle (up to [`MAX_SERIAL`]: another process that
//! keeps a core costs one slow call in a quarter of a second), halves after each retry
//! that runs clean, and starts again from the minimum when the last straggle is more than
//! [`QUIET`] old. A lone hiccup, such as a virtual machine's core being taken for a moment,
//! so costs a few milliseconds at one thread, not the next few seconds of work.
//! Without competition the caller never waits that long, and nothing changes.
//!
//! The split of work never changes what a work item computes, so results are identical
//! either way.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A wait longer than this (and than half the call) counts as a descheduled worker.
pub const STRAGGLE: Duration = Duration::from_micros(300);
/// How long calls run on the calling thread alone after a first descheduled worker.
pub const MIN_SERIAL: Duration = Duration::from_millis(2);
/// The longest serial period, after straggles in a row.
pub const MAX_SERIAL: Duration = Duration::from_millis(256);
/// A straggle this long after the previous one starts again from [`MIN_SERIAL`].
pub const QUIET: Duration = Duration::from_secs(1);

/// The serial period ends at this many nanoseconds after the first call ([`now_ns`]).
static SERIAL_UNTIL_NS: AtomicU64 = AtomicU64::new(0);
/// When the last straggle was seen ([`now_ns`]).
static LAST_STRAGGLE_NS: AtomicU64 = AtomicU64::new(0);
static STRAGGLES: AtomicU64 = AtomicU64::new(0);
/// The next serial period, in nanoseconds.
static SERIAL_NS: AtomicU64 = AtomicU64::new(MIN_SERIAL.as_nanos() as u64);
/// Set while the next pool call is a retry after a serial period.
static RETRY: AtomicBool = AtomicBool::new(false);

/// Nanoseconds since the first call.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The serial period to apply after a straggle seen `since` after the previous one.
fn period_after(current: Duration, since: Duration) -> Duration {
    if since > QUIET {
        MIN_SERIAL
    } else {
        current
    }
}

/// The next serial period after a pool call that straggled (`true`) or a clean retry.
fn next_serial(now: Duration, straggled: bool) -> Duration {
    if straggled {
        (now * 2).min(MAX_SERIAL)
    } else {
        (now / 2).max(MIN_SERIAL)
    }
}

/// A raw pointer into a buffer that the work items of one [`for_each_chunk`] call write, each
/// to its own disjoint elements, while the buffer outlives the call.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used, by the contract above, for writes to disjoint elements of a live buffer.
unsafe impl<T> Sync for SendPtr<T> {}
unsafe impl<T> Send for SendPtr<T> {}

/// How many times a descheduled worker sent the kernels to the calling thread alone.
pub fn straggles() -> u64 {
    STRAGGLES.load(Ordering::Relaxed)
}

/// Runs `f` over `0..n_items`, split into ranges across candle's barrier pool, or on the
/// calling thread alone while the pool's threads are not getting a core.
pub(crate) fn for_each_chunk(n_items: usize, f: impl Fn(Range<usize>) + Sync) {
    let pool = candle_core::utils::barrier_pool();
    if n_items <= 1 || pool.n_workers() == 0 || now_ns() < SERIAL_UNTIL_NS.load(Ordering::Relaxed) {
        f(0..n_items);
        return;
    }
    let caller = std::thread::current().id();
    let own_ns = AtomicU64::new(0);
    let start = Instant::now();
    pool.execute_chunked(n_items, |r| {
        if std::thread::current().id() == caller {
            let t = Instant::now();
            f(r);
            own_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        } else {
            f(r);
        }
    });
    let total = start.elapsed();
    let waited = total.saturating_sub(Duration::from_nanos(own_ns.load(Ordering::Relaxed)));
    let straggled = waited > STRAGGLE && waited > total / 2;
    // A retry is the first pool call after a serial period. Every straggle doubles the next
    // period; only a clean retry halves it, so the clean calls between a worker's time slices
    // under lasting contention do not wear the period down.
    let retry = RETRY.swap(false, Ordering::Relaxed);
    let period = Duration::from_nanos(SERIAL_NS.load(Ordering::Relaxed));
    let period = if straggled {
        let now = now_ns();
        let last = LAST_STRAGGLE_NS.swap(now, Ordering::Relaxed);
        let period = period_after(period, Duration::from_nanos(now.saturating_sub(last)));
        SERIAL_UNTIL_NS.store(now + period.as_nanos() as u64, Ordering::Relaxed);
        STRAGGLES.fetch_add(1, Ordering::Relaxed);
        RETRY.store(true, Ordering::Relaxed);
        period
    } else {
        period
    };
    if straggled || retry {
        let next = next_serial(period, straggled);
        SERIAL_NS.store(next.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_period_doubles_on_straggles_and_halves_after_clean_calls() {
        let mut p = MIN_SERIAL;
        for _ in 0..20 {
            p = next_serial(p, true);
        }
        assert_eq!(p, MAX_SERIAL);
        p = next_serial(p, false);
        assert_eq!(p, MAX_SERIAL / 2);
        // Contention that lets every other retry through keeps the period long.
        for _ in 0..20 {
            p = next_serial(next_serial(p, true), false);
        }
        assert_eq!(p, MAX_SERIAL / 2);
        for _ in 0..20 {
            p = next_serial(p, false);
        }
        assert_eq!(p, MIN_SERIAL);
        // A straggle long after the last one starts from the minimum, however long the
        // period had grown.
        assert_eq!(period_after(MAX_SERIAL, QUIET * 2), MIN_SERIAL);
        assert_eq!(period_after(MAX_SERIAL, QUIET / 2), MAX_SERIAL);
    }

    #[test]
    fn every_item_runs_exactly_once() {
        let hits: Vec<AtomicU64> = (0..1000).map(|_| AtomicU64::new(0)).collect();
        for _ in 0..50 {
            for_each_chunk(hits.len(), |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
    }
}
