//! Sampling settings and the sampler that turns a logits vector into a token.
//!
//! The filters follow llama.cpp's order, which the write-up's app used through
//! llama-cpp-python: repetition penalty, then `top_k`, `top_p` and `min_p` on the model's own
//! distribution (temperature 1), then `temperature` reshapes the tokens that survive.
//!
//! - `min_p` keeps every token whose probability is at least `min_p` times the probability of
//!   the most likely token. It is **not** a nucleus cutoff.
//! - `top_p` (nucleus) keeps the smallest set of most likely tokens whose cumulative
//!   probability reaches `top_p`.
//! - `temperature == 0` means greedy decoding: the most likely token, ties to the lowest id.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Temperatures below this decode greedily: at such a temperature sampling is greedy in
/// effect, and the division would overflow `f32`.
pub const GREEDY_BELOW: f64 = 1e-6;

/// Sampling settings for one generation. Plain data: serialisable, comparable, hashable as
/// part of a record key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature applied after the filters; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; 0 disables the filter.
    pub top_k: usize,
    /// Nucleus cutoff in (0, 1]; 1 disables the filter.
    pub top_p: f64,
    /// Keep tokens with `p >= min_p * p_max`, in [0, 1]; 0 disables the filter.
    pub min_p: f64,
    /// CTRL-style repetition penalty (> 0); 1 disables it.
    pub repetition_penalty: f64,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the sampler's random stream.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Holds the reply to a regular language (a local model only; see [`Constraint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
}

/// A regular language the reply must belong to: tokens that would leave it get probability
/// 0, and the reply ends only where it is complete (`crate::engine` compiles it once into a
/// DFA over bytes). A judge's verdict form becomes one ([`crate::judge`]), so a local judge
/// cannot write a verdict its parser cannot read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// The language, as a regular expression over the whole reply (regex syntax, anchored
    /// at both ends).
    pub regex: String,
    /// Free text may come first, then a newline and the `regex` part; when the token
    /// budget is about to run out, the `regex` part is forced. The part must have a
    /// bounded length.
    #[serde(default)]
    pub free_text: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::neutral()
    }
}

impl SamplingParams {
    /// Temperature 1 with every filter off: samples the model's own distribution.
    pub fn neutral() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
            constraint: None,
        }
    }

    /// Greedy decoding (temperature 0): fully deterministic.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::neutral()
        }
    }

    /// The write-up's setting p1: temperature 0.5, min_p 0.05.
    pub fn p1() -> Self {
        Self {
            temperature: 0.5,
            min_p: 0.05,
            ..Self::neutral()
        }
    }

    /// The write-up's setting p2: temperature 1.5, min_p 0.1.
    pub fn p2() -> Self {
        Self {
            temperature: 1.5,
            min_p: 0.1,
            ..Self::neutral()
        }
    }

    /// Looks up a named preset: `p1`, `p2`, `greedy` or `neutral`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "p1" => Ok(Self::p1()),
            "p2" => Ok(Self::p2()),
            "greedy" | "deterministic" => Ok(Self::greedy()),
            "neutral" => Ok(Self::neutral()),
            other => Err(Error::UnknownPreset(other.to_string())),
        }
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// Sets min_p.
    pub fn with_min_p(mut self, p: f64) -> Self {
        self.min_p = p;
        self
    }
    /// Sets top_p.
    pub fn with_top_p(mut self, p: f64) -> Self {
        self.top_p = p;
        self
    }
    /// Sets top_k.
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the token limit.
    pub fn with_max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }
    /// Adds a stop string.
    pub fn with_stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
    /// Holds the reply to `constraint`.
    pub fn with_constraint(mut self, constraint: Option<Constraint>) -> Self {
        self.constraint = constraint;
        self
    }

    /// Checks every value against its range and names the first one that is off.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: f64, reason: &str| {
            Err(Error::InvalidSampling {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                self.temperature,
                "must be >= 0 (0 is greedy)",
            );
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad("min_p", self.min_p, "must be in [0, 1]");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty,
                "must be > 0 (1 is off)",
            );
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", 0.0, "must be at least 1");
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::InvalidSampling {
                field: "stop",
                value: "\"\"".into(),
                reason: "stop strings must not be empty".into(),
            });
        }
        Ok(())
    }

    /// True when decoding is greedy: temperature 0, or so close to it (below
    /// [`GREEDY_BELOW`]) that dividing logits by it would overflow.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_BELOW
    }
}

