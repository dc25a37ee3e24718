//! Parallel work for our kernels that does not collapse when another process wants a core.
//!
//! A call hands its work items out through a shared cursor, in chunks, to the calling thread
//! and to the pool's worker threads. Unlike a barrier pool, the caller never waits for a
//! worker that has not started: a worker takes part in a call only by registering while the
//! call is open, and the caller closes the call as soon as the cursor runs out, then waits
//! only for the workers that registered (each finishing the one chunk it holds). A worker
//! woken late, because another process had its core or the kernel was slow to switch, finds
//! the call closed and goes back to waiting; it costs the caller nothing. So a lower-priority
//! process (`nice -n 19`) costs only the work its brief time slices take, never a serial
//! fallback.
//!
//! A worker that is descheduled in the middle of a chunk is the one case the caller waits
//! for: a core that is really taken, by a process of the same priority, for a whole time
//! slice. A wait on registered workers longer than both [`STRAGGLE`] and half the call
//! counts as that: calls then run on the calling thread alone for a while, after which the
//! calls try the pool again. How long adapts: it starts at [`MIN_SERIAL`], doubles with
//! each straggle (up to [`MAX_SERIAL`]: another process that keeps a core costs one slow
//! call in a quarter of a second), halves after each retry that runs clean (a whole window
//! of calls, below), and starts again from the minimum when the last straggle (or crowded
//! window) is more than [`QUIET_PERIODS`] such periods old. So a process that holds the
//! core sends the kernels to one thread for longer and longer, while
//! one that takes a slice now and then (a lower-priority process that the scheduler lets run
//! a little) costs a few milliseconds each time.
//!
//! The other sign of a taken core is a worker that keeps missing calls: it spins for them
//! while it has a core and misses them while another process of the same priority has it, so
//! three threads share two cores, and the caller's own core is shared half the time. When
//! more than a third of a window of [`SOLO_WINDOW`] calls (tens of milliseconds: long enough
//! that one time slice of a lower-priority process does not fill it) found no worker
//! ("crowded"), calls go to the calling thread alone just as after a straggle, the worker
//! parks, and the caller keeps a core to itself. A crowded window comes at most once a
//! window, more than [`QUIET_PERIODS`] short periods apart, so under crowding alone the period
//! stays near [`MIN_SERIAL`]; what keeps the kernels serial for longer under lasting
//! contention is that a period, after a straggle or a crowded window, halves only when a
//! whole window after it ran clean (before, one clean call halved it). Measured
//! (`docs/bench/pool-ab/crowd-ab-*`), the two together bring SmolLM2 next to a same-priority
//! process from 0.38-0.43 of its speed alone to 0.55-0.60; which of the two does most of it
//! was not measured.
//!
//! Workers spin for [`SPIN`] after their last work before they park, so the calls of one
//! forward pass (microseconds apart) find them awake. The number of threads is rayon's global
//! count (`--threads`, `RAYON_NUM_THREADS`, or one per core): the caller and one fewer
//! workers.
//!
//! A worker must not spin on the caller's core. Waking a parked worker, the kernel may put it
//! on the core of the thread that woke it (a core that a `nice -n 19` process holds does not
//! count as free), where it takes the core from the caller, runs the call alone, and spins
//! until it parks: each call then costs a whole spin with one core working, while the
//! low-priority process has the other core to itself. A scheduler trace of SmolLM2 next to a
//! niced busy loop caught the two threads taking turns on one core in this way while the
//! loop ran 50 ms on the other. So the caller notes its core when it opens a call, and a
//! worker that finds itself spinning on that core moves off it: it takes that core out of the
//! cores it may run on, which moves it at once, and puts it back, which leaves the scheduler
//! free to balance later (Linux with glibc; [`PoolStats::moves`] counts the moves). What it
//! removes is the spin: a worker woken onto the caller's core still runs that call there.
//! The kernel picks the core it moves to, which on a machine of many cores may be another
//! worker's. It moves at most once per [`MOVE_GAP`], so that more threads than cores do not
//! move at every turn; a process allowed one core has nowhere to go, and its worker tries
//! again after [`MOVE_RETRY`]. On Linux 6.2 and later the set a worker puts back is also
//! recorded as its own choice, so a worker that has moved does not follow its container's
//! cores if they grow later (the others do).
//!
//! The split of work never changes what a work item computes, so results are identical
//! whichever threads run them.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A wait on registered workers longer than this (and than half the call) counts as a
/// descheduled worker.
pub const STRAGGLE: Duration = Duration::from_micros(300);
/// How long calls run on the calling thread alone after a first descheduled worker.
pub const MIN_SERIAL: Duration = Duration::from_millis(2);
/// The longest serial period, after straggles in a row.
pub const MAX_SERIAL: Duration = Duration::from_millis(256);
/// A straggle more than this many times the next serial period (the one it would start)
/// after the previous straggle starts again from [`MIN_SERIAL`]: the competitor is not
/// holding the core, only taking a slice now and then.
pub const QUIET_PERIODS: u32 = 4;
/// How long an idle worker spins before it parks.
pub const SPIN: Duration = Duration::from_micros(500);
/// Pool calls in a window over which the share that no worker joined is judged.
pub const SOLO_WINDOW: u32 = 1024;

