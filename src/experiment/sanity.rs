//! The judge sanity check: in every mode the run uses, does the judge prefer a known-good
//! answer to deliberately bad ones on the same prompt?
//!
//! Bad answers are made from the prompts' reference answers: another prompt's reference
//! (`off_topic`), the first sixth of the words (`truncated`) and the words shuffled
//! (`shuffled`). References under [`MIN_WORDS`] words are too short to truncate or shuffle and
//! are skipped, with a count. Each mode judges them as it judges real answers (the same
//! calls): rubric and expected score each answer, listwise shows the good answer among the
//! bad ones in one prompt (always in a Latin-square order, [`sanity_judge`]), the pairwise
//! modes compare good with bad in both orders.
//!
//! A comparison passes when the good answer wins by a margin: [`TEXT_MARGIN`] points of the
//! total for text scores, [`EXPECTED_MARGIN`] for expected scores, a consistent win for
//! pairwise verdicts, and a preference of at least 0.5 + [`PREFERENCE_MARGIN`] for pairwise
//! expected. A verdict that did not parse is a format failure, counted apart from a wrong
//! preference. A mode is flagged when any kind of bad answer passes in fewer than
//! [`PASS_THRESHOLD`] of its comparisons.

use super::config::Plan;
use super::judging::Judging;
use crate::error::Result;
use crate::judge::{Group, Judge, Order};
use crate::keys::{derive_seed, key_of};
use crate::records::{JudgmentRecord, Mode, ResponseRecord, TOTAL};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Share of comparisons a judge must pass, per kind of bad answer.
pub const PASS_THRESHOLD: f64 = 0.8;
pub use crate::judge::spec::{EXPECTED_MARGIN, PREFERENCE_MARGIN, TEXT_MARGIN};
/// Fewest words a reference needs to be truncated or shuffled.
pub const MIN_WORDS: usize = 12;

/// A kind of bad answer, made from a prompt's reference answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// The next prompt's reference: fluent, but about something else.
    OffTopic,
    /// The reference's first sixth.
    Truncated,
    /// The reference's words in a random order.
    Shuffled,
    /// Graded: the reference without its middle step (line, or sentence).
    StepRemoved,
    /// Graded: the reference with its first number doubled.
    NumberChanged,
    /// Graded: the reference with one sentence of filler after its first.
    Filler,
}

impl Damage {
    /// The gross kinds, in the order the sanity check reports them; a judge must tell
    /// every one from the reference to pass.
    pub const ALL: [Damage; 3] = [Damage::OffTopic, Damage::Truncated, Damage::Shuffled];

    /// The graded kinds: small damage whose score drop is the judge's resolution in points
    /// (reported, not passed or failed).
    pub const GRADED: [Damage; 3] = [Damage::StepRemoved, Damage::NumberChanged, Damage::Filler];

    /// The name in tables and in the bad answers' `model` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Damage::OffTopic => "off_topic",
            Damage::Truncated => "truncated",
            Damage::Shuffled => "shuffled",
            Damage::StepRemoved => "step_removed",
            Damage::NumberChanged => "number_changed",
            Damage::Filler => "filler",
        }
    }
}

/// The sentence of filler the graded check adds.
pub const FILLER: &str = "Keep in mind that every situation is a little different, so it is \
                          worth taking a moment to think it through before you start.";

