//! Architecture hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use super::gguf::GgufFile;
use crate::error::{Error, Result};

/// The architectures llm-judge can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama family: Llama 2/3.x, SmolLM2, and other `general.architecture = llama` files.
    Llama,
    /// Gemma 3 text models.
    Gemma3,
    /// Qwen2 and Qwen2.5: llama-like blocks with biases on the query, key and value
    /// projections, NeoX RoPE.
    Qwen2,
}

/// Everything the forward pass needs to know about the shapes.
#[derive(Clone, Debug)]
pub struct Config {
    /// Architecture.
    pub arch: Arch,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Model width.
    pub hidden: usize,
    /// RMS-norm epsilon.
    pub eps: f64,
    /// Training context length.
    pub context_length: usize,
    /// RoPE base of global-attention layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3).
    pub rope_base_local: f32,
    /// Linear RoPE scaling factor of global layers (1 = none).
    pub rope_linear_scale: f32,
    /// Sliding-window size, when some layers use one.
    pub sliding_window: Option<usize>,
    /// Every `sliding_pattern`-th layer is global; the others slide (Gemma 3: 6).
    pub sliding_pattern: usize,
}

impl Config {
    /// Reads the configuration of a supported architecture.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name = g.architecture()?;
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    path: g.path().to_path_buf(),
                    arch: other.to_string(),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_head = g.u32(&key("attention.head_count"))? as usize;
        if n_head == 0 {
            return Err(Error::GgufMetadata {
                path: g.path().to_path_buf(),
                key: key("attention.head_count"),
                reason: "is 0".into(),
            });
        }
        let n_kv_head = g
            .opt_u32(&key("attention.head_count_kv"))?
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let hidden = g.u32(&key("embedding_length"))? as usize;
        let head_dim = g
            .opt_u32(&key("attention.key_length"))?
            .map(|v| v as usize)
            .unwrap_or(hidden / n_head);
        let eps = g
            .opt_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5) as f64;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::GgufMetadata {
                path: g.path().to_path_buf(),
                key: key("attention.layer_norm_rms_epsilon"),
                reason: format!("is {eps}, not a finite number ≥ 0"),
            });
        }
        let context_length = g.opt_u32(&key("context_length"))?.unwrap_or(4096) as usize;
        let (rope_default, sliding_window) = match arch {
            Arch::Llama => (10_000.0, None),
            Arch::Qwen2 => (1_000_000.0, None),
            Arch::Gemma3 => (
                1_000_000.0,
                Some(g.opt_u32(&key("attention.sliding_window"))?.unwrap_or(512) as usize),
            ),
        };
        let rope_base = g.opt_f32(&key("rope.freq_base"))?.unwrap_or(rope_default);
        let rope_base_local = g.opt_f32(&key("rope.local_freq_base"))?.unwrap_or(10_000.0);
        let rope_linear_scale = match g.opt_string(&key("rope.scaling.type"))?.as_deref() {
            Some("linear") => g.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            _ => 1.0,
        };
        let sliding_pattern = g
            .opt_u32(&key("attention.sliding_window_pattern"))?
            .unwrap_or(6) as usize;
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            return Err(Error::GgufMetadata {
                path: g.path().to_path_buf(),
                key: key("attention.head_count_kv"),
                reason: format!("{n_kv_head} kv heads do not divide {n_head} heads"),
            });
        }
        // Every count is checked against the tensors the file holds before anything is
        // allocated from it (a count of 4e9 would otherwise abort the process).
        let bad = |k: &str, reason: String| Error::GgufMetadata {
            path: g.path().to_path_buf(),
            key: key(k),
            reason,
        };
        let infos = &g.content().tensor_infos;
        let n_layer = g.u32(&key("block_count"))? as usize;
        let q_of = |i: usize| format!("blk.{i}.attn_q.weight");
        if n_layer == 0 {
            return Err(bad(
                "block_count",
                "is 0; a model has at least 1 layer".into(),
            ));
        }
        if !infos.contains_key(&q_of(n_layer - 1)) {
            return Err(bad(
                "block_count",
                format!(
                    "is {n_layer}, but the file has no tensor {}",
                    q_of(n_layer - 1)
                ),
            ));
        }
        if infos.contains_key(&q_of(n_layer)) {
            return Err(bad(
                "block_count",
                format!(
                    "is {n_layer}, but the file holds more layers ({})",
                    q_of(n_layer)
                ),
            ));
        }
        if let Some(t) = infos.get(&q_of(0)) {
            let want = [n_head as u64 * head_dim as u64, hidden as u64];
            let dims: Vec<u64> = t.shape.dims().iter().map(|&d| d as u64).collect();
            if dims != want {
                return Err(bad(
                    "embedding_length",
                    format!(
                        "{hidden}, with {n_head} heads (attention.head_count) of {head_dim} \
                         values (attention.key_length, or the embedding length over the heads), \
                         does not match {} of shape {:?}",
                        q_of(0),
                        t.shape.dims()
                    ),
                ));
            }
        }
        Ok(Self {
            arch,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            hidden,
            eps,
            context_length,
            rope_base,
            rope_base_local,
            rope_linear_scale,
            sliding_window,
            sliding_pattern: sliding_pattern.max(1),
        })
    }

    /// The sliding window of layer `i`, or `None` for global attention.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        match self.arch {
            Arch::Llama | Arch::Qwen2 => None,
            Arch::Gemma3 => {
                if (i + 1).is_multiple_of(self.sliding_pattern) {
                    None
                } else {
                    self.sliding_window
                }
            }
        }
    }
}
