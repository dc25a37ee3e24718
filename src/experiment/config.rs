//! Experiment definitions: a TOML file, or the same structure built in code, checked in full
//! by [`ExperimentConfig::plan`] before anything is generated.
//!
//! ```toml
//! name = "writeup-offline"
//! prompts = "../prompts/writeup.jsonl"   # relative to this file
//! samples = 1
//! seed = 2024
//! max_tokens = 256
//!
//! [[models]]
//! name = "smollm2"
//! source = "smollm2-135m-instruct"
//! prompt_format = "chat"                 # or "raw": the bare prompt as a text completion
//! context = 2048                         # prompt plus answer, like llama.cpp's n_ctx
//!
//! [[settings]]
//! name = "p1"
//! preset = "p1"
//!
//! [[settings]]
//! name = "hot"
//! temperature = 1.5
//! min_p = 0.1
//!
//! [judge]
//! model = "smollm2-135m-instruct"
//! modes = ["listwise", "expected"]
//! ```

use crate::backend::EndpointConfig;
use crate::error::{Error, Result};
use crate::judge::{JudgeConfig, JudgeTemplate};
use crate::model::{ModelSource, PromptFormat};
use crate::prompts::{load_prompts, Prompt};
use crate::records::Mode;
use crate::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest grid a run accepts (answers), so that a typo cannot ask for terabytes.
pub const MAX_GRID: usize = 1_000_000;

/// A model under comparison: a local model (`source`) or a remote endpoint (`endpoint`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Name used in tables and charts.
    pub name: String,
    /// Bundled name, `.gguf` path or checkpoint folder (relative to the experiment file), or
    /// `hf://` reference (a GGUF file, or a whole safetensors repository).
    #[serde(default)]
    pub source: Option<String>,
    /// A PEFT LoRA adapter (folder or `hf://owner/repo`) merged into `source` at load;
    /// `source` must then be a safetensors checkpoint.
    #[serde(default)]
    pub adapter: Option<String>,
    /// An OpenAI-compatible endpoint instead of a local model.
    #[serde(default)]
    pub endpoint: Option<EndpointConfig>,
    /// `chat` (the model's chat template, the default) or `raw` (the bare prompt as a text
    /// completion after the BOS token, as the write-up's app ran its models).
    #[serde(default)]
    pub prompt_format: PromptFormat,
    /// Context window for prompt plus answer (llama.cpp's `n_ctx`); the model's own when
    /// unset. Local models only.
    #[serde(default)]
    pub context: Option<usize>,
}

impl ModelEntry {
    /// A local model with the default (chat) format.
    pub fn local(name: &str, source: &str) -> Self {
        Self {
            name: name.into(),
            source: Some(source.into()),
            adapter: None,
            endpoint: None,
            prompt_format: PromptFormat::Chat,
            context: None,
        }
    }
}

/// Where a model runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// In this process, with candle.
    Local(ModelSource),
    /// Behind an OpenAI-compatible endpoint.
    Remote(EndpointConfig),
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::Local(s) => write!(f, "{s}"),
            ModelSpec::Remote(e) => write!(f, "{}", e.identity()),
        }
    }
}

/// A model of the plan: its name, where it runs, and how it is prompted.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedModel {
    /// Name in tables.
    pub name: String,
    /// Where it runs.
    pub spec: ModelSpec,
    /// Chat or raw.
    pub prompt_format: PromptFormat,
    /// Context cap.
    pub context: Option<usize>,
}