/// The reference with one graded damage, or `None` where it does not apply (no number to
/// change, fewer than three steps to take one from).
pub fn graded(reference: &str, kind: Damage) -> Option<String> {
    // Steps: lines when there are several, else sentences.
    let lines: Vec<&str> = reference.lines().filter(|l| !l.trim().is_empty()).collect();
    let (steps, joiner): (Vec<String>, &str) = if lines.len() >= 3 {
        (lines.iter().map(|l| l.to_string()).collect(), "\n")
    } else {
        let sentences: Vec<String> = reference
            .split_inclusive(". ")
            .map(|s| s.trim_end().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        (sentences, " ")
    };
    match kind {
        Damage::StepRemoved => {
            if steps.len() < 3 {
                return None;
            }
            let mut s = steps.clone();
            s.remove(s.len() / 2);
            Some(s.join(joiner))
        }
        Damage::NumberChanged => {
            let start = reference.find(|c: char| c.is_ascii_digit())?;
            let len = reference[start..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(reference.len() - start);
            let n: u64 = reference[start..start + len].parse().ok()?;
            Some(format!(
                "{}{}{}",
                &reference[..start],
                n.checked_mul(2)?.max(n + 1),
                &reference[start + len..]
            ))
        }
        Damage::Filler => {
            let mut s = steps.clone();
            if s.is_empty() {
                return None;
            }
            s.insert(1.min(s.len()), FILLER.to_string());
            Some(s.join(joiner))
        }
        _ => None,
    }
}

/// How far one graded damage moves the judge's total: the judge's resolution in points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradedResult {
    /// The kind of damage.
    pub kind: Damage,
    /// Prompts where it applied and both totals were scored.
    pub prompts: usize,
    /// Mean over prompts of the reference's total minus the damaged answer's.
    pub drop: f64,
    /// Its 95 % CI over prompts.
    pub ci: (f64, f64),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sanity result of one kind of bad answer in one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindResult {
    /// The kind of bad answer.
    pub kind: Damage,
    /// Comparisons made.
    pub comparisons: usize,
    /// Comparisons the good answer won by the margin.
    pub passed: usize,
    /// Comparisons with a score, where the judge preferred the bad answer or won by less
    /// than the margin.
    pub wrong: usize,
    /// Comparisons without a score (the verdict did not parse, or the call failed).
    pub unscored: usize,
}

impl KindResult {
    /// `passed / comparisons` (0 when there were none).
    pub fn pass_rate(&self) -> f64 {
        self.passed as f64 / self.comparisons.max(1) as f64
    }
}

/// The sanity result of one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeResult {
    /// The mode.
    pub mode: Mode,
    /// Per kind of bad answer.
    pub kinds: Vec<KindResult>,
    /// Bad answers skipped because the reference was too short.
    pub skipped: usize,
    /// True when some kind passed less than [`PASS_THRESHOLD`] of its comparisons.
    pub flagged: bool,
    /// The judge's position effect, measured with the reference shown against itself
    /// (modes that show several answers at once; `None` for the others).
    #[serde(default)]
    pub position: Option<PositionProbe>,
    /// The judge's resolution: its score drop for each graded damage (modes that score one
    /// answer at a time; empty for the others).
    #[serde(default)]
    pub graded: Vec<GradedResult>,
}

impl ModeResult {
    /// The judge's resolution in points: the smallest mean drop among the graded kinds whose
    /// interval is above 0 (damage the judge registers); `None` when it registers none.
    pub fn resolution(&self) -> Option<f64> {
        self.graded
            .iter()
            .filter(|g| g.ci.0 > 0.0)
            .map(|g| g.drop)
            .min_by(f64::total_cmp)
    }
}

/// The position probe: each prompt's reference shown in every position of one listwise
/// prompt (as many copies as the sanity sets have answers), or against itself in both
/// orders of a pair. Any difference between positions is the judge's position effect alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionProbe {
    /// Prompts probed.
    pub prompts: usize,
    /// Listwise: the mean total at each position (1-based order), with its CI; pairwise:
    /// the probability that the answer shown first is preferred, with its CI.
    pub estimates: Vec<crate::analysis::Estimate>,
    /// The effect in the mode's units: listwise, the largest minus the smallest mean total
    /// by position (points); pairwise, how much more the same answer is preferred shown
    /// first than shown second (`2·p(first) − 1`, preference).
    pub effect: f64,
    /// Its 95 % CI over prompts. (A spread of position means is above 0 by chance alone;
    /// its interval says how far.)
    #[serde(default = "no_interval")]
    pub effect_ci: (f64, f64),
    /// `points` or `preference`.
    pub unit: String,
}

fn no_interval() -> (f64, f64) {
    (f64::NAN, f64::NAN)
}

/// The largest minus the smallest mean total by position.
fn spread(rows: &[(u32, f64)]) -> f64 {
    let mut by: std::collections::BTreeMap<u32, (f64, usize)> = Default::default();
    for (p, v) in rows {
        let e = by.entry(*p).or_default();
        e.0 += v;
        e.1 += 1;
    }
    let means: Vec<f64> = by.values().map(|(s, n)| s / *n as f64).collect();
    let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = means.iter().copied().fold(f64::INFINITY, f64::min);
    if means.is_empty() {
        f64::NAN
    } else {
        max - min
    }
}

