//! The decoder-only transformer for the llama, gemma3 and qwen2 families, on quantized GGUF weights.
//!
//! Weights are shared and immutable; each sequence owns a [`KvCache`], so a model can serve
//! several sequences at once, and a cache can be cut back to reuse a shared prompt prefix.
//!
//! One block body serves a single sequence (a prompt chunk or one
//! decoding step) and a decoding batch (one step of several sequences): the projections and
//! the MLP run on all rows together, attention per sequence on its own cache.
//!
//! Differences between the families are data, read once from [`Config`]:
//! - llama: interleaved RoPE (llama.cpp permutes Q/K at conversion), SiLU MLP, optional
//!   `rope_freqs.weight` (Llama 3.1+ frequency scaling).
//! - gemma3: NeoX RoPE with a local base for sliding layers, GELU (tanh) MLP, Q/K RMS norms,
//!   post-attention and post-MLP norms, embeddings scaled by `sqrt(hidden)`, a sliding window
//!   on five of every six layers.
//! - qwen2: llama's blocks with NeoX RoPE and F32 biases added to the query, key and value
//!   projections (`blk.N.attn_{q,k,v}.bias`).

use super::config::{Arch, Config};
use super::kv_cache::KvCache;
use super::layers::{add, batch_linear, projections, qmatmul, Linear, MaskSet, RmsNorm, Rope};
use super::pages::HugePages;
use super::qmatmul::QMatrix;
use super::weights::Weights;
use crate::error::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// Longest prompt chunk fed in one forward pass, bounding attention memory.
pub const PREFILL_CHUNK: usize = 512;

/// Self-attention of one layer: its projections, optional Q/K norms, head sizes, RoPE table
/// and sliding window.
#[derive(Debug, Clone)]
struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    /// Biases of the query, key and value projections (qwen2), each `(out,)`.
    bias: Option<[Tensor; 3]>,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Interleaved RoPE (llama) or NeoX (gemma3, qwen2).
    interleaved: bool,
    window: Option<usize>,
    /// Index of the RoPE table (0 global, 1 local).
    rope: usize,
}

/// The gated MLP of one layer.
#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    gelu: bool,
}

/// One transformer block: attention and MLP, each with its norms and residual.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    post_ffn_norm: Option<RmsNorm>,
}

/// How the rows of a block's input are laid out.
#[derive(Clone, Copy)]
enum Layout<'a> {
    /// `(b, seq, hidden)`: row `b` continues the sequence in `caches[b]`, each by `seq`
    /// positions (a prompt chunk when `b = 1`, a decoding step when `seq = 1`).
    Batch,
    /// `(1, Σ lens, hidden)`: consecutive segments of `lens[i]` rows continue the sequence in
    /// `caches[i]` (several prompt suffixes in one pass).
    Segments(&'a [usize]),
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
    prefill_chunk: usize,
    pages: HugePages,
}

