//! Statistics over records, all seeded and reproducible, all resampling prompts (the
//! independent unit): per-cell summaries ([`summary`]), paired comparisons between cells
//! ([`paired`]), win rates and Bradley-Terry strengths ([`pairwise`]), correlation and
//! agreement measures ([`correlation`]), and judge reliability: agreement, position bias and
//! length association ([`reliability`]); how much a judge's verdicts change when asked again
//! ([`retest`]); a judge against human labels ([`calibration`]); a panel of judges pooled,
//! and their agreement ([`panel`]);
//! and, before anything runs, what a design can show ([`power`]).

pub mod calibration;
pub mod correlation;
pub mod paired;
pub mod pairwise;
pub mod panel;
pub mod power;
pub mod reliability;
pub mod resample;
pub mod retest;
pub mod summary;

pub use correlation::{cohen_kappa, pearson, ranks, spearman, weighted_kappa};
pub use paired::{comparisons, Comparison, Design, Pairs, MIN_PROMPTS};
pub use pairwise::{bradley_terry, pairwise_outcomes, standings, win_rates, Outcome, Standing};
pub use power::{PowerReport, PowerRow};
pub use reliability::{
    judge_agreement, length_association, mode_agreement, position_bias, Agreement, Estimate,
    LengthAssociation, PositionBias,
};
pub use resample::{mean_std, Clusters, Interval};
pub use retest::{test_retest, Retest};
pub use summary::{summarize, SummaryRow};
