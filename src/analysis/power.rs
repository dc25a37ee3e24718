//! What a design can show before anything runs: per judge mode, the paired comparisons it
//! makes, the smallest p-value it could reach, and the smallest difference it would detect
//! with 80 % power.
//!
//! The minimum detectable difference is the normal-theory one for a paired mean difference
//! over `n` prompts, with the first Holm step's level (α / m) for a family of `m`
//! comparisons: (t₁₋α/(2m), n−1 + t₀.₈, n−1) · SD / √n, the t quantiles from the
//! Cornish-Fisher expansion of the normal ones. It needs the per-prompt SD of the difference,
//! which no run has measured yet; unless one is given, it is taken as 15 % of the score's
//! range (1.35 points on the write-up's 3-12 total, 0.3 on a pairwise preference difference,
//! which runs from −1 to 1), and the report says it is assumed.

use super::paired::smallest_p;
use crate::records::Mode;
use serde::{Deserialize, Serialize};

/// Share of a score's range taken as the per-prompt SD of a difference when none is given.
pub const ASSUMED_SD_SHARE: f64 = 0.15;

/// One judge mode's headline comparisons, as the design allows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerRow {
    /// The mode.
    pub mode: Mode,
    /// Independent units: prompts.
    pub prompts: usize,
    /// Paired comparisons in the mode's Holm family.
    pub comparisons: usize,
    /// The smallest Holm-adjusted p any outcome could give ([`smallest_p`]).
    pub p_min: f64,
    /// The per-prompt SD of a difference used below, in the mode's units.
    pub sd: f64,
    /// Whether `sd` is the assumed share of the range rather than a measured figure.
    pub sd_assumed: bool,
    /// The smallest difference detected with 80 % power at α = 0.05 (NaN when even a
    /// one-sided outcome could not reach it).
    pub min_detectable: f64,
    /// The unit of `sd` and `min_detectable`.
    pub unit: String,
    /// Listwise in a fixed order: every comparison is also one of positions.
    #[serde(default)]
    pub confounded_with_position: bool,
    /// Not the primary mode: its comparisons are reported as exploratory, never findings.
    #[serde(default)]
    pub exploratory: bool,
}

/// The power rows of a planned design, one per judge mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerReport {
    /// One row per judge mode.
    pub rows: Vec<PowerRow>,
}

impl PowerReport {
    /// One sentence per mode.
    pub fn lines(&self) -> Vec<String> {
        self.rows.iter().map(PowerRow::describe).collect()
    }
}

impl std::fmt::Display for PowerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.lines() {
            writeln!(f, "power, {l}")?;
        }
        Ok(())
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Student's t quantile with `df` degrees of freedom, from the normal one by the
/// Cornish-Fisher expansion to the third order (within 1 % from 5 degrees of freedom on).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let z = normal_quantile(p);
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * df)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * df * df)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * df.powi(3))
}

/// The smallest paired mean difference a design of `n` prompts detects with 80 % power at
/// α = 0.05, two-sided, as the first step of Holm over `m` comparisons, for a per-prompt SD
/// `sd`. NaN below 2 prompts.
pub fn min_detectable(n: usize, m: usize, sd: f64) -> f64 {
    if n < 2 || m == 0 {
        return f64::NAN;
    }
    let df = (n - 1) as f64;
    let alpha = 0.05 / m as f64;
    (t_quantile(1.0 - alpha / 2.0, df) + t_quantile(0.8, df)) * sd / (n as f64).sqrt()
}

/// The power row of one mode: `range` is the width of its score scale (the difference's
/// scale for pairwise modes), `sd` a measured per-prompt SD if there is one, `unit` the
/// unit of a difference (`points`, `preference`).
pub fn power_row(
    mode: Mode,
    prompts: usize,
    comparisons: usize,
    range: f64,
    sd: Option<f64>,
    unit: &str,
) -> PowerRow {
    let p_min = smallest_p(prompts as u64, comparisons);
    let (sd, sd_assumed) = match sd {
        Some(s) => (s, false),
        None => (ASSUMED_SD_SHARE * range, true),
    };
    let min_detectable = if p_min <= 0.05 {
        min_detectable(prompts, comparisons, sd)
    } else {
        f64::NAN
    };
    PowerRow {
        mode,
        prompts,
        comparisons,
        p_min,
        sd,
        sd_assumed,
        min_detectable,
        unit: unit.into(),
        confounded_with_position: false,
        exploratory: false,
    }
}

