//! Tokenizers rebuilt from GGUF metadata (or loaded from a `tokenizer.json`).
//!
//! Two vocabularies are supported, matching llama.cpp's behaviour on the same file:
//! - `gpt2`: byte-level BPE from `tokenizer.ggml.tokens` and `merges`, with the
//!   pre-tokenizer named by `tokenizer.ggml.pre` (`smollm`, `llama-bpe`, `qwen2`,
//!   `default`/`gpt2`).
//! - `llama` (SentencePiece): BPE merges derived from `tokenizer.ggml.scores`, byte fallback,
//!   spaces replaced by `▁`, an optional dummy prefix (`tokenizer.ggml.add_space_prefix`).
//!
//! Control tokens (type 3) map to single special ids; user-defined tokens (type 4) are matched
//! in the raw text before anything else, as llama.cpp does.

use super::gguf::GgufFile;
use crate::engine::constrain::TokenTable;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Sequence as NormalizerSequence};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// Llama 3's pre-tokenizer pattern (`tokenizer.ggml.pre = llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pre-tokenizer pattern (`tokenizer.ggml.pre = qwen2`): Llama 3's, with every digit
/// a piece of its own.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Markers that end an assistant turn in common chat formats.
const END_OF_TURN_MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
];

/// A tokenizer plus the special ids generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
    /// The texts of the special tokens (control tokens such as `<|im_start|>`).
    specials: Vec<String>,
    /// Whether token strings are byte-level BPE (GPT-2's byte-to-character map).
    byte_level: bool,
    /// Each token's bytes in byte order, built on first use (constrained decoding).
    table: Arc<OnceLock<Arc<TokenTable>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let kind = g.string("tokenizer.ggml.model")?;
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let types = g
            .opt_i32s("tokenizer.ggml.token_type")?
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let mut inner = match kind.as_str() {
            "gpt2" => gpt2_tokenizer(g, &tokens)?,
            "llama" => spm_tokenizer(g, &tokens)?,
            other => {
                return Err(Error::GgufMetadata {
                    path: g.path().to_path_buf(),
                    key: "tokenizer.ggml.model".into(),
                    reason: format!("tokenizer kind `{other}` is not supported (gpt2, llama)"),
                })
            }
        };
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (tok, ty) in tokens.iter().zip(types.iter()) {
            match *ty {
                TOKEN_CONTROL => special.push(AddedToken::from(tok.clone(), true)),
                TOKEN_USER_DEFINED => {
                    user.push(AddedToken::from(tok.clone(), false).normalized(false))
                }
                _ => {}
            }
        }
        inner.add_special_tokens(special).map_err(tk_err)?;
        inner.add_tokens(user).map_err(tk_err)?;
        let bos = g.opt_u32("tokenizer.ggml.bos_token_id")?;
        let eos = g.opt_u32("tokenizer.ggml.eos_token_id")?;
        let add_bos = g
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(kind == "llama");
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        if let Some(eot) = g.opt_u32("tokenizer.ggml.eot_token_id")? {
            stop_ids.push(eot);
        }
        Ok(Self::finish(
            inner,
            bos,
            eos,
            add_bos,
            stop_ids,
            kind == "gpt2",
        ))
    }

    /// Loads a Hugging Face `tokenizer.json`; special ids come from the GGUF metadata.
    pub fn from_file(path: &Path, g: &GgufFile) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let bos = g.opt_u32("tokenizer.ggml.bos_token_id")?;
        let eos = g.opt_u32("tokenizer.ggml.eos_token_id")?;
        let add_bos = g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let byte_level = decodes_bytes(&inner);
        Ok(Self::finish(
            inner,
            bos,
            eos,
            add_bos,
            eos.into_iter().collect(),
            byte_level,
        ))
    }

    /// Loads the `tokenizer.json` of a Hugging Face checkpoint. Special tokens are found by
    /// their text (`bos_token`, `eos_token` of `tokenizer_config.json`) or id (`config.json`);
    /// whether a prompt starts with BOS is `add_bos_token` when the checkpoint says, else
    /// what the tokenizer's own post-processor does. `stops` are further end ids
    /// (`eos_token_id` lists).
    pub fn from_hf(
        path: &Path,
        bos_token: Option<String>,
        eos_token: Option<String>,
        bos_id: Option<u32>,
        add_bos: Option<bool>,
        stops: Vec<u32>,
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let find = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        let bos = find(&bos_token).or(bos_id);
        let eos = find(&eos_token).or(stops.first().copied());
        let add_bos = match (add_bos, bos) {
            (Some(a), _) => a,
            (None, None) => false,
            // The post-processor (Llama 3's TemplateProcessing) puts BOS first or not.
            (None, Some(b)) => {
                inner.encode("a", true).map_err(tk_err)?.get_ids().first() == Some(&b)
            }
        };
        let mut stop_ids = stops;
        stop_ids.extend(eos);
        let byte_level = decodes_bytes(&inner);
        Ok(Self::finish(inner, bos, eos, add_bos, stop_ids, byte_level))
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        mut stop_ids: Vec<u32>,
        byte_level: bool,
    ) -> Self {
        for m in END_OF_TURN_MARKERS {
            if let Some(id) = inner.token_to_id(m) {
                stop_ids.push(id);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let mut specials: Vec<String> = inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content)
            .collect();
        specials.sort();
        Self {
            inner,
            bos,
            eos,
            add_bos,
            stop_ids,
            specials,
            byte_level,
            table: Arc::default(),
        }
    }

    /// The bytes each token writes, for constrained decoding (built once per tokenizer).
    /// Byte-level BPE strings are mapped back through GPT-2's byte-to-character table;
    /// SentencePiece pieces have `▁` for a space and `<0xNN>` for a raw byte; control tokens
    /// write nothing.
    pub fn token_table(&self) -> Arc<TokenTable> {
        self.table
            .get_or_init(|| {
                let specials: std::collections::HashSet<u32> = self
                    .inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, t)| t.special)
                    .map(|(id, _)| id)
                    .collect();
                let unbyte = byte_level_inverse();
                let bytes = (0..self.vocab_size() as u32)
                    .map(|id| {
                        if specials.contains(&id) {
                            return None;
                        }
                        let t = self.inner.id_to_token(id)?;
                        Some(if self.byte_level {
                            t.chars()
                                .map(|c| unbyte.get(&c).copied())
                                .collect::<Option<Vec<u8>>>()
                                .unwrap_or_else(|| t.clone().into_bytes())
                        } else {
                            piece_bytes(&t)
                        })
                    })
                    .collect();
                Arc::new(TokenTable::new(bytes))
            })
            .clone()
    }

    /// Encodes a prompt made of template markup and message content (`(text, is_content)`
    /// pieces, see [`super::ChatTemplate::render_parts`]): control tokens are parsed in the
    /// markup only, so text inside a message that spells a control token (`<|im_end|>`)
    /// stays text and cannot end a turn. When no message spells one, this is exactly
    /// [`Tokenizer::encode_prompt`] of the whole text.
    pub fn encode_parts(&self, parts: &[(String, bool)]) -> Result<Vec<u32>> {
        let injected = parts
            .iter()
            .any(|(t, content)| *content && self.specials.iter().any(|s| t.contains(s.as_str())));
        if !injected {
            let text: String = parts.iter().map(|(t, _)| t.as_str()).collect();
            return self.encode_prompt(&text);
        }
        let mut plain = self.inner.clone();
        plain.set_encode_special_tokens(true);
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        for (text, content) in parts {
            if text.is_empty() {
                continue;
            }
            let enc = if *content { &plain } else { &self.inner };
            ids.extend_from_slice(enc.encode(text.as_str(), false).map_err(tk_err)?.get_ids());
        }
        Ok(ids)
    }

    /// Token ids of `text`. Special-token strings such as `<|im_start|>` map to their single
    /// ids. With `add_bos`, the BOS id is put first (unless the text already starts with it).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tk_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_bos {
            if let Some(b) = self.bos {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Encodes a prompt the way the model expects: BOS first when the model asks for it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, self.add_bos)
    }

    /// Text of `ids`. With `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tk_err)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The BOS token's text, for chat templates.
    pub fn bos_token(&self) -> String {
        self.bos
            .and_then(|b| self.id_to_token(b))
            .unwrap_or_default()
    }

    /// The EOS token's text, for chat templates.
    pub fn eos_token(&self) -> String {
        self.eos
            .and_then(|b| self.id_to_token(b))
            .unwrap_or_default()
    }

    /// Whether the model expects a BOS token at the start of a prompt.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Ids that end generation: EOS, EOT and the end-of-turn markers found in the vocabulary.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Whether a Hugging Face tokenizer decodes byte-level BPE.