/// After a worker failed to move off the caller's core (its process may run on that core
/// alone), how long before it tries again.
pub const MOVE_RETRY: Duration = Duration::from_millis(100);
/// After a worker moved off the caller's core, how long before it may move again.
pub const MOVE_GAP: Duration = Duration::from_millis(1);

/// The state word's bit set while a call is open to workers.
const OPEN: u64 = 1 << 31;
/// The state word's bits that count registered workers.
const ACTIVE: u64 = OPEN - 1;

/// The epoch (call number) of a state word.
fn epoch(state: u64) -> u64 {
    state >> 32
}

/// The serial period ends at this many nanoseconds after the first call ([`now_ns`]).
static SERIAL_UNTIL_NS: AtomicU64 = AtomicU64::new(0);
/// When the last straggle was seen ([`now_ns`]).
static LAST_STRAGGLE_NS: AtomicU64 = AtomicU64::new(0);
static STRAGGLES: AtomicU64 = AtomicU64::new(0);
/// The next serial period, in nanoseconds.
static SERIAL_NS: AtomicU64 = AtomicU64::new(MIN_SERIAL.as_nanos() as u64);
/// Set after a serial period until a window of pool calls has run clean or not.
static RETRY: AtomicBool = AtomicBool::new(false);
/// Pool calls in the current window, and those that no worker joined.
static WINDOW_CALLS: AtomicU32 = AtomicU32::new(0);
static WINDOW_SOLO: AtomicU32 = AtomicU32::new(0);
static CROWDED: AtomicU64 = AtomicU64::new(0);
/// The core the last call was opened on ([`NO_CPU`]: not known).
static CALLER_CPU: AtomicU32 = AtomicU32::new(NO_CPU);
const NO_CPU: u32 = u32::MAX;
/// Times a worker found itself spinning on the caller's core and moved off it.
static MOVES: AtomicU64 = AtomicU64::new(0);

