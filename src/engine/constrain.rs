//! Constrained decoding: a reply held to a regular language, so that a judge cannot write a
//! verdict its parser cannot read.
//!
//! The language ([`Constraint`]) is compiled once into a DFA over bytes (regex-automata, the
//! engine under `regex`, already built for this crate). At each step every token's bytes are
//! walked through the DFA from the current state, and a token that would leave the language
//! (a dead state) gets probability 0; end-of-turn tokens are allowed only where the text so
//! far is a complete match. The vocabulary is walked in byte order with each token's common
//! prefix with the one before it ([`TokenTable`]), so a dead prefix skips every token that
//! starts with it: a step that admits a few digits reads one byte of most of the 151,665
//! tokens of Qwen2.5 and walks a few hundred, and free text walks each trie node once.
//!
//! Tokens are bytes, not characters: a byte-level BPE token may end inside a UTF-8 sequence
//! or start in the middle of one, and the DFA (Unicode classes compiled to UTF-8 byte
//! sequences) follows it byte by byte, exactly as the text will be decoded.

use crate::error::{Error, Result};
use crate::sampling::Constraint;
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The bytes each token writes, sorted so that tokens sharing a prefix are neighbours.
#[derive(Debug)]
pub struct TokenTable {
    /// `(bytes, id)` in byte order; tokens that write no text (control tokens) are left out.
    sorted: Vec<(Box<[u8]>, u32)>,
    /// For each entry of `sorted`, the length of its common prefix with the entry before.
    lcp: Vec<usize>,
    /// Each id's bytes (`None`: the token is never allowed by a constraint).
    by_id: Vec<Option<Box<[u8]>>>,
    longest: usize,
}

impl TokenTable {
    /// Builds the table from each id's bytes (`None` for tokens that write no text).
    pub fn new(bytes: Vec<Option<Vec<u8>>>) -> Self {
        let by_id: Vec<Option<Box<[u8]>>> = bytes
            .into_iter()
            .map(|b| b.filter(|b| !b.is_empty()).map(Vec::into_boxed_slice))
            .collect();
        let mut sorted: Vec<(Box<[u8]>, u32)> = by_id
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.clone().map(|b| (b, i as u32)))
            .collect();
        sorted.sort();
        let mut lcp = Vec::with_capacity(sorted.len());
        for (i, (b, _)) in sorted.iter().enumerate() {
            let l = match i.checked_sub(1) {
                Some(p) => {
                    let prev = &sorted[p].0;
                    prev.iter()
                        .zip(b.iter())
                        .take_while(|(x, y)| x == y)
                        .count()
                }
                None => 0,
            };
            lcp.push(l);
        }
        let longest = sorted.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
        Self {
            sorted,
            lcp,
            by_id,
            longest,
        }
    }

    /// The bytes token `id` writes, if any.
    pub fn bytes(&self, id: u32) -> Option<&[u8]> {
        self.by_id.get(id as usize).and_then(|b| b.as_deref())
    }
}

type Dfa = dense::DFA<Vec<u32>>;

/// A DFA with the states from which the language can still be completed. The DFA reports a
/// match one byte late, so a state that is not dead may only be reporting the match that
/// just ended (`9` then `x` after `Score: 9`); a token is allowed only when it leads to a
/// state from which some continuation ends in a match.
#[derive(Debug)]
struct Machine {
    dfa: Dfa,
    /// By state index: whether a match can still be completed from the state.
    live: Vec<bool>,
    start: StateID,
}

/// Most bytes a verdict language's DFA, or its construction, may take.
const DFA_LIMIT: usize = 32 << 20;