/// Reads a local source (resolved against `base`) or an endpoint: exactly one of them.
fn model_spec(
    source: Option<&str>,
    adapter: Option<&str>,
    endpoint: Option<&EndpointConfig>,
    location: &str,
    base: &Path,
) -> Result<ModelSpec> {
    if adapter.is_some() && source.is_none() {
        return Err(Error::config(
            format!("{location}.adapter"),
            "an adapter needs the `source` checkpoint it is merged into",
        ));
    }
    match (source, endpoint) {
        (Some(_), Some(_)) => Err(Error::config(
            location.to_string(),
            "has both `source` and `endpoint`; keep one",
        )),
        (None, Some(e)) => {
            e.validate(&format!("{location}.endpoint"))?;
            Ok(ModelSpec::Remote(e.clone()))
        }
        (Some(s), None) => {
            let mut src = ModelSource::parse_relative(s, base)
                .map_err(|e| Error::invalid(format!("{location}.source"), e))?;
            if let Some(a) = adapter {
                let a = ModelSource::parse_relative(a, base)
                    .map_err(|e| Error::invalid(format!("{location}.adapter"), e))?;
                src = ModelSource::adapted(src, a)
                    .map_err(|e| Error::invalid(format!("{location}.adapter"), e))?;
            }
            src.check()
                .map_err(|e| Error::invalid(format!("{location}.source"), e))?;
            Ok(ModelSpec::Local(src))
        }
        (None, None) => Err(Error::config(
            location.to_string(),
            "needs `source` (a local model) or `endpoint` (a remote one)",
        )),
    }
}

/// A named sampling setting: a preset, explicit values, or a preset with overrides.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingEntry {
    /// Name used in tables and charts.
    pub name: String,
    /// `p1`, `p2`, `greedy` or `neutral`.
    pub preset: Option<String>,
    /// Temperature override.
    pub temperature: Option<f64>,
    /// min_p override.
    pub min_p: Option<f64>,
    /// top_p override.
    pub top_p: Option<f64>,
    /// top_k override.
    pub top_k: Option<usize>,
    /// Repetition penalty override.
    pub repetition_penalty: Option<f64>,
}

impl SettingEntry {
    /// A setting from explicit values.
    pub fn from_params(name: &str, p: &SamplingParams) -> Self {
        Self {
            name: name.into(),
            preset: None,
            temperature: Some(p.temperature),
            min_p: Some(p.min_p),
            top_p: Some(p.top_p),
            top_k: Some(p.top_k),
            repetition_penalty: Some(p.repetition_penalty),
        }
    }

    /// The sampling values: the preset (or `neutral`) with the overrides applied. Not yet
    /// validated, so callers can set seed, limit and stops first.
    pub fn resolve(&self) -> Result<SamplingParams> {
        let mut p = match &self.preset {
            Some(name) => SamplingParams::preset(name)?,
            None => SamplingParams::neutral(),
        };
        if let Some(v) = self.temperature {
            p.temperature = v;
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.repetition_penalty {
            p.repetition_penalty = v;
        }
        Ok(p)
    }

    /// The sampling values, validated; errors name `location`.
    pub fn params(&self, location: &str) -> Result<SamplingParams> {
        let p = self.resolve().map_err(|e| match e {
            Error::UnknownPreset(_) => Error::invalid(format!("{location}.preset"), e),
            e => e,
        })?;
        p.validate()
            .map_err(|e| Error::invalid(location.to_string(), e))?;
        Ok(p)
    }
}

fn one() -> u32 {
    1
}
fn default_batch() -> usize {
    crate::backend::DEFAULT_MAX_BATCH
}
fn default_max_tokens() -> usize {
    256
}

/// An experiment: models × settings × prompts × samples, then a judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Experiment name.
    pub name: String,
    /// Prompt set (JSONL); relative paths are relative to the TOML file.
    pub prompts: PathBuf,
    /// Optional system prompt for the compared models.
    #[serde(default)]
    pub system: Option<String>,
    /// Models under comparison.
    pub models: Vec<ModelEntry>,
    /// Sampling settings.
    pub settings: Vec<SettingEntry>,
    /// Answers per (model, setting, prompt).
    #[serde(default = "one")]
    pub samples: u32,
    /// Base seed; each answer's seed is derived from it and the answer's coordinates.
    #[serde(default)]
    pub seed: u64,
    /// Most tokens per answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Use only the first `limit` prompts.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Answers of a local model decoded together (continuous batching); 1 decodes one at a
    /// time. Outputs are the same either way.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The judge; without one (and no `judges`), only answers are generated.
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
    /// A panel of judges (`[[judges]]`, at least two; instead of `judge`): each judges the
    /// same answers in its own modes, into `judges/<name>/` of the results folder, and the
    /// run's own tables are the panel's pooled verdicts ([`crate::analysis::panel`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<JudgeConfig>,
    /// How a panel pools its judges.
    #[serde(default, skip_serializing_if = "PanelConfig::is_default")]
    pub panel: PanelConfig,
    /// Where local models run: `auto` (the default: the first CUDA GPU when the binary has
    /// the `cuda` feature and one is present, else the CPU), `cpu` or `cuda[:N]`. The CLI's
    /// `--device` takes precedence.
    #[serde(default)]
    pub device: Option<crate::model::DeviceChoice>,
    /// Which cells the comparisons table pairs: `within_model_or_setting` (the default:
    /// settings within each model, models within each setting) or `all`.
    #[serde(default)]
    pub compare: crate::analysis::Pairs,
    /// Human labels to calibrate the judge against (JSONL, relative to this file; see
    /// [`crate::experiment::labels`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// Where the file was read from (for relative paths and error messages).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// How a panel of judges (`[[judges]]`) pools them (`[panel]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelConfig {
    /// Pool a judge in a mode even where its sanity check flagged it there (by default a
    /// flagged judge is left out of that mode's pool, and the run says so).
    #[serde(default)]
    pub include_flagged: bool,
}

