//! Any text as a prompt set: prompts or an error naming the line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = llm_judge::prompts::parse_prompts(text, "fuzz.jsonl");
});
