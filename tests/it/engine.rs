//! Generation on the real models.

use crate::common::{gemma, smollm};
use llm_judge::{FinishReason, Message, SamplingParams};

const CAKE: &str = "Explain how to bake a chocolate cake without using eggs.";

#[test]
fn greedy_answer_is_on_topic_english() {
    let mut m = smollm();
    let out = m
        .generate(
            &[Message::user(CAKE)],
            &SamplingParams::greedy().with_max_new_tokens(80),
        )
        .unwrap();
    let lower = out.text.to_lowercase();
    assert!(
        lower.contains("cake") || lower.contains("chocolate"),
        "{}",
        out.text
    );
    let letters = out.text.chars().filter(|c| c.is_ascii_alphabetic()).count();
    assert!(
        letters * 2 > out.text.len(),
        "not mostly English: {}",
        out.text
    );
    assert_eq!(out.logprobs.len(), out.completion_tokens);
    assert!(out.logprobs.iter().all(|l| *l <= 0.0 && l.is_finite()));
    assert!(out.timing.decode_tok_per_s > 0.0 && out.timing.prompt_tok_per_s > 0.0);
    assert_eq!(out.template, llm_judge::model::TemplateSource::Model);
}

#[test]
fn gemma_completes_a_fact() {
    let mut g = gemma();
    let out = g
        .complete(
            "Water boils at a temperature of",
            &SamplingParams::greedy().with_max_new_tokens(8),
        )
        .unwrap();
    // llama.cpp gives " 100 degrees Celsius." on the same file.
    assert!(out.text.starts_with(" 100 degrees Celsius"), "{}", out.text);
}

#[test]
fn same_seed_same_output() {
    let mut m = smollm();
    let p = SamplingParams::p2().with_seed(11).with_max_new_tokens(40);
    let a = m.generate(&[Message::user(CAKE)], &p).unwrap();
    let b = m.generate(&[Message::user(CAKE)], &p).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    let c = m
        .generate(&[Message::user(CAKE)], &p.clone().with_seed(12))
        .unwrap();
    assert_ne!(
        a.tokens, c.tokens,
        "different seeds gave identical samples at T=1.5"
    );
}

#[test]
fn length_and_stop_string_finish_reasons() {
    let mut m = smollm();
    let out = m
        .generate(
            &[Message::user(CAKE)],
            &SamplingParams::greedy().with_max_new_tokens(5),
        )
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.completion_tokens, 5);

    let full = m
        .generate(
            &[Message::user(CAKE)],
            &SamplingParams::greedy().with_max_new_tokens(40),
        )
        .unwrap();
    // Stop at a word that occurs in the greedy answer: the text ends right before it.
    let word = full
        .text
        .split_whitespace()
        .nth(4)
        .expect("answer has words")
        .to_string();
    let cut = full.text.find(&word).unwrap();
    let stopped = m
        .generate(
            &[Message::user(CAKE)],
            &SamplingParams::greedy()
                .with_max_new_tokens(40)
                .with_stop(word.clone()),
        )
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::StopString);
    assert_eq!(stopped.text, full.text[..cut]);
}

#[test]
fn chat_answer_ends_at_end_of_turn() {
    let mut m = smollm();
    let out = m
        .generate(
            &[Message::user("Say hello.")],
            &SamplingParams::greedy().with_max_new_tokens(200),
        )
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop, "{}", out.text);
    assert!(!out.text.contains("<|im_end|>"));
}

/// Mean negative log-likelihood per token of a text, from one forward pass.
fn perplexity(m: &mut llm_judge::Model, text: &str) -> f64 {
    let ids = m
        .tokenizer()
        .encode(text, m.tokenizer().adds_bos())
        .unwrap();
    let mut cache = m.transformer().new_cache();
    let logits = m.transformer().forward(&ids, &mut cache, true).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    let lp: Vec<Vec<f32>> = lp.to_vec2().unwrap();
    let nll: f64 = (0..ids.len() - 1)
        .map(|i| -(lp[i][ids[i + 1] as usize] as f64))
        .sum();
    (nll / (ids.len() - 1) as f64).exp()
}

const PARAGRAPH: &str = "The water cycle describes how water moves on, above and below the surface of the Earth. \
Water evaporates from oceans and lakes, rises into the atmosphere, cools and condenses into clouds, \
and falls back to the surface as rain or snow. Some of it flows into rivers and back to the sea, \
while some soaks into the ground and becomes groundwater.";

#[test]
fn perplexity_is_that_of_a_working_model() {
    // A wrong activation, norm or RoPE layout roughly doubles perplexity or worse.
    let p = perplexity(&mut smollm(), PARAGRAPH);
    assert!(p < 20.0, "SmolLM2 perplexity {p}");
    let p = perplexity(&mut gemma(), PARAGRAPH);
    assert!(p < 20.0, "Gemma 3 perplexity {p}");
}

#[test]
fn chunked_prefill_matches_one_pass() {
    for mut m in [smollm(), gemma()] {
        let ids = m.tokenizer().encode_prompt(PARAGRAPH).unwrap();
        let mut c1 = m.transformer().new_cache();
        let one: Vec<f32> = m
            .transformer()
            .forward(&ids, &mut c1, false)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut c2 = m.transformer().new_cache();
        let half = ids.len() / 2;
        m.transformer()
            .forward(&ids[..half], &mut c2, false)
            .unwrap();
        let two: Vec<f32> = m
            .transformer()
            .forward(&ids[half..], &mut c2, false)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let max_diff = one
            .iter()
            .zip(&two)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(
            llm_judge::sampling::argmax(&one),
            llm_judge::sampling::argmax(&two)
        );
        assert!(max_diff < 1.0, "max logit difference {max_diff}");
    }
}

#[test]
fn gemma_sliding_window_long_prompt_runs() {
    // Longer than the 512-token window: exercises the window mask and cache trimming.
    let mut g = gemma();
    let text = PARAGRAPH.repeat(12);
    let ids = g.tokenizer().encode_prompt(&text).unwrap();
    assert!(ids.len() > 700, "{}", ids.len());
    let out = g
        .generate_ids(&ids, &SamplingParams::greedy().with_max_new_tokens(12))
        .unwrap();
    assert_eq!(out.completion_tokens, 12);
    assert!(!out.text.trim().is_empty());
}

#[test]
fn context_overflow_is_an_error() {
    let mut m = smollm();
    let ids = vec![100u32; m.context_length()];
    let err = m.generate_ids(&ids, &SamplingParams::greedy()).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
