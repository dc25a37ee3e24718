//! Models: where they come from ([`ModelSource`]), how their files are read ([`GgufFile`],
//! or a Hugging Face [`hf::Checkpoint`] with a [`lora::Adapter`]), their tokenizer and chat
//! template, the device they run on, and the transformer that runs them.

pub(crate) mod activation;
mod attention;
pub mod bundled;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod fingerprint;
pub mod gguf;
pub(crate) mod heap;
pub mod hf;
mod kv_cache;
mod layers;
pub mod lora;
pub mod pages;
pub(crate) mod parallel;
mod qmatmul;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub(crate) mod weights;

pub use chat_template::{ChatTemplate, Input, Message, PromptFormat, TemplateKind};
pub use device::DeviceChoice;
pub use gguf::{GgufFile, ModelInfo};
pub use kv_cache::KvCache;
pub use qmatmul::prefetch;
pub use source::ModelSource;
pub use tokenizer::Tokenizer;
pub use transformer::Transformer;

use crate::error::{Error, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Facts about a model without loading its weights. Fails where loading would fail before
/// reading weights: an unsupported architecture, a checkpoint missing files, an adapter that
/// does not fit its base (its shapes are read from the file headers).
pub fn inspect(source: &ModelSource) -> Result<ModelInfo> {
    let path = source.resolve()?;
    if path.is_dir() {
        return open_checkpoint(source, &path)?.info();
    }
    refuse_adapter(source, &path)?;
    let g = GgufFile::open(path)?;
    config::Config::from_gguf(&g)?;
    g.info()
}

/// An adapter goes into a checkpoint folder only; never drop it silently on a file.
fn refuse_adapter(source: &ModelSource, path: &Path) -> Result<()> {
    match source.base_and_adapter() {
        (_, None) => Ok(()),
        (base, Some(adapter)) => Err(Error::InvalidAdapter {
            path: path.to_path_buf(),
            reason: format!(
                "`{adapter}` can only be merged into a safetensors checkpoint folder, and \
                 `{base}` is a file"
            ),
        }),
    }
}

/// Opens a checkpoint folder with the source's adapter (downloaded when needed) checked
/// against it.
fn open_checkpoint(source: &ModelSource, dir: &Path) -> Result<hf::Checkpoint> {
    let mut ck = hf::Checkpoint::open(dir)?;
    if let Some(repo) = source.repo() {
        ck = ck.known_as(repo);
    }
    if let Some(adapter) = source.resolve_adapter()? {
        ck = ck.with_adapter(lora::Adapter::open(&adapter)?)?;
    }
    Ok(ck)
}

/// The identity of a model's files for record keys: the GGUF file's sha256, the
/// checkpoint's (over its configuration, tokenizer and weight files), and for an adapted
/// model `<base>+lora:<adapter>`, each part with its own hash.
pub fn identity(path: &Path, adapter: Option<&Path>) -> Result<String> {
    let base = if path.is_dir() {
        hf::checkpoint_sha256(path)?
    } else {
        fingerprint::cached_sha256(path)?
    };
    Ok(match adapter {
        Some(a) => format!("{base}+lora:{}", lora::adapter_sha256(a)?),
        None => base,
    })
}

/// [`identity`] of a source, resolving (and downloading) it.
pub fn source_identity(source: &ModelSource) -> Result<String> {
    identity(&source.resolve()?, source.resolve_adapter()?.as_deref())
}

/// A loaded model: weights, tokenizer and chat template, ready to generate.
#[derive(Debug, Clone)]
pub struct Model {
    source: ModelSource,
    path: PathBuf,
    adapter: Option<PathBuf>,
    device: Device,
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
    /// Device to load onto; when `None`, [`DeviceChoice::Auto`] (the first CUDA GPU when
    /// built with the `cuda` feature and one is present, else the CPU).
    pub device: Option<Device>,
    /// A Hugging Face `tokenizer.json` to use instead of the GGUF vocabulary.
    pub tokenizer_json: Option<PathBuf>,
}

impl LoadOptions {
    /// Options that load onto `choice`, opened now (an error saying why when it cannot be,
    /// such as `cuda` in a binary built without the `cuda` feature).
    pub fn on(choice: DeviceChoice) -> Result<Self> {
        Ok(Self {
            device: Some(choice.open()?),
            ..Self::default()
        })
    }
}

/// What a model file or checkpoint gives before it becomes a [`Model`].
struct Parts {
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    transformer: Transformer,
}

impl Parts {
    fn of_checkpoint(ck: &mut hf::Checkpoint, device: &Device) -> Result<Self> {
        let info = ck.info()?;
        let tokenizer = ck.tokenizer()?;
        let template = ChatTemplate::new(
            ck.chat_template()?,
            tokenizer.bos_token(),
            tokenizer.eos_token(),
        );
        let transformer = Transformer::load(ck, device)?;
        Ok(Self {
            info,
            tokenizer,
            template,
            transformer,
        })
    }

    fn of_file(path: &Path, device: &Device, tokenizer_json: Option<&Path>) -> Result<Self> {
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
            info,
            tokenizer,
            template,
            transformer,
        })
    }
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
    ///
    /// Once the source resolves, this raises the C allocator's limits for the whole process
    /// (glibc only, once; see `src/model/heap.rs`): the kernels' big buffers are then reused
    /// instead of being handed back to the operating system between forward passes.
    pub fn load_with(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let path = source.resolve()?;
        heap::keep_freed_buffers();
        let device = match &opts.device {
            Some(d) => d.clone(),
            None => DeviceChoice::Auto.open()?,
        };
        let (parts, adapter) = if path.is_dir() {
            let mut ck = open_checkpoint(source, &path)?;
            let adapter = ck.adapter().map(|a| a.dir().to_path_buf());
            let parts = Parts::of_checkpoint(&mut ck, &device)?;
            (parts, adapter)
        } else {
            refuse_adapter(source, &path)?;
            let parts = Parts::of_file(&path, &device, opts.tokenizer_json.as_deref())?;
            (parts, None)
        };
        // Every token the tokenizer can produce needs a row in the embedding and the output
        // layer; a larger vocabulary would index past them.
        let (tokens, rows) = (parts.tokenizer.vocab_size(), parts.transformer.vocab_size());
        if tokens > rows {
            let reason = format!("{tokens} tokens, but the model has embedding rows for {rows}");
            return Err(if path.is_dir() {
                Error::InvalidCheckpoint {
                    path: path.join("tokenizer.json"),
                    reason,
                }
            } else {
                Error::GgufMetadata {
                    path,
                    key: "tokenizer.ggml.tokens".into(),
                    reason,
                }
            });
        }
        Ok(Self {
            source: source.clone(),
            path,
            adapter,
            device,
            info: parts.info,
            transformer: parts.transformer,
            tokenizer: parts.tokenizer,
            template: parts.template,
            context_limit: None,
        })
    }

    /// Where the model came from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }
    /// The GGUF file, or the checkpoint folder, on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The LoRA adapter folder merged into the weights, if any.
    pub fn adapter_path(&self) -> Option<&Path> {
        self.adapter.as_deref()
    }
    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
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
    /// The model's identity in record keys (see [`identity`]): the sha256 of the model
    /// file (cached beside it), of a checkpoint's files, and of an adapter's.
    pub fn sha256(&self) -> Result<String> {
        identity(&self.path, self.adapter.as_deref())
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
