//! The decoder-only transformer for the llama and gemma3 families, on quantized GGUF weights.
//!
//! Weights are shared and immutable; each sequence owns a [`KvCache`], so a model can serve
//! several sequences, and a cache can be forked to reuse a shared prompt prefix.
//!
//! Differences between the families are data, read once from [`Config`]:
//! - llama: interleaved RoPE (llama.cpp permutes Q/K at conversion), SiLU MLP, optional
//!   `rope_freqs.weight` (Llama 3.1+ frequency scaling).
//! - gemma3: NeoX RoPE with a local base for sliding layers, GELU (tanh) MLP, Q/K RMS norms,
//!   post-attention and post-MLP norms, embeddings scaled by `sqrt(hidden)`, a sliding window
//!   on five of every six layers.

use super::config::{Arch, Config};
use super::gguf::GgufFile;
use super::q4_1::Q41Matrix;
use crate::error::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::sync::Arc;

/// Token capacity the KV cache grows by.
const CACHE_CHUNK: usize = 256;
/// Longest prompt chunk fed in one forward pass, bounding attention memory.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(g: &mut GgufFile, name: &str, eps: f64, dev: &Device) -> Result<Self> {
        let weight = g.tensor(name, dev)?.dequantize(dev)?;
        Ok(Self {
            weight,
            eps: eps as f32,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

fn qmatmul(g: &mut GgufFile, name: &str, dev: &Device) -> Result<QMatMul> {
    let qt = g.tensor(name, dev)?;
    Ok(match qt.dtype() {
        // Keep half-precision weights at half size; candle would widen them to f32.
        GgmlDType::F16 | GgmlDType::BF16 => QMatMul::TensorF16(qt.dequantize_f16(dev)?),
        _ => QMatMul::from_qtensor(qt)?,
    })
}

/// A projection: candle's quantized matmul, or our own kernel for Q4_1 weights on the CPU
/// (see [`super::q4_1`]).
#[derive(Debug, Clone)]
enum Linear {
    Candle(QMatMul),
    Q41(Arc<Q41Matrix>),
}

impl Linear {
    fn load(g: &mut GgufFile, name: &str, dev: &Device) -> Result<Self> {
        if dev.is_cpu() {
            let qt = g.tensor(name, dev)?;
            if let Some(m) = Q41Matrix::from_qtensor(&qt)? {
                return Ok(Linear::Q41(Arc::new(m)));
            }
        }
        Ok(Linear::Candle(qmatmul(g, name, dev)?))
    }

    /// `x · Wᵀ` over the last dimension of `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(q) => Ok(q.forward(x)?),
            Linear::Q41(m) => {
                let mut dims = x.dims().to_vec();
                let k = dims.pop().unwrap_or(0);
                if k != m.k() {
                    return Err(candle_core::Error::Msg(format!(
                        "Q4_1 projection expects {} inputs, got shape {:?}",
                        m.k(),
                        x.dims()
                    ))
                    .into());
                }
                let rows = x.elem_count() / k.max(1);
                let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                dims.push(m.n());
                let y = m.matmul(&data, rows);
                Ok(Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())?)
            }
        }
    }
}

/// Cos/sin tables for rotary embeddings, grown on demand.
#[derive(Debug, Clone)]
struct Rope {
    inv_freq: Vec<f32>,
    cos: Tensor,
    sin: Tensor,
    len: usize,
}

impl Rope {
    fn new(inv_freq: Vec<f32>, len: usize, dev: &Device) -> Result<Self> {
        let (cos, sin) = Self::tables(&inv_freq, len, dev)?;
        Ok(Self {
            inv_freq,
            cos,
            sin,
            len,
        })
    }

