//! Hugging Face checkpoints and LoRA adapters, on real weights built from the bundled
//! SmolLM2: every tensor dequantised to f32 and written twice, as a safetensors checkpoint
//! (Q/K rows back in the trained layout, `config.json`, the rebuilt `tokenizer.json`, the chat
//! template in `tokenizer_config.json`) and as an f32 GGUF file. The two loaders must agree.

use crate::common::{model_path, prompts_file, smollm, TempDir};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use llm_judge::model::bundled;
use llm_judge::model::gguf::GgufFile;
use llm_judge::{Input, Model, ModelSource, SamplingParams};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The converted model: `(checkpoint folder, f32 GGUF file)`, built once per machine under
/// the test target folder (atomically: a half-written fixture is never reused).
pub fn converted() -> (PathBuf, PathBuf) {
    static CELL: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    CELL.get_or_init(|| {
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let src = model_path(&bundled::SMOLLM2);
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("smollm2-f32-{}", &bundled::SMOLLM2.sha256[..12]));
        let done = (root.join("hf"), root.join("smollm2-f32.gguf"));
        if root.join("complete").is_file() {
            return done;
        }
        let tmp = root.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("hf")).unwrap();
        convert(&src, &tmp.join("hf"), &tmp.join("smollm2-f32.gguf"));
        std::fs::write(tmp.join("complete"), "").unwrap();
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).unwrap();
        done
    })
    .clone()
}

