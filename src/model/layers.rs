//! The transformer's building blocks: RMS norm, projections (our kernels or candle's), rotary
//! tables and attention masks.

use super::qmatmul::QMatrix;
use super::weights::Weights;
use crate::error::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::sync::Arc;

/// `a + b` for two tensors of one shape, or for `a` and a row `b` added to each of its rows
/// (a bias over the last dimension). Where both are contiguous f32 tensors on the CPU, the
/// sums are made on the calling thread: candle adds tensors of 64K values or more on a pool
/// of its own, whose workers spin for about half a millisecond after each addition, on the
/// cores the kernels' pool needs next (a prompt chunk's residual and bias additions; the
/// 1.5B judge read its pairwise prompts about 3 % slower with them). One IEEE addition per
/// value either way, so the same bits. Anything else goes to candle.
pub(super) fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    use candle_core::{CpuStorage, Storage};
    let same = a.dims() == b.dims();
    let row = b.rank() == 1 && a.dims().last() == b.dims().first();
    let candle = || -> Result<Tensor> { Ok(if same { (a + b)? } else { a.broadcast_add(b)? }) };
    if !(same || row) || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return candle();
    }
    let sum = {
        let (sa, la) = a.storage_and_layout();
        let (sb, lb) = b.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(va)), Storage::Cpu(CpuStorage::F32(vb))) = (&*sa, &*sb)
        else {
            return candle();
        };
        let (Some((a0, a1)), Some((b0, b1))) = (la.contiguous_offsets(), lb.contiguous_offsets())
        else {
            return candle();
        };
        let (va, vb) = (&va[a0..a1], &vb[b0..b1]);
        let mut out = Vec::with_capacity(va.len());
        if same {
            out.extend(va.iter().zip(vb).map(|(x, y)| x + y));
        } else {
            for r in va.chunks_exact(vb.len().max(1)) {
                out.extend(r.iter().zip(vb).map(|(x, y)| x + y));
            }
        }
        out
    };
    Ok(Tensor::from_vec(sum, a.shape(), a.device())?)
}

/// Token capacity the KV cache and the rotary tables grow by.
pub(super) const CACHE_CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub(super) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(super) fn load(g: &mut dyn Weights, name: &str, eps: f64, dev: &Device) -> Result<Self> {
        let weight = g.tensor(name, dev)?.dequantize(dev)?;
        Ok(Self {
            weight,
            eps: eps as f32,
        })
    }
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// candle's matmul for a tensor: quantized types as they are, f16/bf16 kept at half size
/// (candle would widen them to f32), f32 as a plain tensor.
pub(super) fn qmatmul(qt: Arc<QTensor>, dev: &Device) -> Result<QMatMul> {
    Ok(match qt.dtype() {
        GgmlDType::F16 | GgmlDType::BF16 if dev.is_cpu() => {
            QMatMul::TensorF16(qt.dequantize_f16(dev)?)
        }
        // candle's CUDA `dequantize_f16` has no kernel for float storage.
        GgmlDType::F16 | GgmlDType::BF16 => {
            QMatMul::TensorF16(qt.dequantize(dev)?.to_dtype(DType::F16)?)
        }
        _ => QMatMul::from_arc(qt)?,
    })
}

/// A projection: our own kernel for the quantized types it handles on the CPU (see
/// [`super::qmatmul`]), candle's quantized matmul otherwise.
#[derive(Debug, Clone)]
pub(super) enum Linear {
    Candle(QMatMul),
    Ours(Arc<QMatrix>),
}

impl Linear {
    pub(super) fn load(g: &mut dyn Weights, name: &str, dev: &Device) -> Result<Self> {
        let qt = Arc::new(g.tensor(name, dev)?);
        if let Some(m) = QMatrix::from_qtensor(qt.clone())? {
            return Ok(Linear::Ours(Arc::new(m)));
        }
        Ok(Linear::Candle(qmatmul(qt, dev)?))
    }

    /// `x · Wᵀ` over the last dimension of `x`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(q) => Ok(q.forward(x)?),
            Linear::Ours(m) => ours_forward(&[&**m], x)?
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("projection: no output".into()).into()),
        }
    }
}

/// `x · Wᵀ` over the last dimension of `x` for each of our matrices `ms`, in one call of our
/// kernels ([`QMatrix::matmul_many`]).
fn ours_forward(ms: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(0);
    if let Some(m) = ms.iter().find(|m| m.k() != k) {
        return Err(candle_core::Error::Msg(format!(
            "projection expects {} inputs, got shape {:?}",
            m.k(),
            x.dims()
        ))
        .into());
    }
    let rows = x.elem_count() / k.max(1);
    let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let ys = QMatrix::matmul_many(ms, &data, rows)?;
    let mut out = Vec::with_capacity(ms.len());
    for (y, m) in ys.into_iter().zip(ms) {
        let mut d = dims.clone();
        d.push(m.n());
        out.push(Tensor::from_vec(y, d, x.device())?.to_dtype(x.dtype())?);
    }
    Ok(out)
}

