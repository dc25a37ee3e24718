//! Opening GGUF files with errors that name the file, and reading typed metadata.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// An open GGUF file: its parsed header and a reader for its tensors.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<File>,
    file_size: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and checks a GGUF file: the magic, the header, and that every tensor lies
    /// inside the file (a truncated download is caught here, not mid-load).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(Error::ModelNotFound(path));
        }
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        use std::io::{Read, Seek};
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(Error::InvalidGguf {
                path,
                reason: "the file does not start with the GGUF magic bytes".into(),
            });
        }
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::InvalidGguf {
            path: path.clone(),
            reason: format!("cannot read the header (truncated or damaged?): {e}"),
        })?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > file_size {
                return Err(Error::InvalidGguf {
                    path,
                    reason: format!(
                        "truncated: tensor `{name}` ends at byte {end} but the file has {file_size} bytes"
                    ),
                });
            }
        }
        Ok(Self {
            path,
            content,
            reader,
            file_size,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The raw parsed header.
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<String> {
        self.string("general.architecture")
    }

    fn missing(&self, key: &str, reason: &str) -> Error {
        Error::GgufMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A metadata value, if present.
    pub fn value(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    /// A required unsigned integer.
    pub fn u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?
            .ok_or_else(|| self.missing(key, "missing"))
    }

    /// An optional unsigned integer (any integer width is accepted).
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        use gguf_file::Value::*;
        Ok(match self.value(key) {
            None => None,
            Some(U8(v)) => Some(*v as u32),
            Some(U16(v)) => Some(*v as u32),
            Some(U32(v)) => Some(*v),
            Some(U64(v)) => Some(*v as u32),
            Some(I8(v)) if *v >= 0 => Some(*v as u32),
            Some(I16(v)) if *v >= 0 => Some(*v as u32),
            Some(I32(v)) if *v >= 0 => Some(*v as u32),
            Some(I64(v)) if *v >= 0 => Some(*v as u32),
            Some(other) => {
                return Err(self.missing(key, &format!("expected an integer, found {other:?}")))
            }
        })
    }

    /// An optional float.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        use gguf_file::Value::*;
        Ok(match self.value(key) {
            None => None,
            Some(F32(v)) => Some(*v),
            Some(F64(v)) => Some(*v as f32),
            Some(other) => {
                return Err(self.missing(key, &format!("expected a float, found {other:?}")))
            }
        })
    }

    /// An optional bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.missing(key, &format!("expected a bool, found {other:?}"))),
        }
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?
            .ok_or_else(|| self.missing(key, "missing"))
    }

    /// An optional string.
    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.missing(key, &format!("expected a string, found {other:?}"))),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let v = self
            .value(key)
            .ok_or_else(|| self.missing(key, "missing"))?;
        let arr = v
            .to_vec()
            .map_err(|_| self.missing(key, "expected an array"))?;
        arr.iter()
            .map(|x| {
                x.to_string()
                    .cloned()
                    .map_err(|_| self.missing(key, "expected an array of strings"))
            })
            .collect()
    }

    /// An optional array of numbers, as f32.
    pub fn opt_f32s(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let arr = v
            .to_vec()
            .map_err(|_| self.missing(key, "expected an array"))?;
        arr.iter()
            .map(|x| match x {
                gguf_file::Value::F32(f) => Ok(*f),
                gguf_file::Value::F64(f) => Ok(*f as f32),
                _ => Err(self.missing(key, "expected an array of floats")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An optional array of integers.
    pub fn opt_i32s(&self, key: &str) -> Result<Option<Vec<i32>>> {
        use gguf_file::Value::*;
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let arr = v
            .to_vec()
            .map_err(|_| self.missing(key, "expected an array"))?;
        arr.iter()
            .map(|x| match x {
                I32(i) => Ok(*i),
                U32(i) => Ok(*i as i32),
                I8(i) => Ok(*i as i32),
                U8(i) => Ok(*i as i32),
                I16(i) => Ok(*i as i32),
                U16(i) => Ok(*i as i32),
                _ => Err(self.missing(key, "expected an array of integers")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// True when the file has a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor onto `device`.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::InvalidGguf {
                path: self.path.clone(),
                reason: format!("missing tensor `{name}`"),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::InvalidGguf {
                path: self.path.clone(),
                reason: format!("tensor `{name}`: {e}"),
            })
    }

    /// Summary facts about the model in this file.
    pub fn info(&self) -> Result<ModelInfo> {
        let arch = self.architecture()?;
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut params = 0u64;
        for info in self.content.tensor_infos.values() {
            let n = info.shape.elem_count() as u64;
            params += n;
            if info.shape.rank() >= 2 {
                *by_type.entry(dtype_name(info.ggml_dtype)).or_default() += n;
            }
        }
        let quantization = by_type
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| "unknown".into());
        let vocab = self
            .value("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .unwrap_or(0);
        Ok(ModelInfo {
            path: self.path.clone(),
            name: self.opt_string("general.name")?,
            context_length: self.opt_u32(&format!("{arch}.context_length"))?,
            architecture: arch,
            quantization,
            tensor_types: by_type,
            parameters: params,
            vocab_size: vocab,
            has_chat_template: self.value("tokenizer.chat_template").is_some(),
            file_size: self.file_size,
        })
    }
}

/// Lower-case name of a GGML tensor type, as llama.cpp prints it (`q4_1`, `f16`, ...).
pub fn dtype_name(t: GgmlDType) -> String {
    format!("{t:?}").to_lowercase()
}

/// What `llm-judge info` prints about a model file.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// The GGUF file.
    pub path: PathBuf,
    /// `general.name`, if set.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: String,
    /// The tensor type holding most weights (e.g. `q4_1`).
    pub quantization: String,
    /// Weight counts per tensor type, for matrices.
    pub tensor_types: BTreeMap<String, u64>,
    /// Total number of parameters.
    pub parameters: u64,
    /// Training context length.
    pub context_length: Option<u32>,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// Whether the file carries `tokenizer.chat_template`.
    pub has_chat_template: bool,
    /// File size in bytes.
    pub file_size: u64,
}
