//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into
//! their base checkpoint at load: `W' = W + s·B·A` for every adapted projection, with
//! `s = lora_alpha / r` (rsLoRA: `lora_alpha / √r`).
//!
//! Everything that can be wrong with an adapter is found before any weight is merged: an
//! unknown or missing target module, an `A` without its `B`, a rank that is not the
//! configured one, shapes that do not fit the base model, a base model of another name, and
//! PEFT features this merge does not implement (DoRA, per-module ranks, saved full modules).

use super::fingerprint;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The projections of a llama block that an adapter may target, by their PEFT names.
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The adapter's configuration file, as PEFT writes it (the fields the merge reads).
#[derive(Clone, Debug, Deserialize)]
pub struct AdapterConfig {
    /// `LORA` (other PEFT methods are refused).
    #[serde(default)]
    pub peft_type: Option<String>,
    /// The rank.
    pub r: usize,
    /// The scaling numerator.
    pub lora_alpha: f64,
    /// Adapted modules: a list of names, or `"all-linear"`.
    pub target_modules: serde_json::Value,
    /// rsLoRA scaling (`alpha/√r`).
    #[serde(default)]
    pub use_rslora: bool,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Only GPT-2 style `Conv1D` layers set it; refused.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// DoRA; refused.
    #[serde(default)]
    pub use_dora: bool,
    /// Layers the adapter covers (all when absent).
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Per-module ranks; refused when not empty.
    #[serde(default)]
    pub rank_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    /// Per-module alphas; refused when not empty.
    #[serde(default)]
    pub alpha_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    /// Modules saved whole next to the adapter; refused when not empty.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
}

/// The `(out, in)` shape of a base projection, by layer and module name.
pub type ShapeOf<'a> = &'a dyn Fn(usize, &str) -> Option<(usize, usize)>;

/// `(A: (r, in), B: (out, r))` per layer and module.
type Pairs = BTreeMap<(usize, String), (Tensor, Tensor)>;

/// A loaded adapter: its low-rank pairs per `(layer, module)`, in f32 on the CPU.
#[derive(Clone, Debug)]
pub struct Adapter {
    dir: PathBuf,
    config: AdapterConfig,
    targets: Vec<String>,
    scale: f64,
    pairs: Pairs,
}

/// The two files of an adapter folder.
pub const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

