//! A duel: the write-up's live Space in one call. Two models answer one prompt the user
//! types, and the judge compares the two answers in both orders, as written verdicts
//! (`pairwise`) and as probabilities (`pairwise_expected`), with the position check of each.
//!
//! A duel runs as a one-prompt experiment in its own results folder (named by what it
//! compares), so it is stored, resumable and reproducible like any run: the same duel run
//! again reads its stored answers and verdicts. One prompt is a verdict, never a finding:
//! for a finding, run an experiment over a prompt set.

use super::RunOutput;
use crate::experiment::{Progress, SettingEntry};
use crate::judge::{pairwise::order_picks, pairwise_expected::preference, JudgeConfig, Verdict};
use crate::model::DeviceChoice;
use crate::records::{Mode, ResponseRecord, OVERALL};
use crate::sampling::SamplingParams;
use crate::table::escape;
use crate::{Error, Experiment, Result};
use std::path::{Path, PathBuf};

/// The answerers and judge of a duel on the bundled models, offline.
pub const DEFAULT_A: &str = "smollm2-135m-instruct";
/// The second answerer by default.
pub const DEFAULT_B: &str = "qwen2.5-coder-0.5b-instruct";
/// The judge by default: neither answerer, as GPT-4 was in the write-up.
pub const DEFAULT_JUDGE: &str = "qwen2.5-coder-1.5b-instruct";

/// A duel to run: one prompt, two answerers, one judge. Build it, then [`Duel::run`].
#[derive(Clone, Debug)]
pub struct Duel {
    prompt: String,
    a: String,
    b: String,
    judge: String,
    setting_name: String,
    setting: SamplingParams,
    max_tokens: usize,
    seed: u64,
    device: Option<DeviceChoice>,
}

/// The Space's live setting: temperature 1.5, min_p 0.1, with llama-cpp-python's hidden
/// top_k 40 and top_p 0.95 written out.
pub fn app_setting() -> SamplingParams {
    SamplingParams::p2().with_top_k(40).with_top_p(0.95)
}

impl Duel {
    /// A duel on `prompt` between the bundled [`DEFAULT_A`] and [`DEFAULT_B`], judged by
    /// [`DEFAULT_JUDGE`] at temperature 0 with the shipped pairwise template (`[[A]]`/`[[B]]`
    /// /`[[C]]`, not the Space's free-text prompt, which this small judge often leaves
    /// unparsed), the answers sampled at the Space's setting ([`app_setting`]), at most 256
    /// tokens each, seed 2024.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            a: DEFAULT_A.into(),
            b: DEFAULT_B.into(),
            judge: DEFAULT_JUDGE.into(),
            setting_name: "app".into(),
            setting: app_setting(),
            max_tokens: 256,
            seed: 2024,
            device: None,
        }
    }

    /// The first answerer: a bundled name, a .gguf path, a checkpoint folder or `hf://`.
    pub fn a(mut self, source: impl Into<String>) -> Self {
        self.a = source.into();
        self
    }

    /// The second answerer.
    pub fn b(mut self, source: impl Into<String>) -> Self {
        self.b = source.into();
        self
    }

    /// The judge model.
    pub fn judge(mut self, source: impl Into<String>) -> Self {
        self.judge = source.into();
        self
    }

    /// The answers' sampling setting, under a name for the tables.
    pub fn setting(mut self, name: impl Into<String>, params: SamplingParams) -> Self {
        self.setting_name = name.into();
        self.setting = params;
        self
    }

    /// A named setting: `app` (the default), or a preset (`p1`, `p2`, `greedy`, `neutral`).
    pub fn preset(self, name: &str) -> Result<Self> {
        let params = match name {
            "app" => app_setting(),
            other => SamplingParams::preset(other)?,
        };
        Ok(self.setting(name, params))
    }

    /// Most tokens per answer.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Base seed of the answers' sampling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Where the local models run (default `auto`).
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.device = Some(device);
        self
    }

    /// The answerers' names in the tables: the last part of each source, told apart when
    /// they are the same model.
    fn names(&self) -> [String; 2] {
        let short = |s: &str| {
            s.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(s)
                .trim_end_matches(".gguf")
                .to_string()
        };
        let (a, b) = (short(&self.a), short(&self.b));
        if a == b {
            [format!("{a} (a)"), format!("{b} (b)")]
        } else {
            [a, b]
        }
    }

    /// The duel's folder under `root`: named by everything that decides its outcome, so
    /// that the same duel resumes and a different one never mixes with it.
    pub fn folder(&self, root: impl AsRef<Path>) -> PathBuf {
        let key = crate::keys::key_of(&serde_json::json!({
            "prompt": self.prompt,
            "a": self.a,
            "b": self.b,
            "judge": self.judge,
            "setting": SettingEntry::from_params(&self.setting_name, &self.setting),
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }));
        root.as_ref().join(format!("duel-{}", &key[..12]))
    }

    /// The one-prompt experiment behind the duel, its prompt file written into `dir`.
    pub fn experiment(&self, dir: &Path) -> Result<Experiment> {
        if self.prompt.trim().is_empty() {
            return Err(Error::config("prompt", "the duel's prompt is empty"));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let prompts = dir.join("prompt.jsonl");
        let line = serde_json::json!({"id": "duel", "prompt": self.prompt}).to_string();
        crate::store::write_atomic(&prompts, format!("{line}\n").as_bytes())?;
        let [na, nb] = self.names();
        let judge = JudgeConfig::new(&self.judge)
            .with_modes(&[Mode::Pairwise, Mode::PairwiseExpected])
            .with_sanity_check(false);
        let experiment = Experiment::new("duel", prompts)
            .model(&na, &self.a)
            .model(&nb, &self.b)
            .setting(&self.setting_name, &self.setting)
            .max_tokens(self.max_tokens)
            .seed(self.seed)
            .judge(judge);
        Ok(match self.device {
            Some(d) => experiment.device(d),
            None => experiment,
        })
    }

    /// Runs the duel into its folder under `root` ([`Duel::folder`]), with a few progress
    /// lines on stdout.
    pub fn run(&self, root: impl AsRef<Path>) -> Result<DuelResult> {
        self.run_with(root, &mut crate::experiment::Lines::default())
    }

    /// Runs with a progress sink of your choice.
    pub fn run_with(
        &self,
        root: impl AsRef<Path>,
        progress: &mut dyn Progress,
    ) -> Result<DuelResult> {
        let dir = self.folder(root);
        let run = self.experiment(&dir)?.run_with(&dir, progress)?;
        DuelResult::from_run(&self.prompt, self.names(), &self.judge, &run)
    }
}

