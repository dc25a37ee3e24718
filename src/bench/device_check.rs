//! The GPU check: one model, greedy, on the CPU and on another device. The answers must
//! agree on their first tokens, or the logits (teacher-forced on the CPU's tokens) must stay
//! within [`LOGIT_TOLERANCE`]; then the device's decode speed is printed. Run it with
//! `llm-judge --device cuda check-device` (or `scripts/gpu-check.sh`) on a machine with a GPU.

use crate::error::Result;
use crate::model::device::describe;
use crate::model::{Input, LoadOptions, Model, ModelSource};
use crate::sampling::SamplingParams;
use candle_core::Device;
use serde::Serialize;

/// Largest absolute logit difference accepted when the greedy tokens part: GPU kernels sum
/// in another order and quantize activations differently, so logits move by a few
/// hundredths; a wrong kernel moves them by whole units.
pub const LOGIT_TOLERANCE: f32 = 0.1;

/// Tokens that must agree for the check to pass on tokens alone.
pub const SAME_TOKENS: usize = 16;

/// What the check found.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheck {
    /// The model.
    pub model: String,
    /// The device compared with the CPU.
    pub device: String,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Greedy tokens on the CPU.
    pub cpu_tokens: Vec<u32>,
    /// Greedy tokens on the device.
    pub device_tokens: Vec<u32>,
    /// How many leading tokens agree.
    pub same_prefix: usize,
    /// Largest absolute logit difference over the prompt's last position and every CPU
    /// token fed to both (teacher forcing).
    pub max_logit_diff: f32,
    /// Decode speed on the device (tokens/s, greedy, one sequence).
    pub device_decode_tok_per_s: f64,
    /// Decode speed on the CPU.
    pub cpu_decode_tok_per_s: f64,
    /// The first [`SAME_TOKENS`] tokens agree, or the logits stay within
    /// [`LOGIT_TOLERANCE`].
    pub passed: bool,
    /// False when the device is the CPU itself: the check then only shows that it runs.
    pub is_gpu_check: bool,
}

impl DeviceCheck {
    /// The result in a few lines.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "{} on {} vs cpu: {} of {} greedy tokens agree from the start; largest logit \
                 difference {:.4} (tolerance {LOGIT_TOLERANCE})",
                self.model,
                self.device,
                self.same_prefix,
                self.cpu_tokens.len().min(self.device_tokens.len()),
                self.max_logit_diff
            ),
            format!(
                "decode: {:.1} tok/s on {}, {:.1} tok/s on cpu",
                self.device_decode_tok_per_s, self.device, self.cpu_decode_tok_per_s
            ),
            format!(
                "check: {}{}",
                if self.passed { "PASSED" } else { "FAILED" },
                if self.is_gpu_check {
                    ""
                } else {
                    " (the CPU compared with itself: not a GPU check)"
                }
            ),
        ]
    }
}

/// Loads `source` on the CPU and on `device`, decodes `tokens` tokens greedily from a
/// write-up prompt on each, and compares them.
pub fn check_device(source: &ModelSource, device: &Device, tokens: usize) -> Result<DeviceCheck> {
    let load = |d: &Device| {
        Model::load_with(
            source,
            &LoadOptions {
                device: Some(d.clone()),
                ..Default::default()
            },
        )
    };
    let mut cpu = load(&Device::Cpu)?;
    let mut dev = load(device)?;
    let input = Input::new(
        crate::model::PromptFormat::Chat,
        None,
        "Explain the difference between a list and a tuple in Python.",
    );
    let params = SamplingParams {
        max_new_tokens: tokens.max(1),
        ..SamplingParams::greedy()
    };
    let a = cpu.generate(&input, &params)?;
    let b = dev.generate(&input, &params)?;
    let same_prefix = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .take_while(|(x, y)| x == y)
        .count();

    // Teacher forcing: both models see the prompt, then the CPU's tokens.
    let ids = cpu.prepare(&input)?.ids;
    let mut cache_a = cpu.transformer().new_cache();
    let mut cache_b = dev.transformer().new_cache();
    let mut la = cpu.transformer().forward(&ids, &mut cache_a, false)?;
    let mut lb = dev.transformer().forward(&ids, &mut cache_b, false)?;
    let mut max_diff = 0f32;
    for step in 0..=a.tokens.len() {
        let x: Vec<f32> = la.flatten_all()?.to_vec1()?;
        let y: Vec<f32> = lb.flatten_all()?.to_device(&Device::Cpu)?.to_vec1()?;
        for (p, q) in x.iter().zip(&y) {
            max_diff = max_diff.max((p - q).abs());
        }
        let Some(&t) = a.tokens.get(step) else { break };
        la = cpu.transformer().forward(&[t], &mut cache_a, false)?;
        lb = dev.transformer().forward(&[t], &mut cache_b, false)?;
    }
    let compared = a.tokens.len().min(b.tokens.len());
    let passed = same_prefix >= SAME_TOKENS.min(compared) || max_diff <= LOGIT_TOLERANCE;
    Ok(DeviceCheck {
        model: source.to_string(),
        device: describe(device),
        prompt_tokens: ids.len(),
        cpu_tokens: a.tokens,
        device_tokens: b.tokens,
        same_prefix,
        max_logit_diff: max_diff,
        device_decode_tok_per_s: b.timing.decode_tok_per_s,
        cpu_decode_tok_per_s: a.timing.decode_tok_per_s,
        passed,
        is_gpu_check: !device.is_cpu(),
    })
}