impl PanelConfig {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Changes to an experiment file's settings for one run (the `run` command's flags), applied
/// with [`ExperimentConfig::with_overrides`]. `None` and `false` keep the file's value. (The
/// device is not one: `--device` goes in [`Plan::device`], so that the recorded experiment
/// stays the file's.)
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Only the first N prompts.
    pub limit: Option<usize>,
    /// The answer token limit.
    pub max_tokens: Option<usize>,
    /// Answers decoded together per local model.
    pub batch: Option<usize>,
    /// Skip the judge's sanity check.
    pub no_sanity: bool,
    /// The judge's verdict token limit, lowered to this (a small run).
    pub judge_max_tokens: Option<usize>,
}

/// A checked experiment: everything resolved that can fail before any generation.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The configuration (prompt path made absolute).
    pub config: ExperimentConfig,
    /// Prompts after `limit`.
    pub prompts: Vec<Prompt>,
    /// The models.
    pub models: Vec<PlannedModel>,
    /// Where the judge runs.
    pub judge: Option<ModelSpec>,
    /// The judge's templates, per mode.
    pub templates: BTreeMap<Mode, JudgeTemplate>,
    /// `(name, params)` per setting (seed filled per answer).
    pub settings: Vec<(String, SamplingParams)>,
    /// Where local models run for this run only (the CLI's `--device`), ahead of the
    /// experiment's `device`; not recorded as part of the experiment.
    pub device: Option<crate::model::DeviceChoice>,
    /// A panel's judges (`[[judges]]`): per judge, its name (its folder under `judges/`)
    /// and the plan of the same experiment with that judge alone. Empty for one judge or
    /// none; `judge` is then `None` here, the answers being generated by this plan.
    pub panel: Vec<(String, Plan)>,
}

impl ExperimentConfig {
    /// This configuration with `o` applied (see [`Overrides`]).
    pub fn with_overrides(mut self, o: &Overrides) -> Self {
        if o.limit.is_some() {
            self.limit = o.limit;
        }
        if let Some(m) = o.max_tokens {
            self.max_tokens = m;
        }
        if let Some(b) = o.batch {
            self.batch = b;
        }
        for j in self.judge.iter_mut().chain(self.judges.iter_mut()) {
            if o.no_sanity {
                j.sanity_check = false;
            }
            if let Some(m) = o.judge_max_tokens {
                j.max_tokens = j.max_tokens.min(m);
            }
        }
        self
    }

