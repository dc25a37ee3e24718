//! Any text as an experiment file: a configuration or an error naming the problem.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::env::temp_dir().join(format!("llm-judge-fuzz-{}.toml", std::process::id()));
    if std::fs::write(&path, text).is_ok() {
        if let Ok(c) = llm_judge::experiment::ExperimentConfig::load(&path) {
            let _ = c.plan();
        }
    }
});