    fn tables(inv_freq: &[f32], len: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let half = inv_freq.len();
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            for &f in inv_freq {
                angles.push(p as f32 * f);
            }
        }
        let a = Tensor::from_vec(angles, (len, half), dev)?;
        Ok((a.cos()?, a.sin()?))
    }

    fn ensure(&mut self, len: usize, dev: &Device) -> Result<()> {
        if len > self.len {
            let new_len = len.next_power_of_two().max(CACHE_CHUNK);
            let (c, s) = Self::tables(&self.inv_freq, new_len, dev)?;
            self.cos = c;
            self.sin = s;
            self.len = new_len;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    attn_norm: RmsNorm,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    post_ffn_norm: Option<RmsNorm>,
    gate: Linear,
    up: Linear,
    down: Linear,
    window: Option<usize>,
    rope: usize,
}

/// Per-sequence attention cache: keys and values of every layer so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// An independent copy: appending to one never changes the other. Used to reuse the
    /// cache of a shared prompt prefix across several continuations.
    pub fn fork(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                None => Ok(None),
                Some((k, v)) => Ok(Some((k.copy()?, v.copy()?))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: self.len,
        })
    }

    /// Forgets every position from `len` on (keeps the first `len`); later tokens are
    /// written over them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        let need = self.len + new;
        let slot = &mut self.layers[i];
        let grow = match slot {
            None => true,
            Some((kc, _)) => kc.dim(2)? < need,
        };
        if grow {
            let cap = need.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            let (b, h, _, d) = k.dims4()?;
            let kc = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
            let vc = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
            if let Some((ok, ov)) = slot.as_ref() {
                if self.len > 0 {
                    kc.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    vc.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            *slot = Some((kc, vc));
        }
        let (kc, vc) = slot.as_ref().expect("cache slot was just filled");
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((kc.narrow(2, 0, need)?, vc.narrow(2, 0, need)?))
    }
}

/// A loaded model: weights and the forward pass.
#[derive(Debug, Clone)]
pub struct Transformer {
    cfg: Config,
    embed: Arc<QTensor>,
    embed_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    ropes: Vec<Rope>,
    device: Device,
}