impl PositionProbe {
    /// The probe's rows, read: `None` when no row had a score.
    pub fn of(mode: Mode, rows: &[JudgmentRecord], prompts: usize) -> Option<PositionProbe> {
        let bias = crate::analysis::position_bias(rows);
        let spec = mode.spec();
        let (estimates, effect, effect_ci) = if spec.compares_two() {
            let e = if mode == Mode::Pairwise {
                bias.text_first_position_preference
            } else {
                bias.first_position_preference
            }?;
            let (effect, ci) = (2.0 * e.mean - 1.0, (2.0 * e.ci.0 - 1.0, 2.0 * e.ci.1 - 1.0));
            (vec![e], effect, ci)
        } else {
            if bias.listwise.is_empty() {
                return None;
            }
            let by_prompt = crate::analysis::Clusters::from_pairs(
                rows.iter()
                    .filter(|r| r.mode == Mode::Listwise && r.criterion == TOTAL)
                    .filter_map(|r| Some((r.prompt_id.clone(), (r.position?, r.value()?)))),
            );
            let all = by_prompt.values();
            let ci = by_prompt.interval(37, spread).bounds();
            (bias.listwise, spread(&all), ci)
        };
        Some(PositionProbe {
            prompts,
            estimates,
            effect,
            effect_ci,
            unit: spec.unit().into(),
        })
    }

    /// One clause: the estimates and the effect.
    pub fn describe(&self) -> String {
        let figures: Vec<String> = self
            .estimates
            .iter()
            .map(|e| format!("{:.2} [{:.2}, {:.2}]", e.mean, e.ci.0, e.ci.1))
            .collect();
        if self.unit == "points" {
            format!(
                "position probe (the reference against itself, {} prompts): mean total by \
                 position {}; spread {:.2} [{:.2}, {:.2}] points",
                self.prompts,
                figures.join(", "),
                self.effect,
                self.effect_ci.0,
                self.effect_ci.1
            )
        } else {
            format!(
                "position probe (the reference against itself, {} prompts): p(first shown \
                 preferred) {}; position effect {:+.2} [{:+.2}, {:+.2}] preference",
                self.prompts,
                figures.join(", "),
                self.effect,
                self.effect_ci.0,
                self.effect_ci.1
            )
        }
    }
}

impl ModeResult {
    /// One sentence: pass rates per kind, and why the mode is flagged.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|k| {
                format!(
                    "{} {}/{} ({} wrong, {} unscored)",
                    k.kind, k.passed, k.comparisons, k.wrong, k.unscored
                )
            })
            .collect();
        let (n, unscored, wrong): (usize, usize, usize) =
            self.kinds.iter().fold((0, 0, 0), |a, k| {
                (a.0 + k.comparisons, a.1 + k.unscored, a.2 + k.wrong)
            });
        let mut s = format!(
            "judge sanity check, {}: good answer preferred in {}",
            self.mode,
            kinds.join(", ")
        );
        if self.skipped > 0 {
            s.push_str(&format!("; {} skipped (reference too short)", self.skipped));
        }
        if let Some(p) = &self.position {
            s.push_str(&format!("; {}", p.describe()));
        }
        if !self.graded.is_empty() {
            let g: Vec<String> = self
                .graded
                .iter()
                .map(|g| {
                    format!(
                        "{} {:+.2} [{:+.2}, {:+.2}] over {}",
                        g.kind, g.drop, g.ci.0, g.ci.1, g.prompts
                    )
                })
                .collect();
            s.push_str(&format!(
                "; resolution (the reference's total minus the slightly damaged one's): {}",
                g.join(", ")
            ));
        }
        if self.flagged {
            let cause = if n == 0 {
                "no comparison could be made".to_string()
            } else if unscored * 2 >= n {
                format!("the judge did not follow the format in {unscored}/{n}")
            } else {
                format!(
                    "the judge preferred the bad answer or barely told them apart in {wrong}/{n}"
                )
            };
            s.push_str(&format!(
                " -- FLAGGED: {cause}; do not trust this judge's {} scores",
                self.mode
            ));
        }
        s
    }
}

