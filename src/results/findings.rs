//! The findings of a run in a few sentences, generated from its tables: the paired
//! comparisons with their figures, the judge's sanity verdict, what did not parse, and the
//! warnings. Nothing is typed by hand, so the text stays true when the data changes, and a
//! comparison of a flagged judge or with no data is said to be no finding.

use super::RunOutput;
use crate::analysis::MIN_PROMPTS;
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
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            self.to_html()
        );
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

/// Comparisons listed one by one; beyond this, only the resolved ones are.
const MAX_LISTED: usize = 10;

impl RunOutput {
    /// The findings of the run, generated from its tables.
    pub fn findings(&self) -> Findings {
        let c = &self.config;
        let modes: Vec<String> = self.modes().iter().map(|m| m.to_string()).collect();
        let overview = format!(
            "{}: {} answers ({} models × {} settings × {} prompts × {} samples), judged by {} \
             in {}.",
            c.name,
            self.answers.len(),
            c.models.len(),
            c.settings.len(),
            self.answers
                .iter()
                .map(|r| r.prompt_id.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            c.samples,
            self.judge_name(),
            if modes.is_empty() {
                "no mode".into()
            } else {
                modes.join(", ")
            }
        );
        let mut comparisons = Vec::new();
        let mut unresolved = Vec::new();
        for cmp in self
            .comparison_rows
            .iter()
            .filter(|x| x.criterion == TOTAL || x.criterion == OVERALL)
        {
            if cmp.n == 0 {
                continue;
            }
            let unit = if cmp.mode.is_pairwise() {
                "preference"
            } else {
                "points"
            };
            let better = if cmp.mean_diff > 0.0 { &cmp.b } else { &cmp.a };
            let verdict = if !cmp.mean_diff.is_finite() {
                "no estimate".to_string()
            } else if cmp.n < MIN_PROMPTS {
                format!(
                    "too few paired prompts to say anything (n = {}, at least {MIN_PROMPTS} needed)",
                    cmp.n
                )
            } else if cmp.resolved() && cmp.p_holm < 0.05 {
                format!("{better} is judged better (the CI excludes 0, Holm p < 0.05)")
            } else if cmp.resolved() {
                format!(
                    "{better} leans better, but only suggestively: the CI excludes 0, while the \
                     p-value adjusted for the run's other comparisons (Holm) is {:.3}",
                    cmp.p_holm
                )
            } else {
                "not resolved: the CI includes 0".to_string()
            };
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
            if cmp.judge_flagged == Some(true) {
                s.push_str(" — the judge is FLAGGED in this mode, so this is not a finding");
            }
            s.push('.');
            if cmp.resolved() {
                comparisons.push(s);
            } else {
                unresolved.push(s);
            }
        }
        // A long table (a sweep) reads as its resolved comparisons and a count of the rest.
        if comparisons.len() + unresolved.len() <= MAX_LISTED {
            comparisons.append(&mut unresolved);
        } else if !unresolved.is_empty() {
            comparisons.push(format!(
                "{} other comparisons are not resolved (too few prompts, or a CI that includes \
                 0): see the comparisons table.",
                unresolved.len()
            ));
        }
        if comparisons.is_empty() {
            comparisons
                .push("No paired comparison has data (n = 0): there is nothing to compare.".into());
        }
        let mut judge: Vec<String> = self
            .sanity
            .as_ref()
            .map(|s| s.describe())
            .unwrap_or_else(|| vec!["The judge sanity check did not run.".into()]);
        judge.extend(self.unparsed_lines());
        let warnings = self
            .warnings
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