impl Transformer {
    /// Loads the weights of a llama or gemma3 GGUF file onto `device`.
    pub fn load(g: &mut GgufFile, device: &Device) -> Result<Self> {
        let cfg = Config::from_gguf(g)?;
        let dev = device;
        let embed = Arc::new(g.tensor("token_embd.weight", dev)?);
        let output = if g.has_tensor("output.weight") {
            Linear::load(g, "output.weight", dev)?
        } else {
            Linear::Candle(QMatMul::from_arc(embed.clone())?)
        };
        let norm = RmsNorm::load(g, "output_norm.weight", cfg.eps, dev)?;
        let half = cfg.head_dim / 2;
        let base_freqs = |base: f32| -> Vec<f32> {
            (0..half)
                .map(|i| 1.0 / base.powf(2.0 * i as f32 / cfg.head_dim as f32))
                .collect()
        };
        let mut global = base_freqs(cfg.rope_base);
        if g.has_tensor("rope_freqs.weight") {
            let factors = g
                .tensor("rope_freqs.weight", dev)?
                .dequantize(&Device::Cpu)?
                .to_vec1::<f32>()?;
            for (f, s) in global.iter_mut().zip(factors) {
                *f /= s;
            }
        }
        for f in global.iter_mut() {
            *f /= cfg.rope_linear_scale;
        }
        let initial = cfg.context_length.min(1024);
        let mut ropes = vec![Rope::new(global, initial, dev)?];
        if cfg.sliding_window.is_some() {
            ropes.push(Rope::new(base_freqs(cfg.rope_base_local), initial, dev)?);
        }
        let gemma = cfg.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let opt_norm = |g: &mut GgufFile, s: &str| -> Result<Option<RmsNorm>> {
                if gemma {
                    Ok(Some(RmsNorm::load(g, &p(s), cfg.eps, dev)?))
                } else {
                    Ok(None)
                }
            };
            let window = cfg.layer_window(i);
            layers.push(Layer {
                wq: Linear::load(g, &p("attn_q"), dev)?,
                wk: Linear::load(g, &p("attn_k"), dev)?,
                wv: Linear::load(g, &p("attn_v"), dev)?,
                wo: Linear::load(g, &p("attn_output"), dev)?,
                q_norm: opt_norm(g, "attn_q_norm")?,
                k_norm: opt_norm(g, "attn_k_norm")?,
                attn_norm: RmsNorm::load(g, &p("attn_norm"), cfg.eps, dev)?,
                post_attn_norm: opt_norm(g, "post_attention_norm")?,
                ffn_norm: RmsNorm::load(g, &p("ffn_norm"), cfg.eps, dev)?,
                post_ffn_norm: opt_norm(g, "post_ffw_norm")?,
                gate: Linear::load(g, &p("ffn_gate"), dev)?,
                up: Linear::load(g, &p("ffn_up"), dev)?,
                down: Linear::load(g, &p("ffn_down"), dev)?,
                window,
                rope: usize::from(window.is_some()),
            });
        }
        Ok(Self {
            embed_scale: gemma.then(|| (cfg.hidden as f64).sqrt()),
            cfg,
            embed,
            layers,
            norm,
            output,
            ropes,
            device: device.clone(),
        })
    }

    /// The architecture configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.cfg.n_layer],
            len: 0,
        }
    }

    /// Runs `tokens` (the next positions of the sequence in `cache`) through the model and
    /// returns logits of shape `(n, vocab)`: the last position only unless `all_logits`.
    /// Long inputs are fed in chunks of [`PREFILL_CHUNK`].
    pub fn forward(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor> {
        let mut outs = Vec::new();
        let mut last = None;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let l = self.forward_chunk(chunk, cache, all_logits)?;
            if all_logits {
                outs.push(l);
            } else {
                last = Some(l);
            }
        }
        if all_logits {
            Ok(Tensor::cat(&outs, 0)?)
        } else {
            Ok(last.ok_or_else(|| candle_core::Error::Msg("forward on no tokens".into()))?)
        }
    }

    fn forward_chunk(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor> {
        let seq = tokens.len();
        let pos = cache.len;
        let total = pos + seq;
        for r in self.ropes.iter_mut() {
            r.ensure(total, &self.device)?;
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let masks = MaskSet::new(seq, pos, &self.device);
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = &self.ropes[layer.rope];
            let h = layer.attn_norm.forward(&x)?;
            let h = attention(&self.cfg, layer, rope, &h, cache, i, pos, &masks)?;
            let h = match &layer.post_attn_norm {
                Some(n) => n.forward(&h)?,
                None => h,
            };
            x = self.feed_forward(layer, (x + h)?)?;
        }
        cache.len = total;
        let x = if all_logits {
            x.squeeze(0)?
        } else {
            x.squeeze(0)?.narrow(0, seq - 1, 1)?
        };
        let x = self.norm.forward(&x)?;
        Ok(self.output.forward(&x)?.to_dtype(DType::F32)?)
    }
}

