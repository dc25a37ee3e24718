//! How far ahead decoding (of one sequence or several) asks for its weights: chosen by
//! measuring, on the machine that runs.
//!
//! Decoding streams every weight once per token, one weight row after the other, and a
//! software prefetch a few KiB ahead can keep more of the memory's requests in flight than
//! the hardware prefetcher does alone. Whether it pays depends on the machine, not on the
//! vendor: asking 16 KiB ahead took a Sapphire Rapids core from 8.2 to 15 tokens/s on the
//! 1.5B judge; on one 2-core Zen 4 it cost about 8 % (27.3-29.0 tokens/s without, 24.8-26.3
//! with); on another 2-core Zen 4, with a faster memory, 4 to 8 KiB ahead
//! gained 8-10 % (36-37 tokens/s without, 40-41 with). So no fixed choice holds on every
//! machine, and a prefetch never changes a result (it only asks for bytes sooner): the
//! kernels try each of [`DISTANCES`] and keep the fastest.
//!
//! A [`Tuner`] measures one kind of call ([`Calls`]). Each call takes the distances in
//! turn, one call after the other, counted by the matrix it reads (the first of the
//! matrices a call reads together, such as a layer's query, key and value projections; for
//! several rows, each number of rows apart); a matrix is read once per token, so each
//! distance sees every call, at its place in the forward pass, and the same moments of the
//! machine. The times are grouped by shape: how many weight bytes a call reads (the query,
//! key and value projections together, the output projection, the MLP's gate and up
//! together, its down projection, the output layer, …), and whether a pool worker took
//! part (a call run on the calling thread alone, while another process holds a core, is
//! compared only with others like it). After [`EXPLORE_CALLS`] calls, each distance's cost
//! is the sum over groups of its median call time in that group times the group's calls (a
//! preempted call moves no median), and the cheapest is kept for the next
//! [`EXPLOIT_CALLS`] calls; then the distances are tried again, as the machine's load may
//! have changed, and again from the start when a model is loaded. Trying costs a few
//! tenths of a percent: an exploration is a seventeenth of the calls, and three quarters
//! of it uses other distances than the best, each a few percent slower.
//!
//! Decoding several sequences at once (two to [`BATCH_ROWS`] activation rows) streams the
//! weights once per call too, but each task first unpacks its weight rows into the tiles'
//! layout, a few operations per byte, and only then multiplies them from cache. That
//! stream gains far more from asking ahead, as the unpacking leaves the memory idle
//! between its loads: on a 2-core Zen 5, eight sequences of the 1.5B decoded 84-88 tokens/s
//! in all without a prefetch, 115-117 with 2 KiB, 125-129 with 4 KiB and 130-131 with 8 KiB
//! (two alternating runs). Those calls have a tuner of their own ([`Calls::Batch`]), as
//! their best distance need not be decoding's; their groups are told apart by rows too.
//! Calls of more rows (a prompt's chunks) spend most of their time in the products and ask
//! for nothing. Some calls of 2 to 16 rows read their weights in place, so the distance
//! does not touch them (on CPUs without AVX-512 VNNI: four rows or fewer, and Q8_0 at any
//! count); they are timed all the same, and there the tuner chooses between equals.
//!
//! `LLM_JUDGE_PREFETCH` fixes the choice instead: `0` asks for nothing, `1` asks 16 KiB
//! ahead (the earlier default), and a number of bytes up to 1 MiB asks that far ahead.

use std::sync::Mutex;
use std::time::Duration;

