//! The verdict grammar shared by the text modes.
//!
//! Every parser first removes what the judge did not write itself ([`strip_echo`]): the
//! answers it was shown (quoted back) and the template's own instructions (echoed back), so
//! that neither a verdict-like string inside an answer nor an instruction such as "declare the
//! winner (or 'draw' …)" or "rate … from 1 to 4" is ever read as the judge's verdict. Then:
//!
//! - criteria: `Criterion: [[n]]` (or `Criterion: n`), matched at word boundaries, a score
//!   outside 1..=scale is no score, and two different scores for one criterion are none
//!   (a conflict is never settled by picking one);
//! - listwise criteria: one line per answer label; the first line that scores every
//!   criterion is the answer's verdict, and incomplete lines before it fill only what is
//!   missing (the criteria form, unlike the totals form, keeps the first complete line);
//! - listwise totals: one total per answer, in the forms real judges write (`Response 1: 10`,
//!   `Response 1 - Total: 10`, `**Response 1:** 10/12`, `Response 1: Relevance 4, Coherence
//!   3, Completeness 3 = 10`, a block per response, a markdown table, or a bare numbered
//!   list). A label counts only where it opens a line, a stated total beats the first number,
//!   an operand of arithmetic is never a total, and conflicting totals give none
//!   ([`listwise_totals`]);
//! - brackets: the last `[[A]]`, `[[B]]` or `[[C]]` that is not part of an instruction;
//! - winner: the last `Winner: Response A`, `Response B is the winner`, `Response B is better
//!   overall`, `It's a draw`, …, where a win on one aspect (`Response A wins on X`) is no
//!   verdict.

use regex::Regex;
use std::sync::OnceLock;

/// A pairwise verdict, in the order the answers were shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// The first-shown answer is better.
    A,
    /// The second-shown answer is better.
    B,
    /// A tie.
    Tie,
}

/// One answer's listwise totals verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TotalVerdict {
    /// The total: the stated one, else the sum of complete criterion scores.
    pub total: Option<u32>,
    /// Criterion scores written next to the total, if any.
    pub criteria: Vec<Option<u32>>,
    /// A stated total that differs from the sum of complete criterion scores.
    pub mismatch: bool,
    /// The judge wrote two different totals (or criterion scores) for this answer: the
    /// total is left empty rather than one of them picked.
    pub conflict: bool,
}

/// `raw` without the quoted answers (20+ characters) and echoed instruction fragments.
pub fn strip_echo(raw: &str, instructions: &[String], quoted: &[&str]) -> String {
    let mut s = raw.to_string();
    let mut quoted: Vec<&str> = quoted.iter().map(|q| q.trim()).collect();
    quoted.sort_by_key(|q| std::cmp::Reverse(q.len()));
    for q in quoted {
        if q.chars().count() >= 20 {
            s = s.replace(q, " ");
        }
    }
    for f in instructions {
        if s.contains(f.as_str()) {
            s = s.replace(f.as_str(), " ");
        }
    }
    s
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("verdict patterns are valid")
}

/// What the values found for one slot (an answer's total, or one criterion) come to: the
/// value when every in-range value agrees, nothing (with `conflict`) when they disagree. A
/// value outside `lo..=hi` never overrides one inside it.
fn settle(values: &[u32], lo: u32, hi: u32) -> (Option<u32>, bool) {
    let mut inside = values.iter().copied().filter(|v| (lo..=hi).contains(v));
    let Some(first) = inside.next() else {
        return (None, false);
    };
    if inside.all(|v| v == first) {
        (Some(first), false)
    } else {
        (None, true)
    }
}

/// The numbers captured as group 1 by `r` in `text`, leaving out operands of arithmetic
/// (`4 + 3`) and the integer part of decimals (`3.5`), which the pattern marks by a match of
/// group 2.
fn numbers(r: &Regex, text: &str) -> Vec<u32> {
    r.captures_iter(text)
        .filter(|c| c.get(2).is_none())
        .filter_map(|c| c[1].parse().ok())
        .collect()
}

/// What may follow a number that is not a value of its own: an arithmetic operator or a
/// decimal point (group 2 of every value pattern).
const NOT_A_VALUE: &str = r"(\s*[+*×]\s*\d|\.\d)?";