/// The outcome of the sanity check, per mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SanitySummary {
    /// One result per mode of the run.
    pub modes: Vec<ModeResult>,
}

impl SanitySummary {
    /// One line per mode.
    pub fn describe(&self) -> Vec<String> {
        self.modes.iter().map(ModeResult::describe).collect()
    }

    /// The lines of flagged modes.
    pub fn warnings(&self) -> Vec<String> {
        self.modes
            .iter()
            .filter(|m| m.flagged)
            .map(ModeResult::describe)
            .collect()
    }

    /// Whether `mode` was checked and flagged.
    pub fn flagged(&self, mode: Mode) -> Option<bool> {
        self.modes
            .iter()
            .find(|m| m.mode == mode)
            .map(|m| m.flagged)
    }
}

/// A synthetic answer: the reference (`good`) or a bad one, as a response record.
fn answer(p: &crate::prompts::Prompt, kind: &str, text: String) -> ResponseRecord {
    ResponseRecord {
        key: key_of(&serde_json::json!({"sanity": kind, "prompt": p.prompt, "text": text})),
        model: kind.to_string(),
        setting: "sanity".into(),
        prompt_id: p.id.clone(),
        category: p.category.clone(),
        prompt: p.prompt.clone(),
        text: Some(text),
        finish_reason: crate::records::Finish::Stop,
        ..Default::default()
    }
}

/// The good answer and the bad ones of each prompt with a reference, and how many bad
/// answers were skipped for a short reference.
pub fn answers(plan: &Plan) -> (Vec<Vec<ResponseRecord>>, usize) {
    let refs: Vec<(&crate::prompts::Prompt, &str)> = plan
        .prompts
        .iter()
        .filter_map(|p| p.reference.as_deref().map(|r| (p, r)))
        .collect();
    let mut skipped = 0;
    let mut out = Vec::new();
    for (i, (p, good)) in refs.iter().enumerate() {
        let mut set = vec![answer(p, "good", good.to_string())];
        if refs.len() > 1 {
            let other = refs[(i + 1) % refs.len()].1;
            set.push(answer(p, Damage::OffTopic.as_str(), other.to_string()));
        }
        let words: Vec<&str> = good.split_whitespace().collect();
        if words.len() >= MIN_WORDS {
            let truncated = words[..words.len() / 6].join(" ");
            set.push(answer(p, Damage::Truncated.as_str(), truncated));
            let mut shuffled = words.clone();
            let seed = derive_seed(plan.config.seed, &["sanity", &p.id]);
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            set.push(answer(p, Damage::Shuffled.as_str(), shuffled.join(" ")));
        } else {
            skipped += 2;
        }
        out.push(set);
    }
    (out, skipped)
}

/// Tallies the comparisons of one mode from its rows. Each set holds the good answer first,
/// then the bad ones (their `model` is their kind).
pub fn tally(
    mode: Mode,
    sets: &[Vec<ResponseRecord>],
    rows: &[JudgmentRecord],
    skipped: usize,
) -> ModeResult {
    let total_of = |key: &str| {
        rows.iter()
            .find(|r| r.response_key == key && r.criterion == TOTAL)
            .and_then(JudgmentRecord::value)
    };
    let mut kinds: Vec<KindResult> = Damage::ALL
        .iter()
        .map(|&kind| KindResult {
            kind,
            comparisons: 0,
            passed: 0,
            wrong: 0,
            unscored: 0,
        })
        .collect();
    for set in sets {
        let good = &set[0];
        for bad in &set[1..] {
            let spec = mode.spec();
            let outcome = if spec.compares_two() {
                let score = rows
                    .iter()
                    .find(|r| {
                        r.response_key == good.key && r.other_key.as_deref() == Some(&bad.key)
                    })
                    .and_then(|r| r.score);
                spec.passes(score, None)
            } else {
                spec.passes(total_of(&good.key), total_of(&bad.key))
            };
            let Some(k) = kinds.iter_mut().find(|k| k.kind.as_str() == bad.model) else {
                continue;
            };
            k.comparisons += 1;
            match outcome {
                Some(true) => k.passed += 1,
                Some(false) => k.wrong += 1,
                None => k.unscored += 1,
            }
        }
    }
    kinds.retain(|k| k.comparisons > 0);
    let flagged = kinds.is_empty() || kinds.iter().any(|k| k.pass_rate() < PASS_THRESHOLD);
    ModeResult {
        mode,
        kinds,
        skipped,
        flagged,
        position: None,
        graded: Vec::new(),
    }
}