/// One sampled token with its log-probability under the model's own distribution
/// (temperature 1, before any filter or penalty).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// Token id.
    pub token: u32,
    /// Natural-log probability of `token` under the raw model distribution.
    pub logprob: f32,
}

/// Maps logits to tokens with a seeded, per-sequence random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Validates `params` and seeds the random stream from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    /// Picks the next token. `history` holds the tokens seen so far (prompt and generated),
    /// which the repetition penalty reads.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<Sampled> {
        if logits.is_empty() {
            return Err(Error::Tokenizer("empty logits vector".into()));
        }
        let logprob_of = log_softmax_at(logits);
        let penalized;
        let work: &[f32] = if self.params.repetition_penalty != 1.0 {
            penalized = apply_repetition_penalty(
                logits,
                history,
                self.params.repetition_penalty as f32,
                self.params.repeat_last_n,
            );
            &penalized
        } else {
            logits
        };
        let token = if self.params.is_greedy() {
            argmax(work)
        } else {
            let dist = filtered_distribution(work, &self.params);
            let u: f64 = self.rng.random();
            draw(&dist, u)
        };
        Ok(Sampled {
            token,
            logprob: logprob_of(token),
        })
    }
}

/// Index of the largest value; ties go to the lowest index. NaN never wins.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in xs.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Returns a closure giving `log_softmax(logits)[i]`, computing the normaliser once.
fn log_softmax_at(logits: &[f32]) -> impl Fn(u32) -> f32 + '_ {
    let log_z = log_normaliser(logits);
    move |i| (logits[i as usize] as f64 - log_z) as f32
}

/// `ln Σ e^l` over a logits vector, so that `l - ln Σ e^l` is a token's log-probability.
/// Blocks of 1,024 values are summed in f32, in eight lanes with a vectorised exponential
/// (within a few ulp of the library's), and the blocks in f64: a vocabulary of 262,144
/// tokens costs about 0.1 ms, where one `f64::exp` per token took over 1 ms, once per
/// generated token and sequence.
pub fn log_normaliser(logits: &[f32]) -> f64 {
    use crate::model::activation::exp;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for block in logits.chunks(1024) {
        let mut lanes = [0f32; 8];
        let mut eights = block.chunks_exact(8);
        for c in &mut eights {
            let e: [f32; 8] = std::array::from_fn(|j| exp(c[j] - max));
            lanes = std::array::from_fn(|j| lanes[j] + e[j]);
        }
        let rest: f32 = eights.remainder().iter().map(|&l| exp(l - max)).sum();
        sum += lanes.iter().map(|&s| s as f64).sum::<f64>() + rest as f64;
    }
    max as f64 + sum.ln()
}

fn apply_repetition_penalty(logits: &[f32], history: &[u32], penalty: f32, n: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    let start = history.len().saturating_sub(n);
    let mut seen = std::collections::HashSet::new();
    for &t in &history[start..] {
        if seen.insert(t) {
            if let Some(l) = out.get_mut(t as usize) {
                *l = if *l >= 0.0 {
                    *l / penalty
                } else {
                    *l * penalty
                };
            }
        }
    }
    out
}

