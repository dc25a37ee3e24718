//! The findings of a run in a few sentences, generated from its tables: the paired
//! comparisons with their figures, the judge's sanity verdict, what did not parse, and the
//! warnings. Nothing is typed by hand, so the text stays true when the data changes, and a
//! comparison of a flagged judge or with no data is said to be no finding.

use super::RunOutput;
use crate::analysis::{Comparison, MIN_PROMPTS};
use crate::records::{OVERALL, TOTAL};
use crate::table::escape;

/// What a run found, sentence by sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Findings {
    /// The run in one line.
    pub overview: String,
    /// One sentence per paired comparison (the headline).
    pub comparisons: Vec<String>,
    /// The judge's sanity verdict per mode, and modes without any parsed score.
    pub judge: Vec<String>,
    /// Warnings not said above (self-preference, failures).
    pub warnings: Vec<String>,
}

fn signed(x: f64) -> String {
    format!("{x:+.2}")
}

impl Findings {
    /// Every sentence, in reading order.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![self.overview.clone()];
        v.extend(self.comparisons.iter().cloned());
        v.extend(self.judge.iter().cloned());
        v.extend(self.warnings.iter().cloned());
        v
    }

    /// As HTML: a heading and lists.
    pub fn to_html(&self) -> String {
        let list = |title: &str, items: &[String]| {
            if items.is_empty() {
                return String::new();
            }
            let li: String = items
                .iter()
                .map(|s| format!("<li>{}</li>", escape(s)))
                .collect();
            format!("<p><b>{title}</b></p><ul>{li}</ul>\n")
        };
        format!(
            "<div class=\"findings\"><p>{}</p>\n{}{}{}</div>\n",
            escape(&self.overview),
            list("Comparisons", &self.comparisons),
            list("The judge", &self.judge),
            list("Warnings", &self.warnings),
        )
    }

    /// Shows the findings in a notebook.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&self.to_html());
    }
}

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// What one headline comparison shows, in words, and whether it is a finding. In order:
/// no estimate; too few prompts; a judge the sanity check flagged ("not a finding"); a
/// listwise difference that is also a difference of fixed positions ("confounded with
/// position"); a design
/// that could not resolve it whatever the answers (its smallest attainable Holm p is above
/// 0.05); a CI that includes 0; then, for a CI that excludes 0, a judge no sanity check
/// looked at ("unchecked judge"), a difference that may be length (at equal length the CI
/// includes 0), a Holm p above 0.05 (suggestive), a comparison outside the primary mode's
/// headline family ("exploratory"), and only then "judged better".
pub fn verdict(cmp: &Comparison) -> (String, bool) {
    let better = if cmp.mean_diff > 0.0 { &cmp.b } else { &cmp.a };
    let no = |s: String| (s, false);
    if !cmp.mean_diff.is_finite() {
        return no("no estimate".into());
    }
    if cmp.n < MIN_PROMPTS {
        return no(format!(
            "too few paired prompts to say anything (n = {}, at least {MIN_PROMPTS} needed)",
            cmp.n
        ));
    }
    if cmp.judge_flagged == Some(true) {
        return no("not a finding: the judge is FLAGGED in this mode by its sanity check".into());
    }
    if cmp.confounded_with_position {
        return no(format!(
            "confounded with position: {} and {} were each shown at one fixed position on \
             every prompt, so this difference is also the judge's position bias \
             (order = \"balanced\" separates the two)",
            cmp.a, cmp.b
        ));
    }
    if cmp.p_min > 0.05 && (cmp.p_holm >= 0.05 || cmp.p_holm.is_nan()) {
        return no(format!(
            "cannot be resolved with this design (n = {} prompts, {} with a difference: the \
             smallest p it could reach, after Holm, is {:.3})",
            cmp.n,
            cmp.wins + cmp.losses,
            cmp.p_min
        ));
    }
    if !cmp.resolved() {
        return no("not resolved: the CI includes 0".into());
    }
    if cmp.judge_flagged.is_none() {
        return no(format!(
            "unchecked judge: {better} leans better, but no sanity check ran on this judge, \
             so this is not a finding"
        ));
    }
    let length_spans_zero = cmp.lc_ci_low.is_finite()
        && cmp.lc_ci_high.is_finite()
        && !(cmp.lc_ci_low > 0.0 && cmp.mean_diff > 0.0
            || cmp.lc_ci_high < 0.0 && cmp.mean_diff < 0.0);
    if length_spans_zero {
        return no(format!(
            "may be length: {better} leans better, but at equal answer length the CI includes \
             0 (or has the other sign)"
        ));
    }
    if cmp.p_holm >= 0.05 {
        return no(format!(
            "{better} leans better, but only suggestively: the CI excludes 0, while the \
             p-value adjusted for the run's other comparisons (Holm) is {:.3}",
            cmp.p_holm
        ));
    }
    if cmp.below_resolution == Some(true) {
        return no(format!(
            "below the judge's resolution: {better} leans better (the CI excludes 0, Holm \
             p < 0.05), but by less than the judge's score drop for the slightest damage its \
             sanity check registered (one step removed, a number changed, or a sentence of \
             filler)"
        ));
    }
    if cmp.exploratory {
        return no(format!(
            "exploratory: {better} leans better (the CI excludes 0, Holm p < 0.05 within its \
             own family), but only the primary mode's headline comparisons are tested as \
             findings (primary_mode)"
        ));
    }
    (
        format!("{better} is judged better (the CI excludes 0, Holm p < 0.05)"),
        true,
    )
}

