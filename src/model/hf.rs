//! Hugging Face checkpoints: a folder with `config.json`, `tokenizer.json`,
//! `tokenizer_config.json` and `*.safetensors` weights (sharded, with
//! `model.safetensors.index.json`), in f32, f16 or bf16, optionally with a LoRA adapter
//! merged at load.
//!
//! The llama architecture is read (Llama 2/3.x, SmolLM2). Its tensors are served to
//! the transformer under their GGUF names and in GGUF layout: the Q and K rows
//! are permuted as llama.cpp's converter does, so that one RoPE kernel serves both formats
//! and a checkpoint computes exactly what the same weights computed as a GGUF file. Llama
//! 3.1+ frequency scaling (`rope_scaling.rope_type = "llama3"`) becomes the per-frequency
//! factors a GGUF file carries in `rope_freqs.weight`.

use super::config::{Arch, Config};
use super::fingerprint;
use super::gguf::ModelInfo;
use super::lora::Adapter;
use super::tokenizer::Tokenizer;
use super::weights::Weights;
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The files of a checkpoint besides its weights.
pub const CONFIG_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
/// Files a checkpoint may have that change what it computes: more end-of-turn ids, and the
/// chat template where newer checkpoints keep it.
pub const OPTIONAL_FILES: [&str; 2] = ["generation_config.json", "chat_template.jinja"];
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The weights of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The fields of `config.json` the llama architecture reads.
#[derive(Clone, Debug, Deserialize)]
pub struct HfConfig {
    /// `llama` (others are refused).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (all heads when absent).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Per-head size (`hidden_size / num_attention_heads` when absent).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMS-norm epsilon.
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    /// RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (`llama3` or `linear`).
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    /// Training context length.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Output layer tied to the embedding.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Biases on the attention projections (refused).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Biases on the MLP projections (refused).
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<Value>,
    /// EOS id (or ids).
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    /// The model's hub name, when the folder records it.
    #[serde(default, rename = "_name_or_path")]
    pub name_or_path: Option<String>,
}

/// An opened checkpoint: configuration, memory-mapped weights, and an optional adapter.
pub struct Checkpoint {
    dir: PathBuf,
    config: HfConfig,
    weights: MmapedSafetensors,
    files: Vec<PathBuf>,
    adapter: Option<Adapter>,
    /// Names this checkpoint is known by (for the adapter's base check).
    names: Vec<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .finish()
    }
}

/// True when `dir` looks like a checkpoint folder (has a `config.json`).
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG_FILES[0]).is_file()
}