/// Which core a thread runs on, and moving it off one (Linux with glibc; elsewhere workers
/// stay where the scheduler puts them).
mod cpus {
    /// The core the calling thread runs on.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) fn current() -> Option<u32> {
        // SAFETY: no arguments; returns -1 on error.
        let c = unsafe { libc::sched_getcpu() };
        u32::try_from(c).ok()
    }

    /// Moves the calling thread off `cpu` to another of the cores it may run on (the kernel
    /// picks which), then lets it run on all of them again. Returns the core it moved to;
    /// none when `cpu` is the only one, is not among them, or the calls fail (a process
    /// whose sandbox refuses `sched_setaffinity` stays where it is).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) fn leave(cpu: u32) -> Option<u32> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: a zeroed `cpu_set_t` is an empty set; the libc calls get its true size,
        // and the CPU_* helpers an index below CPU_SETSIZE (checked first).
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut allowed) != 0
                || cpu as usize >= libc::CPU_SETSIZE as usize
                || !libc::CPU_ISSET(cpu as usize, &allowed)
            {
                return None;
            }
            let mut away = allowed;
            libc::CPU_CLR(cpu as usize, &mut away);
            if libc::CPU_COUNT(&away) == 0 || libc::sched_setaffinity(0, size, &away) != 0 {
                return None;
            }
            // The kernel has moved this thread before returning; widening the set again
            // does not move it back, and leaves the scheduler free to balance later. A
            // restore that fails (the process's cores changed in between) is tried once
            // more; were that to fail too, this thread would keep off `cpu`.
            let now = current().unwrap_or(super::NO_CPU);
            if libc::sched_setaffinity(0, size, &allowed) != 0 {
                libc::sched_setaffinity(0, size, &allowed);
            }
            Some(now)
        }
    }

    /// The core the calling thread runs on (not known here).
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(super) fn current() -> Option<u32> {
        None
    }

    /// Moving threads is not done here.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(super) fn leave(_: u32) -> Option<u32> {
        None
    }
}

thread_local! {
    /// Set on pool workers and on a caller inside a pool call: a call from there runs
    /// inline.
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Nanoseconds since the first call.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The serial period to apply after a straggle seen `since` after the previous one.
fn period_after(current: Duration, since: Duration) -> Duration {
    if since > current * QUIET_PERIODS {
        MIN_SERIAL
    } else {
        current
    }
}

/// Whether a window of `calls` pool calls, `solo` of which no worker joined, shows a worker
/// that keeps missing calls: more than a third. A process of the same priority on the
/// worker's core leaves it about half of the calls; a `nice -n 19` one, a few in a hundred.
fn crowded(calls: u32, solo: u32) -> bool {
    solo * 3 > calls
}

/// Counts a pool call in the current window; at the window's end, returns whether it was
/// crowded (and starts the next window).
fn end_of_window(solo: bool) -> Option<bool> {
    let calls = WINDOW_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let solos = WINDOW_SOLO.fetch_add(solo as u32, Ordering::Relaxed) + solo as u32;
    if calls < SOLO_WINDOW {
        return None;
    }
    start_window();
    Some(crowded(calls, solos))
}

/// Starts a new window of pool calls.
fn start_window() {
    WINDOW_CALLS.store(0, Ordering::Relaxed);
    WINDOW_SOLO.store(0, Ordering::Relaxed);
}

/// The next serial period after a pool call that straggled (`true`) or a clean window.
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

/// Forgets the straggles seen so far: the next call uses the pool, and a straggle after it
/// starts from [`MIN_SERIAL`]. `bench` calls it between loads, so that one competitor's
/// history does not bias the figure under the next.
pub fn forget_straggles() {
    SERIAL_UNTIL_NS.store(0, Ordering::Relaxed);
    SERIAL_NS.store(MIN_SERIAL.as_nanos() as u64, Ordering::Relaxed);
    LAST_STRAGGLE_NS.store(0, Ordering::Relaxed);
    RETRY.store(false, Ordering::Relaxed);
    start_window();
}

/// How many times a descheduled worker sent the kernels to the calling thread alone.
pub fn straggles() -> u64 {
    STRAGGLES.load(Ordering::Relaxed)
}

static CALLS: AtomicU64 = AtomicU64::new(0);
static SOLO_CALLS: AtomicU64 = AtomicU64::new(0);
static WAITED_NS: AtomicU64 = AtomicU64::new(0);

/// What the pool has done since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Calls that opened to the workers.
    pub calls: u64,
    /// Of those, calls that the caller finished alone (no worker came in time).
    pub solo_calls: u64,
    /// Time the callers waited for registered workers after the last chunk was claimed.
    pub waited: Duration,
    /// Straggles (see [`straggles`]).
    pub straggles: u64,
    /// Windows in which more than a third of the calls found no worker, each sending the
    /// kernels to the calling thread alone for a while (see [`SOLO_WINDOW`]).
    pub crowded: u64,
    /// Times a worker found itself spinning on the caller's core and moved off it.
    pub moves: u64,
}