impl Transformer {
    /// Loads the weights of a llama, gemma3 or qwen2 model from a GGUF file (or of a llama
    /// model from a Hugging Face checkpoint) onto `device`.
    pub(crate) fn load(g: &mut dyn Weights, device: &Device) -> Result<Self> {
        let cfg = g.config()?;
        let dev = device;
        // New shapes to decode: decoding's prefetch distance is measured again.
        super::qmatmul::prefetch::restart();
        let embed = Arc::new(g.tensor("token_embd.weight", dev)?);
        let output = if g.has_tensor("output.weight") {
            Linear::load(g, "output.weight", dev)?
        } else {
            // Tied to the embedding: the same bytes serve both.
            match QMatrix::from_qtensor(embed.clone())? {
                Some(m) => Linear::Ours(Arc::new(m)),
                None => Linear::Candle(qmatmul(embed.clone(), dev)?),
            }
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
            let opt_norm = |g: &mut dyn Weights, s: &str| -> Result<Option<RmsNorm>> {
                if gemma {
                    Ok(Some(RmsNorm::load(g, &p(s), cfg.eps, dev)?))
                } else {
                    Ok(None)
                }
            };
            let window = cfg.layer_window(i);
            let bias = if g.has_tensor(&format!("blk.{i}.attn_q.bias")) {
                let mut load = |s: &str, heads: usize| -> Result<Tensor> {
                    let name = format!("blk.{i}.{s}.bias");
                    let t = g.tensor(&name, dev)?.dequantize(dev)?;
                    let want = heads * cfg.head_dim;
                    // A bias of another length would broadcast silently.
                    if t.dims() != [want] {
                        return Err(Error::Candle(candle_core::Error::Msg(format!(
                            "tensor {name} has shape {:?}, expected [{want}]",
                            t.dims()
                        ))));
                    }
                    Ok(t)
                };
                Some([
                    load("attn_q", cfg.n_head)?,
                    load("attn_k", cfg.n_kv_head)?,
                    load("attn_v", cfg.n_kv_head)?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: RmsNorm::load(g, &p("attn_norm"), cfg.eps, dev)?,
                attn: Attention {
                    wq: Linear::load(g, &p("attn_q"), dev)?,
                    wk: Linear::load(g, &p("attn_k"), dev)?,
                    wv: Linear::load(g, &p("attn_v"), dev)?,
                    wo: Linear::load(g, &p("attn_output"), dev)?,
                    bias,
                    q_norm: opt_norm(g, "attn_q_norm")?,
                    k_norm: opt_norm(g, "attn_k_norm")?,
                    n_head: cfg.n_head,
                    n_kv_head: cfg.n_kv_head,
                    head_dim: cfg.head_dim,
                    interleaved: cfg.arch == Arch::Llama,
                    window,
                    rope: usize::from(window.is_some()),
                },
                post_attn_norm: opt_norm(g, "post_attention_norm")?,
                ffn_norm: RmsNorm::load(g, &p("ffn_norm"), cfg.eps, dev)?,
                mlp: Mlp {
                    gate: Linear::load(g, &p("ffn_gate"), dev)?,
                    up: Linear::load(g, &p("ffn_up"), dev)?,
                    down: Linear::load(g, &p("ffn_down"), dev)?,
                    gelu: gemma,
                },
                post_ffn_norm: opt_norm(g, "post_ffw_norm")?,
            });
        }
        // Every matrix our kernels read, onto huge pages where the system allows it.
        let mut regions = Vec::new();
        let linears = layers.iter().flat_map(|l| {
            let (a, m) = (&l.attn, &l.mlp);
            [&a.wq, &a.wk, &a.wv, &a.wo, &m.gate, &m.up, &m.down]
        });
        for linear in linears.chain([&output]) {
            if let Linear::Ours(m) = linear {
                regions.push(m.region()?);
            }
        }
        let pages = super::pages::collapse(&regions);
        Ok(Self {
            embed_scale: gemma.then(|| (cfg.hidden as f64).sqrt()),
            cfg,
            embed,
            layers,
            norm,
            output,
            ropes,
            device: device.clone(),
            prefill_chunk: PREFILL_CHUNK,
            pages,
        })
    }

    /// The architecture configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// How much of the weights our kernels read lie on huge pages (see
    /// [`super::pages`]).
    pub fn huge_pages(&self) -> &HugePages {
        &self.pages
    }

    /// Vocabulary size of the output layer.
    pub fn vocab_size(&self) -> usize {
        self.embed.shape().dims()[0]
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.cfg.n_layer],
            len: 0,
        }
    }

    /// Sets the longest prompt chunk fed in one pass ([`PREFILL_CHUNK`] by default); a
    /// value of at least the prompt length runs it unchunked.
    pub fn with_prefill_chunk(mut self, n: usize) -> Self {
        self.prefill_chunk = n.max(1);
        self
    }

    /// Runs `tokens` (the next positions of the sequence in `cache`) through the model and
    /// returns logits of shape `(n, vocab)`: the last position only unless `all_logits`.
    /// Long inputs are fed in chunks (see [`Transformer::with_prefill_chunk`]).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor> {
        let mut outs = Vec::new();
        for chunk in tokens.chunks(self.prefill_chunk) {
            let x = self.embed_rows(chunk)?.unsqueeze(0)?;
            let x = self
                .blocks(x, &mut [&mut *cache], Layout::Batch)?
                .squeeze(0)?;
            let n = x.dim(0)?;
            let x = if all_logits {
                x
            } else {
                x.narrow(0, n - 1, 1)?
            };
            let x = self.norm.forward(&x)?;
            outs.push(self.output.forward(&x)?.to_dtype(DType::F32)?);
        }
        match outs.len() {
            0 => Err(candle_core::Error::Msg("forward on no tokens".into()).into()),
            _ if all_logits => Ok(Tensor::cat(&outs, 0)?),
            _ => Ok(outs.pop().expect("one chunk at least")),
        }
    }

    /// One decoding step for several sequences at once: `tokens[b]` is the next token of the
    /// sequence in `caches[b]` (each at its own position). The projections and the MLP run
    /// on all rows together; attention runs per sequence on its own cache. Returns logits
    /// of shape `(tokens.len(), vocab)`; row `b` equals what [`Transformer::forward`] gives
    /// for that sequence alone.
    pub fn forward_batch(&mut self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        if tokens.is_empty() || caches.len() != tokens.len() {
            return Err(candle_core::Error::Msg(format!(
                "forward_batch: {} tokens for {} caches",
                tokens.len(),
                caches.len()
            ))
            .into());
        }
        let x = self.embed_rows(tokens)?.unsqueeze(1)?;
        let x = self.blocks(x, caches, Layout::Batch)?;
        let x = self.norm.forward(&x)?;
        Ok(batch_linear(&self.output, &x)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// Several prompt continuations in one pass: `segments[i]` (at least one token) continues
    /// the sequence in `caches[i]`. The projections and the MLP run on the rows of every
    /// segment together, attention per segment on its own cache. Returns the logits of each
    /// segment's last position, `(segments.len(), vocab)`; row `i` equals what
    /// [`Transformer::forward`] gives for that segment alone when
    /// [`Transformer::rows_independent`] holds and the segment is no longer than the prefill
    /// chunk.
    pub fn forward_segments(
        &mut self,
        segments: &[&[u32]],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        if segments.is_empty()
            || caches.len() != segments.len()
            || segments.iter().any(|s| s.is_empty())
        {
            return Err(candle_core::Error::Msg(format!(
                "forward_segments: {} segments (none may be empty) for {} caches",
                segments.len(),
                caches.len()
            ))
            .into());
        }
        let lens: Vec<usize> = segments.iter().map(|s| s.len()).collect();
        let tokens: Vec<u32> = segments.concat();
        let x = self.embed_rows(&tokens)?.unsqueeze(0)?;
        let x = self
            .blocks(x, caches, Layout::Segments(&lens))?
            .squeeze(0)?;
        let mut end = 0;
        let mut last = Vec::with_capacity(lens.len());
        for n in &lens {
            end += n;
            last.push(x.narrow(0, end - 1, 1)?);
        }
        let x = self.norm.forward(&Tensor::cat(&last, 0)?)?;
        Ok(self.output.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// True when every projection computes each row the same way whatever the number of
    /// rows (our quantized kernels), so that running sequences together changes nothing.
    pub fn rows_independent(&self) -> bool {
        let ours = |l: &Linear| matches!(l, Linear::Ours(_));
        ours(&self.output)
            && self.layers.iter().all(|l| {
                [
                    &l.attn.wq,
                    &l.attn.wk,
                    &l.attn.wv,
                    &l.attn.wo,
                    &l.mlp.gate,
                    &l.mlp.up,
                    &l.mlp.down,
                ]
                .into_iter()
                .all(ours)
            })
    }

    /// The longest prompt chunk fed in one pass.
    pub fn prefill_chunk(&self) -> usize {
        self.prefill_chunk
    }

    /// Token embeddings `(n, hidden)`, scaled for Gemma.
    fn embed_rows(&self, tokens: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?;
        let x = self.embed.embedding(&ids)?;
        Ok(match self.embed_scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }

    /// Every block over `x` of shape `(b, seq, hidden)`: row `b` continues the sequence in
    /// `caches[b]`. Single sequences (prefill, one decoding step) and decoding batches run
    /// this same body.
    fn blocks(
        &mut self,
        mut x: Tensor,
        caches: &mut [&mut KvCache],
        layout: Layout<'_>,
    ) -> Result<Tensor> {
        let seq = x.dim(1)?;
        let lens: Vec<usize> = match layout {
            Layout::Batch => vec![seq; caches.len()],
            Layout::Segments(lens) => lens.to_vec(),
        };
        let longest = caches
            .iter()
            .zip(&lens)
            .map(|(c, n)| c.len + n)
            .max()
            .unwrap_or(seq);
        for r in self.ropes.iter_mut() {
            r.ensure(longest, &self.device)?;
        }
        let masks: Vec<MaskSet> = caches
            .iter()
            .zip(&lens)
            .map(|(c, &n)| MaskSet::new(n, c.len, &self.device))
            .collect();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &self.ropes, caches, i, &masks, layout)?;
        }
        for (c, n) in caches.iter_mut().zip(&lens) {
            c.len += n;
        }
        Ok(x)
    }
}

impl Layer {
    /// `x + attn(norm(x))`, then `+ mlp(norm(·))`, with Gemma's post-norms.
    fn forward(
        &self,
        x: Tensor,
        ropes: &[Rope],
        caches: &mut [&mut KvCache],
        index: usize,
        masks: &[MaskSet],
        layout: Layout<'_>,
    ) -> Result<Tensor> {
        let h = self.attn_norm.forward(&x)?;
        let h = self
            .attn
            .forward(&h, &ropes[self.attn.rope], caches, index, masks, layout)?;
        let h = match &self.post_attn_norm {
            Some(n) => n.forward(&h)?,
            None => h,
        };
        let x = add(&x, &h)?;
        let h = self.mlp.forward(&self.ffn_norm.forward(&x)?)?;
        let h = match &self.post_ffn_norm {
            Some(n) => n.forward(&h)?,
            None => h,
        };
        add(&x, &h)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up] = projections([&self.gate, &self.up], x)?;
        let h = match super::activation::gated(&gate, &up, self.gelu)? {
            Some(h) => h,
            None if self.gelu => (gate.gelu()? * up)?,
            None => (candle_nn::ops::silu(&gate)? * up)?,
        };
        batch_linear(&self.down, &h)
    }
}

impl Attention {
    /// Projections, norms and RoPE of all rows together, then each sequence's cache, the
    /// attention of all sequences together, and the output projection of all rows.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        caches: &mut [&mut KvCache],
        index: usize,
        masks: &[MaskSet],
        layout: Layout<'_>,
    ) -> Result<Tensor> {
        let [mut q, mut k, mut v] = projections([&self.wq, &self.wk, &self.wv], x)?;
        if let Some([bq, bk, bv]) = &self.bias {
            q = add(&q, bq)?;
            k = add(&k, bk)?;
            v = add(&v, bv)?;
        }
        // Norms and RoPE for every row at once, each row at its own position (the tables'
        // rows gathered by position), then each sequence's cache and attention.
        let (b, seq) = (x.dim(0)?, x.dim(1)?);
        let lens: Vec<usize> = match layout {
            Layout::Batch => vec![seq; b],
            Layout::Segments(lens) => lens.to_vec(),
        };
        let pos: Vec<u32> = caches
            .iter()
            .zip(&lens)
            .flat_map(|(c, &n)| (c.len..c.len + n).map(|p| p as u32))
            .collect();
        let pos = Tensor::new(pos.as_slice(), rope.cos.device())?;
        let table = |t: &Tensor| -> Result<Tensor> {
            let rows = t.index_select(&pos, 0)?;
            let half = rows.dim(1)?;
            Ok(rows.reshape((b, seq, half))?)
        };
        let (q, k, v) = self.heads((q, k, v), &table(&rope.cos)?, &table(&rope.sin)?)?;
        let mut seqs = Vec::with_capacity(caches.len());
        let mut start = 0;
        for (i, cache) in caches.iter_mut().enumerate() {
            // Batch: sequence `i` is row `i`; segments: `lens[i]` positions of the one row.
            let part = |t: &Tensor| match layout {
                Layout::Batch => t.narrow(0, i, 1),
                Layout::Segments(_) => t.narrow(2, start, lens[i]),
            };
            let q = part(&q)?.contiguous()?;
            let (k, v) = cache.append(index, &part(&k)?, &part(&v)?)?;
            seqs.push((q, k, v));
            start += lens[i];
        }
        let outs = self.attend(&seqs, masks)?;
        let dim = match layout {
            Layout::Batch => 0,
            Layout::Segments(_) => 1,
        };
        batch_linear(&self.wo, &Tensor::cat(&outs, dim)?)
    }

    /// Projected rows `(b, seq, heads · head_dim)` as heads `(b, heads, seq, head_dim)`, with
    /// the query and key norms and RoPE applied (`cos`, `sin`: `(seq, head_dim / 2)`, or
    /// `(b, seq, head_dim / 2)` for rows at different positions). Every operation here
    /// computes each row on its own.
    fn heads(
        &self,
        (q, k, v): (Tensor, Tensor, Tensor),
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, seq, _) = q.dims3()?;
        let (nh, nkv, hd) = (self.n_head, self.n_kv_head, self.head_dim);
        let q = q.reshape((b, seq, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k
            .reshape((b, seq, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v.reshape((b, seq, nkv, hd))?.transpose(1, 2)?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let (q, k) = if self.interleaved {
            (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            )
        };
        Ok((q, k, v))
    }

    /// The sequences' heads after [`Attention::heads`], each `(1, heads, seq, head_dim)`
    /// with its cache's keys and values (the new ones appended): attends; returns each
    /// `(1, seq, n_head · head_dim)`.
    fn attend(&self, seqs: &[(Tensor, Tensor, Tensor)], masks: &[MaskSet]) -> Result<Vec<Tensor>> {
        let (nh, nkv) = (self.n_head, self.n_kv_head);
        // On the CPU, row by row (the same bits however a prompt was split), every sequence's
        // work split across the threads together.
        if let Some(outs) = super::attention::causal_batch(seqs, nh / nkv, self.window)? {
            return Ok(outs);
        }
        if masks.len() != seqs.len() {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "attention: {} mask sets for {} sequences",
                masks.len(),
                seqs.len()
            ))));
        }
        let mut outs = Vec::with_capacity(seqs.len());
        for ((q, k, v), masks) in seqs.iter().zip(masks) {
            let seq = q.dim(2)?;
            let total = k.dim(2)?;
            // A single decoding step only needs the last `window` keys: drop the rest, no
            // mask.
            let (mut k, mut v) = (k.clone(), v.clone());
            let mask = if seq == 1 {
                if let Some(w) = self.window {
                    if total > w {
                        k = k.narrow(2, total - w, w)?;
                        v = v.narrow(2, total - w, w)?;
                    }
                }
                None
            } else {
                masks.get(self.window)?
            };
            outs.push(grouped_attention(q, &k, &v, mask.as_ref(), nh / nkv)?);
        }
        Ok(outs)
    }
}

