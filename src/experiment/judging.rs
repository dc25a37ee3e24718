//! Judging one mode's calls within a run ([`Judging`]): stored calls are reused, the rest
//! run in batches, each stored as it finishes, and a failure is recorded ([`Failure`]) and
//! left for a rerun. The experiment's modes and the sanity check both judge through it.

use super::progress::Progress;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::judge::{self, run_calls, Asker, Judge};
use crate::records::{CallRecord, JudgmentRecord, Mode};
use crate::store::Store;
use std::collections::{HashMap, HashSet};

/// A call or answer that failed in a run, and whether running again may fix it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The stage: `generate`, `judge <mode>` or `sanity <mode>`.
    pub stage: String,
    /// What failed (model, setting and prompt, or the judge call's answers).
    pub what: String,
    /// Why.
    pub error: String,
    /// Whether a rerun may succeed (network, rate limits, server errors).
    pub transient: bool,
}

/// What judging needs at hand: the judge, its backend, the store, and where progress and
/// failures go. The experiment's modes and the sanity check both judge through it.
pub(crate) struct Judging<'a> {
    pub(crate) judge: &'a Judge,
    pub(crate) backend: &'a mut dyn Backend,
    pub(crate) store: &'a Store,
    pub(crate) progress: &'a mut dyn Progress,
    pub(crate) failures: &'a mut Vec<Failure>,
    /// What each stage read, wrote and took.
    pub(crate) usage: &'a mut Vec<crate::records::StageUsage>,
}