impl PoolStats {
    /// The pool's figures now.
    pub fn now() -> Self {
        // The solo count first: it never runs ahead of the calls counted before it.
        let solo_calls = SOLO_CALLS.load(Ordering::Acquire);
        Self {
            calls: CALLS.load(Ordering::Acquire),
            solo_calls,
            waited: Duration::from_nanos(WAITED_NS.load(Ordering::Relaxed)),
            straggles: straggles(),
            crowded: CROWDED.load(Ordering::Relaxed),
            moves: MOVES.load(Ordering::Relaxed),
        }
    }

    /// The figures in words, as `bench` prints them.
    pub fn describe(&self) -> String {
        format!(
            "of {} calls opened to the pool no worker joined {}, the caller waited {:.0} ms for \
             workers in all, and ran on one thread {} times after a descheduled worker and {} \
             times after a window of calls more than a third of which found no worker; a \
             worker moved off the caller's core {} times",
            self.calls,
            self.solo_calls,
            self.waited.as_secs_f64() * 1e3,
            self.straggles,
            self.crowded,
            self.moves
        )
    }

    /// Adds another stretch's figures to these.
    pub fn add(&mut self, other: &Self) {
        self.calls += other.calls;
        self.solo_calls += other.solo_calls;
        self.waited += other.waited;
        self.straggles += other.straggles;
        self.crowded += other.crowded;
        self.moves += other.moves;
    }

    /// The figures between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            calls: self.calls.saturating_sub(earlier.calls),
            solo_calls: self.solo_calls.saturating_sub(earlier.solo_calls),
            waited: self.waited.saturating_sub(earlier.waited),
            straggles: self.straggles.saturating_sub(earlier.straggles),
            crowded: self.crowded.saturating_sub(earlier.crowded),
            moves: self.moves.saturating_sub(earlier.moves),
        }
    }
}

/// Runs the chunks of the open call that a registered thread can still claim.
type Trampoline = unsafe fn(*const (), &Pool);

/// One worker thread: its handle, to unpark it, and whether it is (about to be) parked.
struct Worker {
    thread: std::thread::Thread,
    parked: AtomicBool,
}

/// The pool: the open call's description and the workers that take part in it.
struct Pool {
    /// Epoch, [`OPEN`] and the count of registered workers ([`ACTIVE`]).
    state: AtomicU64,
    /// The call's closure (a `*const F`) and the function that runs it on claimed chunks.
    job: AtomicPtr<()>,
    trampoline: AtomicPtr<()>,
    /// The next unclaimed item, the number of items, and the share of the items left that
    /// one claim takes (see [`claim`]).
    cursor: AtomicUsize,
    n_items: AtomicUsize,
    parts: AtomicUsize,
    /// How many workers registered in the call (a call none joined was the caller's alone).
    joined: AtomicUsize,
    /// A worker's panic, passed on to the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// One call at a time; holds the epoch of the last call.
    call: Mutex<u64>,
    workers: OnceLock<Vec<Worker>>,
}

/// The process's pool, its workers started on first use.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    let pool = POOL.get_or_init(|| Pool {
        state: AtomicU64::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        trampoline: AtomicPtr::new(std::ptr::null_mut()),
        joined: AtomicUsize::new(0),
        cursor: AtomicUsize::new(0),
        n_items: AtomicUsize::new(0),
        parts: AtomicUsize::new(1),
        panic: Mutex::new(None),
        call: Mutex::new(0),
        workers: OnceLock::new(),
    });
    pool.workers.get_or_init(|| {
        let n = rayon::current_num_threads().saturating_sub(1);
        // Stops at a thread that cannot be started, so that each worker's index is its
        // place in the list; the pool then has fewer workers (none: calls run inline).
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let spawned = std::thread::Builder::new()
                .name(format!("llm-judge-kernel-{i}"))
                .spawn(move || work(pool, i));
            match spawned {
                Ok(h) => workers.push(Worker {
                    thread: h.thread().clone(),
                    parked: AtomicBool::new(false),
                }),
                Err(_) => break,
            }
        }
        workers
    });
    pool
}