impl Checkpoint {
    /// Opens a checkpoint folder: reads its configuration and maps its weight files.
    pub fn open(dir: &Path) -> Result<Self> {
        let bad = |p: &Path, reason: String| Error::InvalidCheckpoint {
            path: p.to_path_buf(),
            reason,
        };
        if !dir.is_dir() {
            return Err(bad(dir, "is not a folder".into()));
        }
        if !dir.join(CONFIG_FILES[0]).is_file() {
            return Err(bad(
                dir,
                "is a folder without config.json: not a checkpoint (a model is a .gguf file \
                 or a checkpoint folder)"
                    .into(),
            ));
        }
        for f in CONFIG_FILES {
            if !dir.join(f).is_file() {
                return Err(bad(dir, format!("missing {f}")));
            }
        }
        let cfg_path = dir.join(CONFIG_FILES[0]);
        let config: HfConfig = read_json(&cfg_path)?;
        match config.model_type.as_deref() {
            Some("llama") => {}
            other => {
                return Err(Error::UnsupportedArchitecture {
                    path: cfg_path,
                    arch: other.unwrap_or("(no model_type)").to_string(),
                })
            }
        }
        for (flag, name) in [
            (config.attention_bias, "attention_bias"),
            (config.mlp_bias, "mlp_bias"),
        ] {
            if flag == Some(true) {
                return Err(bad(&cfg_path, format!("{name} = true is not supported")));
            }
        }
        let files = weight_files(dir)?;
        // SAFETY: the files are mapped read-only; like every safetensors reader (candle,
        // transformers), this relies on no one rewriting them while the model loads.
        let weights = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| bad(dir, format!("cannot read the safetensors weights: {e}")))?;
        if config.tie_word_embeddings != Some(true) && weights.get("lm_head.weight").is_err() {
            return Err(bad(
                dir,
                "no lm_head.weight, and config.json does not tie it to the embedding \
                 (tie_word_embeddings)"
                    .into(),
            ));
        }
        let mut names = Vec::new();
        names.extend(config.name_or_path.clone().filter(|n| !n.is_empty()));
        let ck = Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            files,
            adapter: None,
            names,
        };
        ck.config()?;
        ck.rope_factors()?;
        Ok(ck)
    }

    /// Adds a name the base model is known by (its hub repository), checked against the
    /// name an adapter was trained on.
    pub fn known_as(mut self, name: &str) -> Self {
        self.names.push(name.to_string());
        self
    }

    /// Merges `adapter` into the weights as they load, after checking that it fits.
    pub fn with_adapter(mut self, adapter: Adapter) -> Result<Self> {
        let cfg = self.config()?;
        let shape = |layer: usize, module: &str| -> Option<(usize, usize)> {
            let name = hf_layer_name(layer, module)?;
            let view = self.weights.get(&name).ok()?;
            match view.shape() {
                [out, inp] => Some((*out, *inp)),
                _ => None,
            }
        };
        adapter.check_base(cfg.n_layer, &shape, &self.names)?;
        self.adapter = Some(adapter);
        Ok(self)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The merged adapter, if any.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// sha256 over the configuration, tokenizer and weight files: the checkpoint's
    /// identity in record keys.
    pub fn sha256(&self) -> Result<String> {
        checkpoint_sha256(&self.dir)
    }

    /// The tokenizer from `tokenizer.json`, with BOS, EOS, BOS-adding and stop ids from
    /// `tokenizer_config.json`, `config.json` and `generation_config.json`.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tc = self.tokenizer_config()?;
        let token = |key: &str| -> Option<String> {
            match tc.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let mut stops = ids(self.config.eos_token_id.as_ref());
        let gen = self.dir.join("generation_config.json");
        if gen.is_file() {
            let g: Value = read_json(&gen)?;
            stops.extend(ids(g.get("eos_token_id")));
        }
        Tokenizer::from_hf(
            &self.dir.join(CONFIG_FILES[1]),
            token("bos_token"),
            token("eos_token"),
            ids(self.config.bos_token_id.as_ref()).first().copied(),
            tc.get("add_bos_token").and_then(Value::as_bool),
            stops,
        )
    }

    /// The chat template of `tokenizer_config.json` (the `default` one when it lists
    /// several), or of a `chat_template.jinja` beside it.
    pub fn chat_template(&self) -> Result<Option<String>> {
        let tc = self.tokenizer_config()?;
        let from_config = match tc.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        if from_config.is_some() {
            return Ok(from_config);
        }
        let jinja = self.dir.join("chat_template.jinja");
        if jinja.is_file() {
            return std::fs::read_to_string(&jinja)
                .map(Some)
                .map_err(|e| Error::io(&jinja, e));
        }
        Ok(None)
    }

    fn tokenizer_config(&self) -> Result<serde_json::Map<String, Value>> {
        let p = self.dir.join(CONFIG_FILES[2]);
        match read_json::<Value>(&p)? {
            Value::Object(o) => Ok(o),
            _ => Err(Error::InvalidCheckpoint {
                path: p,
                reason: "is not a JSON object".into(),
            }),
        }
    }

    /// Facts about the checkpoint, for `llm-judge info` and validation.
    pub fn info(&self) -> Result<ModelInfo> {
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut params = 0u64;
        for (_, view) in self.weights.tensors() {
            let n: usize = view.shape().iter().product();
            params += n as u64;
            if view.shape().len() >= 2 {
                *by_type
                    .entry(format!("{:?}", view.dtype()).to_lowercase())
                    .or_default() += n as u64;
            }
        }
        let quantization = super::gguf::dominant_type(&by_type);
        let file_size = self
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        Ok(ModelInfo {
            path: self.dir.clone(),
            name: self.config.name_or_path.clone(),
            architecture: "llama".into(),
            quantization,
            tensor_types: by_type,
            parameters: params,
            context_length: self.config.max_position_embeddings.map(|n| n as u32),
            vocab_size: self.config.vocab_size,
            has_chat_template: self.chat_template()?.is_some(),
            file_size,
        })
    }

    /// The checkpoint tensor behind a GGUF name, if the name has one.
    fn hf_name(&self, gguf: &str) -> Option<String> {
        let plain = match gguf {
            "token_embd.weight" => Some("model.embed_tokens.weight".to_string()),
            "output_norm.weight" => Some("model.norm.weight".to_string()),
            "output.weight" => Some("lm_head.weight".to_string()),
            _ => None,
        };
        if plain.is_some() {
            return plain;
        }
        let rest = gguf.strip_prefix("blk.")?.strip_suffix(".weight")?;
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        match part {
            "attn_norm" => Some(format!("model.layers.{layer}.input_layernorm.weight")),
            "ffn_norm" => Some(format!(
                "model.layers.{layer}.post_attention_layernorm.weight"
            )),
            _ => hf_layer_name(layer, gguf_module(part)?),
        }
    }

    /// The per-frequency RoPE divisors of Llama 3.1+ scaling, as llama.cpp's
    /// `rope_freqs.weight` holds them.
    fn rope_factors(&self) -> Result<Option<Vec<f32>>> {
        let Some(scaling) = &self.config.rope_scaling else {
            return Ok(None);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != "llama3" {
            return Ok(None);
        }
        let num = |k: &str| scaling.get(k).and_then(Value::as_f64);
        let bad = |k: &str| Error::InvalidCheckpoint {
            path: self.dir.join(CONFIG_FILES[0]),
            reason: format!("rope_scaling.{k} is missing or not a number"),
        };
        let factor = num("factor").ok_or_else(|| bad("factor"))?;
        let low = num("low_freq_factor").ok_or_else(|| bad("low_freq_factor"))?;
        let high = num("high_freq_factor").ok_or_else(|| bad("high_freq_factor"))?;
        let old = num("original_max_position_embeddings")
            .ok_or_else(|| bad("original_max_position_embeddings"))?;
        if !(factor > 0.0 && low > 0.0 && high > low && old > 0.0) {
            return Err(Error::InvalidCheckpoint {
                path: self.dir.join(CONFIG_FILES[0]),
                reason: format!(
                    "rope_scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and \
                     original_max_position_embeddings > 0; got {factor}, {low}, {high}, {old}"
                ),
            });
        }
        let cfg = self.config()?;
        Ok(Some(llama3_rope_factors(
            cfg.rope_base as f64,
            cfg.head_dim,
            [factor, low, high, old],
        )))
    }
}

/// Llama 3.1+ RoPE scaling as divisors of each frequency (llama.cpp's `rope_freqs.weight`):
/// high frequencies are kept, low ones divided by `factor`, the band between blended.
/// `[factor, low_freq_factor, high_freq_factor, original_max_position_embeddings]`.
fn llama3_rope_factors(base: f64, head_dim: usize, [factor, low, high, old]: [f64; 4]) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let scaled = if wavelen < high_wavelen {
                freq
            } else if wavelen > low_wavelen {
                freq / factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * freq / factor + smooth * freq
            };
            (freq / scaled) as f32
        })
        .collect()
}

