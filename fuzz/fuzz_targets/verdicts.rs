//! Any text as a judge's reply: every parser returns, in range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_judge::judge::parse::*;

fuzz_target!(|text: &str| {
    let crit: Vec<String> = ["Relevance", "Coherence", "Completeness"].map(String::from).to_vec();
    for s in criteria_scores(text, &crit, 4).into_iter().flatten() {
        assert!((1..=4).contains(&s));
    }
    for v in listwise_totals(text, "Response {k}", 4, &crit, 4) {
        assert!(v.total.is_none_or(|t| (3..=12).contains(&t)));
    }
    let _ = listwise_criteria(text, "Answer {k}", 4, &crit, 4);
    let _ = bracket_verdict(text, true);
    let _ = winner_verdict(text);
});
