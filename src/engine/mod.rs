//! The generation loop: prefill, KV-cached decoding, stop conditions, token log-probabilities
//! and timing.

mod batch;
mod generate;

pub use batch::BatchRequest;
pub use generate::{top_logprobs, FinishReason, GenerateOptions, Generation, Timing};

use crate::error::{Error, Result};

/// Sets the number of CPU threads used by the tensor kernels. Call it once, before the first
/// model runs; later calls fail because the pool already exists. The default is one thread
/// per physical core (or `RAYON_NUM_THREADS`).
pub fn set_threads(n: usize) -> Result<()> {
    // candle sizes its pools from these; without them it re-reads /proc/cpuinfo on every
    // float matmul to count physical cores.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::config("threads", format!("cannot set {n} threads: {e}")))
}

/// Fixes the thread count candle reads on every CPU matmul to the physical core count, once,
/// unless `RAYON_NUM_THREADS` is already set. Without it candle counts the cores again on
/// each call by reading /proc/cpuinfo, which costs about 5 % of decoding time.
pub(crate) fn pin_thread_count() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let n = candle_core::utils::get_num_threads();
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    });
}