/// Comparisons listed one by one; beyond this, only the resolved ones are.
const MAX_LISTED: usize = 10;

impl RunOutput {
    /// The findings of the run, generated from its tables.
    pub fn findings(&self) -> Findings {
        let c = &self.meta.experiment;
        let modes: Vec<String> = self.modes().iter().map(|m| m.to_string()).collect();
        let overview = format!(
            "{}: {} answers ({} models × {} settings × {} prompts × {} samples), judged by {} \
             in {}.",
            c.name,
            self.response_rows.len(),
            c.models.len(),
            c.settings.len(),
            self.response_rows
                .iter()
                .map(|r| r.prompt_id.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            c.samples,
            if self.is_panel() {
                let names: Vec<String> = c
                    .judges
                    .iter()
                    .map(crate::experiment::config::panel_name)
                    .collect();
                format!(
                    "a panel of {} judges ({}; each one's run in `judges/<name>/`, and each \
                     mode pooled over {})",
                    names.len(),
                    names.join(", "),
                    if c.panel.include_flagged {
                        "every judge, flagged or not (include_flagged)"
                    } else {
                        "the judges whose sanity check passed there"
                    }
                )
            } else {
                self.judge_name()
            },
            if modes.is_empty() {
                "no mode".into()
            } else {
                modes.join(", ")
            }
        );
        let primary = c.lead_judge().and_then(|j| j.primary());
        let overview = match primary {
            Some(p) if modes.len() > 1 => format!(
                "{overview} Primary mode: {p} (its headline comparisons are the confirmatory \
                 ones; the other modes' are exploratory)."
            ),
            _ => overview,
        };
        let mut comparisons = Vec::new();
        let mut unresolved = Vec::new();
        let mut exploratory = 0;
        for cmp in self
            .comparison_rows
            .iter()
            .filter(|x| x.criterion == TOTAL || x.criterion == OVERALL)
        {
            if cmp.n == 0 {
                continue;
            }
            if cmp.exploratory {
                // Listed one by one only when the table is short.
                exploratory += 1;
            }
            let unit = cmp.mode.spec().unit();
            let (verdict, finding) = verdict(cmp);
            let mut s = format!(
                "{} vs {} ({}): B − A = {} {unit} [95% CI {}, {}] over {} prompts \
                 (B won {}, tied {}, lost {}; p = {:.3}, Holm {:.3}): {verdict}",
                cmp.b,
                cmp.a,
                cmp.mode,
                signed(cmp.mean_diff),
                signed(cmp.ci_low),
                signed(cmp.ci_high),
                cmp.n,
                cmp.wins,
                cmp.ties,
                cmp.losses,
                cmp.p_value,
                cmp.p_holm
            );
            if cmp.lc_diff.is_finite() {
                s.push_str(&format!(
                    "; at equal length {} [{}, {}]",
                    signed(cmp.lc_diff),
                    signed(cmp.lc_ci_low),
                    signed(cmp.lc_ci_high)
                ));
            }
            s.push('.');
            if finding {
                comparisons.push(s);
            } else {
                unresolved.push((cmp.exploratory, s));
            }
        }
        // Beyond a short table, the exploratory rows are a count: the primary mode's
        // comparisons are what the run was designed to answer.
        let mut tail = None;
        if comparisons.len() + unresolved.len() > MAX_LISTED && exploratory > 0 {
            unresolved.retain(|(e, _)| !e);
            let modes: Vec<String> = self
                .modes()
                .iter()
                .filter(|m| Some(**m) != primary)
                .map(|m| m.to_string())
                .collect();
            let which = if modes.is_empty() {
                String::new()
            } else {
                format!(" (other modes: {})", modes.join(", "))
            };
            tail = Some(format!(
                "{exploratory} exploratory comparisons{which} are in the comparisons table; \
                 none is a finding."
            ));
        }
        let mut unresolved: Vec<String> = unresolved.into_iter().map(|(_, s)| s).collect();
        // A long table (a sweep) reads as its resolved comparisons and a count of the rest.
        if comparisons.len() + unresolved.len() <= MAX_LISTED {
            comparisons.append(&mut unresolved);
        } else if !unresolved.is_empty() {
            comparisons.push(format!(
                "{} other comparisons are not findings (too few prompts, a CI that includes 0, \
                 or a caveat): see the comparisons table.",
                unresolved.len()
            ));
        }
        comparisons.extend(tail);
        if comparisons.is_empty() {
            comparisons
                .push("No paired comparison has data (n = 0): there is nothing to compare.".into());
        }
        let mut judge: Vec<String> = self.sanity().map(|s| s.describe()).unwrap_or_else(|| {
            vec![if self.is_panel() {
                "The panel has no sanity check of its own: no judge's check passed in any \
                     mode, or none ran (see the warnings and the panel table)."
                    .into()
            } else {
                "The judge sanity check did not run.".into()
            }]
        });
        judge.extend(self.unparsed_lines());
        judge.extend(self.missing_labels_line());
        match self.calibration() {
            Ok(Some(c)) => judge.extend(c.lines()),
            Ok(None) => {}
            Err(e) => judge.push(format!("calibration: the labels could not be read: {e}")),
        }
        judge.extend(self.retest_lines());
        let policy = c.lead_judge().map(|j| j.low_mass_policy);
        let excluded = self
            .judgment_rows
            .iter()
            .filter(|r| {
                r.criterion == r.mode.spec().headline()
                    && r.value().is_some()
                    && policy.is_some_and(|p| crate::analysis::summary::excluded(r.flag, p))
            })
            .count();
        if excluded > 0 {
            judge.push(format!(
                "{excluded} scores whose tokens held less probability than low_mass = {} were \
                 left out of means and comparisons (low_mass_policy = \"exclude\"; \
                 \"include\" keeps them): see n_excluded in the summary.",
                c.lead_judge().map(|j| j.low_mass).unwrap_or_default()
            ));
        }
        let warnings = self
            .warnings()
            .iter()
            .filter(|w| !judge.iter().any(|j| j == *w))
            .cloned()
            .collect();
        Findings {
            overview,
            comparisons,
            judge,
            warnings,
        }
    }
}

impl RunOutput {
    /// Expected scores read from a remote judge's top-20 log-probabilities: how many of
    /// the score tokens were missing, and how far the totals could be off.
    fn missing_labels_line(&self) -> Option<String> {
        let rows: Vec<_> = self
            .judgment_rows
            .iter()
            // Rows read from a distribution: a criterion's, or a joint total (a summed
            // total has no distribution of its own).
            .filter(|r| r.mode == crate::records::Mode::Expected && r.probs.is_some())
            .collect();
        let missing: u32 = rows.iter().filter_map(|r| r.labels_missing).sum();
        if missing == 0 {
            return None;
        }
        let tokens: usize = rows
            .iter()
            .filter_map(|r| r.probs.as_ref())
            .map(Vec::len)
            .sum();
        let widest = self
            .judgment_rows
            .iter()
            .filter(|r| r.criterion == TOTAL)
            .filter_map(|r| Some(r.expected_high? - r.expected_low?))
            .fold(0.0, f64::max);
        Some(format!(
            "expected: {missing} of {tokens} score tokens ({:.0} %) were missing from the \
             judge's top-20 log-probabilities and read as 0; were they as likely as the list \
             allows, a total could move by up to {widest:.2} points (expected_low and \
             expected_high in the judgments table).",
            100.0 * missing as f64 / tokens.max(1) as f64
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp() -> Comparison {
        Comparison::example()
    }

    #[test]
    fn only_a_checked_judge_on_a_design_that_can_show_it_finds_anything() {
        let (v, finding) = verdict(&cmp());
        assert!(finding && v.contains("m/p2 is judged better"), "{v}");
        // No sanity check ran: never "judged better".
        let (v, finding) = verdict(&Comparison {
            judge_flagged: None,
            ..cmp()
        });
        assert!(!finding && v.starts_with("unchecked judge"), "{v}");
        // A flagged judge: the verdict itself says so, and it is not listed as a finding.
        let (v, finding) = verdict(&Comparison {
            judge_flagged: Some(true),
            ..cmp()
        });
        assert!(!finding && v.starts_with("not a finding"), "{v}");
        // At equal length the CI includes 0, or flips sign: may be length.
        for (lo, hi) in [(-0.1, 0.9), (-1.0, -0.2)] {
            let (v, finding) = verdict(&Comparison {
                lc_ci_low: lo,
                lc_ci_high: hi,
                ..cmp()
            });
            assert!(!finding && v.starts_with("may be length"), "{v}");
        }
        // No length estimate: no length caveat.
        let (_, finding) = verdict(&Comparison {
            lc_ci_low: f64::NAN,
            lc_ci_high: f64::NAN,
            ..cmp()
        });
        assert!(finding);
        // A design that cannot reach p < 0.05: said so, whatever the CI.
        let (v, finding) = verdict(&Comparison {
            n: 5,
            wins: 5,
            losses: 0,
            p_value: 0.0625,
            p_holm: 0.25,
            p_min: crate::analysis::paired::smallest_p(5, 4),
            ..cmp()
        });
        assert!(
            !finding && v.starts_with("cannot be resolved with this design (n = 5"),
            "{v}"
        );
        // A fixed listwise order: the difference is also one of positions.
        let (v, finding) = verdict(&Comparison {
            confounded_with_position: true,
            ..cmp()
        });
        assert!(!finding && v.starts_with("confounded with position"), "{v}");
        // A CI that includes 0.
        let (v, finding) = verdict(&Comparison {
            ci_low: -0.2,
            ..cmp()
        });
        assert!(!finding && v.starts_with("not resolved"), "{v}");
        // Smaller than what one step removed does to the judge's total: not a finding.
        let (v, finding) = verdict(&Comparison {
            below_resolution: Some(true),
            ..cmp()
        });
        assert!(
            !finding && v.starts_with("below the judge's resolution"),
            "{v}"
        );
        let (_, finding) = verdict(&Comparison {
            below_resolution: Some(false),
            ..cmp()
        });
        assert!(finding);
        // Outside the primary mode: exploratory, never a finding.
        let (v, finding) = verdict(&Comparison {
            exploratory: true,
            ..cmp()
        });
        assert!(!finding && v.starts_with("exploratory"), "{v}");
    }
}
