//! Resampling the independent unit: prompts.
//!
//! Two answers to the same prompt are not independent, and neither are the several scores a
//! prompt gets in one judge call. Every interval here resamples prompts (clusters) with
//! replacement, and with several samples per prompt, the samples within each drawn prompt
//! (two-stage bootstrap). Clusters are sorted by id, and the values within a cluster by their
//! content ([`Canonical`]), so the result depends on the data and the seed only, not on the
//! order records were stored in (which follows the order calls finished).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;

/// A total order on a resampled value's content. The two-stage bootstrap draws values within
/// a cluster by position, so the values are put in this order first.
pub trait Canonical {
    /// Compares every field the statistics read.
    fn canonical_cmp(&self, other: &Self) -> Ordering;
}

impl Canonical for f64 {
    fn canonical_cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl Canonical for (String, f64, f64) {
    fn canonical_cmp(&self, other: &Self) -> Ordering {
        self.0
            .cmp(&other.0)
            .then(self.1.total_cmp(&other.1))
            .then(self.2.total_cmp(&other.2))
    }
}

/// Resampling iterations of every bootstrap interval.
pub const ITERS: usize = 2000;
/// Coverage of every interval.
pub const LEVEL: f64 = 0.95;

/// Values grouped by cluster (prompt), sorted by cluster id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clusters<T> {
    /// `(cluster id, values)`, sorted by id.
    pub groups: Vec<(String, Vec<T>)>,
}

impl<T: Clone + Canonical> Clusters<T> {
    /// Groups `(cluster, value)` pairs, clusters sorted by id and the values of a cluster in
    /// their canonical order, whatever order the pairs came in.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut groups: Vec<(String, Vec<T>)> = Vec::new();
        for (c, v) in pairs {
            match groups.binary_search_by(|(k, _)| k.as_str().cmp(c.as_str())) {
                Ok(i) => groups[i].1.push(v),
                Err(i) => groups.insert(i, (c, vec![v])),
            }
        }
        for (_, vs) in &mut groups {
            vs.sort_by(T::canonical_cmp);
        }
        Self { groups }
    }

    /// Number of clusters.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True with no cluster.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every value, cluster by cluster.
    pub fn values(&self) -> Vec<T> {
        self.groups
            .iter()
            .flat_map(|(_, v)| v.iter().cloned())
            .collect()
    }

    /// One two-stage resample: clusters drawn with replacement, and within each the values
    /// drawn with replacement.
    pub fn resample(&self, rng: &mut ChaCha8Rng) -> Vec<T> {
        let n = self.groups.len();
        let mut out = Vec::new();
        for _ in 0..n {
            let vals = &self.groups[rng.random_range(0..n)].1;
            for _ in 0..vals.len() {
                out.push(vals[rng.random_range(0..vals.len())].clone());
            }
        }
        out
    }

    /// Percentile bootstrap interval of `stat` over two-stage resamples; `(NaN, NaN)` with
    /// no data or when `stat` gives nothing finite.
    pub fn interval(&self, seed: u64, stat: impl Fn(&[T]) -> f64) -> (f64, f64) {
        if self.groups.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let stats: Vec<f64> = (0..ITERS)
            .map(|_| stat(&self.resample(&mut rng)))
            .filter(|s| s.is_finite())
            .collect();
        percentile_interval(stats, LEVEL)
    }
}

/// The `(1 - level) / 2` and `(1 + level) / 2` percentiles of `stats`.
pub fn percentile_interval(mut stats: Vec<f64>, level: f64) -> (f64, f64) {
    if stats.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    stats.sort_by(f64::total_cmp);
    let n = stats.len();
    let at = |q: f64| stats[((q * (n - 1) as f64).round() as usize).min(n - 1)];
    let alpha = (1.0 - level) / 2.0;
    (at(alpha), at(1.0 - alpha))
}

/// Mean; NaN when empty.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Mean and sample standard deviation (0 for one value; NaN for none).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = mean(xs);
    if xs.len() < 2 {
        // One value has no spread to estimate: null, not 0.
        return (m, f64::NAN);
    }
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    (m, v.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_values_arrive_in_does_not_change_an_interval() {
        // Several values per cluster, so the within-cluster draw is by position.
        let pairs: Vec<(String, f64)> = (0..30)
            .map(|i| (format!("p{}", i % 6), (i * 7 % 11) as f64))
            .collect();
        let mut reversed = pairs.clone();
        reversed.reverse();
        let a = Clusters::from_pairs(pairs).interval(3, mean);
        let b = Clusters::from_pairs(reversed).interval(3, mean);
        assert_eq!(a, b);
        assert!(a.0 < a.1);
    }

    #[test]
    fn mean_std_hand_computed() {
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - 2.138089935).abs() < 1e-6);
    }

    #[test]
    fn intervals_are_seeded_order_free_and_bracket_the_mean() {
        let xs = [1.31, 2.76, 3.19, 0.43, 5.97, 2.21, 3.36, 4.81, 1.12, 2.05];
        let pairs = |rev: bool| {
            let mut v: Vec<(String, f64)> = xs
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("p{i}"), *x))
                .collect();
            if rev {
                v.reverse();
            }
            Clusters::from_pairs(v)
        };
        let a = pairs(false).interval(7, mean);
        assert_eq!(
            a,
            pairs(true).interval(7, mean),
            "record order must not matter"
        );
        assert_ne!(a, pairs(false).interval(8, mean));
        let m = mean(&xs);
        assert!(a.0 < m && m < a.1, "{a:?}");
        // About mean ± 1.96 · sd / √n: sd 1.63, so a width near 2.
        assert!((a.1 - a.0) > 1.4 && (a.1 - a.0) < 2.6, "{a:?}");
        let c = Clusters::from_pairs(vec![("a".to_string(), 2.0); 5]);
        assert_eq!(c.interval(1, mean), (2.0, 2.0));
    }

    #[test]
    fn resampling_prompts_widens_intervals_of_correlated_samples() {
        // 8 prompts, 5 samples each; samples within a prompt nearly equal, prompts differ.
        let mut pairs = Vec::new();
        for p in 0..8 {
            for s in 0..5 {
                pairs.push((format!("p{p}"), p as f64 + s as f64 * 0.01));
            }
        }
        let clustered = Clusters::from_pairs(pairs.clone());
        let naive = Clusters::from_pairs(
            pairs
                .iter()
                .enumerate()
                .map(|(i, (_, v))| (format!("{i:03}"), *v)),
        );
        let (cl, ch) = clustered.interval(3, mean);
        let (nl, nh) = naive.interval(3, mean);
        assert!(
            ch - cl > 1.8 * (nh - nl),
            "clustered {cl}..{ch} vs naive {nl}..{nh}"
        );
    }
}