/// Reorders the rows of a Q or K projection from the trained layout (each head's two RoPE
/// halves) to llama.cpp's (adjacent pairs): rows `(head, half, i)` become `(head, i, half)`.
fn to_interleaved(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads.max(1);
    if heads == 0 || !rows.is_multiple_of(heads) || !hd.is_multiple_of(2) {
        return Err(candle_core::Error::Msg(format!(
            "a Q/K projection of {rows} rows does not split into {heads} heads of even size"
        ))
        .into());
    }
    Ok(t.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The checkpoint name of a block projection.
fn hf_layer_name(layer: usize, module: &str) -> Option<String> {
    let group = match module {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{group}.{module}.weight"))
}

/// The PEFT module name of a GGUF block tensor.
fn gguf_module(part: &str) -> Option<&'static str> {
    Some(match part {
        "attn_q" => "q_proj",
        "attn_k" => "k_proj",
        "attn_v" => "v_proj",
        "attn_output" => "o_proj",
        "ffn_gate" => "gate_proj",
        "ffn_up" => "up_proj",
        "ffn_down" => "down_proj",
        _ => return None,
    })
}

impl Weights for Checkpoint {
    fn config(&self) -> Result<Config> {
        let c = &self.config;
        let path = self.dir.join(CONFIG_FILES[0]);
        let bad = |reason: String| Error::InvalidCheckpoint {
            path: path.clone(),
            reason,
        };
        let n_head = c.num_attention_heads;
        let n_kv_head = c.num_key_value_heads.unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            return Err(bad(format!(
                "{n_kv_head} key/value heads do not divide {n_head} heads"
            )));
        }
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / n_head);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head size {head_dim} is not a positive even number"
            )));
        }
        // Every count is checked against the tensors the checkpoint holds before anything is
        // allocated from it (a count of 4e9 would otherwise abort the process).
        let n_layer = c.num_hidden_layers;
        let q_of = |i: usize| format!("blk.{i}.attn_q.weight");
        if n_layer == 0 {
            return Err(bad(
                "num_hidden_layers is 0; a model has at least 1 layer".into()
            ));
        }
        if !self.has_tensor(&q_of(n_layer - 1)) {
            return Err(bad(format!(
                "num_hidden_layers is {n_layer}, but the checkpoint has no layer {}",
                n_layer - 1
            )));
        }
        if self.has_tensor(&q_of(n_layer)) {
            return Err(bad(format!(
                "num_hidden_layers is {n_layer}, but the checkpoint holds more layers \
                 (its tensors for layer {n_layer} would go unused)"
            )));
        }
        if let Some(view) = self
            .hf_name(&q_of(0))
            .and_then(|n| self.weights.get(&n).ok())
        {
            let want = [n_head as u64 * head_dim as u64, c.hidden_size as u64];
            let dims: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            if dims != want {
                return Err(bad(format!(
                    "hidden_size {} with {n_head} heads of {head_dim} does not match the \
                     first layer's query weight, of shape {:?}",
                    c.hidden_size,
                    view.shape()
                )));
            }
        }
        if let Some(eps) = c.rms_norm_eps {
            if !(eps.is_finite() && eps >= 0.0) {
                return Err(bad(format!(
                    "rms_norm_eps is {eps}, not a finite number ≥ 0"
                )));
            }
        }
        let mut rope_linear_scale = 1.0;
        if let Some(s) = &c.rope_scaling {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            match kind {
                "llama3" | "default" => {}
                "linear" => {
                    rope_linear_scale =
                        s.get("factor").and_then(Value::as_f64).unwrap_or(1.0) as f32
                }
                other => return Err(bad(format!("rope_scaling type `{other}` is not supported"))),
            }
        }
        Ok(Config {
            arch: Arch::Llama,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            hidden: c.hidden_size,
            eps: c.rms_norm_eps.unwrap_or(1e-6),
            context_length: c.max_position_embeddings.unwrap_or(4096),
            rope_base: c.rope_theta.unwrap_or(10_000.0) as f32,
            rope_base_local: 10_000.0,
            rope_linear_scale,
            sliding_window: None,
            sliding_pattern: 1,
        })
    }

    fn has_tensor(&self, name: &str) -> bool {
        match name {
            // Checked when the checkpoint was opened.
            "rope_freqs.weight" => matches!(self.rope_factors(), Ok(Some(_))),
            // A tied output layer is the embedding (the transformer's fallback).
            "output.weight" => {
                self.config.tie_word_embeddings != Some(true)
                    && self.weights.get("lm_head.weight").is_ok()
            }
            _ => self
                .hf_name(name)
                .is_some_and(|n| self.weights.get(&n).is_ok()),
        }
    }

    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if name == "rope_freqs.weight" {
            let f = self.rope_factors()?.unwrap_or_default();
            let n = f.len();
            let t = Tensor::from_vec(f, n, &Device::Cpu)?;
            return Ok(QTensor::quantize_onto(&t, GgmlDType::F32, device)?);
        }
        let hf = self.hf_name(name).ok_or_else(|| Error::InvalidCheckpoint {
            path: self.dir.clone(),
            reason: format!("no checkpoint tensor for `{name}`"),
        })?;
        let t = self
            .weights
            .load(&hf, &Device::Cpu)
            .map_err(|e| Error::InvalidCheckpoint {
                path: self.dir.clone(),
                reason: format!("tensor `{hf}`: {e}"),
            })?;
        let dtype = match t.dtype() {
            DType::F32 => GgmlDType::F32,
            DType::F16 => GgmlDType::F16,
            DType::BF16 => GgmlDType::BF16,
            other => {
                return Err(Error::InvalidCheckpoint {
                    path: self.dir.clone(),
                    reason: format!("tensor `{hf}` is {other:?}; f32, f16 and bf16 are read"),
                })
            }
        };
        let t = match self.merge_delta(name)? {
            // The update is added in f32 and rounded once to the stored type.
            Some(delta) => (t.to_dtype(DType::F32)? + delta)?.to_dtype(t.dtype())?,
            None => t,
        };
        let cfg = self.config()?;
        let heads = if name.ends_with(".attn_q.weight") {
            Some(cfg.n_head)
        } else if name.ends_with(".attn_k.weight") {
            Some(cfg.n_kv_head)
        } else {
            None
        };
        let t = match heads {
            Some(h) => to_interleaved(&t, h).map_err(|e| Error::InvalidCheckpoint {
                path: self.dir.clone(),
                reason: format!("tensor `{hf}`: {e}"),
            })?,
            None => t,
        };
        Ok(QTensor::quantize_onto(&t, dtype, device)?)
    }
}

