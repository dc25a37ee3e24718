//! Batched generation gives each sequence exactly the output it gets alone.

use crate::common::{gemma, smollm};
use llm_judge::engine::BatchRequest;
use llm_judge::{Generation, Input, Message, Model, SamplingParams};

const PROMPTS: [&str; 5] = [
    "Explain how to bake a chocolate cake without using eggs.",
    "Name three primary colours.",
    "Write a haiku about the sea, then explain its imagery in detail, line by line.",
    "What is 12 times 12?",
    "Give me two tips for sleeping better.",
];

fn requests(m: &Model, params: &[SamplingParams]) -> Vec<BatchRequest> {
    PROMPTS
        .iter()
        .zip(params)
        .map(|(p, params)| {
            let prepared = m.prepare(&Input::new(Default::default(), None, p)).unwrap();
            let mut params = params.clone();
            params.stop.extend(prepared.stops);
            BatchRequest {
                prompt_ids: prepared.ids,
                params,
            }
        })
        .collect()
}

fn batched(m: &mut Model, reqs: &[BatchRequest], max_batch: usize) -> Vec<Generation> {
    let mut out: Vec<Option<Generation>> = vec![None; reqs.len()];
    let mut order = Vec::new();
    m.generate_batch(reqs, max_batch, &mut |i, r| {
        order.push(i);
        out[i] = Some(r?);
        Ok(())
    })
    .unwrap();
    assert_eq!(order.len(), reqs.len(), "every request reports once");
    out.into_iter().map(|g| g.unwrap()).collect()
}

fn check(m: &mut Model, params: Vec<SamplingParams>) {
    let reqs = requests(m, &params);
    let alone: Vec<Generation> = reqs
        .iter()
        .map(|r| m.generate_ids(&r.prompt_ids, &r.params).unwrap())
        .collect();
    // Different lengths finish at different steps, so slots are refilled mid-batch.
    let lens: Vec<usize> = alone.iter().map(|g| g.completion_tokens).collect();
    assert!(lens.iter().any(|l| *l != lens[0]), "{lens:?}");
    for max_batch in [2, 5] {
        let b = batched(m, &reqs, max_batch);
        for (i, (a, b)) in alone.iter().zip(&b).enumerate() {
            assert_eq!(a.tokens, b.tokens, "prompt {i}, batch {max_batch}");
            assert_eq!(a.text, b.text);
            assert_eq!(a.finish_reason, b.finish_reason);
            assert_eq!(a.logprobs, b.logprobs, "prompt {i}, batch {max_batch}");
        }
    }
}

fn mixed(max: usize) -> Vec<SamplingParams> {
    vec![
        SamplingParams::greedy().with_max_new_tokens(max),
        SamplingParams::p1().with_seed(1).with_max_new_tokens(max),
        SamplingParams::p2()
            .with_seed(2)
            .with_max_new_tokens(max / 2),
        SamplingParams::neutral()
            .with_top_p(0.9)
            .with_seed(3)
            .with_max_new_tokens(max),
        SamplingParams::greedy()
            .with_max_new_tokens(max)
            .with_stop("."),
    ]
}

#[test]
fn smollm_batched_equals_alone_greedy_and_seeded() {
    let mut m = smollm();
    check(
        &mut m,
        vec![SamplingParams::greedy().with_max_new_tokens(40); 5],
    );
    check(&mut m, mixed(40));
}

#[test]
fn gemma_batched_equals_alone() {
    let mut m = gemma();
    check(&mut m, mixed(24));
}

#[test]
fn a_failing_request_does_not_stop_the_batch() {
    let mut m = smollm();
    let mut reqs = requests(&m, &mixed(8));
    reqs[1].prompt_ids = vec![1; m.context_length() + 5];
    let mut results: Vec<(usize, bool)> = Vec::new();
    m.generate_batch(&reqs, 3, &mut |i, r| {
        results.push((i, r.is_ok()));
        Ok(())
    })
    .unwrap();
    results.sort();
    assert_eq!(
        results,
        vec![(0, true), (1, false), (2, true), (3, true), (4, true)]
    );
}

#[test]
fn judge_prefix_cache_gives_the_same_distribution_as_a_fresh_model() {
    use llm_judge::backend::{Backend, LabelQuery, LocalBackend};
    let model = smollm();
    let mut reused = LocalBackend::new(model.clone());
    let labels: Vec<String> = (1..=4).map(|k| k.to_string()).collect();
    let ask = |answer: &str| LabelQuery {
        input: Input::Chat(vec![
            Message::system("You are a strict grader. Score the answer from 1 to 4."),
            Message::user(format!(
                "Question: Name three primary colours.\nAnswer: {answer}\nReply as Score: [[n]]"
            )),
        ]),
        prefix: "Score: [[".into(),
        labels: labels.clone(),
    };
    // Different answers share the instructions and question; the same answer asked again
    // is served from the cache; a shorter prompt is a prefix of the cached one.
    for answer in [
        "Red, yellow and blue.",
        "Potatoes.",
        "Red, yellow and blue.",
        "Red",
    ] {
        let got = reused.label_distribution(&ask(answer)).unwrap();
        let want = LocalBackend::new(model.clone())
            .label_distribution(&ask(answer))
            .unwrap();
        for (a, b) in got.probs.iter().zip(&want.probs) {
            assert!(
                (a - b).abs() < 2e-3,
                "{answer}: {:?} vs {:?}",
                got.probs,
                want.probs
            );
        }
        assert!((got.mass - want.mass).abs() < 2e-3);
        assert!(got.mass > 0.0 && got.mass <= 1.0 + 1e-9);
    }
}
