//! Models: where they come from ([`ModelSource`]), how their files are read ([`GgufFile`]),
//! their tokenizer and chat template, and the transformer that runs them.

pub mod bundled;
pub mod chat_template;
pub mod config;
pub mod fingerprint;
pub mod gguf;
mod q4_1;
pub mod source;
pub mod tokenizer;
pub mod transformer;

pub use chat_template::{ChatTemplate, Message, TemplateSource};
pub use gguf::{GgufFile, ModelInfo};
pub use source::ModelSource;
pub use tokenizer::Tokenizer;
pub use transformer::{KvCache, Transformer};

use crate::error::Result;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// The device models load onto: the first CUDA GPU when built with the `cuda` feature and one
/// is present, else the CPU.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        if candle_core::utils::cuda_is_available() {
            return Ok(Device::new_cuda(0)?);
        }
    }
    Ok(Device::Cpu)
}

/// Facts about a model file without loading its weights. Fails on an unsupported
/// architecture, like loading would.
pub fn inspect(source: &ModelSource) -> Result<ModelInfo> {
    let g = GgufFile::open(source.resolve()?)?;
    config::Config::from_gguf(&g)?;
    g.info()
}

/// A loaded model: weights, tokenizer and chat template, ready to generate.
#[derive(Debug, Clone)]
pub struct Model {
    source: ModelSource,
    path: PathBuf,
    info: ModelInfo,
    transformer: Transformer,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

/// Options for [`Model::load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Device to load onto; [`default_device`] when `None`.
    pub device: Option<Device>,
    /// A Hugging Face `tokenizer.json` to use instead of the GGUF vocabulary.
    pub tokenizer_json: Option<PathBuf>,
}

impl Model {
    /// Resolves `source` (downloading from the hub if needed) and loads it.
    pub fn load(source: &ModelSource) -> Result<Self> {
        Self::load_with(source, &LoadOptions::default())
    }

    /// Parses a model name (see [`ModelSource`]) and loads it.
    pub fn load_named(name: &str) -> Result<Self> {
        Self::load(&name.parse()?)
    }

    /// Loads with explicit options.
    pub fn load_with(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        crate::engine::pin_thread_count();
        let path = source.resolve()?;
        let device = match &opts.device {
            Some(d) => d.clone(),
            None => default_device()?,
        };
        Self::from_file(
            source.clone(),
            &path,
            &device,
            opts.tokenizer_json.as_deref(),
        )
    }

    fn from_file(
        source: ModelSource,
        path: &Path,
        device: &Device,
        tokenizer_json: Option<&Path>,
    ) -> Result<Self> {
        let mut g = GgufFile::open(path)?;
        let info = g.info()?;
        // Check the architecture before reading tokens, so the error names it.
        config::Config::from_gguf(&g)?;
        let tokenizer = match tokenizer_json {
            Some(p) => Tokenizer::from_file(p, &g)?,
            None => Tokenizer::from_gguf(&g)?,
        };
        let template = ChatTemplate::new(
            g.opt_string("tokenizer.chat_template")?,
            tokenizer.bos_token(),
            tokenizer.eos_token(),
        );
        let transformer = Transformer::load(&mut g, device)?;
        Ok(Self {
            source,
            path: path.to_path_buf(),
            info,
            transformer,
            tokenizer,
            template,
        })
    }

    /// Where the model came from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }
    /// The GGUF file on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Facts about the file.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }
    /// The transformer (weights and forward pass).
    pub fn transformer(&mut self) -> &mut Transformer {
        &mut self.transformer
    }
    /// sha256 of the model file (cached beside it): the model's identity in record keys.
    pub fn sha256(&self) -> Result<String> {
        fingerprint::cached_sha256(&self.path)
    }
    /// Context length the model was trained for.
    pub fn context_length(&self) -> usize {
        self.transformer.config().context_length
    }
}