    /// Reads an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::config(
                path.display().to_string(),
                "is a directory, not an experiment file",
            ));
        }
        let text = crate::store::read_input(path)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut c: ExperimentConfig =
            toml::from_str(text).map_err(|e| Error::invalid(path.display().to_string(), e))?;
        c.origin = Some(path.to_path_buf());
        Ok(c)
    }

    /// A copy safe to write down: endpoint URLs without the user and password they may
    /// carry (keys are never in the configuration, only the name of their variable).
    pub fn redacted(&self) -> Self {
        let strip = |e: &mut EndpointConfig| {
            for u in &mut e.base_urls {
                *u = crate::backend::openai::strip_userinfo(u);
            }
        };
        let mut c = self.clone();
        for m in &mut c.models {
            if let Some(e) = m.endpoint.as_mut() {
                strip(e);
            }
        }
        for j in c.judge.iter_mut().chain(c.judges.iter_mut()) {
            if let Some(e) = j.endpoint.as_mut() {
                strip(e);
            }
        }
        c
    }

    /// The judge whose settings the run's tables follow (low-mass policy, primary mode,
    /// criteria and scale): `judge`, or a panel's first judge.
    pub fn lead_judge(&self) -> Option<&JudgeConfig> {
        self.judge.as_ref().or(self.judges.first())
    }

    fn origin_name(&self) -> String {
        self.origin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("experiment `{}`", self.name))
    }

    /// The folder relative paths are resolved against: the TOML file's, or the working
    /// directory for an experiment built in code.
    pub fn base_dir(&self) -> PathBuf {
        self.origin
            .as_ref()
            .and_then(|o| o.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Reads the label file and checks that every label names a cell of this experiment
    /// and a prompt of its prompt file; returns the file's absolute path.
    fn check_labels(&self, path: &Path, prompts_path: &Path) -> Result<PathBuf> {
        let at = format!("{}: labels", self.origin_name());
        let labels = super::labels::load_labels(path).map_err(|e| match e {
            Error::Io { path, source } => Error::config(
                &at,
                format!("cannot read the label file {}: {source}", path.display()),
            ),
            e => e,
        })?;
        let prompts = load_prompts(prompts_path)?;
        let cells: Vec<String> = self
            .models
            .iter()
            .flat_map(|m| {
                self.settings
                    .iter()
                    .map(move |s| format!("{}/{}", m.name, s.name))
            })
            .collect();
        for (i, l) in labels.iter().enumerate() {
            for cell in [&l.a, &l.b] {
                if !cells.contains(cell) {
                    return Err(Error::config(
                        format!("{}: label {}", path.display(), i + 1),
                        format!(
                            "`{cell}` is not a cell of this experiment ({})",
                            cells.join(", ")
                        ),
                    ));
                }
            }
            if !prompts.iter().any(|p| p.id == l.prompt_id) {
                return Err(Error::config(
                    format!("{}: label {}", path.display(), i + 1),
                    format!("no prompt `{}` in {}", l.prompt_id, prompts_path.display()),
                ));
            }
        }
        Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }

    /// The prompt file path, resolved against the TOML file's folder.
    pub fn prompts_path(&self) -> PathBuf {
        if self.prompts.is_relative() {
            self.base_dir().join(&self.prompts)
        } else {
            self.prompts.clone()
        }
    }

    /// Checks everything that can be checked without running a model: every field, the
    /// prompt file, each model source (a local file exists, a hub reference is well
    /// formed), the judge and its templates.
    pub fn plan(&self) -> Result<Plan> {
        let origin = self.origin_name();
        let at = |field: &str| format!("{origin}: {field}");
        let base = self.base_dir();
        if self.name.trim().is_empty() {
            return Err(Error::config(at("name"), "is empty"));
        }
        if self.models.is_empty() {
            return Err(Error::config(at("models"), "no models"));
        }
        if self.settings.is_empty() {
            return Err(Error::config(at("settings"), "no settings"));
        }
        if self.samples == 0 {
            return Err(Error::config(at("samples"), "must be at least 1"));
        }
        if self.batch == 0 {
            return Err(Error::config(at("batch"), "must be at least 1"));
        }
        if self.max_tokens == 0 {
            return Err(Error::config(at("max_tokens"), "must be at least 1"));
        }
        if self.limit == Some(0) {
            return Err(Error::config(
                at("limit"),
                "must be at least 1 (or left out)",
            ));
        }
        let mut models: Vec<PlannedModel> = Vec::new();
        for (i, m) in self.models.iter().enumerate() {
            let loc = at(&format!("models[{i}]"));
            if m.name.trim().is_empty() {
                return Err(Error::config(format!("{loc}.name"), "is empty"));
            }
            if models.iter().any(|p| p.name == m.name) {
                return Err(Error::config(
                    format!("{loc}.name"),
                    format!("duplicate model name `{}`", m.name),
                ));
            }
            let spec = model_spec(
                m.source.as_deref(),
                m.adapter.as_deref(),
                m.endpoint.as_ref(),
                &loc,
                &base,
            )?;
            if let Some(c) = m.context {
                if c < 2 || matches!(spec, ModelSpec::Remote(_)) {
                    return Err(Error::config(
                        format!("{loc}.context"),
                        "must be at least 2, and is for local models only",
                    ));
                }
            }
            models.push(PlannedModel {
                name: m.name.clone(),
                spec,
                prompt_format: m.prompt_format,
                context: m.context,
            });
        }
        let mut settings: Vec<(String, SamplingParams)> = Vec::new();
        for (i, s) in self.settings.iter().enumerate() {
            let loc = at(&format!("settings[{i}]"));
            if s.name.trim().is_empty() {
                return Err(Error::config(format!("{loc}.name"), "is empty"));
            }
            if settings.iter().any(|(n, _)| *n == s.name) {
                return Err(Error::config(
                    format!("{loc}.name"),
                    format!("duplicate setting name `{}`", s.name),
                ));
            }
            let mut p = s.params(&loc)?;
            p.max_new_tokens = self.max_tokens;
            settings.push((s.name.clone(), p));
        }
        let prompts_path = self.prompts_path();
        let mut prompts = load_prompts(&prompts_path).map_err(|e| match e {
            Error::Io { path, source } => Error::config(
                at("prompts"),
                format!("cannot read the prompt file {}: {source}", path.display()),
            ),
            e => e,
        })?;
        if let Some(l) = self.limit {
            prompts.truncate(l);
        }
        let grid = models
            .len()
            .saturating_mul(settings.len())
            .saturating_mul(prompts.len())
            .saturating_mul(self.samples as usize);
        if grid > MAX_GRID {
            return Err(Error::config(
                at("samples"),
                format!("the grid has {grid} answers, more than the {MAX_GRID} a run accepts"),
            ));
        }
        let (judge, templates) = match &self.judge {
            Some(j) => {
                let spec = match &j.endpoint {
                    Some(e) => ModelSpec::Remote(e.clone()),
                    None => {
                        let src = ModelSource::parse_relative(&j.model, &base)
                            .map_err(|e| Error::invalid(at("judge.model"), e))?;
                        src.check()
                            .map_err(|e| Error::invalid(at("judge.model"), e))?;
                        ModelSpec::Local(src)
                    }
                };
                (Some(spec), j.validate(&origin, &base)?)
            }
            None => (None, BTreeMap::new()),
        };
        let panel = self.plan_panel(&origin)?;
        let mut config = self.clone();
        if let Some(l) = &self.labels {
            let path = if l.is_relative() {
                base.join(l)
            } else {
                l.clone()
            };
            config.labels = Some(self.check_labels(&path, &prompts_path)?);
        }
        config.prompts = std::fs::canonicalize(&prompts_path).unwrap_or(prompts_path);
        Ok(Plan {
            config,
            prompts,
            models,
            judge,
            templates,
            settings,
            device: None,
            panel,
        })
    }

    /// Checks a panel (`[[judges]]`): at least two judges, no `judge` beside them, names
    /// that differ, and each judge as a one-judge plan of its own (errors name
    /// `judges[i]`).
    fn plan_panel(&self, origin: &str) -> Result<Vec<(String, Plan)>> {
        if self.judges.is_empty() {
            return Ok(Vec::new());
        }
        let at = |field: &str| format!("{origin}: {field}");
        if self.judge.is_some() {
            return Err(Error::config(
                at("judges"),
                "give either one `[judge]` or a panel of `[[judges]]`, not both",
            ));
        }
        if self.judges.len() < 2 {
            return Err(Error::config(
                at("judges"),
                "a panel needs at least two judges (one judge is `[judge]`)",
            ));
        }
        let mut out: Vec<(String, Plan)> = Vec::new();
        for (i, j) in self.judges.iter().enumerate() {
            let name = panel_name(j);
            if name.is_empty() || name == "panel" {
                return Err(Error::config(
                    at(&format!("judges[{i}].model")),
                    "names no model (and `panel` is the pooled judge's name)",
                ));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(Error::config(
                    at(&format!("judges[{i}].model")),
                    format!(
                        "`{}` has the name `{name}` of an earlier judge of this panel \
                         (each judge's results go in `judges/<name>/`)",
                        j.model
                    ),
                ));
            }
            let first = &self.judges[0];
            if j.criteria != first.criteria || j.scale != first.scale {
                return Err(Error::config(
                    at(&format!("judges[{i}].criteria")),
                    "a panel pools scores on one scale: every judge needs the first judge's \
                     criteria and scale",
                ));
            }
            let mut one = self.clone();
            one.judges = Vec::new();
            one.panel = PanelConfig::default();
            one.judge = Some(j.clone());
            let plan = one.plan().map_err(|e| match e {
                Error::Config { location, reason } => Error::Config {
                    location: location.replace(": judge.", &format!(": judges[{i}].")),
                    reason,
                },
                Error::Invalid { location, source } => Error::Invalid {
                    location: location.replace(": judge.", &format!(": judges[{i}].")),
                    source,
                },
                e => e,
            })?;
            out.push((name, plan));
        }
        Ok(out)
    }
}

/// A panel judge's name: its model (a bundled name, path or `hf://` reference) as a folder
/// name, or for an endpoint judge its model name there.
pub fn panel_name(j: &JudgeConfig) -> String {
    let raw = match &j.endpoint {
        Some(e) if j.model.trim().is_empty() => e.model.clone(),
        _ => j.model.clone(),
    };
    let raw = raw.trim().trim_end_matches('/');
    let raw = raw.rsplit('/').next().unwrap_or(raw);
    raw.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

impl Plan {
    /// The paired comparisons per mode and criterion the design makes: pairs of cells
    /// (model, setting) under the experiment's `compare`.
    pub fn compared_pairs(&self) -> usize {
        let cells: Vec<(String, String)> = self
            .models
            .iter()
            .flat_map(|m| {
                self.settings
                    .iter()
                    .map(move |(s, _)| (m.name.clone(), s.clone()))
            })
            .collect();
        crate::analysis::paired::cell_pairs(&cells, self.config.compare).len()
    }

    /// Answers in the grid.
    pub fn grid_size(&self) -> usize {
        self.models.len() * self.settings.len() * self.prompts.len() * self.config.samples as usize
    }

    /// What the design can show before anything runs: per judge mode, its headline paired
    /// comparisons, the smallest p they could reach and the difference they would detect
    /// with 80 % power, for a per-prompt SD assumed at 15 % of the score's range
    /// ([`crate::analysis::power`]). Empty without a judge.
    pub fn power(&self) -> crate::analysis::PowerReport {
        // A panel: what its first judge's design can show (the panel's is the same design).
        if let Some((_, one)) = self.panel.first() {
            return one.power();
        }
        let Some(j) = &self.config.judge else {
            return Default::default();
        };
        let m = self.compared_pairs();
        let total_range = j.criteria.len() as f64 * (j.scale.saturating_sub(1)) as f64;
        crate::analysis::PowerReport {
            rows: j
                .modes
                .iter()
                .map(|&mode| {
                    // A pairwise difference B − A runs from −1 to 1.
                    let spec = mode.spec();
                    let range = spec.difference_range(total_range);
                    let mut r = crate::analysis::power::power_row(
                        mode,
                        self.prompts.len(),
                        m,
                        range,
                        None,
                        spec.unit(),
                    );
                    r.confounded_with_position =
                        mode == Mode::Listwise && j.order == crate::judge::Order::Fixed;
                    r.exploratory = j.modes.len() > 1 && j.primary() != Some(mode);
                    r
                })
                .collect(),
        }
    }

    /// What the run would do, for `--dry-run`: models and where they come from (and which
    /// would be downloaded), every sampling value, the grid, the judge and its templates,
    /// and what the design can show ([`Plan::power`]).
    pub fn describe(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "experiment {}: {} models x {} settings x {} prompts x {} samples = {} answers, \
             at most {} tokens each, seed {}\n",
            c.name,
            self.models.len(),
            self.settings.len(),
            self.prompts.len(),
            c.samples,
            self.grid_size(),
            c.max_tokens,
            c.seed
        );
        s.push_str(&format!("prompts: {}\n", c.prompts.display()));
        let choice = self.device.or(c.device).unwrap_or_default();
        let opened = match choice.open() {
            Ok(d) => crate::model::device::describe(&d),
            Err(e) => format!("unavailable: {e}"),
        };
        s.push_str(&format!("device: {choice} ({opened})\n"));
        for m in &self.models {
            s.push_str(&format!(
                "model {}: {} ({}{}) {}\n",
                m.name,
                m.spec,
                m.prompt_format,
                m.context
                    .map(|n| format!(", context {n}"))
                    .unwrap_or_default(),
                availability(&m.spec)
            ));
        }
        for (n, p) in &self.settings {
            s.push_str(&format!(
                "setting {n}: temperature {}, top_k {}, top_p {}, min_p {}, repetition_penalty {}\n",
                p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty
            ));
        }
        if self.panel.is_empty() {
            self.describe_judge(&mut s);
        } else {
            s.push_str(&format!(
                "a panel of {} judges, each mode pooled over those its sanity check does not \
                 flag there{}:\n",
                self.panel.len(),
                if c.panel.include_flagged {
                    " (flagged ones too: include_flagged)"
                } else {
                    ""
                }
            ));
            for (_, one) in &self.panel {
                one.describe_judge(&mut s);
            }
        }
        s.push_str(&self.power().to_string());
        for l in self.estimate_lines() {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }

    /// The judge and its templates, for [`Plan::describe`].
    fn describe_judge(&self, s: &mut String) {
        let c = &self.config;
        if let (Some(j), Some(spec)) = (&c.judge, &self.judge) {
            let modes: Vec<String> = j.modes.iter().map(|m| m.to_string()).collect();
            s.push_str(&format!(
                "judge {}: {} {} ({}), modes {} (primary {}), criteria {}, scale 1-{}, \
                 temperature {}, order {:?}, sanity check {}\n",
                j.model,
                spec,
                availability(spec),
                j.prompt_format,
                modes.join(", "),
                j.primary().map(|m| m.to_string()).unwrap_or_default(),
                j.criteria.join(", "),
                j.scale,
                j.temperature,
                j.order,
                if j.sanity_check { "on" } else { "off" }
            ));
            for (m, t) in &self.templates {
                let mut extra = String::new();
                if j.repeats_of(*m) > 1 {
                    extra = format!(", each verdict asked {} times (test-retest)", j.repeats);
                }
                if *m == crate::judge::Mode::Expected
                    && j.expected_total == crate::judge::ExpectedTotal::Joint
                {
                    extra = ", the total read jointly (expected_total = \"joint\")".into();
                }
                s.push_str(&format!(
                    "  {m}: template {} ({:?}){extra}\n",
                    t.name,
                    t.verdict_form()
                ));
            }
        }
    }
}

/// Whether a model is here, would be fetched, or is remote.
fn availability(spec: &ModelSpec) -> String {
    match spec {
        ModelSpec::Remote(e) => format!("[remote; key from ${}]", e.api_key_env),
        ModelSpec::Local(src) => match src.local_path() {
            Some(p) => format!("[present: {}]", p.display()),
            None => format!("[would download: {}]", src.download_description()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Pairs;

    const BASE: &str = "name = \"x\"\nprompts = \"p.jsonl\"\nmodels = []\nsettings = []\n";

    #[test]
    fn compare_defaults_to_within_and_accepts_all_only_by_name() {
        let c: ExperimentConfig = toml::from_str(BASE).unwrap();
        assert_eq!(c.compare, Pairs::WithinModelOrSetting);
        let c: ExperimentConfig = toml::from_str(&format!("compare = \"all\"\n{BASE}")).unwrap();
        assert_eq!(c.compare, Pairs::All);
        let e = toml::from_str::<ExperimentConfig>(&format!("compare = \"every\"\n{BASE}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("every") && e.contains("all"), "{e}");
    }
}