impl Machine {
    fn new(pattern: &str) -> Result<Self> {
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    // Every string of the language, not the leftmost-first match: `1|10`
                    // must let `1` go on to `10`.
                    .match_kind(MatchKind::All)
                    // A pattern a client sent (`serve`) must not take the memory with it.
                    .dfa_size_limit(Some(DFA_LIMIT))
                    .determinize_size_limit(Some(DFA_LIMIT)),
            )
            .build(pattern)
            .map_err(|e| Error::InvalidSampling {
                field: "constraint",
                value: pattern.chars().take(80).collect(),
                reason: format!("not a regular expression this engine compiles: {e}"),
            })?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| Error::Internal(format!("constraint start state: {e}")))?;
        // The reachable states and the edges into each.
        let mut seen: HashMap<StateID, usize> = HashMap::new();
        let mut states = vec![start];
        seen.insert(start, 0);
        let mut into: Vec<Vec<usize>> = vec![Vec::new()];
        let mut i = 0;
        while i < states.len() {
            let s = states[i];
            for b in 0..=255u8 {
                let n = dfa.next_state(s, b);
                if dfa.is_dead_state(n) {
                    continue;
                }
                let j = *seen.entry(n).or_insert_with(|| {
                    states.push(n);
                    into.push(Vec::new());
                    states.len() - 1
                });
                into[j].push(i);
            }
            i += 1;
        }
        // Live: a match at the end of input here, or an edge to a live state.
        let mut live_at = vec![false; states.len()];
        let mut todo: Vec<usize> = (0..states.len())
            .filter(|&k| dfa.is_match_state(dfa.next_eoi_state(states[k])))
            .collect();
        for &k in &todo {
            live_at[k] = true;
        }
        while let Some(k) = todo.pop() {
            for &p in &into[k] {
                if !live_at[p] {
                    live_at[p] = true;
                    todo.push(p);
                }
            }
        }
        let top = states.iter().map(|s| s.as_usize()).max().unwrap_or(0);
        let mut live = vec![false; top + 1];
        for (k, s) in states.iter().enumerate() {
            live[s.as_usize()] = live_at[k];
        }
        Ok(Self { dfa, live, start })
    }

    fn next(&self, s: StateID, b: u8) -> StateID {
        self.dfa.next_state(s, b)
    }

    fn is_live(&self, s: StateID) -> bool {
        self.live.get(s.as_usize()).copied().unwrap_or(false)
    }

    /// Whether the text that led to `s` is in the language.
    fn complete(&self, s: StateID) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(s))
    }

    /// The length in bytes of the longest string the language holds, or `None` when it
    /// holds strings of any length (a cycle through live states).
    fn longest(&self) -> Option<usize> {
        fn walk(
            m: &Machine,
            s: StateID,
            memo: &mut HashMap<StateID, usize>,
            on_path: &mut Vec<StateID>,
        ) -> Option<usize> {
            if let Some(l) = memo.get(&s) {
                return Some(*l);
            }
            if on_path.contains(&s) {
                return None; // a cycle
            }
            on_path.push(s);
            let mut best = 0;
            for b in 0..=255u8 {
                let n = m.next(s, b);
                if m.is_live(n) {
                    best = best.max(walk(m, n, memo, on_path)? + 1);
                }
            }
            on_path.pop();
            memo.insert(s, best);
            Some(best)
        }
        walk(self, self.start, &mut HashMap::new(), &mut Vec::new())
    }
}

/// A compiled [`Constraint`]: the DFA of the whole reply and, for a reply with free text
/// first, the DFA of the verdict alone, which takes over when the token budget is about to
/// run out (with the verdict's length in bytes).
#[derive(Debug)]
pub struct Grammar {
    whole: Machine,
    tail: Option<(Machine, usize)>,
    /// A verdict-only language's longest string in bytes (`None`: free text first, or
    /// unbounded).
    longest: Option<usize>,
}

impl Grammar {
    /// Compiles `c` (cached for the process: judges ask the same few forms again and again).
    pub fn get(c: &Constraint) -> Result<Arc<Self>> {
        static CACHE: OnceLock<Mutex<HashMap<Constraint, Arc<Grammar>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(g) = cache.lock().map_err(poisoned)?.get(c) {
            return Ok(g.clone());
        }
        let g = Arc::new(Self::compile(c)?);
        let mut map = cache.lock().map_err(poisoned)?;
        if map.len() >= 256 {
            map.clear();
        }
        map.insert(c.clone(), g.clone());
        Ok(g)
    }

    /// Compiles `c` without the cache.
    pub fn compile(c: &Constraint) -> Result<Self> {
        if c.free_text {
            let whole = Machine::new(&format!("(?s)(?:.*\n)?(?:{})", c.regex))?;
            let tail = Machine::new(&format!("\n(?:{})", c.regex))?;
            let reserve = tail.longest().ok_or_else(|| Error::InvalidSampling {
                field: "constraint",
                value: c.regex.chars().take(80).collect(),
                reason: "free text needs a verdict of bounded length after it".into(),
            })?;
            Ok(Self {
                whole,
                tail: Some((tail, reserve)),
                longest: None,
            })
        } else {
            let whole = Machine::new(&c.regex)?;
            let longest = whole.longest();
            Ok(Self {
                whole,
                tail: None,
                longest,
            })
        }
    }