impl Transformer {
    /// One decoding step for several sequences at once: `tokens[b]` is the next token of the
    /// sequence in `caches[b]` (each at its own position). The projections and the MLP run
    /// on all rows together; attention runs per sequence on its own cache. Returns logits
    /// of shape `(tokens.len(), vocab)`; row `b` equals what [`Transformer::forward`] gives
    /// for that sequence alone.
    pub fn forward_batch(&mut self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 || caches.len() != n {
            return Err(candle_core::Error::Msg(format!(
                "forward_batch: {n} tokens for {} caches",
                caches.len()
            ))
            .into());
        }
        let longest = caches.iter().map(|c| c.len).max().unwrap_or(0) + 1;
        for r in self.ropes.iter_mut() {
            r.ensure(longest, &self.device)?;
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(1)?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        let masks: Vec<MaskSet> = caches
            .iter()
            .map(|c| MaskSet::new(1, c.len, &self.device))
            .collect();
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = &self.ropes[layer.rope];
            let h = layer.attn_norm.forward(&x)?;
            let (q, k, v) = (
                batch_linear(&layer.wq, &h)?,
                batch_linear(&layer.wk, &h)?,
                batch_linear(&layer.wv, &h)?,
            );
            let mut outs = Vec::with_capacity(n);
            for (b, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len;
                outs.push(attend(
                    &self.cfg,
                    layer,
                    rope,
                    (
                        &q.narrow(0, b, 1)?,
                        &k.narrow(0, b, 1)?,
                        &v.narrow(0, b, 1)?,
                    ),
                    cache,
                    i,
                    pos,
                    &masks[b],
                )?);
            }
            let h = batch_linear(&layer.wo, &Tensor::cat(&outs, 0)?)?;
            let h = match &layer.post_attn_norm {
                Some(nm) => nm.forward(&h)?,
                None => h,
            };
            x = self.feed_forward_with(layer, (x + h)?, batch_linear)?;
        }
        for c in caches.iter_mut() {
            c.len += 1;
        }
        let x = self.norm.forward(&x)?;
        Ok(batch_linear(&self.output, &x)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// The MLP block with its residual: `x1 + mlp(norm(x1))`.
    fn feed_forward(&self, layer: &Layer, x1: Tensor) -> Result<Tensor> {
        self.feed_forward_with(layer, x1, |w, x| w.forward(x))
    }

    fn feed_forward_with(
        &self,
        layer: &Layer,
        x1: Tensor,
        linear: impl Fn(&Linear, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let h = layer.ffn_norm.forward(&x1)?;
        let gate = linear(&layer.gate, &h)?;
        let act = match self.cfg.arch {
            Arch::Llama => candle_nn::ops::silu(&gate)?,
            Arch::Gemma3 => gate.gelu()?,
        };
        let h = linear(&layer.down, &(act * linear(&layer.up, &h)?)?)?;
        let h = match &layer.post_ffn_norm {
            Some(n) => n.forward(&h)?,
            None => h,
        };
        Ok((x1 + h)?)
    }
}

/// A projection of the rows `(n, 1, k)` of a decoding batch. Our Q4_1 kernel and candle's
/// CPU kernels compute
/// each row of the generic quantized types (Q4_0, Q5_x, Q2_K, Q3_K, Q5_K) the same way
/// whatever the number of rows, so those run as one matmul that reads every weight block
/// once for all rows. For Q4_K, Q6_K and Q8_0, candle picks repacked kernels whose rounding
/// depends on the row count, and for float weights the GEMM kernel changes with the shape;
/// those rows run one by one, so a sequence's output never depends on its batch.
fn batch_linear(w: &Linear, x: &Tensor) -> Result<Tensor> {
    use candle_core::quantized::GgmlDType as D;
    let rows_apart = match w {
        Linear::Q41(_) => false,
        Linear::Candle(QMatMul::QTensor(t)) => matches!(t.dtype(), D::Q4K | D::Q6K | D::Q8_0),
        Linear::Candle(QMatMul::Tensor(_) | QMatMul::TensorF16(_)) => true,
    };
    let n = x.dim(0)?;
    if !rows_apart || n == 1 {
        return w.forward(x);
    }
    let rows = (0..n)
        .map(|i| w.forward(&x.narrow(0, i, 1)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Additive attention masks for one chunk, built once per window size.
struct MaskSet {
    seq: usize,
    pos: usize,
    device: Device,
    cache: std::cell::RefCell<Vec<(Option<usize>, Option<Tensor>)>>,
}

impl MaskSet {
    fn new(seq: usize, pos: usize, device: &Device) -> Self {
        Self {
            seq,
            pos,
            device: device.clone(),
            cache: Default::default(),
        }
    }

    /// The `(seq, pos + seq)` mask for a window, or `None` when nothing is masked.
    fn get(&self, window: Option<usize>) -> Result<Option<Tensor>> {
        if let Some((_, m)) = self.cache.borrow().iter().find(|(w, _)| *w == window) {
            return Ok(m.clone());
        }
        let total = self.pos + self.seq;
        let mut any = false;
        let mut data = Vec::with_capacity(self.seq * total);
        for i in 0..self.seq {
            let qpos = self.pos + i;
            for j in 0..total {
                let ok = j <= qpos && window.is_none_or(|w| qpos - j < w);
                any |= !ok;
                data.push(if ok { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let m = if any {
            Some(Tensor::from_vec(data, (self.seq, total), &self.device)?)
        } else {
            None
        };
        self.cache.borrow_mut().push((window, m.clone()));
        Ok(m)
    }
}

#[allow(clippy::too_many_arguments)]
fn attention(
    cfg: &Config,
    layer: &Layer,
    rope: &Rope,
    x: &Tensor,
    cache: &mut KvCache,
    index: usize,
    pos: usize,
    masks: &MaskSet,
) -> Result<Tensor> {
    let qkv = (
        &layer.wq.forward(x)?,
        &layer.wk.forward(x)?,
        &layer.wv.forward(x)?,
    );
    let out = attend(cfg, layer, rope, qkv, cache, index, pos, masks)?;
    layer.wo.forward(&out)
}

/// Attention of projected queries, keys and values `(b, seq, heads * head_dim)`: norms,
/// RoPE at `pos`, the cache, the masked softmax; returns `(b, seq, n_head * head_dim)`
/// before the output projection.
#[allow(clippy::too_many_arguments)]
fn attend(
    cfg: &Config,
    layer: &Layer,
    rope: &Rope,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    cache: &mut KvCache,
    index: usize,
    pos: usize,
    masks: &MaskSet,
) -> Result<Tensor> {
    let (b, seq, _) = q.dims3()?;
    let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
    let q = q.reshape((b, seq, nh, hd))?.transpose(1, 2)?.contiguous()?;
    let k = k
        .reshape((b, seq, nkv, hd))?
        .transpose(1, 2)?
        .contiguous()?;
    let v = v.reshape((b, seq, nkv, hd))?.transpose(1, 2)?;
    let q = match &layer.q_norm {
        Some(n) => n.forward(&q)?,
        None => q,
    };
    let k = match &layer.k_norm {
        Some(n) => n.forward(&k)?,
        None => k,
    };
    let cos = rope.cos.narrow(0, pos, seq)?;
    let sin = rope.sin.narrow(0, pos, seq)?;
    let (q, k) = match cfg.arch {
        Arch::Llama => (
            candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
            candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
        ),
        Arch::Gemma3 => (
            candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
            candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
        ),
    };
    let (mut k, mut v) = cache.append(index, &k, &v)?;
    let total = pos + seq;
    // A single decoding step only needs the last `window` keys: drop the rest, no mask.
    let mask = if seq == 1 {
        if let Some(w) = layer.window {
            if total > w {
                k = k.narrow(2, total - w, w)?;
                v = v.narrow(2, total - w, w)?;
            }
        }
        None
    } else {
        masks.get(layer.window)?
    };
    let kv_len = k.dim(2)?;
    // Grouped-query attention without copying keys: fold the query heads of each group.
    let rep = nh / nkv;
    let q = q.reshape((b, nkv, rep * seq, hd))?;
    let scale = 1.0 / (hd as f64).sqrt();
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        Some(m) => att
            .reshape((b, nkv, rep, seq, kv_len))?
            .broadcast_add(&m)?
            .reshape((b, nkv, rep * seq, kv_len))?,
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let out = att.matmul(&v)?;
    Ok(out
        .reshape((b, nh, seq, hd))?
        .transpose(1, 2)?
        .reshape((b, seq, nh * hd))?)
}

impl Transformer {
    /// Vocabulary size of the output layer.
    pub fn vocab_size(&self) -> usize {
        self.embed.shape().dims()[0]
    }
}