impl PowerRow {
    /// One sentence.
    pub fn describe(&self) -> String {
        let mut s = self.describe_power();
        if self.exploratory {
            s = format!("{s} (exploratory: not the primary mode, so no finding)");
        }
        if self.confounded_with_position {
            format!(
                "{s}; but in a fixed order every listwise comparison is also one of positions \
                 (confounded with the judge's position bias; order = \"balanced\" separates them)"
            )
        } else {
            s
        }
    }

    fn describe_power(&self) -> String {
        let sd = format!(
            "per-prompt SD {:.2} {}{}",
            self.sd,
            self.unit,
            if self.sd_assumed {
                ", assumed: 15 % of the range"
            } else {
                ""
            }
        );
        if self.min_detectable.is_finite() {
            format!(
                "{}: {} comparisons over {} prompts; the smallest p they could reach after \
                 Holm is {:.4}; at 80 % power they detect a difference of {:.2} {} or more \
                 ({sd})",
                self.mode,
                self.comparisons,
                self.prompts,
                self.p_min,
                self.min_detectable,
                self.unit
            )
        } else {
            format!(
                "{}: {} comparisons over {} prompts cannot be resolved by any outcome: the \
                 smallest p they could reach after Holm is {:.3} ({sd})",
                self.mode,
                self.comparisons,
                self.prompts,
                if self.p_min.is_finite() {
                    self.p_min
                } else {
                    1.0
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tables() {
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-6);
        assert!((normal_quantile(0.8) - 0.841_621).abs() < 1e-6);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-6);
        // t tables: t(0.975, 9) = 2.262, t(0.8, 9) = 0.883; t(0.99375, 9) ≈ 3.11 (Holm's
        // first step for m = 4, between t(0.99, 9) = 2.821 and t(0.995, 9) = 3.250).
        assert!((t_quantile(0.975, 9.0) - 2.262).abs() < 0.01);
        assert!((t_quantile(0.99375, 9.0) - 3.11).abs() < 0.04);
        assert!(t_quantile(0.99, 9.0) > 2.79 && t_quantile(0.995, 9.0) < 3.28);
        assert!((t_quantile(0.8, 9.0) - 0.883).abs() < 0.005);
        assert!((t_quantile(0.975, 30.0) - 2.042).abs() < 0.005);
    }

    #[test]
    fn the_write_ups_design_is_described_before_it_runs() {
        // 10 prompts, 4 comparisons (p1 vs p2 in each model, the models under each setting),
        // the 3-12 total: SD assumed 1.35 points.
        let r = power_row(Mode::Expected, 10, 4, 9.0, None, "points");
        assert!((r.p_min - 4.0 / 512.0).abs() < 1e-12);
        assert!(r.sd_assumed && (r.sd - 1.35).abs() < 1e-12);
        // (t(0.99375, 9) + t(0.8, 9)) · 1.35 / √10 ≈ (3.11 + 0.88) · 0.427 ≈ 1.70.
        assert!(
            (r.min_detectable - 1.70).abs() < 0.03,
            "{}",
            r.min_detectable
        );
        assert!(
            r.describe().contains("detect a difference of 1.70"),
            "{}",
            r.describe()
        );
        // More prompts detect less; a measured SD replaces the assumption.
        assert!(
            power_row(Mode::Expected, 40, 4, 9.0, None, "points").min_detectable
                < r.min_detectable / 1.9
        );
        assert!(!power_row(Mode::Expected, 10, 4, 9.0, Some(1.0), "points").sd_assumed);
        // 4 prompts in a family of 4 can never reach 0.05.
        let r = power_row(Mode::PairwiseExpected, 4, 4, 2.0, None, "preference");
        assert!(r.min_detectable.is_nan());
        assert!(
            r.describe().contains("cannot be resolved by any outcome"),
            "{}",
            r.describe()
        );
    }
}