/// Which answer a written verdict chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The first answerer's.
    A,
    /// The second answerer's.
    B,
    /// Neither: a tie.
    Tie,
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pick::A => "A",
            Pick::B => "B",
            Pick::Tie => "a tie",
        })
    }
}

/// What a duel gave: both answers, the written verdict in each order and the judge's
/// preference from its probabilities in each order.
#[derive(Clone, Debug, PartialEq)]
pub struct DuelResult {
    /// The prompt.
    pub prompt: String,
    /// The answerers' names (A, B).
    pub names: [String; 2],
    /// Their answers (`None` where generation failed).
    pub answers: [Option<String>; 2],
    /// The judge model.
    pub judge: String,
    /// The written verdict with A shown first, then with B shown first (`None` where it did
    /// not parse).
    pub verdicts: [Option<Pick>; 2],
    /// A's score from the written verdicts: 1 when it wins in both orders, 0 when it loses
    /// in both, 0.5 for a tie or two orders that disagree.
    pub written: Option<f64>,
    /// The judge's probability that A is better, with A shown first, then with A shown
    /// second.
    pub p_a: [Option<f64>; 2],
    /// Their mean: the preference for A with position evened out.
    pub preference: Option<f64>,
    /// The judge's raw written verdicts.
    pub raw: String,
    /// What failed (a rerun retries it).
    pub failures: usize,
    /// The results folder.
    pub dir: PathBuf,
}