impl Adapter {
    /// Reads and checks an adapter folder (or the folder of an `adapter_config.json`).
    pub fn open(path: &Path) -> Result<Self> {
        let dir = if path.is_file() {
            path.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            path.to_path_buf()
        };
        let bad = |p: &Path, reason: String| Error::InvalidAdapter {
            path: p.to_path_buf(),
            reason,
        };
        let cfg_path = dir.join(ADAPTER_FILES[0]);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            bad(
                &cfg_path,
                format!("cannot read the adapter configuration: {e}"),
            )
        })?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| bad(&cfg_path, e.to_string()))?;
        let targets = check_config(&config).map_err(|r| bad(&cfg_path, r))?;
        let weights = dir.join(ADAPTER_FILES[1]);
        if !weights.is_file() {
            let reason = if dir.join("adapter_model.bin").is_file() {
                "has adapter_model.bin (a pickle) but no adapter_model.safetensors; only \
                 safetensors adapters are read"
            } else {
                "missing adapter_model.safetensors"
            };
            return Err(bad(&dir, reason.into()));
        }
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
            .map_err(|e| bad(&weights, e.to_string()))?;
        let pairs = pair_up(tensors, &config, &targets).map_err(|r| bad(&weights, r))?;
        let r = config.r as f64;
        let scale = if config.use_rslora {
            config.lora_alpha / r.sqrt()
        } else {
            config.lora_alpha / r
        };
        Ok(Self {
            dir,
            config,
            targets,
            scale,
            pairs,
        })
    }

    /// The adapter folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// The factor `s` of `W + s·B·A`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The adapted modules.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// sha256 over both files: the adapter's identity in record keys.
    pub fn sha256(&self) -> Result<String> {
        adapter_sha256(&self.dir)
    }

    /// Checks the adapter against its base: every pair's layer exists and its shapes fit the
    /// base projection (`shape(layer, module)` gives `(out, in)`), every layer is covered
    /// when the adapter does not restrict its layers, and the base model's name (when both
    /// sides name one) is the one the adapter was trained on.
    pub fn check_base(
        &self,
        n_layer: usize,
        shape: ShapeOf<'_>,
        base_names: &[String],
    ) -> Result<()> {
        let bad = |reason: String| Error::InvalidAdapter {
            path: self.dir.clone(),
            reason,
        };
        // Names are compared only when both sides are hub ids: a local training folder
        // (`/content/outputs`) says nothing about which base it was.
        if let Some(trained) = self.config.base_model_name_or_path.as_deref() {
            let hub: Vec<&String> = base_names.iter().filter(|n| is_hub_id(n)).collect();
            if is_hub_id(trained) && !hub.is_empty() {
                let want = normalize_name(trained);
                if !hub.iter().any(|n| normalize_name(n) == want) {
                    return Err(bad(format!(
                        "trained on `{trained}` (base_model_name_or_path), but the base model \
                         is `{}`",
                        base_names.join("` / `")
                    )));
                }
            }
        }
        let layers = self.layers(n_layer).map_err(&bad)?;
        for ((layer, module), (a, b)) in &self.pairs {
            if *layer >= n_layer {
                return Err(bad(format!(
                    "layer {layer} of `{module}`, but the base model has {n_layer} layers"
                )));
            }
            let Some((out, inp)) = shape(*layer, module) else {
                return Err(bad(format!(
                    "the base model has no `{module}` in layer {layer}"
                )));
            };
            let (a_in, b_out) = (a.dim(1)?, b.dim(0)?);
            if a_in != inp || b_out != out {
                return Err(bad(format!(
                    "layer {layer} `{module}`: lora_A is {:?} and lora_B is {:?}, so the update \
                     is ({b_out}, {a_in}), but the base weight is ({out}, {inp})",
                    a.dims(),
                    b.dims()
                )));
            }
        }
        for (layer, module) in self.pairs.keys() {
            if !layers.contains(layer) {
                return Err(bad(format!(
                    "has `{module}` weights for layer {layer}, which layers_to_transform leaves out"
                )));
            }
        }
        for &layer in &layers {
            for m in &self.targets {
                if !self.pairs.contains_key(&(layer, m.clone())) {
                    return Err(bad(format!(
                        "missing lora_A/lora_B for `{m}` in layer {layer} (the adapter targets \
                         `{m}` in that layer)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The layers the adapter covers: `layers_to_transform` (a number or a list), else all.
    fn layers(&self, n_layer: usize) -> std::result::Result<Vec<usize>, String> {
        let list = match &self.config.layers_to_transform {
            None | Some(serde_json::Value::Null) => return Ok((0..n_layer).collect()),
            Some(n @ serde_json::Value::Number(_)) => vec![n.clone()],
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(format!(
                    "layers_to_transform is {other}; expected a layer number or a list of them"
                ))
            }
        };
        list.iter()
            .map(|v| match v.as_u64() {
                Some(l) if (l as usize) < n_layer => Ok(l as usize),
                _ => Err(format!(
                    "layers_to_transform holds {v}, not a layer of the base model (0..{n_layer})"
                )),
            })
            .collect()
    }

    /// `s·B·A` for one projection, `(out, in)` in f32, or `None` when the adapter leaves it.
    pub fn delta(&self, layer: usize, module: &str) -> Result<Option<Tensor>> {
        match self.pairs.get(&(layer, module.to_string())) {
            None => Ok(None),
            Some((a, b)) => Ok(Some((b.matmul(a)? * self.scale)?)),
        }
    }
}

/// True for `owner/name`, the form of a hub model id (not a local path).
fn is_hub_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..")
        && !name.starts_with(['.', '~'])
}

/// The model name without owner, case or quantization suffix (`unsloth/llama-3.2-3b-
/// instruct-bnb-4bit` and `meta-llama/Llama-3.2-3B-Instruct` are the same base).
fn normalize_name(name: &str) -> String {
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(name)
        .to_lowercase();
    let mut s = last.as_str();
    for suffix in ["-bnb-4bit", "-unsloth", "-4bit", "-8bit"] {
        s = s.strip_suffix(suffix).unwrap_or(s);
    }
    s.to_string()
}

/// Refuses what the merge does not implement; returns the target modules.
fn check_config(c: &AdapterConfig) -> std::result::Result<Vec<String>, String> {
    if let Some(t) = &c.peft_type {
        if !t.eq_ignore_ascii_case("lora") {
            return Err(format!("peft_type `{t}` is not LORA"));
        }
    }
    if c.r == 0 {
        return Err("r is 0".into());
    }
    if !c.lora_alpha.is_finite() {
        return Err(format!("lora_alpha is {}", c.lora_alpha));
    }
    if c.use_dora {
        return Err("DoRA adapters (use_dora) are not supported".into());
    }
    if c.fan_in_fan_out {
        return Err("fan_in_fan_out (GPT-2 Conv1D layers) is not supported".into());
    }
    let nonempty = |m: &Option<serde_json::Map<String, serde_json::Value>>| {
        m.as_ref().is_some_and(|m| !m.is_empty())
    };
    if nonempty(&c.rank_pattern) || nonempty(&c.alpha_pattern) {
        return Err(
            "per-module ranks or alphas (rank_pattern, alpha_pattern) are not \
                    supported"
                .into(),
        );
    }
    if c.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(format!(
            "modules_to_save {:?}: full modules saved with the adapter are not supported",
            c.modules_to_save.as_deref().unwrap_or_default()
        ));
    }
    let targets: Vec<String> = match &c.target_modules {
        serde_json::Value::String(s) if s == "all-linear" => {
            TARGET_MODULES.iter().map(|s| s.to_string()).collect()
        }
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("target_modules holds {v}, not a name"))
            })
            .collect::<std::result::Result<_, _>>()?,
        other => {
            return Err(format!(
                "target_modules {other}: expected a list of module names or \"all-linear\""
            ))
        }
    };
    if targets.is_empty() {
        return Err("target_modules is empty".into());
    }
    for t in &targets {
        if !TARGET_MODULES.contains(&t.as_str()) {
            return Err(format!(
                "unknown target module `{t}` (a llama block has {})",
                TARGET_MODULES.join(", ")
            ));
        }
    }
    Ok(targets)
}

