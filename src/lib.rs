//! # llm-judge
//!
//! An experiment harness that compares language models with an LLM judge.
//!
//! The crate follows the data flow of an experiment:
//!
//! - [`model`]: where a model comes from ([`ModelSource`]: a `.gguf` path, a Hugging Face
//!   reference, or a bundled model), its tokenizer and chat template, and the candle
//!   transformer that runs it ([`Model`]).
//! - [`sampling`]: [`SamplingParams`] (temperature, `min_p`, `top_p`, `top_k`, penalties,
//!   seed) with the write-up's presets `p1` and `p2`, and the seeded [`Sampler`].
//! - [`engine`]: KV-cached generation with stop conditions, token log-probabilities and
//!   timing ([`Generation`]), one sequence at a time or continuously batched
//!   ([`Model::generate_batch`]) with identical outputs.
//! - [`backend`]: the [`backend::Backend`] trait that generation and judging go through.
//! - [`prompts`]: prompt sets (JSONL).
//! - [`judge`]: rubric, listwise, pairwise and expected-score grading ([`JudgeConfig`]).
//! - [`experiment`]: the grid of models × settings × prompts × samples ([`Experiment`]),
//!   stored record by record in a results folder ([`store`]) so runs resume.
//! - [`table`] and [`analysis`]: polars DataFrames (responses, judgments, summary) and
//!   statistics (bootstrap CIs, win rates, Bradley-Terry, agreement, position and length
//!   bias).
//! - [`plot`] and [`report`]: plotters charts that show inline in evcxr notebooks, and the
//!   self-contained HTML report of a results folder. [`RunOutput`] has one-call views of a
//!   run for notebook cells; `use llm_judge::prelude::*` brings in what cells need.
//! - [`mod@bench`]: throughput figures against llama.cpp on the same file.
//!
//! ## Example
//!
//! ```no_run
//! use llm_judge::{Message, Model, SamplingParams};
//!
//! # fn main() -> llm_judge::Result<()> {
//! let mut model = Model::load_named("smollm2-135m-instruct")?;
//! let out = model.generate(
//!     &[Message::user("Explain how to bake a chocolate cake without using eggs.")],
//!     &SamplingParams::p1().with_seed(42),
//! )?;
//! println!("{}", out.text);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod analysis;
pub mod backend;
pub mod bench;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod judge;
pub mod model;
pub mod plot;
pub mod prompts;
pub mod records;
pub mod report;
pub mod sampling;
pub mod server;
pub mod store;
pub mod table;

pub use engine::{FinishReason, Generation, Timing};
pub use error::{Error, Result};
pub use experiment::{Experiment, RunOutput};
pub use judge::{JudgeConfig, Mode};
pub use model::{Message, Model, ModelSource};
pub use sampling::{Sampler, SamplingParams};

/// Everything a notebook cell needs: `use llm_judge::prelude::*;`.
pub mod prelude {
    pub use crate::analysis::{Agreement, LengthCorrelation, PositionBias, SummaryRow};
    pub use crate::plot::Figure;
    pub use crate::table::HtmlTable;
    pub use crate::{
        Error, Experiment, JudgeConfig, Message, Mode, Model, Result, RunOutput, SamplingParams,
    };
}
