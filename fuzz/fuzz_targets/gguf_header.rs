//! Any bytes as a GGUF file: opening it is an error or a file, never a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("llm-judge-fuzz-{}.gguf", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = llm_judge::model::GgufFile::open(&path);
    }
});