    /// The most tokens a reply in a verdict-only language can take, its end token included
    /// (every token writes at least one byte): a budget that small can always finish it.
    pub fn tokens_needed(&self) -> Option<usize> {
        self.longest.map(|l| l + 1)
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal("constraint cache lock poisoned".into())
}

/// One sequence's place in its constraint.
#[derive(Debug)]
pub(crate) struct Constrained {
    grammar: Arc<Grammar>,
    table: Arc<TokenTable>,
    state: StateID,
    in_tail: bool,
    /// The verdict was complete when the budget ran low: only an end token may follow.
    closing: bool,
    /// The tokens allowed from each state met so far, as bitsets: free text returns to a
    /// few states again and again, and a vocabulary walk costs about 4 ms at 151,665
    /// tokens when most of them are alive.
    seen: HashMap<(bool, StateID), Vec<u64>>,
}

impl Constrained {
    /// Starts `grammar` over the vocabulary `table`.
    pub(crate) fn new(grammar: Arc<Grammar>, table: Arc<TokenTable>) -> Result<Self> {
        let state = grammar.whole.start;
        Ok(Self {
            grammar,
            table,
            state,
            in_tail: false,
            closing: false,
            seen: HashMap::new(),
        })
    }

    fn machine(&self) -> &Machine {
        match (&self.grammar.tail, self.in_tail) {
            (Some((t, _)), true) => t,
            _ => &self.grammar.whole,
        }
    }

    /// Whether the text so far is a complete match.
    fn complete(&self) -> bool {
        self.machine().complete(self.state)
    }

