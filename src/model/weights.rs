//! Where the transformer's tensors come from. [`super::Transformer::load`] asks for tensors
//! by their GGUF names (`blk.0.attn_q.weight`); a GGUF file answers directly, a Hugging Face
//! checkpoint ([`super::hf::Checkpoint`]) translates the names and merges a LoRA adapter.

use super::config::Config;
use super::gguf::GgufFile;
use crate::error::Result;
use candle_core::quantized::QTensor;
use candle_core::Device;

/// A source of model weights, addressed by GGUF tensor names.
pub trait Weights {
    /// The architecture's hyper-parameters.
    fn config(&self) -> Result<Config>;
    /// True when the source has the tensor (an absent `output.weight` means tied embeddings).
    fn has_tensor(&self, name: &str) -> bool;
    /// Reads one tensor onto `device`.
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor>;
}

impl Weights for GgufFile {
    fn config(&self) -> Result<Config> {
        Config::from_gguf(self)
    }
    fn has_tensor(&self, name: &str) -> bool {
        GgufFile::has_tensor(self, name)
    }
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        GgufFile::tensor(self, name, device)
    }
}