/// Undoes llama.cpp's Q/K row permutation: GGUF rows `(head, i, pair)` back to the trained
/// `(head, pair, i)`.
fn unpermute(t: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = t.dims2().unwrap();
    let hd = rows / heads;
    t.reshape((heads, hd / 2, 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn hf_name(gguf: &str) -> String {
    match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = part.strip_suffix(".weight").unwrap();
    let tail = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => panic!("unexpected tensor {other}"),
    };
    format!("model.layers.{layer}.{tail}.weight")
}

fn convert(src: &Path, hf: &Path, gguf_out: &Path) {
    let mut g = GgufFile::open(src).unwrap();
    let u32_of = |k: &str| g.u32(&format!("llama.{k}")).unwrap() as usize;
    let (heads, kv_heads) = (
        u32_of("attention.head_count"),
        u32_of("attention.head_count_kv"),
    );
    let config = serde_json::json!({
        "_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": u32_of("embedding_length"),
        "intermediate_size": u32_of("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_hidden_layers": u32_of("block_count"),
        "max_position_embeddings": u32_of("context_length"),
        "rms_norm_eps": g.opt_f32("llama.attention.layer_norm_rms_epsilon").unwrap().unwrap(),
        "rope_theta": g.opt_f32("llama.rope.freq_base").unwrap().unwrap(),
        "vocab_size": g.strings("tokenizer.ggml.tokens").unwrap().len(),
        "tie_word_embeddings": !g.has_tensor("output.weight"),
        "bos_token_id": g.opt_u32("tokenizer.ggml.bos_token_id").unwrap(),
        "eos_token_id": g.opt_u32("tokenizer.ggml.eos_token_id").unwrap(),
        "torch_dtype": "float32",
    });
    let names: Vec<String> = {
        let mut n: Vec<String> = g.content().tensor_infos.keys().cloned().collect();
        n.sort();
        n
    };
    let mut f32_tensors: Vec<(String, QTensor)> = Vec::new();
    let mut st: HashMap<String, Tensor> = HashMap::new();
    for name in &names {
        let t = g
            .tensor(name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let trained = if name.ends_with("attn_q.weight") {
            unpermute(&t, heads)
        } else if name.ends_with("attn_k.weight") {
            unpermute(&t, kv_heads)
        } else {
            t.clone()
        };
        st.insert(hf_name(name), trained);
        f32_tensors.push((name.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    candle_core::safetensors::save(&st, hf.join("model.safetensors")).unwrap();
    drop(st);

    // The same f32 weights as a GGUF file, with the original metadata.
    let file_type = gguf_file::Value::U32(0);
    let mut meta: Vec<(&str, &gguf_file::Value)> = g
        .content()
        .metadata
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if k == "general.file_type" {
                    &file_type
                } else {
                    v
                },
            )
        })
        .collect();
    meta.sort_by_key(|(k, _)| *k);
    let tensors: Vec<(&str, &QTensor)> = f32_tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(gguf_out).unwrap());
    gguf_file::write(&mut out, &meta, &tensors).unwrap();
    drop(out);

    // Tokenizer and template, as a checkpoint carries them.
    let model = smollm();
    let tok = model.tokenizer();
    tok.inner().save(hf.join("tokenizer.json"), false).unwrap();
    let tc = serde_json::json!({
        "bos_token": tok.bos_token(),
        "eos_token": tok.eos_token(),
        "add_bos_token": tok.adds_bos(),
        "chat_template": g.opt_string("tokenizer.chat_template").unwrap(),
    });
    std::fs::write(hf.join("tokenizer_config.json"), tc.to_string()).unwrap();
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
}

fn load(path: &Path) -> Model {
    Model::load(&ModelSource::Path(path.to_path_buf())).unwrap()
}

/// The checkpoint loaded once.
fn checkpoint() -> Model {
    static CELL: OnceLock<Model> = OnceLock::new();
    CELL.get_or_init(|| load(&converted().0)).clone()
}

/// Logits of every position of `ids`, from a fresh cache.
fn logits(m: &mut Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.transformer().new_cache();
    m.transformer()
        .forward(ids, &mut cache, true)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn writeup_prompts(n: usize) -> Vec<String> {
    llm_judge::prompts::load_prompts(&prompts_file())
        .unwrap()
        .into_iter()
        .take(n)
        .map(|p| p.prompt)
        .collect()
}

#[test]
fn checkpoint_and_f32_gguf_agree() {
    let (_, gguf) = converted();
    let mut hf = checkpoint();
    let mut gg = load(&gguf);

    // The same token ids for the same texts, chat prompts included.
    let texts = [
        "Hello, world!",
        "Describe step-by-step how to set up a tent in a windy environment.",
        "  leading spaces, tabs\tand\nnewlines  ",
        "Unicode: café, naïve, 東京, emoji 🎉, math ∑ x² ≤ 3",
        "<|im_start|>user\nhi<|im_end|>",
        "def f(x):\n    return x ** 2  # comment",
    ];
    for t in texts {
        assert_eq!(
            hf.tokenizer().encode_prompt(t).unwrap(),
            gg.tokenizer().encode_prompt(t).unwrap(),
            "{t:?}"
        );
    }
    let chat = Input::new(Default::default(), Some("Be brief."), texts[1]);
    let (ph, pg) = (hf.prepare(&chat).unwrap(), gg.prepare(&chat).unwrap());
    assert_eq!(ph.ids, pg.ids);
    assert_eq!(ph.text, pg.text);
    assert_eq!(hf.tokenizer().stop_ids(), gg.tokenizer().stop_ids());

    // Logits within 1e-4 at every position of a chat prompt.
    let diff = max_abs_diff(&logits(&mut hf, &ph.ids), &logits(&mut gg, &pg.ids));
    println!("checkpoint vs f32 GGUF: largest logit difference {diff:e}");
    assert!(diff < 1e-4, "logits differ by {diff}");

    // Identical greedy continuations (32 tokens) of five write-up prompts, and how the
    // original Q4_1 file compares (reported, not required).
    let mut q4 = smollm();
    let greedy = SamplingParams::greedy().with_max_new_tokens(32);
    let (mut agree, mut total, mut gap) = (0usize, 0usize, 0f32);
    for p in writeup_prompts(5) {
        let input = Input::new(Default::default(), None, &p);
        let a = hf.generate(&input, &greedy).unwrap();
        let b = gg.generate(&input, &greedy).unwrap();
        assert_eq!(a.tokens, b.tokens, "greedy continuations differ for {p:?}");
        let c = q4.generate(&input, &greedy).unwrap();
        agree += a
            .tokens
            .iter()
            .zip(&c.tokens)
            .take_while(|(x, y)| x == y)
            .count();
        total += a.tokens.len();
        // Top-5 log-probability gap at the prompt's last position.
        let ids = hf.prepare(&input).unwrap().ids;
        let last = |m: &mut Model| {
            let l = logits(m, &ids).pop().unwrap();
            let t = Tensor::new(l.as_slice(), &Device::Cpu).unwrap();
            let lp: Vec<f32> = candle_nn::ops::log_softmax(&t, 0)
                .unwrap()
                .to_vec1()
                .unwrap();
            lp
        };
        let (x, y) = (last(&mut hf), last(&mut q4));
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&i, &j| x[j].total_cmp(&x[i]));
        for &i in &order[..5] {
            gap = gap.max((x[i] - y[i]).abs());
        }
    }
    println!(
        "f32 checkpoint vs original Q4_1: {agree} of {total} greedy tokens agree from the \
         start of each answer; largest top-5 logprob gap {gap:.4}"
    );
}

/// Writes an adapter folder: `lora_A`/`lora_B` per `(layer, module)` and the config.
fn write_adapter(
    dir: &Path,
    config: serde_json::Value,
    pairs: &[(usize, &str, Tensor, Tensor)],
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut st = HashMap::new();
    for (layer, module, a, b) in pairs {
        let group = if module.ends_with("_proj")
            && ["gate_proj", "up_proj", "down_proj"].contains(module)
        {
            "mlp"
        } else {
            "self_attn"
        };
        let key =
            |w: &str| format!("base_model.model.model.layers.{layer}.{group}.{module}.{w}.weight");
        st.insert(key("lora_A"), a.clone());
        st.insert(key("lora_B"), b.clone());
    }
    candle_core::safetensors::save(&st, dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

fn adapter_config(r: usize, alpha: f64, targets: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": targets,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "use_rslora": false,
        "fan_in_fan_out": false,
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    })
}

/// A deterministic pseudo-random matrix with entries in (-scale, scale).
fn random(rows: usize, cols: usize, seed: u64, scale: f32) -> Tensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
}

/// Rank-`r` pairs for `modules` in every layer, shaped like the base weights.
fn random_pairs(
    base: &Path,
    r: usize,
    modules: &[&'static str],
) -> Vec<(usize, &'static str, Tensor, Tensor)> {
    let weights =
        candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let layers = weights
        .keys()
        .filter(|k| k.ends_with("input_layernorm.weight"))
        .count();
    let mut out = Vec::new();
    for layer in 0..layers {
        for (i, m) in modules.iter().enumerate() {
            let group = if m.starts_with(['q', 'k', 'v', 'o']) {
                "self_attn"
            } else {
                "mlp"
            };
            let w = &weights[&format!("model.layers.{layer}.{group}.{m}.weight")];
            let (o, inp) = w.dims2().unwrap();
            let seed = (layer * 16 + i) as u64;
            out.push((
                layer,
                *m,
                random(r, inp, seed, 0.05),
                random(o, r, seed + 1000, 0.05),
            ));
        }
    }
    out
}

/// A copy of the checkpoint whose weights add `s·B·A` by hand (f64 sums), for reference.
fn merged_by_hand(
    base: &Path,
    dir: &Path,
    pairs: &[(usize, &str, Tensor, Tensor)],
    s: f64,
) -> PathBuf {
    copy_small_files(base, dir);
    let mut weights =
        candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    for (layer, module, a, b) in pairs {
        let group = if module.starts_with(['q', 'k', 'v', 'o']) {
            "self_attn"
        } else {
            "mlp"
        };
        let key = format!("model.layers.{layer}.{group}.{module}.weight");
        let w = &weights[&key];
        let (o, inp) = w.dims2().unwrap();
        let r = a.dim(0).unwrap();
        let rows = |t: &Tensor| -> Vec<Vec<f32>> { t.to_vec2().unwrap() };
        let (wv, av, bv) = (rows(w), rows(a), rows(b));
        let mut out = Vec::with_capacity(o * inp);
        for i in 0..o {
            for j in 0..inp {
                let delta: f64 = (0..r).map(|k| bv[i][k] as f64 * av[k][j] as f64).sum();
                out.push((wv[i][j] as f64 + s * delta) as f32);
            }
        }
        weights.insert(key, Tensor::from_vec(out, (o, inp), &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

fn adapted(base: &Path, adapter: &Path) -> ModelSource {
    ModelSource::adapted(
        ModelSource::Path(base.to_path_buf()),
        ModelSource::Path(adapter.to_path_buf()),
    )
    .unwrap()
}

#[test]
fn lora_merge_equals_the_update_added_by_hand() {
    let (base, _) = converted();
    let tmp = TempDir::new("lora-merge");
    let mut plain = checkpoint();
    let ids = plain
        .prepare(&Input::new(
            Default::default(),
            None,
            "Name three primary colours.",
        ))
        .unwrap()
        .ids;
    let base_logits = logits(&mut plain, &ids);

    let (r, alpha) = (4, 8.0);
    let pairs = random_pairs(&base, r, &["q_proj", "v_proj", "down_proj"]);
    let adapter = write_adapter(
        &tmp.0.join("adapter"),
        adapter_config(r, alpha, &["q_proj", "v_proj", "down_proj"]),
        &pairs,
    );
    let src = adapted(&base, &adapter);
    let mut merged = Model::load(&src).unwrap();
    assert_eq!(merged.adapter_path(), Some(adapter.as_path()));
    let by_hand = merged_by_hand(&base, &tmp.0.join("by-hand"), &pairs, alpha / r as f64);
    let mut reference = load(&by_hand);
    let (m, rf) = (logits(&mut merged, &ids), logits(&mut reference, &ids));
    let diff = max_abs_diff(&m, &rf);
    let moved = max_abs_diff(&m, &base_logits);
    println!("merged vs by hand: {diff:e}; merged vs base: {moved:.3}");
    // The reference rounds each merged weight once from f64 sums, the merge from f32
    // products: weights differ by an ulp at most, which 30 layers amplify to about 1e-4 in
    // the logits. The adapter itself moves them by units, so a wrong scale, a transposed
    // product or a module left out shows by orders of magnitude.
    assert!(
        diff < 1e-3,
        "merge differs from W + (alpha/r)·B·A by {diff}"
    );
    assert!(moved > 1e-2, "the adapter changed nothing ({moved})");

    // The identity names base and adapter, each with its own hash.
    let id = merged.sha256().unwrap();
    let (b, a) = id.split_once("+lora:").unwrap();
    assert_eq!(b, plain.sha256().unwrap());
    assert_eq!(a, llm_judge::model::lora::adapter_sha256(&adapter).unwrap());

    // alpha = 0 reproduces the base exactly.
    let zero = write_adapter(
        &tmp.0.join("zero"),
        adapter_config(r, 0.0, &["q_proj", "v_proj", "down_proj"]),
        &pairs,
    );
    let mut z = Model::load(&adapted(&base, &zero)).unwrap();
    assert_eq!(
        logits(&mut z, &ids),
        base_logits,
        "alpha = 0 must change nothing"
    );

    // rsLoRA scales by alpha/sqrt(r).
    let mut rs_cfg = adapter_config(r, alpha, &["q_proj", "v_proj", "down_proj"]);
    rs_cfg["use_rslora"] = serde_json::json!(true);
    let rs = write_adapter(&tmp.0.join("rs"), rs_cfg, &pairs);
    let mut rs_model = Model::load(&adapted(&base, &rs)).unwrap();
    let rs_ref = merged_by_hand(
        &base,
        &tmp.0.join("rs-by-hand"),
        &pairs,
        alpha / (r as f64).sqrt(),
    );
    let d = max_abs_diff(
        &logits(&mut rs_model, &ids),
        &logits(&mut load(&rs_ref), &ids),
    );
    assert!(d < 1e-3, "rsLoRA merge differs by {d}");
}

#[test]
fn malformed_adapters_are_clear_errors() {
    let (base, _) = converted();
    let tmp = TempDir::new("lora-bad");
    let targets = ["q_proj", "down_proj"];
    let pairs = random_pairs(&base, 2, &targets);
    let err_of = |name: &str, cfg: serde_json::Value, pairs: &[(usize, &str, Tensor, Tensor)]| {
        let dir = write_adapter(&tmp.0.join(name), cfg, pairs);
        let err = Model::load(&adapted(&base, &dir)).unwrap_err().to_string();
        // Validation (what `run` does before generating) finds the same problem.
        let check = llm_judge::model::inspect(&adapted(&base, &dir))
            .unwrap_err()
            .to_string();
        assert_eq!(err, check);
        assert!(
            err.contains(name),
            "the error names the adapter folder: {err}"
        );
        err
    };

    // Wrong shapes: lora_A of q_proj with the MLP's input width.
    let mut wrong = pairs.clone();
    wrong[0].2 = random(2, 1536, 7, 0.05);
    let e = err_of("wrong-shape", adapter_config(2, 4.0, &targets), &wrong);
    assert!(
        e.contains("layer 0 `q_proj`") && e.contains("base weight is (576, 576)"),
        "{e}"
    );

    // A lora_A without its lora_B.
    let dir = write_adapter(
        &tmp.0.join("missing-b"),
        adapter_config(2, 4.0, &targets),
        &pairs,
    );
    let mut st =
        candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    st.remove("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight");
    candle_core::safetensors::save(&st, dir.join("adapter_model.safetensors")).unwrap();
    let e = Model::load(&adapted(&base, &dir)).unwrap_err().to_string();
    assert!(
        e.contains("layers.3.mlp.down_proj.lora_A.weight` has no lora_B"),
        "{e}"
    );

    // A module the config targets but no tensor adapts.
    let e = err_of(
        "missing-module",
        adapter_config(2, 4.0, &["q_proj", "down_proj", "k_proj"]),
        &pairs,
    );
    assert!(e.contains("missing keys") && e.contains("k_proj"), "{e}");

    // One layer left out while the adapter claims every layer.
    let holes: Vec<_> = pairs.iter().filter(|p| p.0 != 5).cloned().collect();
    let e = err_of("hole", adapter_config(2, 4.0, &targets), &holes);
    assert!(e.contains("layer 5"), "{e}");

    // An unknown target module.
    let e = err_of(
        "unknown-module",
        adapter_config(2, 4.0, &["q_proj", "foo_proj"]),
        &pairs,
    );
    assert!(e.contains("unknown target module `foo_proj`"), "{e}");

    // A rank that is not the configured one.
    let e = err_of("wrong-rank", adapter_config(3, 4.0, &targets), &pairs);
    assert!(e.contains("r = 3"), "{e}");

    // Trained on another base model.
    let mut other = adapter_config(2, 4.0, &targets);
    other["base_model_name_or_path"] = serde_json::json!("meta-llama/Llama-3.2-3B-Instruct");
    let e = err_of("other-base", other, &pairs);
    assert!(
        e.contains("trained on `meta-llama/Llama-3.2-3B-Instruct`"),
        "{e}"
    );

    // DoRA is refused, not silently merged as LoRA.
    let mut dora = adapter_config(2, 4.0, &targets);
    dora["use_dora"] = serde_json::json!(true);
    let e = err_of("dora", dora, &pairs);
    assert!(e.contains("DoRA"), "{e}");

    // layers_to_transform: the listed layers only, each fully covered.
    let mut some = adapter_config(2, 4.0, &targets);
    some["layers_to_transform"] = serde_json::json!([0, 1]);
    let first_two: Vec<_> = pairs.iter().filter(|p| p.0 < 2).cloned().collect();
    let dir = write_adapter(&tmp.0.join("two-layers"), some.clone(), &first_two);
    llm_judge::model::inspect(&adapted(&base, &dir)).unwrap();
    let first_three: Vec<_> = pairs.iter().filter(|p| p.0 < 3).cloned().collect();
    let e = err_of("beyond-layers", some, &first_three);
    assert!(
        e.contains("layer 2") && e.contains("layers_to_transform"),
        "{e}"
    );

    // A GGUF file cannot take an adapter, whatever its name.
    let renamed = tmp.0.join("model.bin");
    std::os::unix::fs::symlink(model_path(&bundled::SMOLLM2), &renamed).unwrap();
    let e = ModelSource::adapted(
        ModelSource::Path(renamed),
        ModelSource::Path(tmp.0.join("dora")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("safetensors checkpoint"), "{e}");
    let e = ModelSource::adapted(
        ModelSource::Bundled("smollm2-135m-instruct".into()),
        ModelSource::Path(tmp.0.join("dora")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("safetensors checkpoint"), "{e}");
}

#[test]
fn broken_checkpoints_are_clear_errors() {
    let (base, _) = converted();
    let tmp = TempDir::new("hf-bad");
    let copy = |name: &str, skip: &str| {
        let d = tmp.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            if f != skip {
                std::fs::copy(base.join(f), d.join(f)).unwrap();
            }
        }
        d
    };
    let err = |d: &Path| {
        llm_judge::model::inspect(&ModelSource::Path(d.to_path_buf()))
            .unwrap_err()
            .to_string()
    };

    let d = copy("no-weights", "");
    let e = err(&d);
    assert!(
        e.contains("no-weights") && e.contains("model.safetensors"),
        "{e}"
    );

    let d = copy("no-tokenizer", "tokenizer.json");
    assert!(err(&d).contains("missing tokenizer.json"), "{}", err(&d));

    let d = copy("qwen", "");
    std::os::unix::fs::symlink(base.join("model.safetensors"), d.join("model.safetensors"))
        .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = serde_json::json!("qwen2");
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    assert!(
        err(&d).contains("unsupported architecture `qwen2`"),
        "{}",
        err(&d)
    );

    // Counts the weights do not hold (4e9 layers aborted the process before anything was
    // read), a count that would leave layers unused, a hidden size the weights do not have,
    // and an epsilon that is not a positive number: each an error naming the field.
    let cases = [
        (
            "num_hidden_layers",
            serde_json::json!(4_000_000_000u64),
            "no layer",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "at least 1 layer",
        ),
        ("num_hidden_layers", serde_json::json!(29), "more layers"),
        (
            "hidden_size",
            serde_json::json!(4_000_000_000u64),
            "does not match",
        ),
        (
            "rms_norm_eps",
            serde_json::json!(-1.0),
            "not a finite number",
        ),
    ];
    for (i, (field, value, says)) in cases.into_iter().enumerate() {
        let d = copy(&format!("count{i}"), "");
        std::os::unix::fs::symlink(base.join("model.safetensors"), d.join("model.safetensors"))
            .unwrap();
        edit_json(&d.join("config.json"), |v| v[field] = value.clone());
        let e = match llm_judge::Model::load(&ModelSource::Path(d.clone())) {
            Ok(_) => panic!("{field} = {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(field) && e.contains(says),
            "{field} = {value}: {e}"
        );
    }

    let d = copy("bad-index", "");
    std::fs::write(
        d.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let e = err(&d);
    assert!(
        e.contains("model-00001-of-00002.safetensors") && e.contains("not in the folder"),
        "{e}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_one_file() {
    let (base, _) = converted();
    let tmp = TempDir::new("hf-shards");
    let d = tmp.0.join("sharded");
    copy_small_files(&base, &d);
    // Split the tensors over two shards and write the index, in bf16 to cover that type.
    let weights =
        candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut shards = [HashMap::new(), HashMap::new()];
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in weights.iter().enumerate() {
        let s = i % 2;
        shards[s].insert(k.clone(), v.to_dtype(DType::BF16).unwrap());
        map.insert(
            k.clone(),
            serde_json::json!(format!("model-0000{}-of-00002.safetensors", s + 1)),
        );
    }
    for (s, t) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            t,
            d.join(format!("model-0000{}-of-00002.safetensors", s + 1)),
        )
        .unwrap();
    }
    std::fs::write(
        d.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let info = llm_judge::model::inspect(&ModelSource::Path(d.clone())).unwrap();
    assert_eq!(info.quantization, "bf16");
    let mut m = load(&d);
    let out = m
        .generate(
            &Input::new(Default::default(), None, "What is the capital of France?"),
            &SamplingParams::greedy().with_max_new_tokens(12),
        )
        .unwrap();
    assert!(out.text.contains("Paris"), "{}", out.text);
}

#[test]
fn adapters_example_validates_offline() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/experiments/adapters-example.toml");
    let cfg = llm_judge::experiment::ExperimentConfig::load(&path).unwrap();
    let plan = cfg.plan().unwrap();
    assert_eq!(plan.models.len(), 2);
    let mut bases = Vec::new();
    for m in &plan.models {
        let llm_judge::experiment::ModelSpec::Local(src) = &m.spec else {
            panic!("{} is not local", m.name)
        };
        let (base, adapter) = src.base_and_adapter();
        assert!(adapter.is_some(), "{} has no adapter", m.name);
        bases.push(base.to_string());
    }
    assert_eq!(bases[0], bases[1], "one base model for both adapters");
    assert_eq!(plan.settings.len(), 2);
}

#[test]
fn two_adapters_on_one_base_run_as_an_experiment() {
    let (base, _) = converted();
    let tmp = TempDir::new("lora-run");
    let targets = ["q_proj", "v_proj"];
    let a = write_adapter(
        &tmp.0.join("lora-a"),
        adapter_config(4, 8.0, &targets),
        &random_pairs(&base, 4, &targets),
    );
    let mut pairs_b = random_pairs(&base, 4, &targets);
    for p in &mut pairs_b {
        p.3 = (&p.3 * -1.0).unwrap();
    }
    let b = write_adapter(
        &tmp.0.join("lora-b"),
        adapter_config(4, 8.0, &targets),
        &pairs_b,
    );
    let toml = format!(
        r#"name = "adapters"
prompts = "{prompts}"
max_tokens = 8
limit = 2
device = "cpu"

[[models]]
name = "A"
source = "{base}"
adapter = "{a}"

[[models]]
name = "B"
source = "{base}"
adapter = "{b}"

[[settings]]
name = "greedy"
preset = "greedy"
"#,
        prompts = prompts_file().display(),
        base = base.display(),
        a = a.display(),
        b = b.display(),
    );
    let out = crate::common::run_toml(&tmp.0, "adapters", &toml, "out");
    assert_eq!(out.response_rows.len(), 4);
    assert!(
        out.response_rows.iter().all(|r| r.text.is_some()),
        "{:?}",
        out.failures()
    );
    assert_eq!(out.meta.device, "cpu");
    // run.json as written, read as a notebook would.
    let disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.meta_path()).unwrap()).unwrap();
    let base_sha = llm_judge::model::hf::checkpoint_sha256(&base).unwrap();
    for (name, dir) in [("A", &a), ("B", &b)] {
        let adapter_sha = llm_judge::model::lora::adapter_sha256(dir).unwrap();
        let m = &disk["models"][name];
        assert_eq!(m["base"]["sha256"], base_sha.as_str(), "{m}");
        assert_eq!(m["adapter"]["sha256"], adapter_sha.as_str(), "{m}");
        let typed = &out.meta.models[name];
        let hash = |f: &Option<llm_judge::results::meta::FileMeta>| {
            f.as_ref().and_then(|f| f.sha256.clone())
        };
        assert_eq!(hash(&typed.base).as_deref(), Some(base_sha.as_str()));
        assert_eq!(hash(&typed.adapter).as_deref(), Some(adapter_sha.as_str()));
        let id = out
            .response_rows
            .iter()
            .find(|r| r.model == name)
            .unwrap()
            .model_id
            .clone();
        assert!(id.starts_with(&format!("local:{base_sha}+lora:")), "{id}");
    }
    let ids: Vec<&str> = out
        .response_rows
        .iter()
        .map(|r| r.model_id.as_str())
        .collect();
    assert_ne!(ids[0], ids[ids.len() - 1], "two adapters, two identities");
}

/// The checkpoint's configuration and tokenizer files, copied into `dir` (created).
fn copy_small_files(base: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in llm_judge::model::hf::CONFIG_FILES {
        std::fs::copy(base.join(f), dir.join(f)).unwrap();
    }
}

/// A copy of the checkpoint's small files into `dir`, with the weights linked.
fn copy_checkpoint(base: &Path, dir: &Path) {
    copy_small_files(base, dir);
    std::os::unix::fs::symlink(
        base.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn bos_follows_the_tokenizer_post_processor_unless_the_config_says() {
    let (base, _) = converted();
    let tmp = TempDir::new("hf-bos");
    let d = tmp.0.join("ck");
    copy_checkpoint(&base, &d);
    // Llama 3's way: no add_bos_token; the post-processor puts BOS first.
    let bos = "<|im_start|>";
    let bos_id = checkpoint().tokenizer().token_to_id(bos).unwrap();
    edit_json(&d.join("tokenizer_config.json"), |v| {
        v.as_object_mut().unwrap().remove("add_bos_token");
        v["bos_token"] = serde_json::json!(bos);
    });
    edit_json(&d.join("tokenizer.json"), |v| {
        v["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
        });
    });
    let m = load(&d);
    assert!(m.tokenizer().adds_bos());
    let ids = m.tokenizer().encode_prompt("hello").unwrap();
    assert_eq!(ids[0], bos_id, "{ids:?}");
    assert_eq!(
        ids.iter().filter(|&&i| i == bos_id).count(),
        1,
        "one BOS: {ids:?}"
    );
    // The config's explicit answer wins over the post-processor.
    edit_json(&d.join("tokenizer_config.json"), |v| {
        v["add_bos_token"] = serde_json::json!(false);
    });
    let m = load(&d);
    assert!(!m.tokenizer().adds_bos());
    assert_ne!(m.tokenizer().encode_prompt("hello").unwrap()[0], bos_id);
}

#[test]
fn an_untied_output_layer_is_used() {
    let (base, _) = converted();
    let tmp = TempDir::new("hf-untied");
    let d = tmp.0.join("ck");
    copy_small_files(&base, &d);
    let mut w =
        candle_core::safetensors::load(base.join("model.safetensors"), &Device::Cpu).unwrap();
    let doubled = (&w["model.embed_tokens.weight"] * 2.0).unwrap();
    w.insert("lm_head.weight".into(), doubled);
    candle_core::safetensors::save(&w, d.join("model.safetensors")).unwrap();
    edit_json(&d.join("config.json"), |v| {
        v["tie_word_embeddings"] = serde_json::json!(false);
    });
    let mut plain = checkpoint();
    let ids = plain.tokenizer().encode_prompt("The sky is").unwrap();
    let base_logits = logits(&mut plain, &ids);
    let untied = logits(&mut load(&d), &ids);
    // lm_head = 2 × embedding: every logit doubles, exactly.
    for (a, b) in untied.iter().flatten().zip(base_logits.iter().flatten()) {
        assert_eq!(*a, 2.0 * b);
    }
    // Untied without an lm_head is an error, not a silent tie.
    w.remove("lm_head.weight");
    candle_core::safetensors::save(&w, d.join("model.safetensors")).unwrap();
    let e = llm_judge::model::inspect(&ModelSource::Path(d.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no lm_head.weight"), "{e}");
}