/// The score of one criterion in `text`: `Criterion: [[n]]` (else `Criterion: n`), matched at
/// word boundaries. `None` when absent, outside 1..=scale, or written twice with different
/// values (a conflict is never settled by picking one).
pub fn criterion_score(text: &str, criterion: &str, scale: u32) -> Option<u32> {
    criterion_found(text, criterion, scale).0
}

/// [`criterion_score`], and whether the criterion was given conflicting scores.
fn criterion_found(text: &str, name: &str, scale: u32) -> (Option<u32>, bool) {
    let c = regex::escape(name);
    let strict = re(&format!(r"(?i)\b{c}\b\s*:?\s*\[\[\s*(\d+)\s*\]\]"));
    let found = numbers(&strict, text);
    if !found.is_empty() {
        return settle(&found, 1, scale);
    }
    let lenient = re(&format!(
        r"(?i)\b{c}\b\**\s*[:=\-]?\s*\**\s*(\d+)\b{NOT_A_VALUE}"
    ));
    settle(&numbers(&lenient, text), 1, scale)
}

/// Scores per criterion from a rubric verdict (after [`strip_echo`]).
pub fn criteria_scores(text: &str, criteria: &[String], scale: u32) -> Vec<Option<u32>> {
    criteria
        .iter()
        .map(|c| criterion_score(text, c, scale))
        .collect()
}

/// The label's words with `{k}`'s number as group 1, for labels like `Response {k}`.
fn label_pattern(label: &str) -> String {
    let (before, after) = label.split_once("{k}").unwrap_or((label, ""));
    let words = |s: &str| {
        s.split_whitespace()
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(r"[ \t]+")
    };
    format!(r"{}[ \t]*#?[ \t]*(\d+)\b{}", words(before), words(after))
}

/// An answer label anywhere in a line (a mention).
fn mention_regex(label: &str) -> Regex {
    re(&format!(r"(?i)\b{}", label_pattern(label)))
}

/// An answer label that opens a line: after indentation, list markers (`-`, `*`, `1.`),
/// quote and heading marks, table bars and emphasis, but after no other word. Only such a
/// label starts an answer's verdict; a label in the middle of a sentence ("Response 1 beats
/// Response 2 by 1 point") is a mention, not a verdict.
fn head_regex(label: &str) -> Regex {
    re(&format!(
        r"(?im)^[ \t>#|*_+•-]*(?:\(?\d{{1,2}}[.)][ \t]+[*_]*)?{}",
        label_pattern(label)
    ))
}

/// Where each answer's verdict is written: for every line that opens with an answer label,
/// the rest of that line and the lines after it, up to the next such line or the first line
/// that mentions an answer label in passing (commentary that compares answers).
struct Segment<'t> {
    /// The answer's label number (1-based, as shown).
    k: usize,
    /// The rest of the line after the label.
    head: &'t str,
    /// The lines after it that belong to it.
    body: Vec<&'t str>,
    /// The whole line, for table rows.
    line: &'t str,
}

fn segments<'t>(text: &'t str, label: &str, criteria: &[String]) -> Vec<Segment<'t>> {
    let head = head_regex(label);
    let mention = mention_regex(label);
    let mut out: Vec<Segment<'t>> = Vec::new();
    let mut open = false;
    let mut after_blank = false;
    for line in text.lines() {
        if let Some(c) = head.captures(line) {
            let (Some(m), Ok(k)) = (c.get(0), c[1].parse::<usize>()) else {
                continue;
            };
            let rest = &line[m.end()..];
            // `Response 1-4 were scored as follows`: a range of labels, not answer 1.
            let mut chars = rest.chars();
            if matches!(chars.next(), Some('-' | '–'))
                && chars
                    .as_str()
                    .trim_start()
                    .starts_with(|ch: char| ch.is_ascii_digit())
            {
                open = false;
                continue;
            }
            // The line's verdict ends where it starts talking about another answer
            // (`Response 2: 9 (Response 1 covers 5 more steps)`).
            let rest = match mention.find(rest) {
                Some(other) => &rest[..other.start()],
                None => rest,
            };
            out.push(Segment {
                k,
                head: rest,
                body: Vec::new(),
                line,
            });
            open = true;
            after_blank = false;
        } else if mention.is_match(line) {
            open = false;
        } else if line.trim().is_empty() {
            after_blank = true;
        } else if open {
            // After a blank line, only a criterion or total line still belongs to the answer
            // above it; a closing remark ("Overall, the highest score is 11") does not.
            if after_blank && !continues_a_block(line, criteria) {
                open = false;
                continue;
            }
            if let Some(s) = out.last_mut() {
                s.body.push(line);
            }
        }
    }
    out
}