impl Checkpoint {
    /// The adapter's `s·B·A` for a GGUF tensor name, when it adapts that projection.
    fn merge_delta(&self, gguf: &str) -> Result<Option<Tensor>> {
        let Some(adapter) = &self.adapter else {
            return Ok(None);
        };
        let Some(rest) = gguf.strip_prefix("blk.") else {
            return Ok(None);
        };
        let Some((layer, part)) = rest.split_once('.') else {
            return Ok(None);
        };
        let (Ok(layer), Some(module)) = (
            layer.parse::<usize>(),
            gguf_module(part.trim_end_matches(".weight")),
        ) else {
            return Ok(None);
        };
        adapter.delta(layer, module)
    }
}

/// The weight files: the shards named by the index, else `model.safetensors`, else every
/// `*.safetensors` in the folder.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let v: Value = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::InvalidCheckpoint {
                path: index.clone(),
                reason: "has no weight_map object".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        let mut files = Vec::new();
        for s in shards {
            let p = dir.join(&s);
            if !is_shard_name(&s) || !p.is_file() {
                return Err(Error::InvalidCheckpoint {
                    path: index.clone(),
                    reason: format!("names shard `{s}`, which is not in the folder"),
                });
            }
            files.push(p);
        }
        if files.is_empty() {
            return Err(Error::InvalidCheckpoint {
                path: index,
                reason: "names no shards".into(),
            });
        }
        return Ok(files);
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name()
                    .is_some_and(|n| n != "adapter_model.safetensors")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidCheckpoint {
            path: dir.to_path_buf(),
            reason: format!("no {SINGLE_FILE}, {INDEX_FILE} or other *.safetensors file"),
        });
    }
    Ok(files)
}

