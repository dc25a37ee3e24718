//! Generation on the real models.

use crate::common::{gemma, qwen, smollm};
use llm_judge::{FinishReason, Input, SamplingParams};

const CAKE: &str = "Explain how to bake a chocolate cake without using eggs.";

fn chat(text: &str) -> Input {
    Input::new(Default::default(), None, text)
}

#[test]
fn greedy_answer_is_on_topic_english() {
    let mut m = smollm();
    let out = m
        .generate(
            &chat(CAKE),
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
    assert_eq!(out.template, llm_judge::model::TemplateKind::Model);
}

#[test]
fn gemma_completes_a_fact() {
    let mut g = gemma();
    let out = g
        .generate(
            &Input::Raw("Water boils at a temperature of".into()),
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
    let a = m.generate(&chat(CAKE), &p).unwrap();
    let b = m.generate(&chat(CAKE), &p).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    let c = m.generate(&chat(CAKE), &p.clone().with_seed(12)).unwrap();
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
            &chat(CAKE),
            &SamplingParams::greedy().with_max_new_tokens(5),
        )
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.completion_tokens, 5);

    let full = m
        .generate(
            &chat(CAKE),
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
            &chat(CAKE),
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
            &chat("Say hello."),
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

/// Logits of the last position of `ids` on a fresh cache.
fn last_logits(t: &mut llm_judge::model::Transformer, ids: &[u32]) -> Vec<f32> {
    let mut c = t.new_cache();
    t.forward(ids, &mut c, false)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = v.iter().map(|x| (*x as f64 - m).exp()).sum::<f64>().ln() + m;
    v.iter().map(|x| *x as f64 - z).collect()
}

#[test]
fn long_prompts_match_an_unchunked_reference_token_by_token() {
    // A prompt longer than one prefill chunk (512 tokens) and, for Gemma, than its 512-token
    // sliding window: the chunked prefill, the cache and the decoding steps past the window
    // must give exactly what one unchunked pass over the same tokens gives. Every operation
    // computes a position's row on its own, in an order that does not depend on how many
    // rows run with it (our kernels, the row-by-row attention), so the logits are the same
    // bits, and a wrong mask, window or cache position cannot hide in a tolerance.
    use llm_judge::model::transformer::PREFILL_CHUNK;
    for (name, mut m) in [
        ("smollm2", smollm()),
        ("gemma3", gemma()),
        ("qwen2", qwen()),
    ] {
        let ids = m.tokenizer().encode_prompt(&PARAGRAPH.repeat(10)).unwrap();
        assert!(
            ids.len() > PREFILL_CHUNK + 100,
            "{name}: {} tokens",
            ids.len()
        );
        if let Some(w) = m.transformer().config().sliding_window {
            assert!(ids.len() > w + 100, "{name}: longer than the window");
        }
        let mut reference = m.transformer().clone().with_prefill_chunk(100_000);
        let chunked = last_logits(m.transformer(), &ids);
        let whole = last_logits(&mut reference, &ids);
        assert_eq!(chunked, whole, "{name}: chunked vs unchunked prefill");
        // The split need not fall on a chunk boundary: a prompt continued from a cache cut
        // anywhere gives the same bits too.
        for cut in [1, 300, ids.len() - 1] {
            let mut cache = m.transformer().new_cache();
            m.transformer()
                .forward(&ids[..cut], &mut cache, false)
                .unwrap();
            let rest: Vec<f32> = m
                .transformer()
                .forward(&ids[cut..], &mut cache, false)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(rest, whole, "{name}: cache cut at {cut}");
        }
        // Decode 16 greedy tokens past the prompt, then check the decoding path's choices
        // against unchunked passes over the prompt plus what was generated so far.
        let out = m
            .generate_ids(&ids, &SamplingParams::greedy().with_max_new_tokens(16))
            .unwrap();
        assert_eq!(out.completion_tokens, 16, "{name}");
        for k in [1usize, 8, 15] {
            let mut prefix = ids.clone();
            prefix.extend_from_slice(&out.tokens[..k]);
            let logits = last_logits(&mut reference, &prefix);
            assert_eq!(
                llm_judge::sampling::argmax(&logits),
                out.tokens[k],
                "{name}: token {k} differs from the unchunked reference"
            );
            let lp = out.logprobs[k] as f64;
            let want = log_softmax(&logits)[out.tokens[k] as usize];
            // The same logits; only the log-softmax is computed in another precision here.
            assert!(
                (lp - want).abs() < 1e-4,
                "{name}: logprob {k}: {lp} vs {want}"
            );
        }
    }
}

#[test]
fn context_overflow_is_an_error() {
    let mut m = smollm();
    let ids = vec![100u32; m.context_length()];
    let err = m.generate_ids(&ids, &SamplingParams::greedy()).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