impl Judging<'_> {
    /// Runs one mode's calls on `groups` as stage `stage`, stored in `stream`: stored calls
    /// are reused, the rest run in batches and are stored one by one as they finish. A failed
    /// call is reported and left out (a rerun tries it again). A mode whose verdict is
    /// sampled is asked the judge's `repeats` times, each ask with keys and seeds of its own.
    /// Returns the rows of every call of the mode, in call order (ask by ask).
    pub(crate) fn mode(
        &mut self,
        mode: Mode,
        groups: &[judge::Group<'_>],
        stream: &str,
        stage: &str,
    ) -> Result<Vec<JudgmentRecord>> {
        let stored: HashMap<String, CallRecord> = self
            .store
            .load::<CallRecord>(stream)?
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let asker = Asker::default();
        let again: Vec<Judge> = (1..self.judge.cfg.repeats_of(mode))
            .map(|r| self.judge.with_repeat(r))
            .collect();
        let mut calls = judge::calls_for(self.judge, &asker, mode, groups);
        for j in &again {
            calls.extend(judge::calls_for(j, &asker, mode, groups));
        }
        let order: Vec<String> = calls.iter().map(|c| c.key.clone()).collect();
        self.progress.start(stage, calls.len());
        let mut todo = Vec::new();
        for c in calls {
            if stored.contains_key(&c.key) {
                self.progress.step(&c.label, true);
            } else {
                todo.push(c);
            }
        }
        let positions = self.backend.prompt_positions();
        let used_before = self.backend.usage();
        let (calls, reused) = (todo.len() as u64, (order.len() - todo.len()) as u64);
        let started = std::time::Instant::now();
        let mut fresh: HashMap<String, Vec<JudgmentRecord>> = HashMap::new();
        let mut unsupported = false;
        let (store, progress, failures) = (self.store, &mut *self.progress, &mut *self.failures);
        run_calls(self.backend, &asker, todo, &mut |call, result| {
            match result {
                Ok(rows) => {
                    store.append(
                        stream,
                        &[CallRecord {
                            key: call.key.clone(),
                            rows: rows.clone(),
                        }],
                    )?;
                    fresh.insert(call.key.clone(), rows);
                }
                Err(e) => {
                    match &e {
                        Error::NoLogprobs(m) if !unsupported => {
                            unsupported = true;
                            progress.note(&format!("{stage}: cannot run: {m}"));
                        }
                        Error::NoLogprobs(_) => {}
                        _ => progress.note(&format!("{stage}: call failed ({}): {e}", call.label)),
                    }
                    failures.push(Failure {
                        stage: stage.to_string(),
                        what: call.label.clone(),
                        error: e.to_string(),
                        transient: e.is_transient(),
                    });
                }
            }
            progress.step(&call.label, false);
            Ok(())
        })?;
        self.progress.finish();
        let used = self.backend.usage() - used_before;
        self.usage.push(crate::records::StageUsage {
            stage: stage.to_string(),
            model: self.judge.name.clone(),
            calls,
            reused,
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            seconds: started.elapsed().as_secs_f64(),
            cost: self
                .judge
                .cfg
                .endpoint
                .as_ref()
                .and_then(|e| e.price)
                .map(|p| p.cost(used)),
            earlier: None,
        });
        if let (Some(a), Some(b)) = (positions, self.backend.prompt_positions()) {
            if b > a {
                self.progress.note(&format!(
                    "{stage}: the judge read {} prompt positions in {:.1} s",
                    b - a,
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for k in order {
            let r = fresh
                .remove(&k)
                .or_else(|| stored.get(&k).map(|c| c.rows.clone()));
            if let Some(r) = r {
                rows.extend(r.into_iter().filter(|r| seen.insert(r.key.clone())));
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::scripted::{user_text, Scripted};
    use crate::experiment::Silent;
    use crate::judge::JudgeConfig;
    use crate::records::{ResponseRecord, TOTAL};

    #[test]
    fn a_failed_call_is_recorded_and_a_rerun_asks_only_for_it() {
        let dir = std::env::temp_dir().join(format!("llmj-judging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let answers: Vec<ResponseRecord> = ["good", "bad"]
            .iter()
            .map(|w| ResponseRecord {
                key: format!("key-{w}"),
                model: format!("model-{w}"),
                setting: "p1".into(),
                prompt_id: "tent".into(),
                prompt: "How do I pitch a tent?".into(),
                text: Some(format!("the {w} answer")),
                ..Default::default()
            })
            .collect();
        let cfg = JudgeConfig::new("scripted");
        let templates = cfg.validate("test", std::path::Path::new(".")).unwrap();
        let judge = Judge::new(cfg, "scripted".into(), "scripted".into(), templates, 1);
        let groups = judge::group_answers(&answers);
        let verdict = "Relevance: [[4]]\nCoherence: [[4]]\nCompleteness: [[3]]";
        let run = |backend: &mut Scripted, failures: &mut Vec<Failure>| {
            Judging {
                judge: &judge,
                backend,
                store: &store,
                progress: &mut Silent,
                failures,
                usage: &mut Vec::new(),
            }
            .mode(Mode::Rubric, &groups, "judgments", "judge rubric")
            .unwrap()
        };
        // The server fails on the bad answer: the good one's rows are stored, the failure
        // says a rerun may fix it.
        let mut flaky = Scripted::new(
            move |input, _| {
                if user_text(input).contains("the bad answer") {
                    Err(Error::Io {
                        path: "judge".into(),
                        source: std::io::Error::other("connection reset"),
                    })
                } else {
                    Ok(verdict.into())
                }
            },
            |_| unreachable!(),
        );
        let mut failures = Vec::new();
        let rows = run(&mut flaky, &mut failures);
        assert_eq!(rows.len(), 4, "the good answer's criteria and total");
        assert_eq!(failures.len(), 1);
        assert!(failures[0].transient && failures[0].what.contains("model-bad"));
        assert_eq!(store.load::<CallRecord>("judgments").unwrap().len(), 1);

        // The rerun reuses the stored call and asks only for the failed one.
        let mut fixed = Scripted::new(
            move |input, _| {
                assert!(user_text(input).contains("the bad answer"), "asked again");
                Ok(verdict.into())
            },
            |_| unreachable!(),
        );
        let mut failures = Vec::new();
        let rows = run(&mut fixed, &mut failures);
        assert!(failures.is_empty());
        assert_eq!(fixed.generated, 1);
        let totals: Vec<_> = rows.iter().filter(|r| r.criterion == TOTAL).collect();
        assert_eq!(totals.len(), 2);
        // In call order: the good answer first, as the first run had it.
        assert_eq!(totals[0].model, "model-good");
        assert!(totals.iter().all(|r| r.score == Some(11.0)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sampled_verdict_is_asked_repeats_times_each_with_its_own_seed() {
        let dir = std::env::temp_dir().join(format!("llmj-repeats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let answer = ResponseRecord {
            key: "key-a".into(),
            model: "model-a".into(),
            setting: "p1".into(),
            prompt_id: "tent".into(),
            prompt: "How do I pitch a tent?".into(),
            text: Some("an answer".into()),
            ..Default::default()
        };
        let mut cfg = JudgeConfig::new("scripted").with_modes(&[Mode::Rubric, Mode::Expected]);
        cfg.temperature = 0.8;
        let templates = cfg.validate("test", std::path::Path::new(".")).unwrap();
        let once = Judge::new(
            cfg.clone(),
            "scripted".into(),
            "scripted".into(),
            templates,
            1,
        );
        let thrice = Judge {
            cfg: cfg.with_repeats(3),
            ..once.clone()
        };
        let answers = [answer];
        let groups = judge::group_answers(&answers);
        // The score follows the seed, as a sampled verdict would.
        let seeds = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = seeds.clone();
        let mut backend = Scripted::new(
            move |_, params| {
                seen.lock().unwrap().push(params.seed);
                let s = 1 + params.seed % 4;
                Ok(format!(
                    "Relevance: [[{s}]]\nCoherence: [[{s}]]\nCompleteness: [[{s}]]"
                ))
            },
            |_| Ok(vec![0.1, 0.2, 0.3, 0.4]),
        );
        let mut run = |judge: &Judge, mode: Mode| {
            Judging {
                judge,
                backend: &mut backend,
                store: &store,
                progress: &mut Silent,
                failures: &mut Vec::new(),
                usage: &mut Vec::new(),
            }
            .mode(mode, &groups, "judgments", "judge")
            .unwrap()
        };
        let first = run(&once, Mode::Rubric);
        let rows = run(&thrice, Mode::Rubric);
        let totals: Vec<&JudgmentRecord> = rows.iter().filter(|r| r.criterion == TOTAL).collect();
        assert_eq!(
            totals.iter().map(|r| r.repeat).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // The first ask is the call a run without repeats made (reused, not asked again);
        // the other two are new calls with seeds of their own.
        assert_eq!(
            totals[0].key,
            first.iter().find(|r| r.criterion == TOTAL).unwrap().key
        );
        let seeds = seeds.lock().unwrap().clone();
        assert_eq!(seeds.len(), 3, "one call, then the two new asks: {seeds:?}");
        assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2] && seeds[0] != seeds[2]);
        // A probability mode is read once, whatever the repeats.
        let expected = run(&thrice, Mode::Expected);
        assert!(expected.iter().all(|r| r.repeat == 0));
        assert_eq!(expected.len(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
