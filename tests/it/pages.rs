//! The weights on huge pages: what a load reports is what the process holds (64-bit Linux
//! with glibc, where they are asked for).

use crate::common;
use llm_judge::model::device::DeviceChoice;
use llm_judge::model::LoadOptions;
use llm_judge::{Model, ModelSource};

/// `AnonHugePages` of this process, in bytes.
fn anon_huge_pages() -> usize {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup");
    let line = rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .expect("an AnonHugePages line");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a size in kB");
    kb * 1024
}

#[test]
fn the_weights_lie_on_huge_pages_where_the_kernel_allows_and_the_report_says_so() {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let off =
        std::env::var_os("LLM_JUDGE_NO_HUGE_PAGES").is_some_and(|v| !v.is_empty() && v != "0");
    for m in [
        &llm_judge::model::bundled::SMOLLM2,
        &llm_judge::model::bundled::GEMMA3,
    ] {
        common::model_path(m);
        let on_cpu = LoadOptions::on(DeviceChoice::Cpu).expect("the CPU");
        let mut model =
            Model::load_with(&ModelSource::Bundled(m.name.into()), &on_cpu).expect("model loads");
        let p = model.transformer().huge_pages().clone();
        let name = m.name;
        // Every matrix our kernels read is offered: SmolLM2's are 96 MB, Gemma 3's 246.
        assert!(p.weights > 90_000_000, "{name}: {p:?}");
        assert!(p.on_huge_pages <= p.weights, "{name}: {p:?}");
        if off || thp.is_empty() || thp.contains("[never]") {
            // The environment or the administrator said no: nothing moves, and the report
            // says why.
            assert_eq!(p.on_huge_pages, 0, "{name}: {p:?}");
            assert!(p.refused.is_some(), "{name}: {p:?}");
            continue;
        }
        match &p.refused {
            // The kernel may run out of free huge pages: then it must say so.
            Some(why) => assert!(why.contains("madvise(MADV_COLLAPSE)"), "{name}: {why}"),
            // Otherwise all but the stretches at the buffers' edges move.
            None => assert!(
                p.on_huge_pages as f64 >= 0.9 * p.weights as f64,
                "{name}: {p:?}"
            ),
        }
        // What the report counts, the kernel holds (other models of this process may hold
        // more).
        let held = anon_huge_pages();
        assert!(held >= p.on_huge_pages, "{name}: {held} bytes held, {p:?}");
    }
}