fn decodes_bytes(t: &tokenizers::Tokenizer) -> bool {
    matches!(t.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
}

/// GPT-2's map from the printable characters byte-level BPE writes back to bytes.
fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    let mut map = std::collections::HashMap::new();
    let mut next = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(255 + next).expect("below the surrogates")
        };
        map.insert(c, b);
    }
    map
}

/// The bytes of a SentencePiece piece: `▁` is a space, `<0xNN>` one raw byte.
fn piece_bytes(piece: &str) -> Vec<u8> {
    if let Some(hex) = piece
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .filter(|h| h.len() == 2)
    {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

fn vocab_map(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn gpt2_tokenizer(g: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    let merges: Vec<(String, String)> = g
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::GgufMetadata {
                    path: g.path().to_path_buf(),
                    key: format!("tokenizer.ggml.merges[{i}]"),
                    reason: format!("`{m}` is not `left right`"),
                })
        })
        .collect::<Result<_>>()?;
    let pre = g
        .opt_string("tokenizer.ggml.pre")?
        .unwrap_or_else(|| "default".into());
    let byte_level = ByteLevel::new(false, true, true);
    let no_regex = ByteLevel::new(false, true, false);
    let (pre_tok, ignore_merges): (PreTokenizerWrapper, bool) = match pre.as_str() {
        "smollm" => (
            PreSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            false,
        ),
        // llama.cpp ignores merges for Llama 3 (a word that is a token is that token) and
        // not for Qwen2.
        "llama-bpe" | "llama3" | "qwen2" => {
            let (pattern, ignore_merges) = match pre.as_str() {
                "qwen2" => (QWEN2_PATTERN, false),
                _ => (LLAMA3_PATTERN, true),
            };
            let split = Split::new(
                SplitPattern::Regex(pattern.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk_err)?;
            (
                PreSequence::new(vec![split.into(), no_regex.into()]).into(),
                ignore_merges,
            )
        }
        "default" | "gpt2" | "gpt-2" => (byte_level.into(), false),
        other => {
            return Err(Error::GgufMetadata {
                path: g.path().to_path_buf(),
                key: "tokenizer.ggml.pre".into(),
                reason: format!(
                    "pre-tokenizer `{other}` is not supported (smollm, llama-bpe, qwen2, default); \
                     pass a tokenizer.json instead"
                ),
            })
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(tk_err)?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre_tok));
    tk.with_decoder(Some(ByteLevel::default()));
    Ok(tk)
}

/// SentencePiece vocabulary as BPE: merges derived from the scores of the merged pieces.
fn spm_tokenizer(g: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    let scores = g
        .opt_f32s("tokenizer.ggml.scores")?
        .ok_or_else(|| Error::GgufMetadata {
            path: g.path().to_path_buf(),
            key: "tokenizer.ggml.scores".into(),
            reason: "missing (needed for a SentencePiece vocabulary)".into(),
        })?;
    if scores.len() != tokens.len() {
        return Err(Error::GgufMetadata {
            path: g.path().to_path_buf(),
            key: "tokenizer.ggml.scores".into(),
            reason: format!(
                "{} scores for {} tokens (one score per token is needed)",
                scores.len(),
                tokens.len()
            ),
        });
    }
    let vocab = vocab_map(tokens);
    let mut merges: Vec<(u32, u32, f32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        if chars.len() < 2 {
            continue;
        }
        let mut local = Vec::new();
        for &(split, _) in &chars[1..] {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, scores[id]));
            }
        }
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|(l, r, _)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect();
    let unk = g
        .opt_u32("tokenizer.ggml.unknown_token_id")?
        .and_then(|u| tokens.get(u as usize).cloned());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(tk_err)?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let add_prefix = g
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(tk_err)?.into());
    tk.with_normalizer(Some(NormalizerSequence::new(norms)))
        .map_err(tk_err)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(tk_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tk)
}