/// The distances tried, in bytes ahead of the group of blocks being decoded (0: no
/// prefetch). Measured best: 16 KiB on the Sapphire Rapids core (4 KiB gave 13.7 tokens/s,
/// 8 KiB 14.1, 16 KiB 15.0, 32 KiB 11.4), 4 to 8 KiB on the faster Zen 4 (2 KiB 38.6-39.3,
/// 4 KiB 40.0-40.7, 8 KiB 40.4-40.6, 16 KiB 39.0-40.0, 32 KiB 38.6-38.7, 64 KiB 37.4-38.2),
/// none on the slower one.
pub const DISTANCES: [usize; 4] = [0, 4096, 8192, 16384];
const N: usize = DISTANCES.len();
/// Calls measured in one exploration (all distances together).
pub const EXPLORE_CALLS: u64 = 4096;
/// Calls with the chosen distance before the distances are tried again.
pub const EXPLOIT_CALLS: u64 = 16 * EXPLORE_CALLS;
/// Call shapes (bytes read, rows, on the pool or not) told apart; calls of further shapes
/// use the chosen distance and are not measured.
const MAX_GROUPS: usize = 256;
/// The longest distance `LLM_JUDGE_PREFETCH` may ask for.
const MAX_DISTANCE: usize = 1 << 20;

/// The most activation rows of a call that [`Calls::Batch`] covers. (Asking ahead for 32 and
/// 64 rows too made no measurable difference on the 1.5B: 32 sequences 155-165 tokens/s
/// with against 162-169 without, two alternating runs.)
pub const BATCH_ROWS: usize = 16;

/// The calls a tuner measures, each kind with its own distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// Decoding one sequence: one activation row, the weights read in place.
    Decode,
    /// Decoding several: two to [`BATCH_ROWS`] rows, the weights unpacked once per call.
    Batch,
}

impl Calls {
    /// The kind of a call of `m` activation rows: one is decoding, 2 to [`BATCH_ROWS`]
    /// batched decoding (a prompt that short too); `None` for more (a prompt's chunk, which
    /// asks for nothing) or none.
    pub fn of(m: usize) -> Option<Calls> {
        match m {
            0 => None,
            1 => Some(Calls::Decode),
            m if m <= BATCH_ROWS => Some(Calls::Batch),
            _ => None,
        }
    }

    /// What the calls are, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Calls::Decode => "decoding",
            Calls::Batch => "batched decoding",
        }
    }
}

/// How the distance is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Try each of [`DISTANCES`] and keep the fastest, again and again.
    Measure,
    /// Always this distance in bytes (0: none), from `LLM_JUDGE_PREFETCH`.
    Fixed(usize),
}

impl Policy {
    /// The policy `LLM_JUDGE_PREFETCH` asks for (`None`: unset). A value that is not `0`,
    /// `1` or a distance in bytes up to 1 MiB is an error naming the variable.
    pub fn from_env_value(v: Option<&str>) -> Result<Self, String> {
        match v.map(str::trim) {
            None | Some("") => Ok(Policy::Measure),
            Some("0") => Ok(Policy::Fixed(0)),
            Some("1") => Ok(Policy::Fixed(16384)),
            Some(s) => match s.parse::<usize>() {
                Ok(d) if d <= MAX_DISTANCE => Ok(Policy::Fixed(d)),
                _ => Err(format!(
                    "LLM_JUDGE_PREFETCH={s:?} is not 0 (off), 1 (16 KiB ahead) or a distance \
                     in bytes up to {MAX_DISTANCE}; measuring the distance instead"
                )),
            },
        }
    }
}

/// What an exploration found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The distance kept, in bytes (0: no prefetch).
    pub distance: usize,
    /// Each of [`DISTANCES`]' cost relative to the one kept (1.0 for it).
    pub relative: [f64; N],
    /// Which exploration of the process chose it (1 for the first).
    pub exploration: u64,
}

/// One call shape's measurements in the current exploration: the calls that read `bytes`
/// of weights against `rows` activation rows, on the pool (`pooled`: a worker took part) or
/// on the calling thread alone.
struct Group {
    bytes: u64,
    rows: usize,
    pooled: bool,
    calls: u64,
    ns: [Vec<u64>; N],
}

