//! Property tests with fixed seeds and a bounded number of cases: hostile or damaged input
//! gives a clear error, never a panic. (Longer runs: the cargo-fuzz targets in `fuzz/`.)

use crate::common::{model_path, prompts_file, TempDir};
use llm_judge::model::bundled;
use llm_judge::model::GgufFile;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

/// Runs `f`, failing the test with `what` if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("panicked on {what}"),
    }
}

#[test]
fn damaged_gguf_headers_are_errors() {
    let path = model_path(&bundled::SMOLLM2);
    let bytes = std::fs::read(&path).unwrap();
    // The header (metadata and tensor table) is the first couple of megabytes.
    let header_len = {
        let mut f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        candle_core::quantized::gguf_file::Content::read(&mut f)
            .unwrap()
            .tensor_data_offset as usize
    };
    let prefix = &bytes[..header_len + 4096];
    let dir = TempDir::new("fuzz-gguf");
    let mut r = rng(1);
    for case in 0..120 {
        let mut b = prefix.to_vec();
        let kind = case % 4;
        match kind {
            // Bit flips anywhere in the header.
            0 => {
                for _ in 0..r.random_range(1..8) {
                    let i = r.random_range(0..header_len);
                    b[i] ^= 1 << r.random_range(0..8);
                }
            }
            // Truncation.
            1 => b.truncate(r.random_range(0..b.len())),
            // A huge count or length where the header keeps its counts and first lengths.
            2 => {
                let at = [8usize, 16, 24, 32][r.random_range(0..4)];
                let v: u64 = [u64::MAX, u64::MAX / 2, 1 << 40, 1 << 33][r.random_range(0..4)];
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            // Random bytes over a stretch.
            _ => {
                let i = r.random_range(0..header_len);
                let n = r.random_range(1..64).min(b.len() - i);
                for x in &mut b[i..i + n] {
                    *x = r.random();
                }
            }
        }
        let p = dir.0.join(format!("case{case}.gguf"));
        std::fs::write(&p, &b).unwrap();
        let opened = no_panic(&format!("GGUF case {case} (kind {kind})"), || {
            GgufFile::open(&p)
        });
        // The prefix holds no tensor data: every case must fail, with the file named.
        let err = opened
            .expect_err("a header-only file cannot open")
            .to_string();
        assert!(err.contains(&p.display().to_string()), "case {case}: {err}");
    }
}

const PIECES: &[&str] = &[
    "Response",
    "Answer",
    " ",
    "1",
    "2",
    "3",
    "4",
    "9",
    "12",
    "13",
    ":",
    "-",
    "=",
    "[[",
    "]]",
    "**",
    "Total",
    "total",
    "Relevance",
    "Coherence",
    "Completeness",
    "\n",
    "Winner",
    "winner",
    "A",
    "B",
    "C",
    "draw",
    "tie",
    "is the",
    "/",
    "#",
    ".",
    ")",
    "é",
    "\u{2019}",
    "Response 1:",
    "[[A]]",
    "if",
];

/// Metadata values that parse but make no sense (no heads, heads that kv heads do not divide)
/// are clear errors naming the key, not a division by zero; a tensor offset that overflows
/// is an error naming the file.
#[test]
fn nonsense_metadata_values_are_errors() {
    let path = model_path(&bundled::SMOLLM2);
    let bytes = std::fs::read(&path).unwrap();
    // Each value follows its key: u32 type tag, then the value.
    let value_at = |key: &str| -> usize {
        let mut k = (key.len() as u64).to_le_bytes().to_vec();
        k.extend_from_slice(key.as_bytes());
        let i = bytes
            .windows(k.len())
            .position(|w| w == k.as_slice())
            .unwrap_or_else(|| panic!("{key} not in the file"));
        i + k.len()
    };
    let dir = TempDir::new("fuzz-meta");
    // Counts that would allocate terabytes before the tensors are read (these aborted the
    // process), a count of layers the file does not hold, and one that leaves layers unused.
    let cases = [
        ("llama.attention.head_count", 0u32),
        ("llama.attention.head_count_kv", 2),
        ("llama.block_count", u32::MAX),
        ("llama.block_count", 0),
        ("llama.block_count", 29),
        ("llama.embedding_length", 0x7FFF_FFFF),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let at = value_at(key);
        assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
        let mut b = bytes.clone();
        b[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
        let p = dir.0.join(format!("meta{i}.gguf"));
        std::fs::write(&p, &b).unwrap();
        let source: llm_judge::model::ModelSource = p.to_str().unwrap().parse().unwrap();
        let err = no_panic(&format!("{key} = {value}"), || {
            llm_judge::model::inspect(&source)
        })
        .expect_err("nonsense metadata must not load")
        .to_string();
        assert!(err.contains(key), "{key} = {value}: {err}");
    }
    // An epsilon that is not a number.
    let key = "llama.attention.layer_norm_rms_epsilon";
    let at = value_at(key);
    assert_eq!(bytes[at..at + 4], 6u32.to_le_bytes(), "{key} is an f32");
    let mut b = bytes.clone();
    b[at + 4..at + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    let p = dir.0.join("eps.gguf");
    std::fs::write(&p, &b).unwrap();
    let source: llm_judge::model::ModelSource = p.to_str().unwrap().parse().unwrap();
    let err = no_panic("eps = NaN", || llm_judge::model::inspect(&source))
        .expect_err("a NaN epsilon must not load")
        .to_string();
    assert!(err.contains(key), "{err}");
    // A tensor offset so large that offset + size overflows: an error, not a wrap-around.
    let name = "output_norm.weight";
    let at = value_at(name);
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let offset_at = at + 4 + 8 * dims + 4;
    let mut b = bytes.clone();
    b[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 16).to_le_bytes());
    let p = dir.0.join("offset.gguf");
    std::fs::write(&p, &b).unwrap();
    let err = no_panic("an overflowing tensor offset", || GgufFile::open(&p))
        .expect_err("an offset past the end must not open")
        .to_string();
    assert!(err.contains(&p.display().to_string()), "{err}");
}

#[test]
fn verdict_parsers_never_panic_and_stay_in_range() {
    use llm_judge::judge::parse::*;
    let crit: Vec<String> = ["Relevance", "Coherence", "Completeness"]
        .map(String::from)
        .to_vec();
    let mut r = rng(2);
    for case in 0..2000 {
        let n = r.random_range(0..40);
        let text: String = (0..n)
            .map(|_| PIECES[r.random_range(0..PIECES.len())])
            .collect();
        no_panic(&format!("verdict case {case}: {text:?}"), || {
            for s in criteria_scores(&text, &crit, 4).into_iter().flatten() {
                assert!((1..=4).contains(&s));
            }
            for v in listwise_totals(&text, "Response {k}", 4, &crit, 4) {
                assert!(v.total.is_none_or(|t| (3..=12).contains(&t)), "{text:?}");
            }
            for v in listwise_criteria(&text, "Answer {k}", 4, &crit, 4) {
                assert!(v
                    .criteria
                    .into_iter()
                    .flatten()
                    .all(|s| (1..=4).contains(&s)));
                assert!(v.total.is_none_or(|t| (3..=12).contains(&t)), "{text:?}");
            }
            bracket_verdict(&text, true);
            winner_verdict(&text);
            strip_echo(&text, &["Response 1".into()], &[&text]);
        });
    }
}

#[test]
fn damaged_experiment_files_and_prompt_sets_are_errors() {
    let dir = TempDir::new("fuzz-config");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = std::fs::read_to_string(root.join("data/experiments/writeup-offline.toml"))
        .unwrap()
        .replace(
            "../prompts/writeup.jsonl",
            &prompts_file().display().to_string(),
        );
    let jsonl = std::fs::read_to_string(prompts_file()).unwrap();
    let mutate = |r: &mut rand_chacha::ChaCha8Rng, text: &str| -> String {
        let mut c: Vec<char> = text.chars().collect();
        for _ in 0..r.random_range(1..6) {
            let i = r.random_range(0..c.len().max(1));
            match r.random_range(0..4) {
                0 if !c.is_empty() => {
                    c.remove(i.min(c.len() - 1));
                }
                1 => c.insert(
                    i.min(c.len()),
                    ['"', '[', ']', '=', '\n', '0', '9', '-', '\u{feff}'][r.random_range(0..9)],
                ),
                2 if !c.is_empty() => {
                    let (j, k) = (r.random_range(0..c.len()), i.min(c.len() - 1));
                    c.swap(k, j);
                }
                _ => {
                    let digits = [
                        "0",
                        "-1",
                        "1e309",
                        "4294967295",
                        "18446744073709551616",
                        "nan",
                    ];
                    let s = digits[r.random_range(0..digits.len())];
                    for (k, ch) in s.chars().enumerate() {
                        c.insert((i + k).min(c.len()), ch);
                    }
                }
            }
        }
        c.into_iter().collect()
    };
    let mut r = rng(3);
    for case in 0..300 {
        let t = mutate(&mut r, &toml);
        let p = dir.0.join(format!("case{case}.toml"));
        std::fs::write(&p, &t).unwrap();
        no_panic(&format!("experiment case {case}"), || {
            if let Ok(c) = llm_judge::experiment::ExperimentConfig::load(&p) {
                let _ = c.plan();
            }
        });
        let j = mutate(&mut r, &jsonl);
        no_panic(&format!("prompts case {case}"), || {
            let _ = llm_judge::prompts::parse_prompts(&j, "fuzz.jsonl");
        });
    }
}

#[test]
fn hostile_request_bodies_get_answers_not_crashes() {
    let served = crate::remote::serve(&[], &["--max-tokens", "3", "--max-body-bytes", "100000"]);
    let valid = r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.5,"top_p":0.9,"min_p":0.1,"top_k":40,"seed":3,"logprobs":true,"top_logprobs":2,"stop":["x"],"stream":false}"#;
    let chars: Vec<char> = valid.chars().collect();
    let mut r = rng(4);
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    for case in 0..150 {
        let mut c = chars.clone();
        for _ in 0..r.random_range(1..5) {
            let i = r.random_range(0..c.len());
            match r.random_range(0..3) {
                0 => {
                    c.remove(i);
                }
                1 => c.insert(
                    i,
                    ['"', '{', '}', '[', ']', ',', ':', '-', '9', 'e', 'n'][r.random_range(0..11)],
                ),
                _ => c[i] = char::from(r.random_range(32u8..127)),
            }
        }
        let body: String = c.into_iter().collect();
        let status = match agent
            .post(&format!("{}/chat/completions", served.base))
            .send_string(&body)
        {
            Ok(resp) => resp.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("case {case}: no answer ({e}) to {body}"),
        };
        assert!(
            matches!(status, 200 | 400 | 413),
            "case {case}: {status} for {body}"
        );
    }
    // Still serving.
    let ok = agent
        .post(&format!("{}/chat/completions", served.base))
        .send_string(valid)
        .unwrap();
    assert_eq!(ok.status(), 200);
}
