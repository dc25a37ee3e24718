//! Integration tests on the real bundled models (fetched on first use, then reused).

mod batch;
mod cli;
mod common;
mod engine;
mod experiment;
mod fuzz;
mod hf;
mod hub;
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod pages;
mod panel;
mod qwen2;
mod remote;
mod serve;
mod tokenizer;
