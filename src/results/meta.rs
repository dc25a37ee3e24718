//! `run.json`: what produced a finished run, typed ([`RunMeta`]). Notebooks, the report and
//! `llm-judge judge` read it back; a folder written by an earlier version still loads (every
//! field but `experiment` may be missing).

use crate::error::{Error, Result};
use crate::experiment::{ExperimentConfig, Failure, ModelSpec, Outcome, Plan, SanitySummary};
use crate::judge::JudgeTemplate;
use crate::model::PromptFormat;
use crate::records::Mode;
use crate::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The contents of `run.json`. Fields are in alphabetical order, as the file has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// How many records the run's tables hold.
    #[serde(default)]
    pub counts: Counts,
    /// Where the local models ran (`cpu`, `cuda:0`), or `none (remote models only)`.
    #[serde(default)]
    pub device: String,
    /// The experiment, with credentials in endpoint URLs removed.
    pub experiment: ExperimentConfig,
    /// The experiment file's absolute path, when it came from one: its relative paths
    /// (prompts, templates) resolve against it.
    #[serde(default)]
    pub experiment_file: Option<String>,
    /// What failed; running the same experiment again retries it.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// The judge and its identity, when the run had one.
    #[serde(default)]
    pub judge: Option<JudgeMeta>,
    /// The llm-judge version that wrote the folder.
    #[serde(default)]
    pub llm_judge_version: String,
    /// Each answering model by its table name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelMeta>,
    /// The judge sanity check's outcome per mode, when it ran.
    #[serde(default)]
    pub sanity: Option<SanitySummary>,
    /// Each sampling setting, every value written out.
    #[serde(default)]
    pub settings: Vec<SettingMeta>,
    /// The judge prompt templates used, per mode.
    #[serde(default)]
    pub templates: BTreeMap<Mode, JudgeTemplate>,
    /// What each stage read, wrote, took and cost (tokens, seconds, money at a `price`).
    #[serde(default)]
    pub usage: Vec<crate::records::StageUsage>,
    /// Warnings: self-preference, a flagged judge, failures.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Record counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Failed answers and judge calls.
    pub failures: usize,
    /// Judgment rows.
    pub judgments: usize,
    /// Answers.
    pub responses: usize,
}

/// The judge of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeMeta {
    /// Whether its text verdicts were held to their form's language (`constrained` on and a
    /// text mode: a local judge decodes them so, an endpoint judge is asked for structured
    /// output, which the endpoint may refuse); false in folders written before constrained
    /// verdicts.
    #[serde(default)]
    pub constrained: bool,
    /// Its identity: `local:<sha256 of the weights>` or the endpoint and model.
    pub id: String,
    /// The name it was given.
    pub name: String,
}

/// An answering model of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// For a LoRA adapter merged into a base: the adapter and its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<FileMeta>,
    /// For a LoRA adapter merged into a base: the base and its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<FileMeta>,
    /// Context cap in tokens.
    #[serde(default)]
    pub context: Option<usize>,
    /// Its identity, as in the answers' `model_id` (none when it answered nothing).
    #[serde(default)]
    pub id: Option<String>,
    /// Chat template or raw completion.
    pub prompt_format: PromptFormat,
    /// Where it came from: a bundled name, a path, `hf://…` or an endpoint.
    pub source: String,
}

/// A model file named by its source, with its hash when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Hash of its contents.
    pub sha256: Option<String>,
    /// Where it came from.
    pub source: String,
}

/// A sampling setting of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingMeta {
    /// Its name in the tables.
    pub name: String,
    /// Every value, the seed being the base seed (each answer's is derived from it).
    pub params: SamplingParams,
}