/// Whether a line after a blank line still belongs to the answer above: it opens with a
/// criterion or with `Total`/`Sum`.
fn continues_a_block(line: &str, criteria: &[String]) -> bool {
    let t = line.trim_start_matches(|c: char| c.is_whitespace() || "-*•>#_|+".contains(c));
    let lower = t.to_lowercase();
    ["total", "sum"].iter().any(|w| lower.starts_with(w))
        || criteria
            .iter()
            .any(|c| lower.starts_with(&c.to_lowercase()))
}

/// The stated totals of one line: after `total`, `sum`, `overall` or `score`, the number after
/// the last `=` on the line (arithmetic such as `Total: 4 + 3 + 3 = 10`), else the number the
/// keyword leads to (`Total: 10`, `The sum of 3 criteria is 10`); without such a keyword, the
/// number after a last `=` (`Relevance 4, Coherence 3, Completeness 3 = 10`).
fn stated_totals(line: &str) -> Vec<u32> {
    static KEYWORD: OnceLock<Regex> = OnceLock::new();
    static EQUALS: OnceLock<Regex> = OnceLock::new();
    static SEPARATED: OnceLock<Regex> = OnceLock::new();
    static DIRECT: OnceLock<Regex> = OnceLock::new();
    let keyword = KEYWORD.get_or_init(|| re(r"(?i)\b(?:total|sum|overall|score)\b"));
    // `= n` after a number or a bracket: the result of arithmetic, not `Relevance = 3`.
    let equals = EQUALS.get_or_init(|| re(&format!(r"[\d)\]]\s*=\s*\**\s*(\d+)\b{NOT_A_VALUE}")));
    let separated = SEPARATED.get_or_init(|| {
        re(&format!(
            r"(?i)\b(?:total|sum|overall|score)\b[^\n:=]*?(?:\bis\b|:|=)\s*\**\s*(\d+)\b{NOT_A_VALUE}"
        ))
    });
    let direct = DIRECT.get_or_init(|| {
        re(&format!(
            r"(?i)\b(?:total|sum|overall)(?:\s+score)?\b\**\s*\**\s*(\d+)\b{NOT_A_VALUE}"
        ))
    });
    let eq = numbers(equals, line);
    if let Some(&last) = eq.last() {
        return vec![last];
    }
    if keyword.is_match(line) {
        if let Some(&n) = numbers(separated, line).first() {
            return vec![n];
        }
        return numbers(direct, line).into_iter().take(1).collect();
    }
    Vec::new()
}

/// The number right after an answer label and its separator: `Response 1: 10`,
/// `**Response 1:** 10/12`, `Response 1 - 10`, `Response 1 = 10`, `Response 1 (10/12)`,
/// `Response 1 scored 10`.
fn number_after_label(rest: &str) -> Option<u32> {
    static AFTER: OnceLock<Regex> = OnceLock::new();
    let after = AFTER.get_or_init(|| {
        re(&format!(
            r"(?i)^[*_)\]]*[ \t]*(?:[:=(–]|-[ \t]|\*\*:\*\*|[ \t]+(?:scores?|scored|gets|got|receives?|received|earns?|earned))[ \t*_]*(\d+)\b{NOT_A_VALUE}(\s*(?:points?\s+)?(?:more|less|fewer|lower|higher|than|below|above|ahead|behind)\b)?"
        ))
    });
    // A number followed by a comparison ("gets 5 more points than …") is a difference, not
    // a total (group 3).
    after
        .captures(rest)
        .filter(|c| c.get(2).is_none() && c.get(3).is_none())
        .and_then(|c| c[1].parse().ok())
}