impl DuelResult {
    /// Reads a duel's outcome from its finished one-prompt run.
    pub fn from_run(
        prompt: &str,
        names: [String; 2],
        judge: &str,
        run: &RunOutput,
    ) -> Result<DuelResult> {
        let answer = |name: &str| -> Option<&ResponseRecord> {
            run.response_rows.iter().find(|r| r.model == name)
        };
        let (ra, rb) = (answer(&names[0]), answer(&names[1]));
        let key_a = ra.map(|r| r.key.clone()).unwrap_or_default();
        let row = |mode: Mode| {
            run.judgment_rows
                .iter()
                .find(|r| r.mode == mode && r.criterion == OVERALL)
        };
        // Each row is from the view of its first answer; `flip` when that is B.
        let mut verdicts = [None, None];
        let mut written = None;
        let mut raw = String::new();
        if let Some(r) = row(Mode::Pairwise) {
            let flip = r.response_key != key_a;
            raw = r.raw.clone();
            written = r.score.map(|s| if flip { 1.0 - s } else { s });
            // The label each order wrote, as the answer it names: in the order with the
            // row's answer first, `A` names it; in the other order `B` does.
            let [first, second] = order_picks(r.probs.as_deref());
            let as_pick = |v: Option<Verdict>, row_label: Verdict| {
                v.map(|v| match v {
                    Verdict::Tie => Pick::Tie,
                    v if (v == row_label) != flip => Pick::A,
                    _ => Pick::B,
                })
            };
            let row_first = as_pick(first, Verdict::A);
            let row_second = as_pick(second, Verdict::B);
            // verdicts[0] is the order with A shown first.
            verdicts = if flip {
                [row_second, row_first]
            } else {
                [row_first, row_second]
            };
        }
        let mut p_a = [None, None];
        let mut pref = None;
        if let Some(r) = row(Mode::PairwiseExpected) {
            let flip = r.response_key != key_a;
            if let Some(p) = r
                .probs
                .as_deref()
                .filter(|p| p.len() >= 4 && p.len() % 2 == 0)
            {
                let (o1, o2) = p.split_at(p.len() / 2);
                // The row's answer: preferred with it first (label A), with it second (label B).
                let row = [preference(o1, 0), preference(o2, 1)];
                p_a = if flip {
                    [Some(1.0 - row[1]), Some(1.0 - row[0])]
                } else {
                    [Some(row[0]), Some(row[1])]
                };
            }
            pref = r.value().map(|v| if flip { 1.0 - v } else { v });
        }
        Ok(DuelResult {
            prompt: prompt.to_string(),
            names,
            answers: [
                ra.and_then(|r| r.text.clone()),
                rb.and_then(|r| r.text.clone()),
            ],
            judge: judge.to_string(),
            verdicts,
            written,
            p_a,
            preference: pref,
            raw,
            failures: run.failures().len(),
            dir: run.dir.clone(),
        })
    }

    /// The written verdicts in one sentence.
    pub fn written_line(&self) -> String {
        let show = |v: Option<Pick>| match v {
            Some(Pick::A) => format!("A ({})", self.names[0]),
            Some(Pick::B) => format!("B ({})", self.names[1]),
            Some(Pick::Tie) => "a tie".to_string(),
            None => "no verdict (did not parse)".to_string(),
        };
        let [x, y] = self.verdicts;
        let outcome = match (x, y) {
            (Some(p), Some(q)) if p == q => match p {
                Pick::Tie => "a tie in both orders".to_string(),
                _ => format!("{p} wins in both orders"),
            },
            (Some(Pick::A), Some(Pick::B)) | (Some(Pick::B), Some(Pick::A)) => {
                "the two orders disagree: the verdict follows position, so it counts as a tie"
                    .to_string()
            }
            (Some(_), Some(_)) => "the two orders disagree, so it counts as a tie".to_string(),
            _ => "no verdict from both orders (a verdict that did not parse in either order \
                  leaves the pair unscored)"
                .to_string(),
        };
        format!(
            "written verdict: with A shown first, {}; with B shown first, {}: {outcome}",
            show(x),
            show(y)
        )
    }

    /// The probability verdicts in one sentence.
    pub fn expected_line(&self) -> String {
        match (self.p_a, self.preference) {
            ([Some(x), Some(y)], Some(m)) => {
                let lean = |p: f64| {
                    if p > 0.5 {
                        "A"
                    } else if p < 0.5 {
                        "B"
                    } else {
                        "neither"
                    }
                };
                let check = if lean(x) == lean(y) {
                    format!("both orders lean to {}", lean(x))
                } else {
                    "the two orders lean opposite ways: position decides, not the answers"
                        .to_string()
                };
                format!(
                    "P(A is better): {x:.2} with A shown first, {y:.2} with A shown second, \
                     {m:.2} on average; {check}"
                )
            }
            _ => "P(A is better): no probabilities (the judge call failed)".to_string(),
        }
    }

