//! The weights on 2 MiB pages: decoding reads every weight once per token, and on 4 KiB
//! pages that stream crosses a page (a TLB miss, and a boundary the hardware prefetchers do
//! not cross) every 4 KiB.
//!
//! candle reads each tensor into a buffer of its own, on the heap or in a mapping of its own
//! (over the heap's mmap threshold, `heap.rs`), in 4 KiB pages unless the system's
//! transparent huge pages are set to `always` (many distributions set `madvise`). Once a
//! model is loaded, `collapse` asks Linux (6.1 and later, `MADV_COLLAPSE`) to move every
//! 2 MiB-aligned stretch that holds weight bytes onto one huge page, where every 4 KiB page
//! of the stretch is resident already (`mincore`). A stretch may also hold the allocator's
//! headers, a small allocation or a freed buffer of the loader's; since all of it is
//! resident, the process's memory does not grow by more than the one stretch the kernel
//! copies at a time. The bytes do not change: the kernel copies them.
//!
//! Measured on Qwen2.5-Coder 1.5B (`generate`, 200 tokens, greedy, three alternating
//! pairs): 43.8-45.1 tokens/s on 4 KiB pages, 47.2-47.7 on huge pages, the same text; the
//! README's Speed section has `bench` runs. The copy costs 0.2-2.3 s at load for the 1.5B's
//! 980 MB on this project's 2-core virtual machine (median about 1.2 s over 16 loads).
//!
//! Nothing moves where `LLM_JUDGE_NO_HUGE_PAGES` is set (to anything but `0`), where the
//! administrator set transparent huge pages to `never`, where pages are not 4 KiB or huge
//! pages not 2 MiB, on older kernels, and off Linux (glibc, 64-bit): [`HugePages`] says why.
//! Where the kernel runs out of free huge pages, the rest stays as it is.

/// Bytes of one huge page: a PMD on x86-64 and on arm64 with 4 KiB pages.
pub const HUGE_PAGE: usize = 2 << 20;
/// Bytes of one base page that [`HUGE_PAGE`] assumes.
#[cfg(any(
    test,
    all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")
))]
const PAGE: usize = 4096;

/// What loading a model did with its weights' pages.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HugePages {
    /// Weight bytes offered (every matrix our kernels read).
    pub weights: usize,
    /// Weight bytes that lay on huge pages when the load ended (a huge page may hold other
    /// bytes too).
    pub on_huge_pages: usize,
    /// Why nothing moved, or how many stretches the kernel refused and why (the first
    /// error); `None` where every stretch that was wholly resident moved. Stretches that
    /// are not (at a buffer's edge next to unused memory) stay as they are and count in
    /// neither figure.
    pub refused: Option<String>,
}

/// Why nothing may move here: `env` is `LLM_JUDGE_NO_HUGE_PAGES`, `thp` the contents of
/// `/sys/kernel/mm/transparent_hugepage/enabled`, `pmd` of `.../hpage_pmd_size`, `page` the
/// base page size; `None` where huge pages may be asked for.
#[cfg(any(
    test,
    all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")
))]
fn refusal(
    env: Option<std::ffi::OsString>,
    thp: Option<String>,
    pmd: Option<String>,
    page: usize,
) -> Option<String> {
    if env.is_some_and(|v| !v.is_empty() && v != "0") {
        return Some("LLM_JUDGE_NO_HUGE_PAGES is set".into());
    }
    let Some(thp) = thp else {
        return Some("this kernel has no transparent huge pages".into());
    };
    if thp.contains("[never]") {
        return Some("transparent huge pages are set to never".into());
    }
    let pmd = pmd.and_then(|p| p.trim().parse::<usize>().ok());
    if page != PAGE || pmd != Some(HUGE_PAGE) {
        let pmd = pmd.map_or("unknown".into(), |b| b.to_string());
        return Some(format!(
            "pages of {page} bytes, huge pages of {pmd}: asked for only where they are 4 KiB \
             and 2 MiB"
        ));
    }
    None
}