/// Splits PEFT tensor names (`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`)
/// into `(layer, module, A|B)` and pairs them, checking ranks.
fn pair_up(
    tensors: std::collections::HashMap<String, Tensor>,
    c: &AdapterConfig,
    targets: &[String],
) -> std::result::Result<Pairs, String> {
    let mut a_of = BTreeMap::new();
    let mut b_of = BTreeMap::new();
    let mut names: Vec<_> = tensors.into_iter().collect();
    names.sort_by(|x, y| x.0.cmp(&y.0));
    for (name, t) in names {
        let (layer, module, which) = parse_key(&name).ok_or_else(|| {
            format!(
                "tensor `{name}` is not a LoRA weight of a llama projection \
                 (model.layers.N.self_attn|mlp.<module>.lora_A|lora_B.weight)"
            )
        })?;
        if !targets.iter().any(|m| m == module) {
            return Err(format!(
                "tensor `{name}` adapts `{module}`, which is not in target_modules ({})",
                targets.join(", ")
            ));
        }
        if t.rank() != 2 {
            return Err(format!(
                "tensor `{name}` has shape {:?}; expected a matrix",
                t.dims()
            ));
        }
        let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
        let key = (layer, module.to_string());
        let slot = if which == 'A' { &mut a_of } else { &mut b_of };
        if let Some((first, _)) = slot.insert(key, (name.clone(), t)) {
            return Err(format!("`{first}` and `{name}` are the same weight"));
        }
    }
    let mut pairs = BTreeMap::new();
    for (key, (a_name, a)) in a_of {
        let Some((b_name, b)) = b_of.remove(&key) else {
            return Err(format!("`{a_name}` has no lora_B beside it"));
        };
        if a.dims()[0] != c.r || b.dims()[1] != c.r {
            return Err(format!(
                "`{a_name}` is {:?} and `{b_name}` is {:?}, but r = {}",
                a.dims(),
                b.dims(),
                c.r
            ));
        }
        pairs.insert(key, (a, b));
    }
    if let Some((_, (b_name, _))) = b_of.into_iter().next() {
        return Err(format!("`{b_name}` has no lora_A beside it"));
    }
    for m in targets {
        if !pairs.keys().any(|(_, module)| module == m) {
            return Err(format!(
                "missing keys: target module `{m}` has no lora_A/lora_B tensors"
            ));
        }
    }
    Ok(pairs)
}

/// `(layer, module, 'A'|'B')` of a PEFT tensor name.
fn parse_key(name: &str) -> Option<(usize, &str, char)> {
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    let rest = rest.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (group, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let expected = match module {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => return None,
    };
    if group != expected {
        return None;
    }
    let which = match rest {
        "lora_A.weight" | "lora_A.default.weight" => 'A',
        "lora_B.weight" | "lora_B.default.weight" => 'B',
        _ => return None,
    };
    Some((layer, module, which))
}

/// The identity of a LoRA adapter folder: sha256 over its configuration and weights.
pub fn adapter_sha256(dir: &Path) -> Result<String> {
    let files: Vec<PathBuf> = ADAPTER_FILES.iter().map(|f| dir.join(f)).collect();
    fingerprint::files_sha256(&files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert_eq!(
            parse_key("base_model.model.model.layers.12.self_attn.q_proj.lora_A.weight"),
            Some((12, "q_proj", 'A'))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"),
            Some((0, "down_proj", 'B'))
        );
        assert_eq!(
            parse_key("base_model.model.lm_head.lora_A.weight"),
            None,
            "not a block projection"
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.0.self_attn.gate_proj.lora_A.weight"),
            None,
            "gate_proj is in the MLP"
        );
        assert!(is_hub_id("unsloth/Llama-3.2-3B-Instruct"));
        assert!(!is_hub_id("/content/outputs"));
        assert!(!is_hub_id("outputs"));
        assert!(!is_hub_id("./a/b"));
        assert_eq!(
            normalize_name("unsloth/llama-3.2-3b-instruct-bnb-4bit"),
            normalize_name("meta-llama/Llama-3.2-3B-Instruct")
        );
        assert_ne!(
            normalize_name("unsloth/Llama-3.2-1B-Instruct"),
            normalize_name("unsloth/Llama-3.2-3B-Instruct")
        );
    }
}