/// Each prompt's reference and its graded damages (those that apply), good first.
pub fn graded_answers(plan: &Plan) -> Vec<Vec<ResponseRecord>> {
    plan.prompts
        .iter()
        .filter_map(|p| {
            let good = p.reference.as_deref()?;
            let mut set = vec![answer(p, "good", good.to_string())];
            for kind in Damage::GRADED {
                if let Some(text) = graded(good, kind) {
                    set.push(answer(p, kind.as_str(), text));
                }
            }
            (set.len() > 1).then_some(set)
        })
        .collect()
}

/// The score drop of each graded kind from the rows of the graded sets.
pub fn graded_drops(sets: &[Vec<ResponseRecord>], rows: &[JudgmentRecord]) -> Vec<GradedResult> {
    let total_of = |key: &str| {
        rows.iter()
            .find(|r| r.response_key == key && r.criterion == TOTAL)
            .and_then(JudgmentRecord::value)
    };
    Damage::GRADED
        .iter()
        .filter_map(|&kind| {
            let drops: Vec<(String, f64)> = sets
                .iter()
                .filter_map(|set| {
                    let bad = set.iter().find(|r| r.model == kind.as_str())?;
                    Some((
                        set[0].prompt_id.clone(),
                        total_of(&set[0].key)? - total_of(&bad.key)?,
                    ))
                })
                .collect();
            if drops.is_empty() {
                return None;
            }
            let c = crate::analysis::Clusters::from_pairs(drops);
            let values = c.values();
            Some(GradedResult {
                kind,
                prompts: c.len(),
                drop: crate::analysis::resample::mean(&values),
                ci: c.mean_interval(41, |x| *x).bounds(),
            })
        })
        .collect()
}

/// The position probe's sets: each prompt's reference, as many times as `mode` shows
/// answers at once in the sanity check (its sets' size for listwise, two for a pair).
/// Empty for modes that score one answer at a time.
pub fn probe_sets(mode: Mode, sets: &[Vec<ResponseRecord>]) -> Vec<Vec<ResponseRecord>> {
    let copies = match mode.spec().shows {
        crate::judge::spec::Shows::OneAnswer => return Vec::new(),
        crate::judge::spec::Shows::TwoAnswers => 2,
        crate::judge::spec::Shows::AllAnswers => sets.iter().map(Vec::len).max().unwrap_or(0),
    };
    if copies < 2 {
        return Vec::new();
    }
    sets.iter()
        .map(|set| {
            let good = &set[0];
            (1..=copies)
                .map(|i| {
                    let mut r = good.clone();
                    r.model = format!("probe_{i}");
                    r.key = key_of(&serde_json::json!({"probe": i, "answer": good.key}));
                    r
                })
                .collect()
        })
        .collect()
}

/// The judge as the sanity check uses it: its sets (the good answer first, then the bad
/// ones) are always shown in the Latin-square order (`order = "balanced"`), whatever order the
/// run uses, so that over every four prompts the good answer takes every position once. Under
/// the run's `fixed` order the good answer would always be `Response 1`, and a judge whose
/// scores fall by position would pass. Each row records the position it was shown at.
/// Each verdict is asked once, whatever `repeats` the run asks its own with.
pub fn sanity_judge(judge: &Judge) -> Judge {
    let mut j = judge.with_repeat(0);
    j.cfg.order = Order::Balanced;
    j.cfg.repeats = 1;
    j
}

