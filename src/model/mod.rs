//! Models: where they come from ([`ModelSource`]), how their files are read ([`GgufFile`]),
//! their tokenizer and chat template, and the transformer that runs them.

pub mod bundled;
pub mod chat_template;
pub mod config;
pub mod fingerprint;
pub mod gguf;
pub mod parallel;
mod qmatmul;
pub mod source;
pub mod tokenizer;
pub mod transformer;

pub use chat_template::{ChatTemplate, Input, Message, PromptFormat, TemplateKind};
pub use gguf::{GgufFile, ModelInfo};
pub use source::ModelSource;
pub use tokenizer::Tokenizer;
pub use transformer::{KvCache, Transformer};

use crate::error::{Error, Result};
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

/// The device models load onto, in words (`cpu`, `cuda:0`), for `run.json`.
pub fn device_name() -> String {
    match default_device() {
        Ok(Device::Cpu) => "cpu".into(),
        Ok(d) => format!("{:?}", d.location()).to_lowercase(),
        Err(e) => format!("unavailable: {e}"),
    }
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
    context_limit: Option<usize>,
}

/// A prompt ready for the model: the text it sees, its token ids, and the stop strings its
/// format needs beyond the model's end-of-turn tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The prompt text exactly as the model sees it.
    pub text: String,
    /// Its token ids (BOS first where the model wants one).
    pub ids: Vec<u32>,
    /// Extra stop strings (the plain fallback's `"\nUser:"`).
    pub stops: Vec<String>,
    /// Which format produced the text.
    pub kind: TemplateKind,
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
        // Every token the tokenizer can produce needs a row in the embedding and the output
        // layer; a larger vocabulary would index past them.
        if tokenizer.vocab_size() > transformer.vocab_size() {
            return Err(Error::GgufMetadata {
                path: path.to_path_buf(),
                key: "tokenizer.ggml.tokens".into(),
                reason: format!(
                    "{} tokens, but the model has rows for {}",
                    tokenizer.vocab_size(),
                    transformer.vocab_size()
                ),
            });
        }
        Ok(Self {
            source,
            path: path.to_path_buf(),
            info,
            transformer,
            tokenizer,
            template,
            context_limit: None,
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
    /// The context window: the length the model was trained for, or less when capped with
    /// [`Model::with_context_limit`]. Prompt plus answer must fit in it.
    pub fn context_length(&self) -> usize {
        let trained = self.transformer.config().context_length;
        self.context_limit.map_or(trained, |l| l.min(trained))
    }

    /// Caps the context window (llama.cpp's `n_ctx`): prompt plus answer stay within `n`
    /// tokens. `None` removes the cap.
    pub fn with_context_limit(mut self, n: Option<usize>) -> Self {
        self.context_limit = n;
        self
    }

    /// Checks that a prompt of `n` tokens leaves room for at least one generated token.
    pub fn check_fits(&self, n: usize) -> Result<()> {
        let context = self.context_length();
        if n == 0 || n >= context {
            return Err(Error::ContextOverflow { prompt: n, context });
        }
        Ok(())
    }

    /// Renders and tokenizes an input: a chat through the model's template (with the
    /// fallback's stop string), raw text as it is. Message content is tokenized as plain
    /// text, so a control token written inside a message (`<|im_end|>`) stays text.
    pub fn prepare(&self, input: &Input) -> Result<Prepared> {
        match input {
            Input::Chat(messages) => {
                let parts = self.template.render_parts(messages, true)?;
                let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
                let ids = self.tokenizer.encode_parts(&parts)?;
                Ok(Prepared {
                    text,
                    ids,
                    stops: self.template.extra_stops(),
                    kind: self.template.kind(),
                })
            }
            // Raw text is all content: a control token spelled inside it (an answer under
            // judgment, say) stays text.
            Input::Raw(text) => Ok(Prepared {
                ids: self.tokenizer.encode_parts(&[(text.clone(), true)])?,
                text: text.clone(),
                stops: Vec::new(),
                kind: TemplateKind::Raw,
            }),
        }
    }

    /// Prepares `input` with the start of the assistant's reply already written (`prefix`):
    /// the chat is rendered with `prefix` as a final assistant message and cut right after
    /// it, so the prefix sits where the reply would (with the fallback's space after
    /// `Assistant:`); raw text is followed directly by `prefix`.
    pub fn prepare_continuation(&self, input: &Input, prefix: &str) -> Result<Prepared> {
        let messages = match input {
            Input::Raw(text) => return self.prepare(&Input::Raw(format!("{text}{prefix}"))),
            Input::Chat(m) => m,
        };
        let mut with = messages.clone();
        with.push(Message::assistant(prefix));
        let mut parts = self.template.render_parts(&with, false)?;
        // The last content piece is the prefix; everything after it closes the turn.
        match parts.iter().rposition(|(_, content)| *content) {
            Some(at) if parts[at].0 == prefix => parts.truncate(at + 1),
            _ => {
                // The template reshaped the prefix: continue the open prompt instead, still
                // with control tokens parsed in the markup only.
                let mut parts = self.template.render_parts(messages, true)?;
                parts.push((prefix.to_string(), true));
                let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
                return Ok(Prepared {
                    ids: self.tokenizer.encode_parts(&parts)?,
                    text,
                    stops: self.template.extra_stops(),
                    kind: self.template.kind(),
                });
            }
        }
        let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
        Ok(Prepared {
            ids: self.tokenizer.encode_parts(&parts)?,
            text,
            stops: self.template.extra_stops(),
            kind: self.template.kind(),
        })
    }
}
