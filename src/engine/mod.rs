//! The generation loop: prefill, KV-cached decoding, stop conditions, token log-probabilities
//! and timing, for one sequence ([`crate::Model::generate`]) or many decoded together
//! ([`crate::Model::generate_batch`]) with identical outputs; and next-token
//! log-probabilities for many prompts, each shared prefix run once ([`PrefixScorer`]); and
//! replies held to a regular language ([`constrain`]).

mod batch;
pub mod constrain;
mod generate;
mod score;

pub use batch::{Batch, BatchRequest, TextSink};
pub use generate::{top_logprobs, FinishReason, GenerateOptions, Generation, Timing};
pub use score::{PrefixScorer, NODE_BYTES};

use crate::error::{Error, Result};

/// Sizes the global thread pool the tensor kernels use. Call it once, before the first model
/// runs; a later call fails because the pool already exists. The default is one thread per
/// physical core.
///
/// candle reads `RAYON_NUM_THREADS` on every CPU matmul and, when it is unset, counts the
/// cores again from `/proc/cpuinfo` each time (about 5 % of decoding time). The library never
/// changes the process environment; the `llm-judge` binary sets the variable at start-up,
/// before any thread exists. Programs that embed the library can do the same.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::config("threads", "must be at least 1"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::config("threads", format!("cannot set {n} threads: {e}")))
}