/// Matrices whose turns are counted; past it the counts start again.
const MAX_MATRICES: usize = 4096;

/// The state of the choice (see the module's documentation).
pub struct Tuner {
    policy: Policy,
    /// Calls recorded in the current cycle (an exploration, then the exploitation).
    call: u64,
    groups: Vec<Group>,
    /// Each matrix's next turn (a call reading several matrices counts by its first): a
    /// matrix is read once per token, so its calls take the distances in turn wherever it
    /// sits in the forward pass. (Turns counted per shape would tie a distance to a matrix
    /// where two of one shape alternate, as a model's query and output projections did
    /// when each was a call of its own.)
    turns: std::collections::HashMap<(usize, usize), u64>,
    chosen: usize,
    last: Option<Choice>,
    explorations: u64,
}

impl Tuner {
    /// A tuner that starts by exploring (or keeps `policy`'s fixed distance).
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            call: 0,
            groups: Vec::new(),
            turns: Default::default(),
            chosen: 0,
            last: None,
            explorations: 0,
        }
    }

    fn exploring(&self) -> bool {
        self.call < EXPLORE_CALLS
    }

    /// The distance (bytes ahead, 0 for none) for a call to the matrix `matrix`
    /// (any number that names it, as its weights' address).
    pub fn pick(&mut self, matrix: usize, rows: usize) -> usize {
        if let Policy::Fixed(d) = self.policy {
            return d;
        }
        if !self.exploring() {
            return DISTANCES[self.chosen];
        }
        let key = (matrix, rows);
        if self.turns.len() >= MAX_MATRICES && !self.turns.contains_key(&key) {
            self.turns.clear();
        }
        let turn = self.turns.entry(key).or_insert(0);
        *turn += 1;
        DISTANCES[((*turn - 1) % N as u64) as usize]
    }

    /// Records a call that read `bytes` of weights with `distance`, on the pool
    /// (`pooled`) or not, and took `elapsed`; at the end of an exploration, keeps the
    /// cheapest distance.
    pub fn record(
        &mut self,
        distance: usize,
        bytes: u64,
        rows: usize,
        pooled: bool,
        elapsed: Duration,
    ) {
        if matches!(self.policy, Policy::Fixed(_)) {
            return;
        }
        if self.exploring() {
            let arm = DISTANCES.iter().position(|&d| d == distance);
            let i = self
                .groups
                .iter()
                .position(|g| g.bytes == bytes && g.rows == rows && g.pooled == pooled);
            let i = match i {
                Some(i) => Some(i),
                None if self.groups.len() < MAX_GROUPS => {
                    self.groups.push(Group {
                        bytes,
                        rows,
                        pooled,
                        calls: 0,
                        ns: Default::default(),
                    });
                    Some(self.groups.len() - 1)
                }
                None => None,
            };
            if let (Some(arm), Some(i)) = (arm, i) {
                let g = &mut self.groups[i];
                g.ns[arm].push(elapsed.as_nanos().min(u64::MAX as u128) as u64);
                g.calls += 1;
            }
        }
        self.call += 1;
        if self.call == EXPLORE_CALLS {
            self.choose();
        } else if self.call >= EXPLORE_CALLS + EXPLOIT_CALLS {
            self.call = 0;
        }
    }

    /// Starts a new exploration now (a model was loaded: its shapes are new).
    pub fn restart(&mut self) {
        self.call = 0;
        self.groups.clear();
        self.last = None;
    }

    /// Keeps the cheapest distance of the exploration just ended, and forgets its calls.
    fn choose(&mut self) {
        let mut cost = [0f64; N];
        let mut measured = false;
        for g in &mut self.groups {
            // A shape counts only where every distance has calls in it.
            if g.ns.iter().any(|v| v.is_empty()) {
                continue;
            }
            measured = true;
            for (c, v) in cost.iter_mut().zip(g.ns.iter_mut()) {
                *c += median(v) * g.calls as f64;
            }
        }
        self.groups.clear();
        self.explorations += 1;
        if !measured {
            return;
        }
        let best = (0..N)
            .min_by(|&a, &b| cost[a].total_cmp(&cost[b]))
            .unwrap_or(0);
        self.chosen = best;
        self.last = Some(Choice {
            distance: DISTANCES[best],
            relative: cost.map(|c| c / cost[best]),
            exploration: self.explorations,
        });
    }

    /// The last exploration's choice (`None` before one ends, or with a fixed policy).
    pub fn choice(&self) -> Option<Choice> {
        self.last
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }
}

