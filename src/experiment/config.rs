//! Experiment definitions: a TOML file, or the same structure built in code.
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
//! criteria = ["Relevance", "Coherence", "Completeness"]
//! scale = 4
//! ```

use crate::backend::EndpointConfig;
use crate::error::{Error, Result};
use crate::judge::JudgeConfig;
use crate::model::ModelSource;
use crate::prompts::{load_prompts, Prompt};
use crate::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A model under comparison: a local model (`source`) or a remote endpoint (`endpoint`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Name used in tables and charts.
    pub name: String,
    /// Bundled name, `.gguf` path or `hf://` reference.
    #[serde(default)]
    pub source: Option<String>,
    /// An OpenAI-compatible endpoint instead of a local model.
    #[serde(default)]
    pub endpoint: Option<EndpointConfig>,
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
            ModelSpec::Remote(e) => write!(f, "{} at {}", e.model, e.base_urls.join(", ")),
        }
    }
}

/// Reads a local source or an endpoint, exactly one of them.
fn model_spec(
    source: Option<&str>,
    endpoint: Option<&EndpointConfig>,
    location: &str,
) -> Result<ModelSpec> {
    match (source, endpoint) {
        (_, Some(e)) => {
            if e.base_urls.is_empty() {
                return Err(Error::config(
                    format!("{location}.endpoint.base_urls"),
                    "no base URL",
                ));
            }
            Ok(ModelSpec::Remote(e.clone()))
        }
        (Some(s), None) => s
            .parse()
            .map(ModelSpec::Local)
            .map_err(|e: Error| Error::config(format!("{location}.source"), e.to_string())),
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
            Error::UnknownPreset(_) => Error::config(format!("{location}.preset"), e.to_string()),
            e => e,
        })?;
        p.validate()
            .map_err(|e| Error::config(location.to_string(), e.to_string()))?;
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
    /// The judge; without one, only answers are generated.
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
    /// Where the file was read from (for relative paths and error messages).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// A checked experiment: everything resolved that can fail before any generation.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The configuration.
    pub config: ExperimentConfig,
    /// Prompts after `limit`.
    pub prompts: Vec<Prompt>,
    /// `(name, where it runs)` per model.
    pub models: Vec<(String, ModelSpec)>,
    /// Where the judge runs.
    pub judge: Option<ModelSpec>,
    /// `(name, params)` per setting (seed and max tokens filled per answer).
    pub settings: Vec<(String, SamplingParams)>,
    /// Judge templates per mode.
    pub judge_templates: Vec<(crate::judge::Mode, crate::judge::JudgeTemplate)>,
}

impl ExperimentConfig {
    /// Reads an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: ExperimentConfig = toml::from_str(&text)
            .map_err(|e| Error::config(path.display().to_string(), e.to_string()))?;
        c.origin = Some(path.to_path_buf());
        Ok(c)
    }

    fn origin_name(&self) -> String {
        self.origin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("experiment `{}`", self.name))
    }

    /// The prompt file path, resolved against the TOML file's folder.
    pub fn prompts_path(&self) -> PathBuf {
        match (&self.origin, self.prompts.is_relative()) {
            (Some(o), true) => o.parent().unwrap_or(Path::new(".")).join(&self.prompts),
            _ => self.prompts.clone(),
        }
    }

    /// Checks everything that can be checked without running a model.
    pub fn plan(&self) -> Result<Plan> {
        let origin = self.origin_name();
        if self.models.is_empty() {
            return Err(Error::config(format!("{origin}: models"), "no models"));
        }
        if self.settings.is_empty() {
            return Err(Error::config(format!("{origin}: settings"), "no settings"));
        }
        if self.samples == 0 {
            return Err(Error::config(
                format!("{origin}: samples"),
                "must be at least 1",
            ));
        }
        if self.batch == 0 {
            return Err(Error::config(
                format!("{origin}: batch"),
                "must be at least 1",
            ));
        }
        let mut models = Vec::new();
        for (i, m) in self.models.iter().enumerate() {
            let src = model_spec(
                m.source.as_deref(),
                m.endpoint.as_ref(),
                &format!("{origin}: models[{i}]"),
            )?;
            if models
                .iter()
                .any(|(n, _): &(String, ModelSpec)| *n == m.name)
            {
                return Err(Error::config(
                    format!("{origin}: models[{i}].name"),
                    format!("duplicate model name `{}`", m.name),
                ));
            }
            models.push((m.name.clone(), src));
        }
        let mut settings = Vec::new();
        for (i, s) in self.settings.iter().enumerate() {
            let mut p = s.params(&format!("{origin}: settings[{i}]"))?;
            p.max_new_tokens = self.max_tokens;
            settings.push((s.name.clone(), p));
        }
        let mut prompts = load_prompts(&self.prompts_path())?;
        if let Some(l) = self.limit {
            prompts.truncate(l.max(1));
        }
        let (judge, judge_templates) = match &self.judge {
            Some(j) => {
                let spec = match &j.endpoint {
                    Some(_) => model_spec(None, j.endpoint.as_ref(), &format!("{origin}: judge"))?,
                    None => ModelSpec::Local(j.model.parse::<ModelSource>().map_err(|e| {
                        Error::config(format!("{origin}: judge.model"), e.to_string())
                    })?),
                };
                (Some(spec), j.validate(&origin)?)
            }
            None => (None, Vec::new()),
        };
        let mut config = self.clone();
        let prompts_path = self.prompts_path();
        config.prompts = std::fs::canonicalize(&prompts_path).unwrap_or(prompts_path);
        Ok(Plan {
            config,
            prompts,
            models,
            judge,
            settings,
            judge_templates,
        })
    }
}
