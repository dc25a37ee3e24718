//! Experiments: a grid of models × sampling settings × prompts × samples, generated, judged
//! and checked, stored record by record so that a rerun resumes.
//!
//! [`ExperimentConfig::plan`] validates everything before anything runs; [`run`] does the
//! work and returns the records ([`Outcome`]); [`crate::results`] turns them into tables.

pub mod config;
pub mod estimate;
mod judging;
pub mod labels;
pub mod progress;
mod runner;
pub mod sanity;

pub use config::{
    ExperimentConfig, ModelEntry, ModelSpec, Overrides, PanelConfig, Plan, PlannedModel,
    SettingEntry,
};
pub use judging::Failure;
#[cfg(test)]
pub(crate) use judging::Judging;
pub use progress::{Lines, Progress, Silent};
pub(crate) use runner::run_locked;
pub use runner::{run, Outcome};
pub use sanity::{Damage, SanitySummary, PASS_THRESHOLD};

use crate::judge::JudgeConfig;
use crate::sampling::SamplingParams;
use std::path::{Path, PathBuf};

/// Builder for an experiment, for notebooks and code; the same fields as the TOML file.
#[derive(Clone, Debug)]
pub struct Experiment {
    config: ExperimentConfig,
}

/// Most tokens a verdict may take in a small run ([`Experiment::small`]): enough for a
/// verdict line after a short justification (a listwise judge still gets 40 per answer).
pub const SMALL_VERDICT_TOKENS: usize = 160;

impl Experiment {
    /// A new experiment over a prompt file.
    pub fn new(name: impl Into<String>, prompts: impl Into<PathBuf>) -> Self {
        Self {
            config: ExperimentConfig {
                name: name.into(),
                prompts: prompts.into(),
                system: None,
                models: Vec::new(),
                settings: Vec::new(),
                samples: 1,
                seed: 0,
                max_tokens: 256,
                limit: None,
                batch: crate::backend::DEFAULT_MAX_BATCH,
                judge: None,
                judges: Vec::new(),
                panel: Default::default(),
                device: None,
                compare: Default::default(),
                labels: None,
                origin: None,
            },
        }
    }

    /// Loads an experiment TOML file.
    pub fn from_toml(path: impl AsRef<Path>) -> crate::Result<Self> {
        Ok(Self {
            config: ExperimentConfig::load(path.as_ref())?,
        })
    }

    /// Adds a model.
    pub fn model(mut self, name: &str, source: &str) -> Self {
        self.config.models.push(ModelEntry::local(name, source));
        self
    }

    /// Adds a base checkpoint with a LoRA adapter merged at load.
    pub fn adapter_model(mut self, name: &str, base: &str, adapter: &str) -> Self {
        let mut m = ModelEntry::local(name, base);
        m.adapter = Some(adapter.into());
        self.config.models.push(m);
        self
    }

    /// Where local models run (`auto`, `cpu`, `cuda:N`).
    pub fn device(mut self, device: crate::model::DeviceChoice) -> Self {
        self.config.device = Some(device);
        self
    }

    /// Adds a model prompted with the bare prompt as a raw text completion (no chat
    /// template), with its context capped at `context` tokens when given.
    pub fn raw_model(mut self, name: &str, source: &str, context: Option<usize>) -> Self {
        let mut m = ModelEntry::local(name, source);
        m.prompt_format = crate::model::PromptFormat::Raw;
        m.context = context;
        self.config.models.push(m);
        self
    }

    /// Adds a model behind an OpenAI-compatible endpoint.
    pub fn remote_model(mut self, name: &str, endpoint: crate::backend::EndpointConfig) -> Self {
        let mut m = ModelEntry::local(name, "");
        m.source = None;
        m.endpoint = Some(endpoint);
        self.config.models.push(m);
        self
    }

    /// Adds a sampling setting from a preset name (`p1`, `p2`, ...).
    pub fn preset(mut self, name: &str, preset: &str) -> Self {
        self.config.settings.push(SettingEntry {
            name: name.into(),
            preset: Some(preset.into()),
            ..Default::default()
        });
        self
    }

    /// Adds a sampling setting from explicit values.
    pub fn setting(mut self, name: &str, params: &SamplingParams) -> Self {
        self.config
            .settings
            .push(SettingEntry::from_params(name, params));
        self
    }

    /// Adds a temperature × min_p grid of settings (all other filters off), named
    /// `T=<t> min_p=<m>`; [`crate::RunOutput::sweep_heatmap`] draws the result.
    pub fn sweep(mut self, temperatures: &[f64], min_ps: &[f64]) -> Self {
        for &t in temperatures {
            for &m in min_ps {
                let params = SamplingParams::neutral().with_temperature(t).with_min_p(m);
                self = self.setting(&format!("T={t} min_p={m}"), &params);
            }
        }
        self
    }

    /// Calibrates the judge against the human labels in `path` (JSONL; see [`labels`]).
    pub fn labels(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.labels = Some(path.into());
        self
    }

    /// Makes this a small run (the first `limit` prompts, at most `max_tokens` per answer
    /// and [`SMALL_VERDICT_TOKENS`] per verdict) when `small` is true, e.g. from a notebook
    /// parameter; otherwise leaves it as it is. The CLI's `--limit N --max-tokens M
    /// --judge-max-tokens 160` is the same run.
    pub fn small(mut self, small: bool, limit: usize, max_tokens: usize) -> Self {
        if small {
            self.config = self.config.with_overrides(&config::Overrides {
                limit: Some(limit),
                max_tokens: Some(max_tokens),
                judge_max_tokens: Some(SMALL_VERDICT_TOKENS),
                ..Default::default()
            });
        }
        self
    }

    /// Sets the judge (replacing a panel).
    pub fn judge(mut self, judge: JudgeConfig) -> Self {
        self.config.judges.clear();
        self.config.judge = Some(judge);
        self
    }

    /// Makes the judge a panel: each of `judges` judges the same answers (see
    /// [`ExperimentConfig::judges`]); replaces a single judge.
    pub fn panel(mut self, judges: Vec<JudgeConfig>) -> Self {
        self.config.judge = None;
        self.config.judges = judges;
        self
    }

    /// Pools flagged judges too (see [`PanelConfig::include_flagged`]).
    pub fn panel_include_flagged(mut self, include: bool) -> Self {
        self.config.panel.include_flagged = include;
        self
    }

    /// Answers per (model, setting, prompt).
    pub fn samples(mut self, n: u32) -> Self {
        self.config.samples = n;
        self
    }

    /// Base seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Most tokens per answer.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.config.max_tokens = n;
        self
    }

    /// Answers of a local model decoded together (1 = one at a time); outputs are the same.
    pub fn batch(mut self, n: usize) -> Self {
        self.config.batch = n;
        self
    }

    /// Which cells the comparisons table pairs (every pair with [`crate::analysis::Pairs::All`]).
    pub fn compare(mut self, pairs: crate::analysis::Pairs) -> Self {
        self.config.compare = pairs;
        self
    }

    /// Only the first `n` prompts.
    pub fn limit(mut self, n: usize) -> Self {
        self.config.limit = Some(n);
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// Checks the whole experiment without running anything (see [`ExperimentConfig::plan`]).
    pub fn plan(&self) -> crate::Result<Plan> {
        self.config.plan()
    }
}