/// The 2 MiB-aligned stretches that hold bytes of `regions` (`(start, len)` in the address
/// space), as their start addresses, each once, in address order.
#[cfg(any(
    test,
    all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")
))]
fn stretches(regions: &[(usize, usize)]) -> Vec<usize> {
    let mut starts: Vec<usize> = regions
        .iter()
        .filter(|r| r.1 > 0)
        .flat_map(|&(start, len)| {
            let last = start.saturating_add(len - 1);
            (start / HUGE_PAGE..=last / HUGE_PAGE).map(|p| p * HUGE_PAGE)
        })
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// Moves the stretches that hold `regions` (`(start, len)` of buffers this process keeps for
/// the model's life, none overlapping another) onto huge pages where the system allows it
/// and the stretch is wholly resident.
pub(crate) fn collapse(regions: &[(usize, usize)]) -> HugePages {
    let mut report = HugePages {
        weights: regions.iter().map(|r| r.1).sum(),
        ..HugePages::default()
    };
    if regions.iter().all(|r| r.1 == 0) {
        return report;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        let sys = |f: &str| {
            std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{f}")).ok()
        };
        // SAFETY: `sysconf` reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        report.refused = refusal(
            std::env::var_os("LLM_JUDGE_NO_HUGE_PAGES"),
            sys("enabled"),
            sys("hpage_pmd_size"),
            page,
        );
        if report.refused.is_none() {
            move_stretches(regions, &mut report);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        report.refused = Some("huge pages are asked for on 64-bit Linux (glibc) only".into());
    }
    report
}

/// `MADV_COLLAPSE` on each wholly resident stretch of `regions`, counted into `report`; the
/// first error is kept, and once the kernel has no huge page left (`ENOMEM`) the rest are
/// not asked for.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn move_stretches(regions: &[(usize, usize)], report: &mut HugePages) {
    let (mut failed, mut first) = (0usize, None);
    let mut starts = stretches(regions).into_iter().filter(|&s| resident(s));
    for start in starts.by_ref() {
        let ask = || {
            // SAFETY: `MADV_COLLAPSE` never changes the contents of a mapping: it copies a
            // stretch's pages onto a huge page and maps that in their place, or fails (an
            // unmapped or mixed stretch is an error, not a fault).
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, HUGE_PAGE, libc::MADV_COLLAPSE)
            };
            (rc == 0)
                .then_some(())
                .ok_or_else(std::io::Error::last_os_error)
        };
        // EAGAIN: a page was briefly locked; once more.
        let outcome = ask().or_else(|e| match e.raw_os_error() {
            Some(libc::EAGAIN) => ask(),
            _ => Err(e),
        });
        match outcome {
            Ok(()) => report.on_huge_pages += held(regions, start),
            Err(e) => {
                failed += 1;
                let out_of_pages = e.raw_os_error() == Some(libc::ENOMEM);
                first.get_or_insert(e);
                if out_of_pages {
                    break;
                }
            }
        }
    }
    if let Some(e) = first {
        let left = starts.count();
        let mut why =
            format!("the kernel refused {failed} stretch(es): madvise(MADV_COLLAPSE): {e}");
        if left > 0 {
            why.push_str(&format!("; {left} more not asked for"));
        }
        report.refused = Some(why);
    }
}

/// Weight bytes of `regions` (none overlapping another) inside the stretch at `start`.
#[cfg(any(
    test,
    all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")
))]
fn held(regions: &[(usize, usize)], start: usize) -> usize {
    let end = start.saturating_add(HUGE_PAGE);
    regions
        .iter()
        .map(|&(s, len)| {
            let e = s.saturating_add(len).min(end);
            e.saturating_sub(s.max(start))
        })
        .sum()
}