    /// As HTML: the two answers side by side, then the verdicts.
    pub fn to_html(&self) -> String {
        let ans = |i: usize| {
            escape(
                self.answers[i]
                    .as_deref()
                    .unwrap_or("(no answer: generation failed)"),
            )
        };
        format!(
            "<div class=\"duel\"><p><b>Prompt:</b> {}</p>\n\
             <table><tr><th style=\"width:50%\">A: {}</th><th style=\"width:50%\">B: {}</th></tr>\
             <tr><td style=\"vertical-align:top;white-space:pre-wrap;text-align:left\">{}</td>\
             <td style=\"vertical-align:top;white-space:pre-wrap;text-align:left\">{}</td></tr></table>\n\
             <p><b>Judge {}</b></p><ul><li>{}</li><li>{}</li><li>{}</li></ul></div>\n",
            escape(&self.prompt),
            escape(&self.names[0]),
            escape(&self.names[1]),
            ans(0),
            ans(1),
            escape(&self.judge),
            escape(&self.written_line()),
            escape(&self.expected_line()),
            NOT_A_FINDING,
        )
    }

    /// Shows the duel in a notebook.
    pub fn evcxr_display(&self) {
        crate::evcxr::show_html(&self.to_html());
    }
}

const NOT_A_FINDING: &str = "One prompt, one judge: a verdict, not a finding. For a finding, \
                             compare over a prompt set (llm-judge run).";

impl std::fmt::Display for DuelResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Prompt: {}", self.prompt)?;
        for (i, side) in ["A", "B"].iter().enumerate() {
            writeln!(f, "\n── {side}: {} ──", self.names[i])?;
            writeln!(
                f,
                "{}",
                self.answers[i]
                    .as_deref()
                    .unwrap_or("(no answer: generation failed)")
            )?;
        }
        writeln!(f, "\nJudge {}:", self.judge)?;
        writeln!(f, "  {}", self.written_line())?;
        writeln!(f, "  {}", self.expected_line())?;
        writeln!(f, "  {NOT_A_FINDING}")?;
        write!(f, "Stored in {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duel_is_named_by_what_decides_it() {
        let d = Duel::new("Why is the sky blue?");
        assert_eq!(d.folder("r"), Duel::new("Why is the sky blue?").folder("r"));
        assert_ne!(d.folder("r"), Duel::new("Why is grass green?").folder("r"));
        assert_ne!(d.folder("r"), d.clone().max_tokens(64).folder("r"));
        assert_ne!(d.folder("r"), d.clone().judge("gemma3-270m").folder("r"));
        // The same model twice is told apart; paths are shortened.
        let same = Duel::new("x").a("m.gguf").b("dir/m.gguf");
        assert_eq!(same.names(), ["m (a)".to_string(), "m (b)".to_string()]);
        assert!(Duel::new("x").preset("nope").is_err());
        assert!(Duel::new("  ")
            .experiment(Path::new("/nonexistent"))
            .is_err());
    }

    #[test]
    fn verdict_lines_say_what_each_order_did() {
        let mut r = DuelResult {
            prompt: "p".into(),
            names: ["a".into(), "b".into()],
            answers: [Some("x".into()), None],
            judge: "j".into(),
            verdicts: [Some(Pick::A), Some(Pick::A)],
            written: Some(1.0),
            p_a: [Some(0.8), Some(0.6)],
            preference: Some(0.7),
            raw: String::new(),
            failures: 0,
            dir: PathBuf::from("d"),
        };
        assert!(
            r.written_line().ends_with("A wins in both orders"),
            "{}",
            r.written_line()
        );
        assert!(
            r.expected_line().ends_with("both orders lean to A"),
            "{}",
            r.expected_line()
        );
        r.verdicts = [Some(Pick::A), Some(Pick::B)];
        r.p_a = [Some(0.8), Some(0.3)];
        assert!(
            r.written_line().contains("disagree"),
            "{}",
            r.written_line()
        );
        assert!(
            r.expected_line().contains("opposite ways"),
            "{}",
            r.expected_line()
        );
        r.verdicts = [Some(Pick::A), Some(Pick::Tie)];
        assert!(r
            .written_line()
            .ends_with("disagree, so it counts as a tie"));
        r.verdicts = [None, Some(Pick::B)];
        assert!(r.written_line().contains("did not parse"));
        let text = r.to_string();
        assert!(text.contains("(no answer: generation failed)") && text.contains("not a finding"));
        assert!(r.to_html().contains("<th style=\"width:50%\">B: b</th>"));
    }
}