/// Claims and runs chunks of the open call's items until none is left.
///
/// # Safety
/// `data` is the `*const F` of the open call, and the calling thread is registered in it (or
/// is its caller), so the closure outlives this function.
unsafe fn run_chunks<F: Fn(Range<usize>) + Sync>(data: *const (), pool: &Pool) {
    let f = unsafe { &*(data as *const F) };
    let n = pool.n_items.load(Ordering::Relaxed);
    let parts = pool.parts.load(Ordering::Relaxed);
    let mut start = pool.cursor.load(Ordering::Relaxed);
    while start < n {
        let end = start + claim(n - start, parts);
        match pool
            .cursor
            .compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                f(start..end);
                start = pool.cursor.load(Ordering::Relaxed);
            }
            Err(now) => start = now,
        }
    }
}

/// How many of the `left` unclaimed items one claim takes: a `parts`-th of them, at least
/// one (none when none is left). Claims shrink as the call goes on (guided scheduling): the
/// first are long runs of items, the last single items, so the threads finish within
/// about one small claim of each other. Claims of one fixed size (an eighth of a thread's
/// share, before) could leave one thread a whole claim behind at the end of each call, and
/// split a decoding call's weight rows into shorter runs: with these the 1.5B decoded about
/// 3 % faster (four alternating pairs of `generate` runs), and SmolLM2's tg128 was 242.8
/// tokens/s against 210.0 (one `bench` run each). The price: a first claim is a quarter of
/// the call for two threads (a sixteenth before), which a worker preempted while it holds
/// it keeps from the caller longer.
fn claim(left: usize, parts: usize) -> usize {
    (left / parts.max(1)).max(1).min(left)
}

/// A worker's life: wait for an open call it has not seen, register, run chunks, leave.
fn work(pool: &'static Pool, index: usize) {
    INSIDE.with(|c| c.set(true));
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    let mut next_move = Instant::now();
    loop {
        let s = pool.state.load(Ordering::Acquire);
        if epoch(s) != seen {
            if s & OPEN == 0 {
                // Closed before this worker came: nothing to do in it.
                seen = epoch(s);
                continue;
            }
            if pool
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            seen = epoch(s);
            pool.joined.fetch_add(1, Ordering::Relaxed);
            // Registered: the call stays open to this worker's claims, and its closure
            // alive, until this worker leaves.
            let data = pool.job.load(Ordering::Relaxed) as *const ();
            let tramp = pool.trampoline.load(Ordering::Relaxed);
            // SAFETY: `tramp` is the `run_chunks::<F>` (a function pointer, cast to a data
            // pointer with its provenance) stored with `data` for this epoch, published
            // before the call opened (the successful Acquire CAS above pairs with it).
            let tramp: Trampoline = unsafe { std::mem::transmute::<*mut (), Trampoline>(tramp) };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                tramp(data, pool)
            }));
            if let Err(payload) = r {
                // Take the rest of the items out of the caller's way, then report.
                pool.cursor
                    .store(pool.n_items.load(Ordering::Relaxed), Ordering::Relaxed);
                let mut p = pool.panic.lock().unwrap_or_else(|e| e.into_inner());
                p.get_or_insert(payload);
            }
            pool.state.fetch_sub(1, Ordering::Release);
            idle_since = Instant::now();
            spins = 0;
            continue;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        if let Some(cpu) = cpus::current().filter(|&c| c == CALLER_CPU.load(Ordering::Relaxed)) {
            // This worker spins on the caller's core, where the caller waits to run: it
            // moves off, or the caller would get its core back only when this worker parks.
            if Instant::now() >= next_move {
                next_move = Instant::now()
                    + if cpus::leave(cpu).is_some() {
                        MOVES.fetch_add(1, Ordering::Relaxed);
                        // More threads than cores would otherwise move at every turn.
                        MOVE_GAP
                    } else {
                        // Nowhere else to go (one allowed core): not again for a while.
                        MOVE_RETRY
                    };
            }
        }
        if idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        // Park, announcing it first; a caller that opens a call after the re-check below
        // sees `parked` and unparks (a token left by an early unpark makes park return).
        let Some(me) = pool.workers.get().and_then(|w| w.get(index)) else {
            // The pool is still starting its other workers.
            std::thread::yield_now();
            continue;
        };
        me.parked.store(true, Ordering::SeqCst);
        if epoch(pool.state.load(Ordering::SeqCst)) == seen {
            std::thread::park();
        }
        me.parked.store(false, Ordering::SeqCst);
        idle_since = Instant::now();
    }
}