/// The median of `v`, which is not empty (sorted in place; the mean of the middle two for
/// an even count).
fn median(v: &mut [u64]) -> f64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    }
}

/// The policy `LLM_JUDGE_PREFETCH` sets, read once (a bad value warns and measures).
fn policy() -> Policy {
    static P: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    *P.get_or_init(|| {
        let v = std::env::var("LLM_JUDGE_PREFETCH").ok();
        Policy::from_env_value(v.as_deref()).unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            Policy::Measure
        })
    })
}

/// The process's tuner for `calls`.
fn with<R>(calls: Calls, f: impl FnOnce(&mut Tuner) -> R) -> R {
    static T: [std::sync::OnceLock<Mutex<Tuner>>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let t = T[calls as usize].get_or_init(|| Mutex::new(Tuner::new(policy())));
    f(&mut t.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Calls of each kind recorded since the process started (fixed policy included).
static RECORDED: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// The distance for the next call of `calls` to the matrix `matrix` (its weights'
/// address).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn pick(calls: Calls, matrix: usize, rows: usize) -> usize {
    match policy() {
        Policy::Fixed(d) => d,
        Policy::Measure => with(calls, |t| t.pick(matrix, rows)),
    }
}

/// Records a call of `calls` (see [`Tuner::record`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn record(
    calls: Calls,
    distance: usize,
    bytes: u64,
    rows: usize,
    pooled: bool,
    elapsed: Duration,
) {
    RECORDED[calls as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if policy() == Policy::Measure {
        with(calls, |t| t.record(distance, bytes, rows, pooled, elapsed));
    }
}

/// Calls of `calls` recorded since the process started.
pub fn recorded(calls: Calls) -> u64 {
    RECORDED[calls as usize].load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts a new exploration for every kind of call (see [`Tuner::restart`]); a model's
/// loading calls it.
pub fn restart() {
    if policy() == Policy::Measure {
        with(Calls::Decode, Tuner::restart);
        with(Calls::Batch, Tuner::restart);
    }
}

/// The policy in force and the process's current choice of distance for `calls` (`None`
/// until an exploration ends after the last model load, or with a fixed
/// `LLM_JUDGE_PREFETCH`).
pub fn current(calls: Calls) -> (Policy, Option<Choice>) {
    match policy() {
        Policy::Fixed(d) => (Policy::Fixed(d), None),
        Policy::Measure => with(calls, |t| (t.policy(), t.choice())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_is_decoding_two_to_sixteen_batched_and_more_a_prompt() {
        assert_eq!(Calls::of(0), None);
        assert_eq!(Calls::of(1), Some(Calls::Decode));
        assert_eq!(Calls::of(2), Some(Calls::Batch));
        assert_eq!(Calls::of(BATCH_ROWS), Some(Calls::Batch));
        assert_eq!(Calls::of(BATCH_ROWS + 1), None);
        assert_eq!(Calls::of(512), None);
    }

    /// Runs a tuner through `calls` decoding calls of a model whose matrices `(id, bytes)`
    /// are read in order, token after token, each call taking `cost(id, distance)`
    /// nanoseconds, all on the pool.
    fn drive(
        t: &mut Tuner,
        calls: u64,
        model: &[(usize, u64)],
        cost: impl Fn(usize, usize) -> u64,
    ) {
        for i in 0..calls {
            let (id, bytes) = model[(i % model.len() as u64) as usize];
            let d = t.pick(id, 1);
            t.record(d, bytes, 1, true, Duration::from_nanos(cost(id, d)));
        }
    }

    #[test]
    fn the_cheapest_distance_is_kept_and_tried_again_later() {
        let mut t = Tuner::new(Policy::Measure);
        assert_eq!(t.choice(), None);
        // 8 KiB is 10 % faster than the rest, on three shapes of very different sizes.
        let model = [(1, 221_184), (2, 1_327_104), (3, 191_439_360)];
        let bytes = |id: usize| model[id - 1].1;
        let fast = |id: usize, d: usize| bytes(id) / if d == 8192 { 11 } else { 10 };
        drive(&mut t, EXPLORE_CALLS, &model, fast);
        let c = t.choice().expect("an exploration ended");
        assert_eq!((c.distance, c.exploration), (8192, 1));
        assert!((c.relative[0] - 1.1).abs() < 0.01, "{:?}", c.relative);
        assert_eq!(c.relative[2], 1.0);
        // Kept for the exploitation, whatever the calls cost meanwhile.
        for _ in 0..EXPLOIT_CALLS {
            assert_eq!(t.pick(1, 1), 8192);
            t.record(8192, model[0].1, 1, true, Duration::from_nanos(1));
        }
        // Then tried again: now no prefetch is the cheapest.
        let slow = |id: usize, d: usize| bytes(id) / if d == 0 { 12 } else { 10 };
        drive(&mut t, EXPLORE_CALLS, &model, slow);
        let c = t.choice().expect("a second exploration ended");
        assert_eq!((c.distance, c.exploration), (0, 2));
        assert_eq!(t.pick(2, 1), 0);
        // A model loaded: the old choice is forgotten, and exploring starts again at once.
        t.restart();
        assert_eq!(t.choice(), None);
        let seen: Vec<usize> = (0..4).map(|_| t.pick(2, 1)).collect();
        assert!(seen.iter().any(|&d| d != 0), "{seen:?}");
    }

    #[test]
    fn each_matrix_takes_every_distance_in_turn_and_a_stall_moves_no_median() {
        let mut t = Tuner::new(Policy::Measure);
        let seen: Vec<usize> = (0..8)
            .map(|_| {
                let d = t.pick(7, 1);
                t.record(d, 1000, 1, true, Duration::from_nanos(100));
                d
            })
            .collect();
        assert_eq!(seen, [DISTANCES, DISTANCES].concat());
        // 4 KiB is the fastest, but a few of its calls were preempted for milliseconds: the
        // median ignores them (a sum would not).
        let mut t = Tuner::new(Policy::Measure);
        let mut stalls = 0;
        for _ in 0..EXPLORE_CALLS {
            let d = t.pick(7, 1);
            let ns = match d {
                4096 if stalls < 40 => {
                    stalls += 1;
                    5_000_000
                }
                4096 => 900,
                _ => 1000,
            };
            t.record(d, 5000, 1, true, Duration::from_nanos(ns));
        }
        assert_eq!(t.choice().map(|c| c.distance), Some(4096));
    }

    #[test]
    fn two_matrices_of_one_shape_do_not_tie_a_distance_to_one_of_them() {
        // The query and output projections have one shape and alternate; the query's calls
        // take twice as long. No prefetch is 5 % faster on both. Turns taken per shape
        // would time distances 0 and 8 KiB only on the query and 4 and 16 KiB only on the
        // output projection, and keep 4 KiB.
        let mut t = Tuner::new(Policy::Measure);
        let model = [(10, 2_654_208), (11, 2_654_208)];
        let cost = |id: usize, d: usize| {
            let base = if id == 10 { 2000 } else { 1000 };
            if d == 0 {
                base * 95 / 100
            } else {
                base
            }
        };
        drive(&mut t, EXPLORE_CALLS, &model, cost);
        assert_eq!(t.choice().map(|c| c.distance), Some(0));
    }

    #[test]
    fn the_mix_of_shapes_does_not_decide_and_calls_off_the_pool_are_apart() {
        // The big shape's calls are slow per call but come rarely; 16 KiB is 5 % faster on
        // each shape.
        let mut t = Tuner::new(Policy::Measure);
        let model = [(1, 100), (2, 200), (3, 300), (4, 1_000_000)];
        let cost = |id: usize, d: usize| {
            let b = model[id - 1].1;
            if d == 16384 {
                b * 95
            } else {
                b * 100
            }
        };
        drive(&mut t, EXPLORE_CALLS, &model, cost);
        assert_eq!(t.choice().map(|c| c.distance), Some(16384));
        // Calls on the calling thread alone are ten times slower and, by chance, all came
        // with 16 KiB: grouped apart, they do not count against it (that group lacks the
        // other distances).
        let mut t = Tuner::new(Policy::Measure);
        for i in 0..EXPLORE_CALLS {
            let d = t.pick(1, 1);
            let alone = d == 16384 && i % 8 == 0;
            let ns = if alone { 9_500 } else { cost(1, d) };
            t.record(d, 100, 1, !alone, Duration::from_nanos(ns));
        }
        assert_eq!(t.choice().map(|c| c.distance), Some(16384));
    }

    #[test]
    fn batches_of_different_sizes_on_one_matrix_take_turns_and_groups_of_their_own() {
        // One matrix called with 2 rows, then 16, then 2 … (a batch that shrinks and grows);
        // 16 rows cost eight times as much, and 16 KiB is 5 % faster on both. Turns and
        // groups shared by the two sizes would give each distance the calls of one size
        // only (four distances, two sizes alternating: 16 KiB would see only 16 rows), and
        // keep a distance that only met 2 rows.
        let mut t = Tuner::new(Policy::Measure);
        for i in 0..EXPLORE_CALLS {
            let rows = if i % 2 == 0 { 2 } else { 16 };
            let d = t.pick(1, rows);
            let base = 100 * rows as u64;
            let ns = if d == 16384 { base * 95 / 100 } else { base };
            t.record(d, 5000, rows, true, Duration::from_nanos(ns));
        }
        assert_eq!(t.choice().map(|c| c.distance), Some(16384));
    }

    #[test]
    fn more_shapes_than_groups_still_choose() {
        let mut t = Tuner::new(Policy::Measure);
        let model: Vec<(usize, u64)> = (0..3 * MAX_GROUPS)
            .map(|i| (i, 64 * (i as u64 + 1)))
            .collect();
        drive(&mut t, EXPLORE_CALLS, &model, |_, d| {
            if d == 8192 {
                90
            } else {
                100
            }
        });
        assert_eq!(t.choice().map(|c| c.distance), Some(8192));
    }

    #[test]
    fn a_fixed_distance_is_never_measured() {
        for (v, d) in [("0", 0), ("1", 16384), (" 8192 ", 8192)] {
            let p = Policy::from_env_value(Some(v)).unwrap();
            assert_eq!(p, Policy::Fixed(d));
            let mut t = Tuner::new(p);
            drive(&mut t, EXPLORE_CALLS + 10, &[(1, 10), (2, 20)], |_, _| 5);
            assert_eq!(t.pick(1, 1), d);
            assert_eq!(t.choice(), None);
        }
        assert_eq!(Policy::from_env_value(None), Ok(Policy::Measure));
        assert_eq!(Policy::from_env_value(Some("")), Ok(Policy::Measure));
        for bad in ["on", "-1", "2097152", "4k"] {
            let e = Policy::from_env_value(Some(bad)).unwrap_err();
            assert!(e.contains("LLM_JUDGE_PREFETCH") && e.contains(bad), "{e}");
        }
    }
}
