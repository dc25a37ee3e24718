//! The language of each verdict form, for constrained decoding: a local judge decodes its
//! verdict held to it ([`crate::sampling::Constraint`]), so it cannot write one its parser
//! cannot read. Each language is exactly the reply format the mode's prompt asks for, which
//! the mode's parser reads (tested against the parsers below).

use super::template::JudgeTemplate;

/// An integer from `lo` to `hi`, as the judge would write it.
pub fn number(lo: u32, hi: u32) -> String {
    let all: Vec<String> = (lo..=hi).map(|x| x.to_string()).collect();
    format!("(?:{})", all.join("|"))
}

/// Listwise totals: `{label k}: N` on one line per shown answer, `N` within the totals'
/// range.
pub fn totals(t: &JudgeTemplate, n: usize, lo: u32, hi: u32) -> String {
    let total = number(lo, hi);
    (1..=n)
        .map(|k| format!("{}: {total}", regex::escape(&t.label(k))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Listwise criteria: `{label k}: C1 [[n]], C2 [[n]], …` per shown answer. The prompt
/// asks for a `Total [[N]]` after them too; held to this language the judge writes none,
/// and the total is the criteria's sum (the parser's rule where no total is stated), so a
/// total can never contradict its criteria (a judge of 135M parameters wrote `1, 1, 1,
/// Total 10` in 40 of 40 lines).
pub fn listwise_criteria(t: &JudgeTemplate, n: usize, criteria: &[String], scale: u32) -> String {
    let line = criteria
        .iter()
        .map(|c| format!(r"{} \[\[{}\]\]", regex::escape(c), number(1, scale)))
        .collect::<Vec<_>>()
        .join(", ");
    (1..=n)
        .map(|k| format!("{}: {line}", regex::escape(&t.label(k))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rubric: `Criterion: [[n]]`, one line per criterion.
pub fn criteria(criteria: &[String], scale: u32) -> String {
    criteria
        .iter()
        .map(|c| format!(r"{}: \[\[{}\]\]", regex::escape(c), number(1, scale)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pairwise brackets: `[[A]]`, `[[B]]`, and `[[C]]` where a tie is allowed.
pub fn brackets(tie: bool) -> String {
    format!(r"\[\[[AB{}]\]\]", if tie { "C" } else { "" })
}

/// Pairwise winner in words: `Winner: Response A`, `Winner: Response B`, and
/// `Winner: draw` where a tie is allowed.
pub fn winner(tie: bool) -> String {
    format!(
        "Winner: (?:Response A|Response B{})",
        if tie { "|draw" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::super::parse::{
        bracket_verdict, criteria_scores, listwise_criteria as parse_listwise_criteria,
        listwise_totals, winner_verdict, Verdict,
    };
    use super::*;
    use regex::Regex;

    fn whole(pattern: &str) -> Regex {
        Regex::new(&format!("^(?:{pattern})$")).unwrap()
    }

    fn criteria3() -> Vec<String> {
        ["Relevance", "Coherence", "Completeness"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn every_reply_a_language_admits_is_one_its_parser_reads() {
        let t = JudgeTemplate::named("writeup-gpt4").unwrap();
        let re = whole(&totals(&t, 4, 3, 12));
        let reply = "Response 1: 12\nResponse 2: 3\nResponse 3: 10\nResponse 4: 7";
        assert!(re.is_match(reply));
        let v = listwise_totals(reply, &t.answer_label, 4, &criteria3(), 4);
        let got: Vec<Option<u32>> = v.iter().map(|x| x.total).collect();
        assert_eq!(got, vec![Some(12), Some(3), Some(10), Some(7)]);
        // Out of range, a missing line, and prose are outside the language.
        for bad in [
            "Response 1: 13\nResponse 2: 3\nResponse 3: 10\nResponse 4: 7",
            "Response 1: 2\nResponse 2: 3\nResponse 3: 10\nResponse 4: 7",
            "Response 1: 12\nResponse 2: 3\nResponse 3: 10",
            "All four are good: 12",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }

        let t = JudgeTemplate::named("listwise").unwrap();
        let re = whole(&listwise_criteria(&t, 2, &criteria3(), 4));
        let reply = "Answer 1: Relevance [[4]], Coherence [[3]], Completeness [[2]]\n\
                     Answer 2: Relevance [[1]], Coherence [[1]], Completeness [[1]]";
        assert!(re.is_match(reply));
        let v = parse_listwise_criteria(reply, &t.answer_label, 2, &criteria3(), 4);
        assert_eq!(v[0].criteria, vec![Some(4), Some(3), Some(2)]);
        assert_eq!((v[0].total, v[1].total), (Some(9), Some(3)));
        assert!(!v[0].mismatch && !v[1].mismatch);
        assert!(!re.is_match(&reply.replace("[[4]]", "[[5]]")));
        // A stated total, which could contradict the criteria, is outside the language.
        assert!(!re.is_match(&reply.replace("[[2]]\n", "[[2]], Total [[10]]\n")));

        let re = whole(&criteria(&criteria3(), 4));
        let reply = "Relevance: [[4]]\nCoherence: [[2]]\nCompleteness: [[1]]";
        assert!(re.is_match(reply));
        assert_eq!(
            criteria_scores(reply, &criteria3(), 4),
            vec![Some(4), Some(2), Some(1)]
        );

        assert!(whole(&brackets(true)).is_match("[[C]]"));
        assert!(!whole(&brackets(false)).is_match("[[C]]"));
        assert_eq!(bracket_verdict("[[B]]", true), Some(Verdict::B));
        for (reply, v) in [
            ("Winner: Response A", Verdict::A),
            ("Winner: Response B", Verdict::B),
            ("Winner: draw", Verdict::Tie),
        ] {
            assert!(whole(&winner(true)).is_match(reply));
            assert_eq!(winner_verdict(reply), Some(v), "{reply}");
        }
        assert!(!whole(&winner(false)).is_match("Winner: draw"));
    }
}
