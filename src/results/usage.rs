//! Tokens, time and cost per stage of a run (`run.json`'s `usage`), as lines and a table.

use super::RunOutput;
use crate::records::StageUsage;
use crate::table::HtmlTable;
use polars::prelude::{Column, DataFrame};

impl RunOutput {
    /// What each stage of the run read, wrote, took and cost.
    pub fn usage(&self) -> &[StageUsage] {
        &self.meta.usage
    }

    /// One line per stage, and the totals.
    pub fn usage_lines(&self) -> Vec<String> {
        let u = self.usage();
        if u.is_empty() {
            return Vec::new();
        }
        let money = |c: Option<f64>| c.map(|c| format!(", cost {c:.4}")).unwrap_or_default();
        let mut v: Vec<String> = u
            .iter()
            .map(|s| {
                let mut line = format!(
                    "usage, {} ({}): {} calls ({} reused), {} prompt + {} completion tokens, \
                     {:.1} s{}",
                    s.stage,
                    s.model,
                    s.calls,
                    s.reused,
                    s.prompt_tokens,
                    s.completion_tokens,
                    s.seconds,
                    money(s.cost)
                );
                if s.earlier.is_some() {
                    let all = s.all();
                    line.push_str(&format!(
                        "; with the earlier runs into this folder {} calls, {} prompt + {} \
                         completion tokens, {:.1} s{}",
                        all.calls,
                        all.prompt_tokens,
                        all.completion_tokens,
                        all.seconds,
                        money(all.cost)
                    ));
                }
                line
            })
            .collect();
        let costs: Vec<f64> = u.iter().filter_map(|s| s.cost).collect();
        // A total cost over some stages only says so.
        let partial = if !costs.is_empty() && costs.len() < u.len() {
            " (priced stages only)"
        } else {
            ""
        };
        v.push(format!(
            "usage, total: {} calls ({} reused), {} prompt + {} completion tokens, {:.1} s{}{partial}",
            u.iter().map(|s| s.calls).sum::<u64>(),
            u.iter().map(|s| s.reused).sum::<u64>(),
            u.iter().map(|s| s.prompt_tokens).sum::<u64>(),
            u.iter().map(|s| s.completion_tokens).sum::<u64>(),
            u.iter().map(|s| s.seconds).sum::<f64>(),
            money((!costs.is_empty()).then(|| costs.iter().sum()))
        ));
        v
    }

    /// The stages as a table: calls, reused calls, tokens, seconds, cost (null without a
    /// price).
    pub fn usage_table(&self) -> HtmlTable {
        let u = self.usage();
        let s = |f: fn(&StageUsage) -> String| u.iter().map(f).collect::<Vec<_>>();
        let n = |f: fn(&StageUsage) -> u64| u.iter().map(f).collect::<Vec<_>>();
        let df = DataFrame::new(
            u.len(),
            vec![
                Column::new("stage".into(), s(|x| x.stage.clone())),
                Column::new("model".into(), s(|x| x.model.clone())),
                Column::new("calls".into(), n(|x| x.calls)),
                Column::new("reused".into(), n(|x| x.reused)),
                Column::new("prompt_tokens".into(), n(|x| x.prompt_tokens)),
                Column::new("completion_tokens".into(), n(|x| x.completion_tokens)),
                Column::new(
                    "seconds".into(),
                    u.iter().map(|x| x.seconds).collect::<Vec<_>>(),
                ),
                Column::new("cost".into(), u.iter().map(|x| x.cost).collect::<Vec<_>>()),
                Column::new("all_calls".into(), n(|x| x.all().calls)),
                Column::new("all_prompt_tokens".into(), n(|x| x.all().prompt_tokens)),
                Column::new(
                    "all_completion_tokens".into(),
                    n(|x| x.all().completion_tokens),
                ),
                Column::new(
                    "all_seconds".into(),
                    u.iter().map(|x| x.all().seconds).collect::<Vec<_>>(),
                ),
                Column::new(
                    "all_cost".into(),
                    u.iter().map(|x| x.all().cost).collect::<Vec<_>>(),
                ),
            ],
        )
        .unwrap_or_default();
        HtmlTable::from(df).with_caption(
            "Tokens, time and cost per stage of this run (a rerun that reuses stored calls \
             reads and pays nothing for them; cost only where the endpoint has a price), and \
             with every earlier run into the same folder (all_*): what the results cost to make",
        )
    }
}