/// Closes the open call and waits for its registered workers, also when the caller unwinds.
struct Close<'a> {
    pool: &'a Pool,
    waited: Duration,
    /// Whether no worker registered in the call.
    solo: bool,
}

impl Close<'_> {
    fn close(&mut self) {
        let t = Instant::now();
        self.pool.state.fetch_and(!OPEN, Ordering::AcqRel);
        // Spinning. Napping here instead, so that the scheduler could move a preempted
        // worker to this core, measured slower next to a `nice -n 19` competitor in an
        // unrecorded A/B (0.70-0.87 of tg128 alone against 0.84-1.01).
        while self.pool.state.load(Ordering::Acquire) & ACTIVE != 0 {
            std::hint::spin_loop();
        }
        self.waited = t.elapsed();
        // Counted here (a call whose caller panics too), the calls before the solo calls,
        // which a reader loads first (Acquire/Release), so it never sees more solo calls.
        CALLS.fetch_add(1, Ordering::Release);
        self.solo = self.pool.joined.load(Ordering::Relaxed) == 0;
        if self.solo {
            // No worker registered, and none can now: the caller did it all.
            SOLO_CALLS.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        if self.pool.state.load(Ordering::Acquire) & OPEN != 0 {
            // The caller is unwinding: the workers need not run the rest of the items, and
            // a worker's panic of the same call has nobody to go to.
            let n = self.pool.n_items.load(Ordering::Relaxed);
            self.pool.cursor.store(n, Ordering::Relaxed);
            self.close();
            self.pool
                .panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        INSIDE.with(|c| c.set(false));
    }
}

/// Runs `f` over `0..n_items`, split into chunks across the pool's threads, or on the
/// calling thread alone while a worker's core is taken. Returns whether a worker took part.
pub(crate) fn for_each_chunk(n_items: usize, f: impl Fn(Range<usize>) + Sync) -> bool {
    if n_items <= 1
        || INSIDE.with(|c| c.get())
        || now_ns() < SERIAL_UNTIL_NS.load(Ordering::Relaxed)
    {
        f(0..n_items);
        return false;
    }
    let pool = pool();
    let workers = pool.workers.get().map(Vec::as_slice).unwrap_or_default();
    if workers.is_empty() {
        f(0..n_items);
        return false;
    }
    // Another thread's call holds the pool (a second engine on its own thread): this one
    // runs inline rather than queue behind it, or deadlock if that call waits on this
    // thread.
    let mut last = match pool.call.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            f(0..n_items);
            return false;
        }
    };
    let start = Instant::now();
    // Epochs run 1..=u32::MAX; a worker that slept through exactly 2³² - 1 calls skips one,
    // which costs nothing (the caller never waits for a worker that did not register).
    *last = *last % u32::MAX as u64 + 1;
    let e = *last;
    // Each claim takes a (2 × threads)-th of the items left: long runs of items at first
    // (decoding streams longer runs of weight rows), single items at the end.
    let threads = workers.len() + 1;
    pool.n_items.store(n_items, Ordering::Relaxed);
    pool.parts.store(2 * threads, Ordering::Relaxed);
    pool.cursor.store(0, Ordering::Relaxed);
    pool.joined.store(0, Ordering::Relaxed);
    pool.job.store(&f as *const _ as *mut (), Ordering::Relaxed);
    let tramp: Trampoline = run_chunks_of(&f);
    pool.trampoline.store(tramp as *mut (), Ordering::Relaxed);
    INSIDE.with(|c| c.set(true));
    CALLER_CPU.store(cpus::current().unwrap_or(NO_CPU), Ordering::Relaxed);
    pool.state.store(e << 32 | OPEN, Ordering::SeqCst);
    for w in workers {
        if w.parked.load(Ordering::SeqCst) {
            w.thread.unpark();
        }
    }
    let mut close = Close {
        pool,
        waited: Duration::ZERO,
        solo: false,
    };
    // SAFETY: `f` lives until `close` has waited for every registered worker.
    unsafe { run_chunks_of(&f)(&f as *const _ as *const (), pool) };
    close.close();
    let (waited, solo) = (close.waited, close.solo);
    drop(close);
    WAITED_NS.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    if let Some(p) = pool.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
        std::panic::resume_unwind(p);
    }
    let total = start.elapsed();
    let straggled = waited > STRAGGLE && waited > total / 2;
    // Still under the call lock: the window and the period are this caller's alone.
    let window = if straggled { None } else { end_of_window(solo) };
    let crowded = window == Some(true);
    if crowded {
        CROWDED.fetch_add(1, Ordering::Relaxed);
    }
    // After a straggle or a crowded window the calls go serial; an event soon after the last
    // one (within QUIET_PERIODS periods) doubles the next period, and only a whole clean
    // window after a serial period halves it, so the clean calls between a worker's time
    // slices under lasting contention do not wear the period down.
    let period = Duration::from_nanos(SERIAL_NS.load(Ordering::Relaxed));
    if straggled || crowded {
        let now = now_ns();
        let last = LAST_STRAGGLE_NS.swap(now, Ordering::Relaxed);
        let period = period_after(period, Duration::from_nanos(now.saturating_sub(last)));
        SERIAL_UNTIL_NS.store(now + period.as_nanos() as u64, Ordering::Relaxed);
        if straggled {
            STRAGGLES.fetch_add(1, Ordering::Relaxed);
        }
        RETRY.store(true, Ordering::Relaxed);
        start_window();
        SERIAL_NS.store(
            next_serial(period, true).as_nanos() as u64,
            Ordering::Relaxed,
        );
    } else if window == Some(false) && RETRY.swap(false, Ordering::Relaxed) {
        SERIAL_NS.store(
            next_serial(period, false).as_nanos() as u64,
            Ordering::Relaxed,
        );
    }
    drop(last);
    !solo
}