impl RunMeta {
    /// The metadata of a run of `plan` that produced `o`.
    pub(crate) fn of(plan: &Plan, o: &Outcome) -> Self {
        let models = plan
            .models
            .iter()
            .map(|m| {
                let id = o
                    .responses
                    .iter()
                    .find(|r| r.model == m.name)
                    .map(|r| r.model_id.clone());
                let (mut base, mut adapter) = (None, None);
                if let ModelSpec::Local(src) = &m.spec {
                    if let (b, Some(a)) = src.base_and_adapter() {
                        // The id is `local:<base sha256>+lora:<adapter sha256>`.
                        let (bh, ah) = id
                            .as_deref()
                            .and_then(|i| i.strip_prefix("local:")?.split_once("+lora:"))
                            .map(|(x, y)| (x.to_string(), y.to_string()))
                            .unzip();
                        base = Some(FileMeta {
                            sha256: bh,
                            source: b.to_string(),
                        });
                        adapter = Some(FileMeta {
                            sha256: ah,
                            source: a.to_string(),
                        });
                    }
                }
                let meta = ModelMeta {
                    adapter,
                    base,
                    context: m.context,
                    id,
                    prompt_format: m.prompt_format,
                    source: m.spec.to_string(),
                };
                (m.name.clone(), meta)
            })
            .collect();
        RunMeta {
            counts: Counts {
                failures: o.failures.len(),
                judgments: o.judgments.len(),
                responses: o.responses.len(),
            },
            device: o.device.clone(),
            experiment: plan.config.redacted(),
            experiment_file: plan.config.origin.as_ref().map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }),
            failures: o.failures.clone(),
            judge: o.judge.as_ref().map(|(name, id)| JudgeMeta {
                constrained: plan
                    .config
                    .lead_judge()
                    .is_some_and(|j| j.constrains() && j.modes.iter().any(|m| m.spec().samples)),
                id: id.clone(),
                name: name.clone(),
            }),
            llm_judge_version: env!("CARGO_PKG_VERSION").to_string(),
            models,
            sanity: o.sanity.clone(),
            settings: plan
                .settings
                .iter()
                .map(|(name, params)| SettingMeta {
                    name: name.clone(),
                    params: params.clone(),
                })
                .collect(),
            templates: plan.templates.clone(),
            usage: o.usage.clone(),
            warnings: o.warnings.clone(),
        }
    }

    /// The experiment as it ran, its relative paths resolving against its file.
    pub fn config(&self) -> ExperimentConfig {
        let mut c = self.experiment.clone();
        c.origin = self.experiment_file.as_ref().map(PathBuf::from);
        c
    }

    /// Writes `path` atomically. Every object's keys come out sorted, so a rerun of the
    /// same experiment writes the same bytes.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let value =
            serde_json::to_value(self).map_err(|e| Error::Internal(format!("run.json: {e}")))?;
        let text = serde_json::to_vec_pretty(&value)
            .map_err(|e| Error::Internal(format!("run.json: {e}")))?;
        crate::store::write_atomic(path, &text)
    }

    /// Reads `path`, naming it in any error. What the tables and the findings depend on
    /// must parse: `experiment`, and `sanity`, `failures` and `warnings` where present. The
    /// rest only describes the run, and a field that does not parse (a hand-edited file, one
    /// written by another version) is left at its default instead of failing the load.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let at = |field: &str| format!("{}: {field}", path.display());
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::invalid(at("JSON"), e))?;
        let field = |k: &str| v.get(k).cloned().unwrap_or(serde_json::Value::Null);
        fn strict<T: serde::de::DeserializeOwned + Default>(
            v: serde_json::Value,
            at: String,
        ) -> Result<T> {
            if v.is_null() {
                return Ok(T::default());
            }
            serde_json::from_value(v).map_err(|e| Error::invalid(at, e))
        }
        fn lenient<T: serde::de::DeserializeOwned + Default>(v: serde_json::Value) -> T {
            serde_json::from_value(v).unwrap_or_default()
        }
        Ok(RunMeta {
            counts: lenient(field("counts")),
            device: lenient(field("device")),
            experiment: serde_json::from_value(field("experiment"))
                .map_err(|e| Error::invalid(at("experiment"), e))?,
            experiment_file: lenient(field("experiment_file")),
            failures: strict(field("failures"), at("failures"))?,
            judge: lenient(field("judge")),
            llm_judge_version: lenient(field("llm_judge_version")),
            models: lenient(field("models")),
            sanity: strict(field("sanity"), at("sanity"))?,
            settings: lenient(field("settings")),
            templates: lenient(field("templates")),
            usage: lenient(field("usage")),
            warnings: strict(field("warnings"), at("warnings"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_json_with_only_the_experiment_or_odd_descriptions_still_reads() {
        let dir = std::env::temp_dir().join(format!("llmj-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        let experiment = serde_json::json!({
            "name": "x", "prompts": "p.jsonl", "samples": 1, "seed": 3, "max_tokens": 8,
            "batch": 8, "models": [{"name": "m", "source": "smollm2-135m-instruct"}],
            "settings": [{"name": "g", "preset": "greedy"}],
        });
        std::fs::write(
            &path,
            serde_json::json!({ "experiment": experiment }).to_string(),
        )
        .unwrap();
        let m = RunMeta::read(&path).unwrap();
        assert_eq!(m.experiment.seed, 3);
        assert!(m.models.is_empty() && m.sanity.is_none() && m.failures.is_empty());
        // Descriptive fields another version wrote differently are left at their defaults.
        let odd = serde_json::json!({
            "experiment": experiment,
            "models": {"m": {"source": 5}},
            "settings": [{"name": "g", "params": {"unknown_knob": 1}}],
            "device": "cuda:0",
        });
        std::fs::write(&path, odd.to_string()).unwrap();
        let m = RunMeta::read(&path).unwrap();
        assert!(m.models.is_empty() && m.settings.is_empty());
        assert_eq!(m.device, "cuda:0");
        // What the findings depend on must parse: a broken sanity record is an error.
        let bad = serde_json::json!({"experiment": experiment, "sanity": {"modes": 7}});
        std::fs::write(&path, bad.to_string()).unwrap();
        let e = RunMeta::read(&path).unwrap_err().to_string();
        assert!(e.contains("run.json: sanity"), "{e}");
        // A missing file is an error naming it.
        let e = RunMeta::read(&dir.join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