/// Runs the check in every mode of the plan's judge. `None` when no prompt has a reference.
pub(crate) fn run(
    plan: &Plan,
    judging: &mut Judging<'_>,
) -> Result<(Option<SanitySummary>, Vec<JudgmentRecord>)> {
    let (sets, skipped) = answers(plan);
    if sets.is_empty() {
        judging
            .progress
            .note("judge sanity check skipped: no prompt has a reference answer");
        return Ok((None, Vec::new()));
    }
    let judge = sanity_judge(judging.judge);
    let mut judging = Judging {
        judge: &judge,
        backend: &mut *judging.backend,
        store: judging.store,
        progress: &mut *judging.progress,
        failures: &mut *judging.failures,
        usage: &mut *judging.usage,
    };
    let modes = judge.cfg.modes.clone();
    let mut summary = SanitySummary::default();
    let mut all = Vec::new();
    for mode in modes {
        let groups = mode.spec().sanity_groups(&sets);
        let rows = judging.mode(mode, &groups, "sanity", &format!("sanity {mode}"))?;
        let mut result = tally(mode, &sets, &rows, skipped);
        all.extend(rows);
        if mode.spec().shows == crate::judge::spec::Shows::OneAnswer {
            // Graded damage, for modes that score one answer: the reference's calls are the
            // ones above, reused.
            let graded_sets = graded_answers(plan);
            if !graded_sets.is_empty() {
                let groups = mode.spec().sanity_groups(&graded_sets);
                let rows =
                    judging.mode(mode, &groups, "sanity", &format!("graded damage {mode}"))?;
                result.graded = graded_drops(&graded_sets, &rows);
                all.extend(rows);
            }
        }
        let probes = probe_sets(mode, &sets);
        if !probes.is_empty() {
            // One group per probe set: the copies shown together (listwise), or the one
            // pair in both orders.
            let groups: Vec<Group> = probes
                .iter()
                .enumerate()
                .map(|(index, s)| Group {
                    index,
                    answers: s.iter().collect(),
                })
                .collect();
            let rows = judging.mode(mode, &groups, "sanity", &format!("position probe {mode}"))?;
            result.position = PositionProbe::of(mode, &rows, probes.len());
            all.extend(rows);
        }
        summary.modes.push(result);
    }
    // The reference's rows come back with every check that reuses its calls: once each.
    let mut seen = std::collections::HashSet::new();
    all.retain(|r| seen.insert(r.key.clone()));
    Ok((Some(summary), all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Vec<ResponseRecord> {
        ["good", "off_topic", "truncated", "shuffled"]
            .iter()
            .map(|k| ResponseRecord {
                key: k.to_string(),
                model: k.to_string(),
                ..Default::default()
            })
            .collect()
    }

    fn total(key: &str, v: Option<f64>) -> JudgmentRecord {
        let mut r = crate::judge::Judge::new(
            crate::judge::JudgeConfig::new("j"),
            "j".into(),
            "j".into(),
            Default::default(),
            0,
        )
        .row(
            "c",
            Mode::Rubric,
            &ResponseRecord {
                key: key.into(),
                ..Default::default()
            },
            TOTAL,
            v,
        );
        r.response_key = key.into();
        r
    }

    #[test]
    fn margins_kinds_and_format_failures_are_told_apart() {
        // Good 10; off-topic 9.4 (inside the 0.5 margin: wrong), truncated 6 (pass),
        // shuffled unscored.
        let rows = vec![
            total("good", Some(10.0)),
            total("off_topic", Some(9.6)),
            total("truncated", Some(6.0)),
            total("shuffled", None),
        ];
        let r = tally(Mode::Rubric, &[set()], &rows, 0);
        let k = |name: &str| {
            r.kinds
                .iter()
                .find(|k| k.kind.as_str() == name)
                .unwrap()
                .clone()
        };
        assert_eq!((k("off_topic").passed, k("off_topic").wrong), (0, 1));
        assert_eq!(k("truncated").passed, 1);
        assert_eq!(k("shuffled").unscored, 1);
        assert!(r.flagged);
        // A judge that passes the two easy kinds but not off-topic is still flagged.
        let mut rows = rows;
        rows[3] = total("shuffled", Some(3.0));
        let r = tally(Mode::Rubric, &[set(), set()], &rows, 0);
        assert!(r.flagged, "{}", r.describe());
        assert!(
            r.describe().contains("preferred the bad answer"),
            "{}",
            r.describe()
        );
        // The same numbers pass as expected scores: off-topic's 0.4 clears the 0.25 margin.
        let r = tally(Mode::Expected, &[set()], &rows, 0);
        assert!(!r.flagged, "{}", r.describe());
    }

    #[test]
    fn a_judge_that_scores_by_position_cannot_pass_listwise() {
        // Four prompts, the write-up's fixed order; a judge whose totals fall by position
        // (12, 9, 6, 3 for positions 1-4) and ignore the answers.
        let sets: Vec<Vec<ResponseRecord>> = (0..4)
            .map(|p| {
                set()
                    .into_iter()
                    .map(|mut r| {
                        r.key = format!("{}-{p}", r.key);
                        r
                    })
                    .collect()
            })
            .collect();
        let fixed = Judge::new(
            crate::judge::JudgeConfig::new("j").with_order(Order::Fixed),
            "j".into(),
            "j".into(),
            Default::default(),
            0,
        );
        let by_position = |judge: &Judge| -> Vec<JudgmentRecord> {
            let mut rows = Vec::new();
            for (i, s) in sets.iter().enumerate() {
                let g = Group {
                    index: i,
                    answers: s.iter().collect(),
                };
                let (shown, _) = crate::judge::listwise::order(judge, &g);
                for (pos, &a) in shown.iter().enumerate() {
                    rows.push(total(&s[a].key, Some(12.0 - 3.0 * pos as f64)));
                }
            }
            rows
        };
        // Shown in the run's fixed order, the good answer is always first: such a judge would
        // pass every comparison.
        let r = tally(Mode::Listwise, &sets, &by_position(&fixed), 0);
        assert!(!r.flagged, "{}", r.describe());
        // The sanity check shows the sets in its own order: the same judge is flagged.
        let r = tally(
            Mode::Listwise,
            &sets,
            &by_position(&sanity_judge(&fixed)),
            0,
        );
        assert!(r.flagged, "{}", r.describe());
    }

    #[test]
    fn mostly_unparsed_is_a_format_failure() {
        let rows = vec![total("good", None)];
        let r = tally(Mode::Listwise, &[set()], &rows, 0);
        assert!(r.flagged);
        assert!(
            r.describe().contains("did not follow the format in 3/3"),
            "{}",
            r.describe()
        );
    }

    #[test]
    fn short_references_are_skipped_not_failed() {
        let p = |id: &str, r: &str| crate::prompts::Prompt {
            id: id.into(),
            category: String::new(),
            prompt: format!("q {id}"),
            reference: Some(r.into()),
        };
        let plan = Plan {
            config: crate::Experiment::new("t", "p.jsonl").config().clone(),
            prompts: vec![
                p("a", "too short to cut"),
                p(
                    "b",
                    "one two three four five six seven eight nine ten eleven twelve thirteen",
                ),
            ],
            models: Vec::new(),
            judge: None,
            templates: Default::default(),
            settings: Vec::new(),
            device: None,
            panel: Vec::new(),
        };
        let (sets, skipped) = answers(&plan);
        assert_eq!(skipped, 2);
        assert_eq!(sets[0].len(), 2, "good and off-topic only");
        assert_eq!(sets[1].len(), 4);
        assert_eq!(sets[1][2].text.as_deref(), Some("one two"));
        // Shuffling is seeded: the same plan gives the same words in the same order.
        assert_eq!(answers(&plan).0[1][3].text, sets[1][3].text);
    }

    #[test]
    fn the_position_probe_shows_the_reference_against_itself() {
        let sets = vec![set(), set()];
        let listwise = probe_sets(Mode::Listwise, &sets);
        assert_eq!(listwise.len(), 2);
        assert_eq!(
            listwise[0].len(),
            4,
            "as many copies as a sanity set has answers"
        );
        assert!(listwise[0].iter().all(|r| r.text == sets[0][0].text));
        let keys: std::collections::HashSet<_> = listwise[0].iter().map(|r| &r.key).collect();
        assert_eq!(keys.len(), 4, "each copy is its own answer");
        assert_eq!(probe_sets(Mode::PairwiseExpected, &sets)[0].len(), 2);
        assert!(probe_sets(Mode::Expected, &sets).is_empty());
    }

    #[test]
    fn the_position_probe_measures_a_judge_that_scores_by_position() {
        // Four prompts, the same answer in positions 1-4, totals falling by position
        // (12, 10, 9, 9): a spread of 3 points, whatever the answers.
        let mut rows = Vec::new();
        for p in 0..4 {
            for (pos, v) in [12.0, 10.0, 9.0, 9.0].iter().enumerate() {
                let mut r = total(&format!("probe_{pos}-{p}"), Some(*v));
                r.mode = Mode::Listwise;
                r.prompt_id = format!("q{p}");
                r.position = Some(pos as u32 + 1);
                rows.push(r);
            }
        }
        let probe = PositionProbe::of(Mode::Listwise, &rows, 4).unwrap();
        assert_eq!(probe.estimates.len(), 4);
        assert!((probe.effect - 3.0).abs() < 1e-12, "{probe:?}");
        // Every prompt the same: no doubt about it.
        assert_eq!(probe.effect_ci, (3.0, 3.0));
        assert!(
            probe.describe().contains("spread 3.00 [3.00, 3.00] points"),
            "{}",
            probe.describe()
        );
        // A pair in both orders: the answer shown first preferred with p 0.7 and 0.8.
        let mut r = total("probe_1-0", Some(0.5));
        r.mode = Mode::PairwiseExpected;
        r.criterion = crate::records::OVERALL.into();
        r.other_key = Some("probe_2-0".into());
        r.probs = Some(vec![0.7, 0.3, 0.8, 0.2]);
        let probe = PositionProbe::of(Mode::PairwiseExpected, &[r], 1).unwrap();
        assert!((probe.effect - 0.5).abs() < 1e-12, "{probe:?}");
        // Nothing scored: no probe result, not a zero effect.
        assert!(PositionProbe::of(Mode::Listwise, &[], 4).is_none());
    }

    #[test]
    fn graded_damage_is_small_and_named() {
        let steps =
            "1. Preheat the oven to 180 C.\n2. Mix the flour and sugar.\n3. Bake 30 minutes.";
        assert_eq!(
            graded(steps, Damage::StepRemoved).unwrap(),
            "1. Preheat the oven to 180 C.\n3. Bake 30 minutes."
        );
        // The first number doubled, nothing else touched.
        assert_eq!(
            graded(steps, Damage::NumberChanged).unwrap(),
            steps.replacen("1.", "2.", 1)
        );
        let filled = graded(steps, Damage::Filler).unwrap();
        assert_eq!(filled.lines().nth(1), Some(FILLER));
        assert_eq!(filled.lines().count(), 4);
        // Sentences when there is one line; nothing to change without a number.
        let prose = "Ice the ankle. Raise it above the heart. Rest for two days.";
        assert_eq!(
            graded(prose, Damage::StepRemoved).unwrap(),
            "Ice the ankle. Rest for two days."
        );
        assert_eq!(graded(prose, Damage::NumberChanged), None);
        assert_eq!(graded("Too short.", Damage::StepRemoved), None);
    }

    #[test]
    fn graded_drops_are_the_judges_resolution() {
        // Two prompts: the reference 10; one step removed 9 and 9.5; filler 10 and 10.
        let set = |p: &str| -> Vec<ResponseRecord> {
            ["good", "step_removed", "filler"]
                .iter()
                .map(|k| ResponseRecord {
                    key: format!("{k}-{p}"),
                    model: k.to_string(),
                    prompt_id: p.into(),
                    ..Default::default()
                })
                .collect()
        };
        let sets = vec![set("a"), set("b")];
        let mut rows = Vec::new();
        for (p, step) in [("a", 9.0), ("b", 9.5)] {
            for (k, v) in [("good", 10.0), ("step_removed", step), ("filler", 10.0)] {
                let mut r = total(&format!("{k}-{p}"), Some(v));
                r.prompt_id = p.into();
                rows.push(r);
            }
        }
        let g = graded_drops(&sets, &rows);
        assert_eq!(g.len(), 2, "number_changed never applied");
        assert_eq!(
            (g[0].kind, g[0].prompts, g[0].drop),
            (Damage::StepRemoved, 2, 0.75)
        );
        assert_eq!((g[1].kind, g[1].drop), (Damage::Filler, 0.0));
        let m = ModeResult {
            mode: Mode::Expected,
            kinds: Vec::new(),
            skipped: 0,
            flagged: false,
            position: None,
            graded: g,
        };
        // Both drops of one step removed were positive: the judge registers it.
        assert_eq!(m.resolution(), Some(0.75));
        assert!(
            m.describe().contains("step_removed +0.75"),
            "{}",
            m.describe()
        );
    }
}