/// The distribution the sampler draws from: `(token, probability)` pairs of the tokens that
/// pass `top_k`, `top_p` and `min_p`, most likely first, with `temperature` applied and the
/// probabilities summing to 1. For temperature 0 it is the single greedy token.
///
/// Exposed so that tests and analyses can inspect exactly which tokens a setting keeps.
pub fn filtered_distribution(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f64)> {
    if params.is_greedy() {
        return vec![(argmax(logits), 1.0)];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Unnormalised probabilities at temperature 1.
    let weight = |i: u32| ((logits[i as usize] - max) as f64).exp();

    // top_k: the k largest, by weight then by id, chosen among the few tokens that can be
    // among them (every token where that shortcut does not apply).
    let ids: Vec<u32> = top_k_candidates(logits, max, params.top_k)
        .unwrap_or_else(|| (0..logits.len() as u32).collect());
    let mut candidates: Vec<(u32, f64)> = ids.into_iter().map(|i| (i, weight(i))).collect();
    if params.top_k > 0 && params.top_k < candidates.len() {
        candidates.select_nth_unstable_by(params.top_k - 1, cmp_desc);
        candidates.truncate(params.top_k);
    }
    // The k survivors' mass summed most likely first, whatever order selection left (where
    // top_k keeps every token, in id order as before, and sorted after min_p).
    let sorted = params.top_k > 0 && params.top_k < logits.len();
    if sorted {
        candidates.sort_unstable_by(cmp_desc);
    }
    let z_k: f64 = candidates.iter().map(|&(_, w)| w).sum();

    // min_p on the ratio to the top token (scale-free, so normalisation does not matter).
    // The top token has weight 1 because we subtracted the max.
    if params.min_p > 0.0 {
        let threshold = params.min_p;
        candidates.retain(|&(_, w)| w >= threshold);
    }
    if !sorted {
        candidates.sort_unstable_by(cmp_desc);
    }

    // top_p on the top_k-normalised distribution. Both top_p and min_p keep a prefix of the
    // sorted order, so applying top_p to the min_p survivors gives the same set as applying
    // them one after the other in llama.cpp's order.
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = candidates.len();
        for (n, &(_, w)) in candidates.iter().enumerate() {
            cum += w / z_k;
            if cum >= params.top_p {
                keep = n + 1;
                break;
            }
        }
        candidates.truncate(keep.max(1));
    }

    // Temperature on the survivors.
    let inv_t = 1.0 / params.temperature;
    let tw: Vec<f64> = candidates
        .iter()
        .map(|&(i, _)| (((logits[i as usize] - max) as f64) * inv_t).exp())
        .collect();
    let z: f64 = tw.iter().sum();
    candidates
        .into_iter()
        .zip(tw)
        .map(|((i, _), w)| (i, w / z))
        .collect()
}

