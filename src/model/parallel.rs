//! Parallel work for our kernels that does not collapse when another process holds a core.
//!
//! candle's barrier pool is fast because its threads spin: the caller hands out work items
//! through a shared cursor, then spins until every worker has finished the item it took. When
//! a worker has no core (another process is running there), the caller spins for the rest of
//! the worker's time slice, milliseconds for a matmul of microseconds, and decoding slows
//! down by an order of magnitude. [`for_each_chunk`] measures how long the caller waited on
//! each call. A wait longer than both [`STRAGGLE`] and half the call means a worker was
//! descheduled: the next [`SERIAL_CALLS`] calls then run on the calling thread alone (the
//! pool's threads park), after which one call tries the pool again. Without competition
//! the caller never waits that long, and nothing changes.
//!
//! The split of work never changes what a work item computes, so results are identical
//! either way.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A wait longer than this (and than half the call) counts as a descheduled worker.
pub const STRAGGLE: Duration = Duration::from_micros(300);
/// Calls that run on the calling thread alone after a descheduled worker was seen.
pub const SERIAL_CALLS: u64 = 4096;

static CALLS: AtomicU64 = AtomicU64::new(0);
static SERIAL_UNTIL: AtomicU64 = AtomicU64::new(0);
static STRAGGLES: AtomicU64 = AtomicU64::new(0);

/// How many times a descheduled worker sent the kernels to the calling thread alone.
pub fn straggles() -> u64 {
    STRAGGLES.load(Ordering::Relaxed)
}

/// Runs `f` over `0..n_items`, split into ranges across candle's barrier pool, or on the
/// calling thread alone while the pool's threads are not getting a core.
pub(crate) fn for_each_chunk(n_items: usize, f: impl Fn(Range<usize>) + Sync) {
    let pool = candle_core::utils::barrier_pool();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    if n_items <= 1 || pool.n_workers() == 0 || call < SERIAL_UNTIL.load(Ordering::Relaxed) {
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
    if waited > STRAGGLE && waited > total / 2 {
        SERIAL_UNTIL.store(call + SERIAL_CALLS, Ordering::Relaxed);
        STRAGGLES.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