/// Scaled dot-product attention with grouped query heads, without copying keys: the `rep`
/// query heads of each key/value head are folded into its rows. `q` is `(b, nh, seq, hd)`,
/// `k` and `v` are `(b, nkv, kv_len, hd)` with `nh = nkv · rep`, `mask` is `(seq, kv_len)`.
/// Returns `(b, seq, nh · hd)`.
fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    rep: usize,
) -> Result<Tensor> {
    let (b, nh, seq, hd) = q.dims4()?;
    let nkv = nh / rep;
    let kv_len = k.dim(2)?;
    let q = q.reshape((b, nkv, rep * seq, hd))?;
    let scale = 1.0 / (hd as f64).sqrt();
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        Some(m) => att
            .reshape((b, nkv, rep, seq, kv_len))?
            .broadcast_add(m)?
            .reshape((b, nkv, rep * seq, kv_len))?,
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let out = att.matmul(v)?;
    Ok(out
        .reshape((b, nh, seq, hd))?
        .transpose(1, 2)?
        .reshape((b, seq, nh * hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::CACHE_CHUNK;

    fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect()
    }

    /// Attention with each key/value head repeated for its query heads (the textbook form).
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, rep: usize) -> Tensor {
        let (b, nh, seq, hd) = q.dims4().unwrap();
        let expand = |x: &Tensor| {
            let (b, nkv, l, d) = x.dims4().unwrap();
            x.unsqueeze(2)
                .unwrap()
                .expand((b, nkv, rep, l, d))
                .unwrap()
                .reshape((b, nkv * rep, l, d))
                .unwrap()
        };
        let (k, v) = (expand(k), expand(v));
        let att = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap();
        let att = match mask {
            Some(m) => att.broadcast_add(m).unwrap(),
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
        att.matmul(&v.contiguous().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, seq, nh * hd))
            .unwrap()
    }

    #[test]
    fn grouped_query_fold_equals_repeated_heads() -> Result<()> {
        // 4 query heads over 2 key/value heads, 3 query positions over 5 keys, head size 4.
        let (nh, nkv, seq, kv, hd) = (4, 2, 3, 5, 4);
        let q = t(ramp(nh * seq * hd, 0.13), &[1, nh, seq, hd]);
        let k = t(ramp(nkv * kv * hd, 0.07), &[1, nkv, kv, hd]);
        let v = t(ramp(nkv * kv * hd, 0.11), &[1, nkv, kv, hd]);
        let masks = MaskSet::new(seq, kv - seq, &Device::Cpu);
        let mask = masks.get(None)?;
        let got = grouped_attention(&q, &k, &v, mask.as_ref(), nh / nkv)?;
        let want = reference(&q, &k, &v, mask.as_ref(), nh / nkv);
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }

    #[test]
    fn masks_are_causal_and_windowed() -> Result<()> {
        // 3 new positions after 2 cached ones: query i (position 2 + i) sees keys 0..=2 + i.
        let m = MaskSet::new(3, 2, &Device::Cpu);
        let causal = m
            .get(None)?
            .expect("something is masked")
            .to_vec2::<f32>()?;
        for (i, row) in causal.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert_eq!(*v == 0.0, j <= 2 + i, "causal ({i}, {j})");
            }
        }
        // Window 2: only the last 2 positions up to the query.
        let w = m.get(Some(2))?.expect("masked").to_vec2::<f32>()?;
        for (i, row) in w.iter().enumerate() {
            let q = 2 + i;
            for (j, v) in row.iter().enumerate() {
                assert_eq!(*v == 0.0, j <= q && q - j < 2, "window ({i}, {j})");
            }
        }
        // One new position with nothing to hide needs no mask.
        assert!(MaskSet::new(1, 4, &Device::Cpu).get(None)?.is_none());
        Ok(())
    }

    #[test]
    fn cache_appends_grows_and_truncates() -> Result<()> {
        let mut c = KvCache {
            layers: vec![None],
            len: 0,
        };
        let kv =
            |n: usize, base: f32| t((0..n * 2).map(|i| base + i as f32).collect(), &[1, 1, n, 2]);
        let (k, _) = c.append(0, &kv(3, 0.0), &kv(3, 100.0))?;
        c.len = 3;
        assert_eq!(
            k.squeeze(0)?.to_vec3::<f32>()?[0],
            vec![vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0, 5.0]]
        );
        // Past the first chunk of capacity, the cache grows and keeps what it had.
        let (k, v) = c.append(0, &kv(CACHE_CHUNK, 10.0), &kv(CACHE_CHUNK, 10.0))?;
        c.len = 3 + CACHE_CHUNK;
        assert_eq!(k.dim(2)?, 3 + CACHE_CHUNK);
        assert_eq!(
            k.narrow(2, 0, 1)?.flatten_all()?.to_vec1::<f32>()?,
            vec![0.0, 1.0]
        );
        assert_eq!(
            v.narrow(2, 3, 1)?.flatten_all()?.to_vec1::<f32>()?,
            vec![10.0, 11.0]
        );
        // Truncating forgets positions; the next append writes over them.
        c.truncate(2);
        assert_eq!(c.len(), 2);
        let (k, _) = c.append(0, &kv(1, 50.0), &kv(1, 50.0))?;
        let rows = k.squeeze(0)?.to_vec3::<f32>()?[0].clone();
        assert_eq!(rows, vec![vec![0.0, 1.0], vec![2.0, 3.0], vec![50.0, 51.0]]);
        Ok(())
    }
}
