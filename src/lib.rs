//! # llm-judge
//!
//! An experiment harness that compares language models with an LLM judge: local GGUF
//! inference with candle or any OpenAI-compatible endpoint, five grading modes, resumable
//! runs, paired statistics, charts and reports.
//!
//! ## How the pieces connect
//!
//! An [`Experiment`] (a TOML file or a builder) is checked into a
//! [`Plan`](experiment::Plan) before anything runs. [`Experiment::run`] (or
//! [`results::run_plan`] for a plan, which is what `llm-judge run` calls) generates the grid
//! of models × settings × prompts × samples through a [`backend::Backend`], judges the answers
//! in each [`Mode`] (one unit per mode in [`judge`]), runs the judge's sanity check, and stores
//! every finished record at once. The [`RunOutput`] it returns turns the records into tables
//! (summary and paired comparisons, from [`analysis`]), charts ([`plot`]) and a report; a
//! finished folder opens again with [`RunOutput::load`].
//!
//! ## Layers
//!
//! From the top down; a module uses the ones below it, never one above, and the data flows
//! up from `model` to `results`:
//!
//! | layer | modules |
//! | --- | --- |
//! | interfaces | [`server`] (`llm-judge serve`), [`mod@bench`] (speed against llama.cpp) |
//! | a finished run | [`results`]: [`RunOutput`], notebook views, findings, `run.json`, report |
//! | presentation | [`plot`] (charts), [`table`] (DataFrames, HTML) |
//! | running | [`experiment`]: config and validation, runner, sanity check |
//! | storage | [`store`] (append-only JSONL, atomic writes, run lock) |
//! | judging | [`judge`]: one file per mode, the verdict grammar, templates as data |
//! | calling models | [`backend`]: local (candle) and OpenAI-compatible HTTP |
//! | generating | [`engine`]: prefill, KV cache, batched decoding, stop conditions |
//! | sampling | [`sampling`]: [`SamplingParams`], presets, the seeded [`Sampler`] |
//! | models | [`model`]: sources, GGUF, tokenizer, chat template, transformer |
//! | statistics | [`analysis`]: summaries, paired comparisons, resampling prompts, agreement |
//! | data | [`records`], [`prompts`], [`keys`], [`error`] |
//!
//! ## Example
//!
//! ```no_run
//! use llm_judge::{Input, Model, SamplingParams};
//!
//! # fn main() -> llm_judge::Result<()> {
//! let mut model = Model::load_named("smollm2-135m-instruct")?;
//! let out = model.generate(
//!     &Input::new(Default::default(), None, "Explain how to bake a chocolate cake without using eggs."),
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
mod evcxr;
pub mod experiment;
pub mod judge;
pub mod keys;
pub mod model;
pub mod plot;
pub mod prompts;
pub mod records;
pub mod results;
pub mod sampling;
pub mod server;
pub mod store;
pub mod table;

pub use engine::{FinishReason, Generation, Timing};
pub use error::{Error, Result};
pub use experiment::Experiment;
pub use judge::JudgeConfig;
pub use model::{Input, Message, Model, ModelSource, PromptFormat};
pub use records::Mode;
pub use results::RunOutput;
pub use sampling::{Sampler, SamplingParams};

/// Everything a notebook cell needs: `use llm_judge::prelude::*;`.
pub mod prelude {
    pub use crate::analysis::{
        Agreement, Comparison, LengthAssociation, Pairs, PositionBias, SummaryRow,
    };
    pub use crate::judge::{ExpectedTotal, Order};
    pub use crate::plot::Figure;
    pub use crate::results::display::{Gallery, Saved};
    pub use crate::results::duel::Duel;
    pub use crate::results::findings::Findings;
    pub use crate::table::HtmlTable;
    pub use crate::{
        Error, Experiment, Input, JudgeConfig, Message, Mode, Model, PromptFormat, Result,
        RunOutput, SamplingParams,
    };
}