    /// Sets every token the constraint does not allow next to `-inf` in `logits`, with
    /// `left` tokens of budget remaining (free text gives way to the verdict when the budget
    /// is just enough for it). Returns false when no token is allowed.
    pub(crate) fn mask(&mut self, logits: &mut [f32], stop_ids: &[u32], left: usize) -> bool {
        if let Some((tail, reserve)) = &self.grammar.tail {
            if !self.in_tail && !self.closing && left <= reserve + 1 {
                if self.complete() {
                    self.closing = true;
                } else {
                    self.in_tail = true;
                    self.state = tail.start;
                }
            }
        }
        let mut allowed = vec![false; logits.len()];
        if !self.closing {
            let key = (self.in_tail, self.state);
            if !self.seen.contains_key(&key) {
                let mut walked = vec![false; logits.len()];
                self.walk(&mut walked);
                let mut bits = vec![0u64; logits.len().div_ceil(64)];
                for (i, _) in walked.iter().enumerate().filter(|(_, a)| **a) {
                    bits[i / 64] |= 1 << (i % 64);
                }
                self.seen.insert(key, bits);
            }
            if let Some(bits) = self.seen.get(&key) {
                for (i, a) in allowed.iter_mut().enumerate() {
                    *a = bits[i / 64] >> (i % 64) & 1 == 1;
                }
            }
        }
        // An end token ends the reply exactly where it is complete, whatever text its
        // string would spell (`</s>` is plain text in some vocabularies).
        let end = self.closing || self.complete();
        for &s in stop_ids {
            if let Some(a) = allowed.get_mut(s as usize) {
                *a = end;
            }
        }
        let any = allowed.iter().any(|&a| a);
        for (l, ok) in logits.iter_mut().zip(&allowed) {
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
        any
    }

    /// Marks the tokens whose bytes keep the DFA alive from the current state.
    fn walk(&self, allowed: &mut [bool]) {
        let m = self.machine();
        let table = &self.table;
        // states[d]: the state after the first d bytes of the current token.
        let mut states = vec![self.state; table.longest + 1];
        let mut dead_at: Option<usize> = None;
        for ((bytes, id), &lcp) in table.sorted.iter().zip(&table.lcp) {
            if dead_at.is_some_and(|d| lcp >= d) {
                continue; // shares a prefix that already left the language
            }
            dead_at = None;
            let mut alive = true;
            for (d, &b) in bytes.iter().enumerate().skip(lcp) {
                let n = m.next(states[d], b);
                if !m.is_live(n) {
                    dead_at = Some(d + 1);
                    alive = false;
                    break;
                }
                states[d + 1] = n;
            }
            if alive {
                if let Some(a) = allowed.get_mut(*id as usize) {
                    *a = true;
                }
            }
        }
    }

    /// Moves past `token` (an allowed one; an end token changes nothing).
    pub(crate) fn advance(&mut self, token: u32) {
        let Some(bytes) = self.table.bytes(token) else {
            return;
        };
        let mut s = self.state;
        let m = self.machine();
        for &b in bytes {
            s = m.next(s, b);
        }
        self.state = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tokens: &[&str]) -> Arc<TokenTable> {
        Arc::new(TokenTable::new(
            tokens.iter().map(|t| Some(t.as_bytes().to_vec())).collect(),
        ))
    }

    fn allowed(c: &mut Constrained, n: usize, stops: &[u32], left: usize) -> Vec<usize> {
        let mut l = vec![0.0f32; n];
        c.mask(&mut l, stops, left);
        (0..n).filter(|&i| l[i].is_finite()).collect()
    }

    fn constraint(regex: &str, free_text: bool) -> Constraint {
        Constraint {
            regex: regex.into(),
            free_text,
        }
    }

    #[test]
    fn tokens_that_span_several_characters_are_walked_byte_by_byte() {
        // 0 "Score", 1 ": ", 2 "1", 3 "10", 4 "Sc", 5 "ore: 9", 6 "x", 7 "<eos>" (no bytes).
        let t = table(&["Score", ": ", "1", "10", "Sc", "ore: 9", "x", ""]);
        let g = Arc::new(Grammar::compile(&constraint("Score: (?:[1-9]|10)", false)).unwrap());
        let mut c = Constrained::new(g, t).unwrap();
        assert_eq!(allowed(&mut c, 8, &[7], 100), vec![0, 4]);
        c.advance(4);
        assert_eq!(allowed(&mut c, 8, &[7], 100), vec![5]);
        c.advance(5);
        // "Score: 9" is complete: only the end token may follow.
        assert_eq!(allowed(&mut c, 8, &[7], 100), vec![7]);

        let g = Arc::new(Grammar::compile(&constraint("Score: (?:[1-9]|10)", false)).unwrap());
        let mut c = Constrained::new(g, table(&["Score: ", "1", "10", "0", ""])).unwrap();
        c.advance(0);
        assert_eq!(allowed(&mut c, 5, &[4], 100), vec![1, 2]);
        c.advance(1);
        // `1` is a whole score, and may also go on to `10`.
        assert_eq!(allowed(&mut c, 5, &[4], 100), vec![3, 4]);
    }

    #[test]
    fn multibyte_characters_split_across_tokens_stay_in_the_language() {
        // "é" is C3 A9; byte-level tokens may split it.
        let t = Arc::new(TokenTable::new(vec![
            Some(vec![0xC3]),
            Some(vec![0xA9]),
            Some(b"\n[[A]]".to_vec()),
            Some(b"[[".to_vec()),
            None,
        ]));
        let g = Arc::new(Grammar::compile(&constraint(r"\[\[[AB]\]\]", true)).unwrap());
        let mut c = Constrained::new(g, t).unwrap();
        // Free text first: the lone lead byte is a live prefix of "é".
        assert!(allowed(&mut c, 5, &[4], 100).contains(&0));
        c.advance(0);
        // Only the continuation byte can follow a lead byte.
        assert_eq!(allowed(&mut c, 5, &[4], 100), vec![1]);
        c.advance(1);
        c.advance(2);
        assert!(allowed(&mut c, 5, &[4], 100).contains(&4));
    }

    #[test]
    fn free_text_gives_way_to_the_verdict_when_the_budget_runs_low() {
        // Token 7 is the end token; its string is plain text in this vocabulary.
        let t = table(&["hello", "\n", "[[", "A", "B", "]]", "C", "</s>"]);
        let g = Arc::new(Grammar::compile(&constraint(r"\[\[[AB]\]\]", true)).unwrap());
        let mut c = Constrained::new(g, t.clone()).unwrap();
        // Plenty of budget: free text, and no end token (the verdict is missing).
        let a = allowed(&mut c, 8, &[7], 50);
        assert!(a.contains(&0) && !a.contains(&7), "{a:?}");
        c.advance(0);
        // Seven tokens left (`\n[[A]]` is six bytes): only the verdict's newline.
        assert_eq!(allowed(&mut c, 8, &[7], 7), vec![1]);
        c.advance(1);
        assert_eq!(allowed(&mut c, 8, &[7], 6), vec![2]);

        // A verdict already complete when the budget runs low is closed, not repeated.
        let g = Arc::new(Grammar::compile(&constraint(r"\[\[[AB]\]\]", true)).unwrap());
        let mut c = Constrained::new(g, t).unwrap();
        for tok in [2, 3, 5] {
            c.advance(tok);
        }
        assert_eq!(allowed(&mut c, 8, &[7], 3), vec![7]);
    }

    #[test]
    fn unbounded_verdicts_cannot_follow_free_text_and_bad_patterns_are_named() {
        let e = Grammar::compile(&constraint("A+", true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bounded length"), "{e}");
        let e = Grammar::compile(&constraint("(", false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("constraint"), "{e}");
        assert_eq!(
            Machine::new("Response 1: (?:[3-9]|1[0-2])")
                .unwrap()
                .longest(),
            Some(14)
        );
        // A verdict-only reply is given the tokens its longest form needs (one byte a
        // token at worst, and the end token); free text has no such bound.
        let g = Grammar::compile(&constraint("Response 1: (?:[3-9]|1[0-2])", false)).unwrap();
        assert_eq!(g.tokens_needed(), Some(15));
        let g = Grammar::compile(&constraint(r"\[\[[AB]\]\]", true)).unwrap();
        assert_eq!(g.tokens_needed(), None);
    }
}
