//! The per-sequence attention cache ([`KvCache`]): keys and values of every layer, grown in
//! chunks, cut back to reuse a shared prefix, copied to branch.

use super::layers::CACHE_CHUNK;
use crate::error::Result;
use candle_core::Tensor;

/// Per-sequence attention cache: keys and values of every layer so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(super) len: usize,
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

    /// Forgets every position from `len` on (keeps the first `len`); later tokens are
    /// written over them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the keys and values (their whole capacity).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// A copy that owns its memory: positions written to it later leave this cache as it
    /// is. (A plain clone shares the key and value buffers, which appending writes into.)
    pub fn deep_copy(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.copy()?, v.copy()?))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: self.len,
        })
    }

    pub(super) fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
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
