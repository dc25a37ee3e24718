//! Batched generation gives each sequence exactly the output it gets alone.

use crate::common::{gemma, qwen, smollm};
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
fn qwen_batched_equals_alone() {
    let mut m = qwen();
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

/// Expected-score queries as a judge run asks them: one instruction and question, several
/// answers, each up to a criterion's score; and one answer with its next criterion.
fn label_queries() -> Vec<llm_judge::backend::LabelQuery> {
    let system = "You are a strict grader. Score the answer from 1 (poor) to 4 (excellent) for \
                  each criterion, in the form `Criterion: [[score]]`.";
    let question = "Explain how to bake a chocolate cake without using eggs.";
    let answers = [
        "Mix flour, sugar, cocoa and baking soda; whisk in oil, vinegar and water; bake 30 min.",
        "Use mashed banana or apple sauce instead of eggs, and bake at 180 C.",
        "I do not know.",
        "Cakes are baked in ovens. Chocolate comes from cocoa beans, grown in the tropics.",
        "Replace each egg with a tablespoon of ground flaxseed in three tablespoons of water; \
         let it thicken, then follow any chocolate cake recipe and bake until a skewer comes \
         out clean.",
    ];
    let mut out = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let input = Input::Chat(vec![
            Message::system(system),
            Message::user(format!("Question: {question}\n\nAnswer: {a}")),
        ]);
        let prefixes: &[&str] = if i == 0 {
            &["Relevance: [[", "Relevance: [[3]]\nCoherence: [["]
        } else {
            &["Relevance: [["]
        };
        for p in prefixes {
            out.push(llm_judge::backend::LabelQuery {
                input: input.clone(),
                prefix: p.to_string(),
                labels: (1..=4).map(|k| k.to_string()).collect(),
            });
        }
    }
    out
}

/// Every token id whose trimmed text is `1`..`4`.
fn score_ids(m: &Model) -> Vec<Vec<u32>> {
    let tok = m.tokenizer();
    (1..=4)
        .map(|k| {
            (0..tok.vocab_size() as u32)
                .filter(|&i| tok.decode(&[i], false).unwrap().trim() == k.to_string())
                .collect()
        })
        .collect()
}