/// Most likely first: by weight, then by id.
fn cmp_desc(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Every token that can be among the `k` of largest weight `exp(l - max)` (ties to the lower
/// id), in id order: those whose logit is at least the lowest logit that still has the
/// `k`-th largest logit's weight. The weight never decreases as the logit grows, so the
/// `k`-th largest weight is the `k`-th largest logit's, and a token outside this set weighs
/// less. Found by comparing logits, where the full ordering computed an exponential for each
/// of a vocabulary's 150,000 tokens and selected among them by it, for each token drawn.
/// `None` where `k` keeps every token, or where a logit is NaN or the largest is not finite
/// (the full ordering handles those).
fn top_k_candidates(logits: &[f32], max: f32, k: usize) -> Option<Vec<u32>> {
    if k == 0 || k >= logits.len() || !max.is_finite() || logits.iter().any(|l| l.is_nan()) {
        return None;
    }
    // The k-th largest logit: a min-heap of the k largest seen so far.
    let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
    for &l in logits {
        let key = std::cmp::Reverse(ordered(l));
        if heap.len() < k {
            heap.push(key);
        } else if heap.peek().is_some_and(|m| key < *m) {
            heap.pop();
            heap.push(key);
        }
    }
    let t = from_ordered(heap.peek()?.0);
    let weight = |l: f32| ((l - max) as f64).exp();
    let w_k = weight(t);
    // The lowest logit of weight `w_k`, by bisection over the f32 values from -inf to `t`
    // in order (several logits can share a weight where the exponential rounds or
    // underflows).
    let (mut lo, mut hi) = (ordered(f32::NEG_INFINITY), ordered(t));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if weight(from_ordered(mid)) >= w_k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let floor = from_ordered(hi);
    Some(
        (0..logits.len() as u32)
            .filter(|&i| logits[i as usize] >= floor)
            .collect(),
    )
}

/// An f32 as an integer in the same order as `f32::total_cmp` (widened so that differences
/// of two never overflow).
fn ordered(x: f32) -> i64 {
    let b = x.to_bits() as i32;
    (b ^ (((b >> 31) as u32) >> 1) as i32) as i64
}

/// The f32 that [`ordered`] maps to `k`.
fn from_ordered(k: i64) -> f32 {
    let b = k as i32;
    f32::from_bits((b ^ (((b >> 31) as u32) >> 1) as i32) as u32)
}

/// Inverse-CDF draw from a normalised distribution with a uniform `u` in [0, 1).
fn draw(dist: &[(u32, f64)], u: f64) -> u32 {
    let mut cum = 0.0;
    for &(t, p) in dist {
        cum += p;
        if u < cum {
            return t;
        }
    }
    // Rounding left `u` past the sum: the last token with any weight (a token a
    // constraint masked has none and must never be drawn).
    dist.iter()
        .rev()
        .find(|&&(_, p)| p > 0.0)
        .or(dist.last())
        .map(|&(t, _)| t)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normaliser_matches_a_plain_f64_sum() {
        // A vocabulary the size of Gemma 3's, with a spread of logits like a model's.
        let n = 262_144 + 5;
        let logits: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.9) * 30.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let reference = max as f64
            + logits
                .iter()
                .map(|&l| ((l - max) as f64).exp())
                .sum::<f64>()
                .ln();
        let got = log_normaliser(&logits);
        assert!((got - reference).abs() < 1e-5, "{got} vs {reference}");
        // One dominant token: its log-probability is near 0.
        let mut one = vec![-50.0f32; 1000];
        one[3] = 10.0;
        assert!((one[3] as f64 - log_normaliser(&one)).abs() < 1e-6);
        assert!(log_normaliser(&[1.0, f32::NAN]).is_nan());
    }

    /// Logits whose softmax is exactly `probs`.
    fn logits_for(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn kept(dist: &[(u32, f64)]) -> Vec<u32> {
        let mut ids: Vec<u32> = dist.iter().map(|&(t, _)| t).collect();
        ids.sort();
        ids
    }

    const PROBS: [f64; 6] = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04];

    #[test]
    fn min_p_keeps_tokens_at_or_above_ratio_of_top() {
        let l = logits_for(&PROBS);
        // threshold 0.24 * 0.40 = 0.096: keeps 0.40, 0.25, 0.15, 0.10
        let p = SamplingParams::neutral().with_min_p(0.24);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![0, 1, 2, 3]);
        // threshold 0.26 * 0.40 = 0.104: drops 0.10
        let p = SamplingParams::neutral().with_min_p(0.26);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![0, 1, 2]);
        // threshold 0.5 * 0.4 = 0.2: keeps 0.40, 0.25
        let p = SamplingParams::neutral().with_min_p(0.5);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![0, 1]);
        // min_p 1 keeps only the top token
        let p = SamplingParams::neutral().with_min_p(1.0);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![0]);
    }

    #[test]
    fn min_p_is_not_a_nucleus_cutoff() {
        // A top_p of 0.5 keeps {0.40, 0.25}; min_p of 0.5 keeps {0.40, 0.25} too, but a
        // flat distribution tells them apart: min_p keeps all, top_p keeps half.
        let flat = logits_for(&[0.25, 0.25, 0.25, 0.25]);
        let mp = SamplingParams::neutral().with_min_p(0.5);
        assert_eq!(filtered_distribution(&flat, &mp).len(), 4);
        let tp = SamplingParams::neutral().with_top_p(0.5);
        assert_eq!(filtered_distribution(&flat, &tp).len(), 2);
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_p() {
        let l = logits_for(&PROBS);
        let cases = [
            (0.39, vec![0]),
            (0.41, vec![0, 1]),
            (0.64, vec![0, 1]),
            (0.66, vec![0, 1, 2]),
            (0.94, vec![0, 1, 2, 3, 4]),
            (0.97, vec![0, 1, 2, 3, 4, 5]),
            (1.0, vec![0, 1, 2, 3, 4, 5]),
        ];
        for (p, want) in cases {
            let params = SamplingParams::neutral().with_top_p(p);
            assert_eq!(kept(&filtered_distribution(&l, &params)), want, "top_p={p}");
        }
    }

    /// The sampler's filtering as it was before [`top_k_candidates`]: every token's weight,
    /// ordered by it.
    fn filtered_by_full_ordering(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f64)> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
        let by =
            |a: &u32, b: &u32| cmp_desc(&(*a, weights[*a as usize]), &(*b, weights[*b as usize]));
        let mut c: Vec<u32> = (0..logits.len() as u32).collect();
        if params.top_k > 0 && params.top_k < c.len() {
            c.select_nth_unstable_by(params.top_k - 1, by);
            c.truncate(params.top_k);
        }
        let z_k: f64 = c.iter().map(|&i| weights[i as usize]).sum();
        if params.min_p > 0.0 {
            c.retain(|&i| weights[i as usize] >= params.min_p);
        }
        c.sort_unstable_by(by);
        if params.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (n, &i) in c.iter().enumerate() {
                cum += weights[i as usize] / z_k;
                if cum >= params.top_p {
                    keep = n + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        let tw: Vec<f64> = c
            .iter()
            .map(|&i| (((logits[i as usize] - max) as f64) * (1.0 / params.temperature)).exp())
            .collect();
        let z: f64 = tw.iter().sum();
        c.into_iter().zip(tw).map(|(i, w)| (i, w / z)).collect()
    }

    #[test]
    fn top_k_from_the_few_candidates_keeps_what_the_full_ordering_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut cases = 0;
        for n in [7usize, 64, 1000, 151_936] {
            for shape in 0..6 {
                let logits: Vec<f32> = (0..n)
                    .map(|i| {
                        let x: f32 = rng.random_range(-12.0..12.0);
                        match shape {
                            0 => x,
                            // Ties: a handful of distinct values.
                            1 => (x / 4.0).round() * 4.0,
                            // Masked tokens, as a constraint leaves them.
                            2 if i % 3 != 0 => f32::NEG_INFINITY,
                            // Weights that underflow to zero, tied with each other.
                            3 if i % 2 == 0 => -1.0e5 - x,
                            // Every token alike.
                            4 => 1.5,
                            // Distinct logits so close their weights round alike.
                            5 => 1.0e-3 * (i % 17) as f32 * f32::EPSILON,
                            _ => x,
                        }
                    })
                    .collect();
                for k in [1, 2, 5, 40, n - 1, n, n + 3, 0] {
                    for (top_p, min_p) in [(1.0, 0.0), (0.95, 0.05), (0.5, 0.1), (0.999, 0.0)] {
                        for temperature in [0.5, 1.5] {
                            let params = SamplingParams::neutral()
                                .with_top_k(k)
                                .with_top_p(top_p)
                                .with_min_p(min_p)
                                .with_temperature(temperature);
                            let want = filtered_by_full_ordering(&logits, &params);
                            let got = filtered_distribution(&logits, &params);
                            assert_eq!(got, want, "n {n}, shape {shape}, {params:?}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 4 * 6 * 8 * 4 * 2);
        // NaN logits take the full ordering, and do not panic.
        let params = SamplingParams::neutral().with_top_k(2);
        let d = filtered_distribution(&[1.0, f32::NAN, 0.5, 2.0], &params);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn f32_order_as_integers_round_trips() {
        for x in [
            f32::NEG_INFINITY,
            -1.5,
            -0.0,
            0.0,
            1.0e-40,
            3.0,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(from_ordered(ordered(x)).to_bits(), x.to_bits());
        }
        let xs = [
            f32::NEG_INFINITY,
            -2.0,
            -1.0e-40,
            -0.0,
            0.0,
            1.0e-40,
            2.0,
            f32::INFINITY,
        ];
        assert!(xs.windows(2).all(|w| ordered(w[0]) < ordered(w[1])));
    }

    #[test]
    fn top_k_keeps_k_most_likely() {
        let l = logits_for(&[0.1, 0.3, 0.05, 0.35, 0.2]);
        let p = SamplingParams::neutral().with_top_k(2);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![1, 3]);
    }

    #[test]
    fn top_p_after_top_k_uses_renormalised_mass() {
        // top_k 2 keeps {0.40, 0.25}; renormalised 0.615, 0.385. top_p 0.6 keeps only the first.
        let l = logits_for(&PROBS);
        let p = SamplingParams::neutral().with_top_k(2).with_top_p(0.6);
        assert_eq!(kept(&filtered_distribution(&l, &p)), vec![0]);
    }

    #[test]
    fn temperature_reshapes_survivors_and_normalises() {
        let l = logits_for(&PROBS);
        let p = SamplingParams::neutral()
            .with_min_p(0.24)
            .with_temperature(0.5);
        let d = filtered_distribution(&l, &p);
        let sum: f64 = d.iter().map(|x| x.1).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        // At T=0.5 the weights are p^2: 0.16, 0.0625, 0.0225, 0.01 -> normalised.
        let z = 0.16 + 0.0625 + 0.0225 + 0.01;
        assert!((d[0].1 - 0.16 / z).abs() < 1e-6);
        assert!((d[3].1 - 0.01 / z).abs() < 1e-6);
    }

    #[test]
    fn sampled_frequencies_match_filtered_distribution() {
        let l = logits_for(&PROBS);
        for params in [
            SamplingParams::p1(),
            SamplingParams::p2(),
            SamplingParams::neutral().with_top_p(0.8).with_seed(7),
        ] {
            let expected = filtered_distribution(&l, &params);
            let mut s = Sampler::new(params.clone()).unwrap();
            let n = 100_000;
            let mut counts = [0usize; 6];
            for _ in 0..n {
                counts[s.sample(&l, &[]).unwrap().token as usize] += 1;
            }
            // Tolerance 0.01 absolute: the standard error at n=1e5 is at most 0.0016,
            // so this is over six standard errors.
            for (t, &c) in counts.iter().enumerate() {
                let want = expected
                    .iter()
                    .find(|x| x.0 == t as u32)
                    .map(|x| x.1)
                    .unwrap_or(0.0);
                let got = c as f64 / n as f64;
                assert!(
                    (got - want).abs() < 0.01,
                    "{params:?}: token {t} freq {got} want {want}"
                );
                if want == 0.0 {
                    assert_eq!(c, 0, "filtered-out token {t} was sampled");
                }
            }
        }
    }

    #[test]
    fn greedy_is_argmax_and_reports_raw_logprob() {
        let l = logits_for(&[0.2, 0.5, 0.3]);
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        let out = s.sample(&l, &[]).unwrap();
        assert_eq!(out.token, 1);
        assert!((out.logprob - 0.5f32.ln()).abs() < 1e-5);
        // A temperature too small to divide by (below f32's range) is greedy too, not noise.
        let mut p = SamplingParams::greedy();
        p.temperature = 1e-320;
        let mut s = Sampler::new(p).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&l, &[]).unwrap().token, 1);
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let l = logits_for(&PROBS);
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams::neutral().with_seed(seed)).unwrap();
            (0..50)
                .map(|_| s.sample(&l, &[]).unwrap().token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn repetition_penalty_discourages_seen_tokens() {
        let l = vec![2.0f32, 1.9, -1.0];
        let mut params = SamplingParams::greedy();
        params.repetition_penalty = 1.5;
        let mut s = Sampler::new(params).unwrap();
        assert_eq!(s.sample(&l, &[0]).unwrap().token, 1);
        assert_eq!(s.sample(&l, &[]).unwrap().token, 0);
    }

    #[test]
    fn invalid_values_are_named() {
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams::neutral().with_temperature(-0.1),
                "temperature",
            ),
            (SamplingParams::neutral().with_min_p(1.5), "min_p"),
            (SamplingParams::neutral().with_min_p(-0.1), "min_p"),
            (SamplingParams::neutral().with_top_p(0.0), "top_p"),
            (SamplingParams::neutral().with_top_p(1.2), "top_p"),
            (
                SamplingParams::neutral().with_temperature(f64::NAN),
                "temperature",
            ),
        ];
        for (p, field) in cases {
            match p.validate() {
                Err(Error::InvalidSampling { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{p:?}: expected error on {field}, got {other:?}"),
            }
        }
        assert!(matches!(
            SamplingParams::preset("p3"),
            Err(Error::UnknownPreset(_))
        ));
        assert_eq!(SamplingParams::preset("p2").unwrap().temperature, 1.5);
    }

    #[test]
    fn a_token_without_weight_is_never_drawn() {
        // A constraint gives masked tokens weight 0; rounding past the sum must not land on
        // one of them.
        let dist = [(4u32, 0.25), (9, 0.75), (2, 0.0), (7, 0.0)];
        assert_eq!(draw(&dist, 0.1), 4);
        assert_eq!(draw(&dist, 0.999_999_999), 9);
        assert_eq!(draw(&dist, 1.0), 9);
    }
}