/// Whether every 4 KiB page of the stretch at `start` is mapped and resident.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn resident(start: usize) -> bool {
    let mut pages = [0u8; HUGE_PAGE / PAGE];
    // SAFETY: `mincore` writes one byte per page of the range into `pages`, which has room
    // for all of them (pages are 4 KiB here: `refusal`); an unmapped range is an error
    // (ENOMEM), not a fault.
    let rc = unsafe {
        libc::mincore(
            start as *mut libc::c_void,
            HUGE_PAGE,
            pages.as_mut_ptr().cast(),
        )
    };
    rc == 0 && pages.iter().all(|p| p & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: usize = HUGE_PAGE;
    const MIB: usize = 1 << 20;

    #[test]
    fn every_stretch_that_holds_weight_bytes_is_asked_for_once() {
        // One buffer from 1.5 to 6.2 MiB touches the stretches at 0, 2, 4 and 6 MiB.
        assert_eq!(
            stretches(&[(3 * MIB / 2, 47 * MIB / 10)]),
            vec![0, H, 2 * H, 3 * H]
        );
        // Exactly one stretch; one byte more reaches the next.
        assert_eq!(stretches(&[(H, H)]), vec![H]);
        assert_eq!(stretches(&[(H, H + 1)]), vec![H, 2 * H]);
        // Empty buffers hold nothing.
        assert_eq!(stretches(&[(0, 0), (H, 0)]), Vec::<usize>::new());
        // Two small neighbours, in any order, and the same bytes offered twice: each
        // stretch once.
        assert_eq!(
            stretches(&[(H + 100, 10), (H, 50), (3 * H, H), (3 * H, H)]),
            vec![H, 3 * H]
        );
        // The top of the address space does not overflow.
        assert_eq!(
            stretches(&[(usize::MAX - 10, 100)]),
            vec![usize::MAX / H * H]
        );
    }

    #[test]
    fn the_weight_bytes_of_a_stretch_are_counted_where_they_lie() {
        // 1.5-2.5 MiB, and a quarter MiB from 16 bytes past 2.5 MiB.
        let regions = [(3 * MIB / 2, MIB), (5 * MIB / 2 + 16, MIB / 4)];
        assert_eq!(held(&regions, 0), MIB / 2);
        assert_eq!(held(&regions, H), MIB / 2 + MIB / 4);
        assert_eq!(held(&regions, 2 * H), 0);
        // A whole stretch, and the last stretch of the address space.
        assert_eq!(held(&[(0, 3 * H)], H), H);
        let top = usize::MAX / H * H;
        assert_eq!(held(&[(top, 10)], top), 10);
    }

    #[test]
    fn the_environment_the_administrator_and_the_page_sizes_can_each_refuse() {
        let thp = |s: &str| Some(s.to_string());
        let pmd = || Some("2097152\n".to_string());
        let madvise = "always [madvise] never\n";
        assert_eq!(refusal(None, thp(madvise), pmd(), 4096), None);
        assert_eq!(
            refusal(None, thp("[always] madvise never"), pmd(), 4096),
            None
        );
        assert_eq!(refusal(Some("0".into()), thp(madvise), pmd(), 4096), None);
        assert_eq!(refusal(Some("".into()), thp(madvise), pmd(), 4096), None);
        let refused = |r: Option<String>, what: &str| {
            let why = r.unwrap_or_else(|| panic!("{what}: not refused"));
            assert!(!why.is_empty(), "{what}");
            why
        };
        assert!(
            refused(refusal(Some("1".into()), thp(madvise), pmd(), 4096), "env")
                .contains("LLM_JUDGE_NO_HUGE_PAGES")
        );
        assert!(refused(
            refusal(None, thp("always madvise [never]\n"), pmd(), 4096),
            "never"
        )
        .contains("never"));
        refused(refusal(None, None, pmd(), 4096), "no sysfs");
        refused(refusal(None, thp(madvise), pmd(), 65536), "64 KiB pages");
        refused(
            refusal(None, thp(madvise), Some("4194304".into()), 4096),
            "4 MiB huge pages",
        );
        refused(refusal(None, thp(madvise), None, 4096), "no pmd size");
    }
}