/// Whether a line after an answer's label line states a score of its own: it opens (after
/// list markers and markup) with a total keyword, a criterion or a number. Commentary ("The
/// total number of steps is 6") is not read for totals.
fn states_a_score(line: &str, criteria: &[String]) -> bool {
    let t = line.trim_start_matches(|c: char| c.is_whitespace() || "-*•>#_|+".contains(c));
    let lower = t.to_lowercase();
    t.starts_with(|c: char| c.is_ascii_digit())
        || ["total", "sum", "score", "final"]
            .iter()
            .any(|w| lower.starts_with(w))
        || criteria
            .iter()
            .any(|c| lower.starts_with(&c.to_lowercase()))
}

/// A markdown table row's cells (`| a | b |`), or `None` for another line.
fn cells(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    let inner = t.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(str::trim).collect())
}

/// The header of the table `row` is in: the nearest earlier table line that is neither an
/// answer's row nor the `---` rule.
fn table_header<'t>(text: &'t str, row: &str, head: &Regex) -> Option<Vec<&'t str>> {
    let mut header = None;
    for line in text.lines() {
        if std::ptr::eq(line, row) {
            return header;
        }
        match cells(line) {
            Some(c)
                if !head.is_match(line)
                    && !c.iter().all(|x| x.chars().all(|ch| "-: ".contains(ch))) =>
            {
                header = Some(c)
            }
            Some(_) => {}
            None => header = None,
        }
    }
    None
}

/// The leading integer of a table cell (`10`, `**10**`, `10/12`).
fn cell_number(cell: &str) -> Option<u32> {
    let t = cell.trim_matches(|c: char| c == '*' || c == '_' || c.is_whitespace());
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    let rest = &t[digits.len()..];
    if digits.is_empty()
        || rest.starts_with('.')
        || rest.chars().next().is_some_and(char::is_alphanumeric)
    {
        return None;
    }
    digits.parse().ok()
}

/// Per-criterion scores (and a stated `Total`, when the judge wrote one) for each of `n`
/// answers from a listwise verdict whose lines start with the answer label. The first
/// complete line for an answer (every criterion scored) is its verdict, and later lines for
/// it change nothing; incomplete lines only fill criteria still missing. The total is the
/// stated one, else the sum of complete criterion scores; a stated total that differs from
/// the sum is flagged. Only a label that opens a line starts an answer's line.
pub fn listwise_criteria(
    text: &str,
    label: &str,
    n: usize,
    criteria: &[String],
    scale: u32,
) -> Vec<TotalVerdict> {
    let (lo, hi) = (criteria.len() as u32, criteria.len() as u32 * scale);
    let mut out = vec![
        TotalVerdict {
            criteria: vec![None; criteria.len()],
            ..Default::default()
        };
        n
    ];
    let mut complete = vec![false; n];
    for seg in segments(text, label, criteria) {
        let k = seg.k;
        if k == 0 || k > n || complete[k - 1] {
            continue;
        }
        let line = seg.head;
        let found: Vec<Option<u32>> = criteria
            .iter()
            .map(|c| criterion_score(line, c, scale))
            .collect();
        let (stated, _) = criterion_found(line, "Total", hi);
        let stated = stated.filter(|t| *t >= lo);
        let v = &mut out[k - 1];
        if found.iter().all(Option::is_some) {
            v.criteria = found;
            v.total = stated;
            complete[k - 1] = true;
        } else {
            for (slot, s) in v.criteria.iter_mut().zip(found) {
                if slot.is_none() {
                    *slot = s;
                }
            }
            v.total = v.total.or(stated);
        }
    }
    for v in &mut out {
        let sum: Option<u32> = v.criteria.iter().copied().sum();
        match (v.total, sum) {
            (Some(t), Some(s)) if t != s => v.mismatch = true,
            (None, Some(s)) => v.total = Some(s),
            _ => {}
        }
    }
    out
}