/// The distribution over the scores after `ids[start..]` continues `cache`.
fn reference_distribution(
    m: &mut Model,
    cache: &mut llm_judge::model::KvCache,
    tail: &[u32],
    labels: &[Vec<u32>],
) -> llm_judge::backend::LabelDistribution {
    let logits = m.transformer().forward(tail, cache, false).unwrap();
    let lp: Vec<f32> = candle_nn::ops::log_softmax(&logits.squeeze(0).unwrap(), 0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let raw = labels
        .iter()
        .map(|ids| ids.iter().map(|&t| (lp[t as usize] as f64).exp()).sum())
        .collect();
    llm_judge::backend::LabelDistribution::from_raw(raw).unwrap()
}

#[test]
fn segments_of_several_caches_equal_each_alone() {
    for mut m in [smollm(), gemma(), qwen()] {
        let texts = [
            "Name three primary colours.",
            "What is 12 times 12? Explain briefly.",
            "Hi",
        ];
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                m.prepare(&Input::new(Default::default(), None, t))
                    .unwrap()
                    .ids
            })
            .collect();
        // Caches at different lengths, continued by suffixes of different lengths, one of
        // them a single token (the unmasked step).
        let cuts = [5, 9, ids[2].len() - 1];
        let t = m.transformer();
        let mut bases = Vec::new();
        for (p, &cut) in ids.iter().zip(&cuts) {
            let mut c = t.new_cache();
            t.forward(&p[..cut], &mut c, false).unwrap();
            bases.push(c);
        }
        let suffixes: Vec<&[u32]> = ids.iter().zip(&cuts).map(|(p, &c)| &p[c..]).collect();
        let alone: Vec<Vec<f32>> = bases
            .iter()
            .zip(&suffixes)
            .map(|(c, s)| {
                let mut c = c.deep_copy().unwrap();
                t.forward(s, &mut c, false)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let mut copies: Vec<_> = bases.iter().map(|c| c.deep_copy().unwrap()).collect();
        let mut refs: Vec<&mut llm_judge::model::KvCache> = copies.iter_mut().collect();
        let together: Vec<Vec<f32>> = t
            .forward_segments(&suffixes, &mut refs)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(together, alone);
        for ((c, b), p) in copies.iter().zip(&bases).zip(&ids) {
            assert_eq!(c.len(), p.len());
            assert!(b.len() < p.len(), "the originals are untouched");
        }
        assert!(t.forward_segments(&[&[]], &mut [&mut bases[0]]).is_err());
    }
}

#[test]
fn expected_scores_batched_equal_each_query_alone_from_the_same_cache() {
    use llm_judge::backend::{Backend, LocalBackend};
    for model in [smollm(), gemma(), qwen()] {
        let mut m = model.clone();
        assert!(m.transformer().rows_independent());
        let labels = score_ids(&m);
        let queries = label_queries();
        // Round 1: every answer's first criterion. Round 2: the next criterion of the same
        // answers, as a judge run asks after the first round's argmax.
        let round1: Vec<_> = queries
            .iter()
            .filter(|q| !q.prefix.contains("Coherence"))
            .cloned()
            .collect();
        let round2: Vec<_> = round1
            .iter()
            .map(|q| llm_judge::backend::LabelQuery {
                prefix: format!("{}2]]\nCoherence: [[", q.prefix),
                ..q.clone()
            })
            .collect();
        let mut backend = LocalBackend::new(model.clone()).with_max_batch(3);
        let mut ask = |qs: &[llm_judge::backend::LabelQuery]| {
            let mut got = vec![None; qs.len()];
            backend
                .label_distributions(qs, &mut |i, r| {
                    got[i] = Some(r.unwrap());
                    Ok(())
                })
                .unwrap();
            got.into_iter().map(Option::unwrap).collect::<Vec<_>>()
        };
        let (got1, got2) = (ask(&round1), ask(&round2));

        // Reference: the shared prefix once; round 1 continues it, round 2 continues each
        // answer's round-1 cache, each through the plain forward pass.
        let prompt = |m: &Model, q: &llm_judge::backend::LabelQuery| {
            m.prepare_continuation(&q.input, &q.prefix).unwrap().ids
        };
        let ids1: Vec<Vec<u32>> = round1.iter().map(|q| prompt(&m, q)).collect();
        let keep = ids1
            .iter()
            .map(|p| p.iter().zip(&ids1[0]).take_while(|(a, b)| a == b).count())
            .min()
            .unwrap();
        let mut head = m.transformer().new_cache();
        m.transformer()
            .forward(&ids1[0][..keep], &mut head, false)
            .unwrap();
        let mut after1 = Vec::new();
        for (i, p) in ids1.iter().enumerate() {
            let mut c = head.deep_copy().unwrap();
            let want = reference_distribution(&mut m, &mut c, &p[keep..], &labels);
            assert_eq!(got1[i], want, "round 1, query {i}");
            after1.push(c);
        }
        for (i, q) in round2.iter().enumerate() {
            let p = prompt(&m, q);
            let shared = p.iter().zip(&ids1[i]).take_while(|(a, b)| a == b).count();
            assert!(shared > keep, "round 2 continues its answer");
            let mut c = after1[i].deep_copy().unwrap();
            c.truncate(shared);
            let want = reference_distribution(&mut m, &mut c, &p[shared..], &labels);
            assert_eq!(got2[i], want, "round 2, query {i}");
        }
    }
}

#[test]
fn pairs_that_share_a_question_or_a_first_answer_score_as_each_pair_alone() {
    // A window of pairwise-expected queries as a judge run sends them: two questions, each
    // pair in both orders, so the pairs that show the same answer first share it. The
    // scorer runs each shared prefix once (the instructions, each question, each first
    // answer); every distribution must equal the query scored alone on a fresh cache.
    use llm_judge::backend::{Backend, LabelQuery, LocalBackend};
    let system = "Compare the two answers to the question and say which is better.";
    let questions = [
        (
            "Explain how to bake a chocolate cake without using eggs.",
            [
                "Use mashed banana or apple sauce instead of eggs, and bake at 180 C.",
                "Replace each egg with a tablespoon of ground flaxseed in three tablespoons \
                 of water; let it thicken, then follow any chocolate cake recipe.",
                "I do not know.",
            ],
        ),
        (
            "Why is the sky blue?",
            [
                "Air scatters short (blue) wavelengths of sunlight more than long ones.",
                "Because the ocean reflects onto it, which is a common misconception.",
                "Rayleigh scattering: the scattered intensity goes as the inverse fourth \
                 power of the wavelength, so blue light is scattered most.",
            ],
        ),
    ];
    let mut queries = Vec::new();
    for (question, answers) in questions {
        for (a, b) in [(0, 1), (0, 2), (1, 0), (2, 0), (1, 2), (2, 1)] {
            let user = format!(
                "Question: {question}\n\n[Answer A]\n{}\n\n[Answer B]\n{}\n\nReply [[A]] or [[B]].",
                answers[a], answers[b]
            );
            queries.push(LabelQuery {
                input: Input::Chat(vec![Message::system(system), Message::user(user)]),
                prefix: "[[".into(),
                labels: vec!["A".into(), "B".into()],
            });
        }
    }
    // With no memory for shared prefixes the batch runs question by question instead: the
    // same numbers, and still each question's prefixes once.
    let mut positions = Vec::new();
    for (model, budget) in [(smollm(), None), (qwen(), None), (smollm(), Some(1))] {
        let mut batched = LocalBackend::new(model.clone()).with_max_batch(4);
        if let Some(bytes) = budget {
            batched = batched.with_node_budget(bytes);
        }
        let mut got = vec![None; queries.len()];
        batched
            .label_distributions(&queries, &mut |i, r| {
                got[i] = Some(r.unwrap());
                Ok(())
            })
            .unwrap();
        let mut total = 0;
        for (i, q) in queries.iter().enumerate() {
            let mut fresh = LocalBackend::new(model.clone());
            let alone = fresh.label_distribution(q).unwrap();
            assert_eq!(got[i].as_ref(), Some(&alone), "query {i}");
            total += fresh.prompt_positions_run();
        }
        // Each question's text and each answer shown first ran once, not once per query:
        // the batch ran well under two thirds of the positions the queries hold.
        let ran = batched.prompt_positions_run();
        assert!(ran * 3 < total * 2, "{ran} of {total} positions");
        positions.push(ran);
    }
    assert_eq!(
        positions[2], positions[0],
        "grouped or not, each prefix runs once"
    );
}

#[test]
fn a_re_ask_continues_its_transcript_and_replies_as_a_fresh_model_does() {
    // A judge's re-ask repeats the whole transcript (the prompt, the reply, a reminder). The
    // backend continues the cache of the reply it generated instead of reading the
    // transcript again; the re-ask's reply must be what a fresh model gives for it.
    use llm_judge::backend::{Backend, LocalBackend};
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 24,
        ..Default::default()
    };
    let first = Input::Chat(vec![
        Message::system("You are a careful judge."),
        Message::user(
            "Score each answer from 3 to 12.\n\nResponse 1: Paris is the capital of France.\n\
             Response 2: The capital of France is Lyon.\n\nWrite `Response k: total` lines.",
        ),
    ]);
    for model in [smollm(), qwen()] {
        let mut cached = LocalBackend::new(model.clone());
        // Each reply decodes in a batch beside another one, as a judge's calls do.
        let other = Input::Chat(vec![Message::user("Name three colours.")]);
        let run = |b: &mut LocalBackend, input: &Input| {
            let mut out = None;
            let requests = [
                (input.clone(), params.clone()),
                (other.clone(), params.clone()),
            ];
            b.generate_batch(&requests, &mut |i, r| {
                let g = r.unwrap();
                if i == 0 {
                    out = Some(g);
                }
                Ok(())
            })
            .unwrap();
            out.unwrap()
        };
        let reply = run(&mut cached, &first);
        let Input::Chat(mut messages) = first.clone() else {
            unreachable!()
        };
        messages.push(Message::assistant(reply.text.clone()));
        messages.push(Message::user(
            "Reply again, one line `Response k: total` per response and nothing else.",
        ));
        let again = Input::Chat(messages);
        let before = cached.prompt_positions_run();
        let continued = run(&mut cached, &again);
        let ran = cached.prompt_positions_run() - before;
        let fresh = run(&mut LocalBackend::new(model.clone()), &again);
        assert_eq!(continued.tokens, fresh.tokens);
        assert_eq!(continued.logprobs, fresh.logprobs);
        // Only the reminder (and the reply's end) ran: the transcript came from the cache.
        assert!(
            ran < fresh.prompt_tokens / 3,
            "{ran} of {} prompt positions ran",
            fresh.prompt_tokens
        );
    }
}