/// Cos/sin tables for rotary embeddings, grown on demand.
#[derive(Debug, Clone)]
pub(super) struct Rope {
    inv_freq: Vec<f32>,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    len: usize,
}

impl Rope {
    pub(super) fn new(inv_freq: Vec<f32>, len: usize, dev: &Device) -> Result<Self> {
        let (cos, sin) = Self::tables(&inv_freq, len, dev)?;
        Ok(Self {
            inv_freq,
            cos,
            sin,
            len,
        })
    }

    pub(super) fn tables(inv_freq: &[f32], len: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
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

    pub(super) fn ensure(&mut self, len: usize, dev: &Device) -> Result<()> {
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

/// A projection of the rows `(n, 1, k)` of a decoding batch. Our kernels (Q4_1, Q5_0, Q8_0,
/// Q4_K, Q6_K on the CPU) and candle's CPU kernels for the other generic quantized types
/// (Q4_0, Q5_1, Q2_K, Q3_K, Q5_K) compute each row the same way whatever the number of rows,
/// so those run as one matmul that reads every weight block once for all rows. Where candle
/// runs Q4_K, Q6_K or Q8_0 (a GPU), it picks kernels whose rounding depends on the row
/// count, and for float weights the GEMM kernel changes with the shape; those rows run one
/// by one, so a sequence's output never depends on its batch.
pub(super) fn batch_linear(w: &Linear, x: &Tensor) -> Result<Tensor> {
    use candle_core::quantized::GgmlDType as D;
    let rows_apart = match w {
        Linear::Ours(_) => false,
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

/// [`batch_linear`] of one input by several projections (a layer's query, key and value, or
/// its gate and up): where all are ours, one call of our kernels for all of them
/// ([`QMatrix::matmul_many`]: the same bits as one by one, the threads meeting once instead
/// of once per projection); where any is candle's (a type our kernels do not read, or a
/// GPU), all one by one.
pub(super) fn projections<const N: usize>(ws: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
    let ours: Vec<&QMatrix> = ws
        .iter()
        .filter_map(|w| match w {
            Linear::Ours(m) => Some(&**m),
            Linear::Candle(_) => None,
        })
        .collect();
    let out = if ours.len() == N {
        ours_forward(&ours, x)?
    } else {
        ws.iter()
            .map(|w| batch_linear(w, x))
            .collect::<Result<Vec<_>>>()?
    };
    out.try_into()
        .map_err(|_| candle_core::Error::Msg("projections: count".into()).into())
}

/// Additive attention masks for one chunk, built once per window size.
pub(super) struct MaskSet {
    seq: usize,
    pos: usize,
    device: Device,
    cache: std::cell::RefCell<Vec<(Option<usize>, Option<Tensor>)>>,
}

impl MaskSet {
    pub(super) fn new(seq: usize, pos: usize, device: &Device) -> Self {
        Self {
            seq,
            pos,
            device: device.clone(),
            cache: Default::default(),
        }
    }

    /// The `(seq, pos + seq)` mask for a window, or `None` when nothing is masked.
    pub(super) fn get(&self, window: Option<usize>) -> Result<Option<Tensor>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * scale)
            .collect()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn add_gives_candles_bits_for_rows_biases_and_strided_tensors() {
        let dev = Device::Cpu;
        // Over candle's 64K threshold (its own pool) and under it (its loop).
        for (rows, n) in [(96, 1536), (3, 256)] {
            let a = Tensor::from_vec(ramp(rows * n, 1.3e-3), (1, rows, n), &dev).unwrap();
            let b = Tensor::from_vec(ramp(rows * n, -7.1e-4), (1, rows, n), &dev).unwrap();
            let bias = Tensor::from_vec(ramp(n, 2.9e-2), n, &dev).unwrap();
            let sum = add(&a, &b).unwrap();
            assert_eq!(sum.dims(), a.dims());
            assert_eq!(bits(&sum), bits(&(&a + &b).unwrap()));
            let biased = add(&a, &bias).unwrap();
            assert_eq!(bits(&biased), bits(&a.broadcast_add(&bias).unwrap()));
            // A transposed (strided) operand goes to candle, with the same result.
            let t = b
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            assert!(!t.is_contiguous());
            assert_eq!(bits(&add(&a, &t).unwrap()), bits(&(&a + &t).unwrap()));
        }
        // Shapes that neither match nor broadcast a row are candle's error.
        let a = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(2, DType::F32, &dev).unwrap();
        assert!(add(&a, &b).is_err());
    }
}