/// One total per answer from a listwise verdict, in the forms judges write: `Response 1: 10`,
/// `Response 1 - Total: 10`, `**Response 1:** 10/12`, `Response 1: Relevance 4, Coherence 3,
/// Completeness 3 = 10`, a block per response (criterion lines, then `Total: 11`), a markdown
/// table with a `Total` column, or, with no label at all, a bare numbered list.
///
/// The rules, so that no number is read from the wrong place:
/// - only a label that opens a line starts an answer's verdict; its verdict
///   runs until the next such line or a line that mentions a label in passing;
/// - a stated total (`Total: n`, `= n` at the end of arithmetic) beats the first number after
///   the label, and an operand (`4 + 3`) is never a total;
/// - totals outside `criteria.len()..=criteria.len() * scale` are no total, and never
///   override one inside it;
/// - two different totals for one answer give no total and `conflict`, never a silent pick.
pub fn listwise_totals(
    text: &str,
    label: &str,
    n: usize,
    criteria: &[String],
    scale: u32,
) -> Vec<TotalVerdict> {
    let (lo, hi) = (criteria.len() as u32, criteria.len() as u32 * scale);
    let head = head_regex(label);
    let mut totals: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut scores: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); criteria.len()]; n];
    let segs = segments(text, label, criteria);
    // A criterion is read from its own mention, not from a total's arithmetic; one pattern
    // per criterion, compiled once per verdict.
    let criterion_res: Vec<Regex> = criteria
        .iter()
        .map(|c| {
            re(&format!(
                r"(?i)\b{}\b\**\s*[:=\-]?\s*\**\s*(?:\[\[\s*)?(\d+)\b{NOT_A_VALUE}",
                regex::escape(c)
            ))
        })
        .collect();
    for seg in &segs {
        let k = seg.k;
        if k == 0 || k > n {
            continue;
        }
        // A table row: the columns its header names.
        if let (Some(row), Some(header)) = (cells(seg.line), table_header(text, seg.line, &head)) {
            for (name, cell) in header.iter().zip(&row) {
                let Some(x) = cell_number(cell) else { continue };
                let lower = name.to_lowercase();
                if ["total", "sum", "overall", "score"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    totals[k - 1].push(x);
                } else if let Some(i) = criteria
                    .iter()
                    .position(|c| lower.contains(&c.to_lowercase()))
                {
                    scores[k - 1][i].push(x);
                }
            }
            continue;
        }
        let lines: Vec<&str> = std::iter::once(seg.head)
            .chain(
                seg.body
                    .iter()
                    .copied()
                    .filter(|l| states_a_score(l, criteria)),
            )
            .collect();
        let mut criterion_named = false;
        for (i, c_re) in criterion_res.iter().enumerate() {
            for line in &lines {
                let found = numbers(c_re, line);
                criterion_named |= !found.is_empty();
                scores[k - 1][i].extend(found);
            }
        }
        let on_head = stated_totals(seg.head);
        let head_states_total = !on_head.is_empty();
        totals[k - 1].extend(on_head);
        totals[k - 1].extend(lines[1..].iter().flat_map(|l| stated_totals(l)));
        // A stated total on the label's own line (`Response 1: 4, 4, 3 = 11`) beats the first
        // number after the label.
        if !criterion_named && !head_states_total {
            totals[k - 1].extend(number_after_label(seg.head));
        }
    }
    if segs.is_empty() {
        // A bare numbered list: `1. 10`, `2) 9`, `3: 11`.
        static LIST: OnceLock<Regex> = OnceLock::new();
        let list = LIST.get_or_init(|| {
            re(&format!(
                r"(?m)^[ \t]*(\d+)[ \t]*[.):][ \t]*\**[ \t]*(\d+)\b{NOT_A_VALUE}(?:[ \t]*/[ \t]*\d+)?\**[ \t]*$"
            ))
        });
        for c in list.captures_iter(text) {
            if c.get(3).is_some() {
                continue;
            }
            let (Ok(k), Ok(t)) = (c[1].parse::<usize>(), c[2].parse::<u32>()) else {
                continue;
            };
            if (1..=n).contains(&k) {
                totals[k - 1].push(t);
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for (t, s) in totals.iter().zip(&scores) {
        let (total, mut conflict) = settle(t, lo, hi);
        let criteria: Vec<Option<u32>> = s
            .iter()
            .map(|v| {
                let (x, c) = settle(v, 1, scale);
                conflict |= c;
                x
            })
            .collect();
        let mut v = TotalVerdict {
            total,
            criteria,
            mismatch: false,
            conflict,
        };
        let sum: Option<u32> = v.criteria.iter().copied().sum();
        match (v.total, sum) {
            (Some(t), Some(s)) if t != s => v.mismatch = true,
            (None, Some(s)) if (lo..=hi).contains(&s) && !v.conflict => v.total = Some(s),
            _ => {}
        }
        out.push(v);
    }
    out
}

/// The last bracket verdict `[[A]]`, `[[B]]` or (when ties are allowed) `[[C]]`. A bracket
/// followed by `if`, `for` or `when` describes the format and is not a verdict.
pub fn bracket_verdict(text: &str, tie: bool) -> Option<Verdict> {
    static BRACKET: OnceLock<Regex> = OnceLock::new();
    let b = BRACKET.get_or_init(|| re(r"\[\[\s*([ABC])\s*\]\](\s+(?i:if|for|when)\b)?"));
    b.captures_iter(text)
        .filter(|c| c.get(2).is_none())
        .filter_map(|c| match &c[1] {
            "A" => Some(Verdict::A),
            "B" => Some(Verdict::B),
            _ => tie.then_some(Verdict::Tie),
        })
        .last()
}

/// The last winner statement in free text: `Winner: Response A`, `The winner is B`,
/// `Response B is the winner`, `Response A wins`, `Response B is better overall`, `It's a draw`, `Winner: draw`, or a line
/// that says only `Draw`/`Tie`. The letters must be capitals.
pub fn winner_verdict(text: &str) -> Option<Verdict> {
    static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
    let pats = PATTERNS.get_or_init(|| {
        vec![
            re(r"(?i:\bwinner\b)\**\s*(?:(?i:is)\b|:|-|=)?\s*\**\s*(?:(?i:response|answer)\s*)?\**\(?([AB])\b"),
            re(r"(?:(?i:\bresponse|\banswer)\s*)\**([AB])\**\)?\s*(?i:is\s+(?:the\s+)?(?:clear\s+|overall\s+)?winner)\b"),
            // `Response A wins` and `Response B is better`, unless qualified (`wins on X`,
            // `is better in Y`, `is better structured`): a win on one aspect is not the
            // verdict, a win `in every category` is.
            re(r"(?:(?i:\bresponse|\banswer)\s*)\**([AB])\**\)?\s*(?i:wins)\b(\s+(?i:on|in|at|for|regarding)\s+(\w+))?"),
            re(r"(?:(?i:\bresponse|\banswer)\s*)\**([AB])\**\)?\s*(?i:is\s+(?:the\s+)?(?:clearly\s+|much\s+|slightly\s+|far\s+)?(?:better|stronger|superior)(?:\s+(?:one|response|answer|choice))?(?:\s+overall)?(?:\s+than\s+(?:the\s+other(?:\s+one)?|(?:response|answer)\s*[AB]))?(\s+(?:in|on|for|at)\s+(\w+)[^.!;,\n]*)?)\s*(?:[.!,;:)]|$)"),
            re(r"(?i)\b(?:winner\b\**\s*(?:is\b|:|-|=)?\s*\**\s*(?:a\s+)?|it'?s\s+a\s+|it\s+is\s+a\s+|(?:result|verdict|conclusion|decision)\s*(?:is\b|:)\s*\**\s*(?:a\s+)?)\**(draw|tie)\b"),
            // A line that is only `Draw`, or opens with `Draw.` (`Draw. Both responses …`):
            // the stop keeps "Tie the tent down" from reading as a verdict.
            re(r"(?im)^\W*(draw|tie)\W*$"),
            re(r"(?im)^[\s*_#>-]*(draw|tie)\**\s*[.!]"),
        ]
    });
    let mut best: Option<(usize, Verdict)> = None;
    for p in pats {
        // Group 2 is a qualifier (`on X`); group 3 its first word, which may make it a
        // win overall after all (`in every category`).
        let overall = |c: &regex::Captures<'_>| {
            c.get(2).is_none()
                || c.get(3).is_some_and(|w| {
                    ["all", "every", "each", "most", "both", "overall"]
                        .contains(&w.as_str().to_lowercase().as_str())
                })
        };
        for c in p.captures_iter(text).filter(overall) {
            let Some(m) = c.get(1) else { continue };
            let v = match m.as_str() {
                "A" => Verdict::A,
                "B" => Verdict::B,
                _ => Verdict::Tie,
            };
            if best.is_none_or(|(at, _)| m.start() >= at) {
                best = Some((m.start(), v));
            }
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests;
