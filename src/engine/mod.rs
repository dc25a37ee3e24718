//! The generation loop: prefill, KV-cached decoding, stop conditions, token log-probabilities
//! and timing.

mod generate;

pub use generate::{top_logprobs, FinishReason, GenerateOptions, Generation, Timing};

use crate::error::{Error, Result};

/// Sets the number of CPU threads used by the tensor kernels. Call it once, before the first
/// model runs; later calls fail because the pool already exists. The default is one thread
/// per physical core (or `RAYON_NUM_THREADS`).
pub fn set_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::config("threads", format!("cannot set {n} threads: {e}")))
}
