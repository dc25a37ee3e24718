//! Integration tests on the real bundled models (fetched on first use, then reused).

mod batch;
mod cli;
mod common;
mod engine;
mod experiment;
mod fuzz;
mod hf;
mod hub;
mod panel;
mod qwen2;
mod remote;
mod serve;
mod tokenizer;
