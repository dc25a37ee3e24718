//! What each grading mode is, in one value per mode ([`ModeSpec`]): its template family and
//! verdict forms, the placeholders its template needs, whether its rows score answers or
//! compare two, what passes the sanity check, and the function that makes its calls. Each
//! mode's file declares its spec; [`Mode::spec`] (in the judge's `mod.rs`, which dispatches
//! to the mode files) is the one place that maps a mode to it.
//! Template checking, the sanity check, the views, the findings and the power report ask the
//! spec instead of matching on the mode.

use super::call::{Asker, Call};
use super::template::{JudgeTemplate, VerdictForm};
use super::{Group, Judge};
use crate::error::Result;
use crate::records::{Mode, OVERALL, TOTAL, WIN_RATE};

/// Margin on the total, in score points, for text scores (rubric, listwise) in the sanity
/// check.
pub const TEXT_MARGIN: f64 = 0.5;
/// Margin on the expected total, in score points, in the sanity check.
pub const EXPECTED_MARGIN: f64 = 0.25;
/// Margin above an even preference (0.5) for pairwise expected in the sanity check.
pub const PREFERENCE_MARGIN: f64 = 0.1;

/// A mode's calls for the grouped answers.
pub type CallsFn = for<'a> fn(&'a Judge, &'a Asker, &[Group<'a>]) -> Vec<Call<'a>>;

/// What a mode's judge prompt shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shows {
    /// One answer per prompt, scored on the criteria (rubric, expected).
    OneAnswer,
    /// Every answer to a prompt together, each scored (listwise).
    AllAnswers,
    /// Two answers, compared in both orders: a preference, not a score (the pairwise modes).
    TwoAnswers,
}

/// When the sanity check counts a comparison of the good answer with a bad one as passed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// The good answer's total beats the bad one's by at least this many points.
    Margin(f64),
    /// The good answer's preference over the bad one (0 to 1, both orders) is at least this.
    Preference(f64),
}

/// Everything the harness knows about a mode outside the mode's own calls.
#[derive(Clone, Copy)]
pub struct ModeSpec {
    /// The mode.
    pub mode: Mode,
    /// The shipped template it uses unless the experiment names another.
    pub template: &'static str,
    /// The modes whose templates it can use: its own, and the mode whose prompts it shares
    /// (expected reads a rubric prompt's scores; pairwise expected a pairwise prompt's
    /// verdict).
    pub template_modes: &'static [Mode],
    /// The verdict forms its template may declare; the first is the default.
    pub forms: &'static [VerdictForm],
    /// The placeholders its template's prompt must have.
    pub placeholders: &'static [&'static str],
    /// Checks of the template's mode-specific fields, after the common ones.
    pub check: fn(&JudgeTemplate, &str) -> Result<()>,
    /// What its prompt shows.
    pub shows: Shows,
    /// What passes the sanity check.
    pub pass: Pass,
    /// Whether its verdict is sampled text, which asking again can change (rubric,
    /// listwise, pairwise), rather than read from the judge's probabilities (the same at
    /// every ask). Only a sampled mode is asked `repeats` times.
    pub samples: bool,
    /// Its calls for grouped answers.
    pub calls: CallsFn,
}

impl std::fmt::Debug for ModeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModeSpec")
            .field("mode", &self.mode)
            .field("template", &self.template)
            .field("shows", &self.shows)
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

/// No checks beyond the common ones.
pub(crate) fn no_check(_: &JudgeTemplate, _: &str) -> Result<()> {
    Ok(())
}

impl ModeSpec {
    /// Whether its rows compare two answers (a preference in 0..1 of the row's answer over
    /// the other) rather than score one.
    pub fn compares_two(&self) -> bool {
        self.shows == Shows::TwoAnswers
    }

    /// The criterion of its headline row: `overall` for a preference, `total` for scores.
    pub fn headline(&self) -> &'static str {
        if self.compares_two() {
            OVERALL
        } else {
            TOTAL
        }
    }

    /// The criterion its summary reports per cell: the win rate for a preference, the
    /// total for scores.
    pub fn summary_metric(&self) -> &'static str {
        if self.compares_two() {
            WIN_RATE
        } else {
            TOTAL
        }
    }

    /// The unit of a paired difference: `preference` or `points`.
    pub fn unit(&self) -> &'static str {
        if self.compares_two() {
            "preference"
        } else {
            "points"
        }
    }

    /// The widest a paired difference B − A can be: 2 for a preference (from −1 to 1),
    /// `total_range` (the span of the summed scale) for scores.
    pub fn difference_range(&self, total_range: f64) -> f64 {
        if self.compares_two() {
            2.0
        } else {
            total_range
        }
    }

    /// The verdict form a template declares none of.
    pub fn default_form(&self) -> VerdictForm {
        self.forms[0]
    }

    /// Whether the good answer passed one sanity comparison, or `None` when it could not
    /// be scored. For scores, `good` and `bad` are the two totals; for a preference, `good`
    /// is the good answer's preference over the bad one and `bad` is not read.
    pub fn passes(&self, good: Option<f64>, bad: Option<f64>) -> Option<bool> {
        let g = good?;
        Some(match self.pass {
            Pass::Margin(m) => g - bad? >= m,
            Pass::Preference(p) => g >= p,
        })
    }

    /// How the sanity check judges a prompt's good answer (first in each set) and its bad
    /// ones: a preference mode compares the good one with each bad one; the others see the
    /// whole set, as they see a prompt's real answers.
    pub fn sanity_groups<'a>(
        &self,
        sets: &'a [Vec<crate::records::ResponseRecord>],
    ) -> Vec<Group<'a>> {
        sets.iter()
            .enumerate()
            .flat_map(|(index, s)| -> Vec<Group<'a>> {
                if self.compares_two() {
                    s[1..]
                        .iter()
                        .map(|bad| Group {
                            index,
                            answers: vec![&s[0], bad],
                        })
                        .collect()
                } else {
                    vec![Group {
                        index,
                        answers: s.iter().collect(),
                    }]
                }
            })
            .collect()
    }
}