/// `run_chunks` for the type of `f`.
fn run_chunks_of<F: Fn(Range<usize>) + Sync>(_: &F) -> Trampoline {
    run_chunks::<F>
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
        // period had grown; one soon after keeps it.
        assert_eq!(
            period_after(MAX_SERIAL, MAX_SERIAL * (QUIET_PERIODS + 1)),
            MIN_SERIAL
        );
        assert_eq!(period_after(MAX_SERIAL, MAX_SERIAL * 2), MAX_SERIAL);
        // Slices taken every 100 ms by a low-priority process never grow the period.
        assert_eq!(
            period_after(MIN_SERIAL, Duration::from_millis(100)),
            MIN_SERIAL
        );
    }

    /// The cores this thread may run on.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn allowed() -> Vec<usize> {
        // SAFETY: as in `cpus::leave`.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_thread_leaves_a_core_for_another_it_may_run_on_and_keeps_all_of_them() {
        // A thread of its own, so that the harness's threads keep their cores.
        std::thread::spawn(|| {
            let before = allowed();
            let cpu = cpus::current().expect("sched_getcpu");
            assert!(before.contains(&(cpu as usize)), "{cpu} not in {before:?}");
            match cpus::leave(cpu) {
                Some(to) => {
                    assert_ne!(to, cpu);
                    assert!(before.contains(&(to as usize)), "{to} not in {before:?}");
                }
                // Only a process held to one core has nowhere to go.
                None => assert_eq!(before, vec![cpu as usize]),
            }
            assert_eq!(
                allowed(),
                before,
                "the thread may run where it could before"
            );
            // A core it may not run on is left as it is.
            let outside = (0..libc::CPU_SETSIZE as u32)
                .find(|c| !before.contains(&(*c as usize)))
                .expect("a core outside the set");
            assert_eq!(cpus::leave(outside), None);
            assert_eq!(cpus::leave(u32::MAX), None);
            assert_eq!(allowed(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pool_figures_read_in_words_with_each_count_in_its_place() {
        let stats = PoolStats {
            calls: 100,
            solo_calls: 7,
            waited: Duration::from_micros(2500),
            straggles: 3,
            crowded: 2,
            moves: 5,
        };
        assert_eq!(
            stats.describe(),
            "of 100 calls opened to the pool no worker joined 7, the caller waited 2 ms for \
             workers in all, and ran on one thread 3 times after a descheduled worker and 2 \
             times after a window of calls more than a third of which found no worker; a \
             worker moved off the caller's core 5 times"
        );
    }

    #[test]
    fn a_window_is_crowded_when_more_than_a_third_of_its_calls_found_no_worker() {
        assert!(!crowded(SOLO_WINDOW, 0));
        assert!(!crowded(SOLO_WINDOW, SOLO_WINDOW / 3));
        assert!(crowded(SOLO_WINDOW, SOLO_WINDOW / 3 + 1));
        assert!(crowded(SOLO_WINDOW, SOLO_WINDOW / 2));
    }

    #[test]
    fn claims_shrink_to_single_items_and_cover_every_item() {
        for (n, parts) in [(4748, 4), (48, 4), (8, 4), (3, 4), (1, 4), (100, 1), (7, 0)] {
            let (mut at, mut sizes) = (0, Vec::new());
            while at < n {
                let c = claim(n - at, parts);
                assert!(c >= 1 && at + c <= n, "{n} {parts}: {c} at {at}");
                sizes.push(c);
                at += c;
            }
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
            if parts > 1 {
                assert_eq!(sizes.last(), Some(&1), "{n} {parts}: {sizes:?}");
            }
        }
        // A quarter of what is left, for two threads; nothing when nothing is left.
        assert_eq!(claim(4748, 4), 1187);
        assert_eq!(claim(0, 4), 0);
    }

    #[test]
    fn a_call_of_one_item_runs_inline_and_says_no_worker_took_part() {
        let ran = AtomicUsize::new(0);
        let pooled = for_each_chunk(1, |r| {
            ran.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert!(!pooled);
        assert_eq!(ran.load(Ordering::Relaxed), 1);
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

    #[test]
    fn a_panic_in_a_work_item_reaches_the_caller_and_the_pool_goes_on() {
        let r = std::panic::catch_unwind(|| {
            for_each_chunk(64, |r| {
                if r.contains(&40) {
                    panic!("item 40");
                }
            })
        });
        assert!(r.is_err());
        let hits = AtomicU64::new(0);
        for_each_chunk(64, |r| {
            hits.fetch_add(r.len() as u64, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn calls_from_several_threads_and_nested_calls_each_run_every_item_once() {
        let hits: Vec<AtomicU64> = (0..257).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        for_each_chunk(hits.len(), |r| {
                            for i in r {
                                // A call inside a call runs inline.
                                for_each_chunk(2, |_| {});
                                hits[i].fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                });
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 300));
        let stats = PoolStats::now();
        assert!(stats.solo_calls <= stats.calls);
    }
}
