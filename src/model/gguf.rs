//! Opening GGUF files with errors that name the file, and reading typed metadata.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

mod header {
    //! A bounded walk over a GGUF header: every count and length is checked against the
    //! bytes left in the file before anything is read or allocated.

    use std::io::Read;

    /// The value types of GGUF metadata.
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;

    struct Walk<'a, R> {
        r: &'a mut R,
        pos: u64,
        size: u64,
    }

    impl<R: Read> Walk<'_, R> {
        fn left(&self) -> u64 {
            self.size.saturating_sub(self.pos)
        }

        fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
            if n > self.left() {
                return Err(format!(
                    "{what} needs {n} bytes at offset {} but the file has {} left (truncated?)",
                    self.pos,
                    self.left()
                ));
            }
            let mut b = vec![0u8; n as usize];
            self.r
                .read_exact(&mut b)
                .map_err(|e| format!("{what}: {e}"))?;
            self.pos += n;
            Ok(b)
        }

        fn u32(&mut self, what: &str) -> Result<u32, String> {
            let b = self.bytes(4, what)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }

        fn u64(&mut self, what: &str) -> Result<u64, String> {
            let b = self.bytes(8, what)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            Ok(u64::from_le_bytes(a))
        }

        fn string(&mut self, what: &str) -> Result<String, String> {
            let n = self.u64(what)?;
            let b = self.bytes(n, what)?;
            String::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
        }

        fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<(), String> {
            let fixed = |ty: u32| -> Option<u64> {
                match ty {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                }
            };
            if let Some(n) = fixed(ty) {
                self.bytes(n, what)?;
                return Ok(());
            }
            match ty {
                STRING => self.string(what).map(|_| ()),
                ARRAY if depth < 2 => {
                    let item = self.u32(what)?;
                    let len = self.u64(what)?;
                    // Even the smallest item takes a byte: more items than bytes left is a lie.
                    let least = fixed(item).unwrap_or(if item == STRING { 8 } else { 12 });
                    if len.saturating_mul(least) > self.left() {
                        return Err(format!(
                            "{what}: an array of {len} items does not fit in the {} bytes left",
                            self.left()
                        ));
                    }
                    match fixed(item) {
                        Some(n) => self.bytes(n * len, what).map(|_| ()),
                        None => (0..len).try_for_each(|_| self.value(item, what, depth + 1)),
                    }
                }
                other => Err(format!("{what}: unknown value type {other}")),
            }
        }
    }

    /// Checks the header of a GGUF file of `size` bytes read from the start of `r`.
    pub(super) fn scan<R: Read>(r: &mut R, size: u64) -> Result<(), String> {
        let mut w = Walk { r, pos: 0, size };
        let magic = w.bytes(4, "the magic bytes")?;
        if magic != b"GGUF" {
            return Err("the file does not start with the GGUF magic bytes".into());
        }
        let version = w.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let tensors = w.u64("the tensor count")?;
        let kvs = w.u64("the metadata count")?;
        // Each metadata entry takes at least 12 bytes, each tensor entry at least 24.
        if kvs.saturating_mul(12) > w.left() || tensors.saturating_mul(24) > w.left() {
            return Err(format!(
                "the header claims {kvs} metadata entries and {tensors} tensors, more than the \
                 file can hold"
            ));
        }
        for i in 0..kvs {
            let key = w.string(&format!("metadata key {i}"))?;
            let ty = w.u32(&format!("the type of `{key}`"))?;
            w.value(ty, &format!("metadata `{key}`"), 0)?;
        }
        for i in 0..tensors {
            let name = w.string(&format!("the name of tensor {i}"))?;
            let dims = w.u32(&format!("the rank of tensor `{name}`"))?;
            if !(1..=4).contains(&dims) {
                return Err(format!("tensor `{name}` has {dims} dimensions (1 to 4)"));
            }
            let mut elems: u64 = 1;
            for _ in 0..dims {
                let d = w.u64(&format!("a dimension of tensor `{name}`"))?;
                elems = elems
                    .checked_mul(d)
                    .filter(|e| *e <= u64::from(u32::MAX) * 64)
                    .ok_or_else(|| format!("tensor `{name}` has an impossible size"))?;
            }
            let ty = w.u32(&format!("the type of tensor `{name}`"))?;
            // The ggml types candle reads (F32, F16, Q4_0 .. Q8_K, BF16).
            if !matches!(ty, 0..=3 | 6..=15 | 30) {
                return Err(format!("tensor `{name}` has unknown type {ty}"));
            }
            w.u64(&format!("the offset of tensor `{name}`"))?;
        }
        Ok(())
    }
}

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
        let invalid = |reason: String| Error::InvalidGguf {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&path).map_err(|_| Error::ModelNotFound(path.clone()))?;
        if meta.is_dir() {
            return Err(invalid("is a directory, not a model file".into()));
        }
        if meta.len() == 0 {
            return Err(invalid("the file is empty".into()));
        }
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut reader = BufReader::new(file);
        use std::io::Seek;
        // Walk the header with every length checked against the file, so that the parser
        // behind it never sees a count or length that could make it allocate or index
        // beyond the file (a damaged or hostile header is an error, not a crash).
        header::scan(&mut reader, file_size).map_err(invalid)?;
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        let content = gguf_file::Content::read(&mut reader).map_err(|e| {
            invalid(format!(
                "cannot read the header (truncated or damaged?): {e}"
            ))
        })?;
        for (name, info) in &content.tensor_infos {
            let (block, size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
            let elems = info.shape.elem_count();
            if block == 0 || elems % block != 0 {
                return Err(invalid(format!(
                    "tensor `{name}` has {elems} values, not whole blocks of {block}"
                )));
            }
            let end = (elems / block)
                .checked_mul(size)
                .and_then(|b| u64::try_from(b).ok())
                .and_then(|b| b.checked_add(info.offset))
                .and_then(|b| b.checked_add(content.tensor_data_offset));
            match end {
                Some(end) if end <= file_size => {}
                Some(end) => {
                    return Err(invalid(format!(
                        "truncated: tensor `{name}` ends at byte {end} but the file has {file_size} bytes"
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "tensor `{name}`: its offset and size overflow"
                    )))
                }
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
            Some(U64(v)) => Some(u32::try_from(*v).map_err(|_| self.missing(key, "too large"))?),
            Some(I8(v)) if *v >= 0 => Some(*v as u32),
            Some(I16(v)) if *v >= 0 => Some(*v as u32),
            Some(I32(v)) if *v >= 0 => Some(*v as u32),
            Some(I64(v)) if *v >= 0 => {
                Some(u32::try_from(*v).map_err(|_| self.missing(key, "too large"))?)
            }
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
        let quantization = dominant_type(&by_type);
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

/// The tensor type holding the most weights, from weight counts per type.
pub(crate) fn dominant_type(by_type: &BTreeMap<String, u64>) -> String {
    by_type
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| "unknown".into())
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