/// True for a shard name an index may give: relative, inside the folder (no `..`, no
/// absolute path), ending in `.safetensors`.
pub(crate) fn is_shard_name(s: &str) -> bool {
    let p = Path::new(s);
    s.ends_with(".safetensors")
        && !s.contains('\\')
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Token ids from a JSON number or list of numbers (ids beyond `u32` are ignored).
fn ids(v: Option<&Value>) -> Vec<u32> {
    let id = |n: &Value| n.as_u64().and_then(|n| u32::try_from(n).ok());
    match v {
        Some(n @ Value::Number(_)) => id(n).into_iter().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(id).collect(),
        _ => Vec::new(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The identity of a Hugging Face checkpoint folder: sha256 over its configuration,
/// tokenizer, generation config and chat template (when present) and weight files.
pub fn checkpoint_sha256(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = CONFIG_FILES.iter().map(|f| dir.join(f)).collect();
    files.extend(
        OPTIONAL_FILES
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.is_file()),
    );
    files.extend(weight_files(dir)?);
    fingerprint::files_sha256(&files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::rotary_emb::{rope, rope_i};

    /// The permutation is the one that makes llama.cpp's pairwise RoPE on the permuted rows
    /// compute what the checkpoint's half-split RoPE (`rotate_half`) computes on the trained
    /// rows: the same rotated values, head dimension `i` of the trained layout at `2i` and
    /// `i + d/2` at `2i + 1`. Attention scores, sums over those dimensions, are unchanged.
    #[test]
    fn interleaved_rows_with_pairwise_rope_equal_trained_rows_with_half_rope() -> Result<()> {
        let (heads, hd, cols, seq) = (3, 8, 5, 4);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (heads * hd, cols), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (seq, cols), &dev)?;
        let angles: Vec<f32> = (0..seq)
            .flat_map(|p| (0..hd / 2).map(move |i| p as f32 / 10f32.powf(i as f32 / 2.0)))
            .collect();
        let a = Tensor::from_vec(angles, (seq, hd / 2), &dev)?;
        let (cos, sin) = (a.cos()?, a.sin()?);
        let heads_of = |w: &Tensor| -> Result<Tensor> {
            Ok(x.matmul(&w.t()?)?
                .reshape((1, seq, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let trained: Vec<f32> = rope(&heads_of(&w)?, &cos, &sin)?.flatten_all()?.to_vec1()?;
        let gguf: Vec<f32> = rope_i(&heads_of(&to_interleaved(&w, heads)?)?, &cos, &sin)?
            .flatten_all()?
            .to_vec1()?;
        for row in 0..heads * seq {
            for i in 0..hd / 2 {
                let t = &trained[row * hd..];
                let g = &gguf[row * hd..];
                assert!((t[i] - g[2 * i]).abs() < 1e-5, "row {row} dim {i}");
                assert!(
                    (t[i + hd / 2] - g[2 * i + 1]).abs() < 1e-5,
                    "row {row} dim {i}+"
                );
            }
        }
        assert!(to_interleaved(&w, 5).is_err(), "24 rows are not 5 heads");
        Ok(())
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        // Llama 3.2 3B: rope_theta 500000, head_dim 128, factor 32, low 1, high 4, 8192.
        let f = llama3_rope_factors(500_000.0, 128, [32.0, 1.0, 4.0, 8192.0]);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "the highest frequency is kept");
        assert!(
            (f[63] - 32.0).abs() < 1e-4,
            "the lowest is divided by the factor"
        );
        assert!(f.windows(2).all(|w| w[0] <= w[1] + 1e-6), "{f:?}");
        let blended = f.iter().filter(|&&x| x > 1.0 && x < 32.0 - 1e-3).count();
        assert!(blended > 0 && blended < 20, "a band in between: {blended}");
    }
}
