//! Small statistics tables for notebooks: one row per statistic, with its sample size and
//! named values.

use super::col;
use crate::error::{Error, Result};
use polars::prelude::*;

/// One statistic: a label, its sample size and named values (e.g. `spearman`, `kappa`).
#[derive(Clone, Debug, PartialEq)]
pub struct StatRow {
    /// What the row measures.
    pub label: String,
    /// Sample size.
    pub n: usize,
    /// Named values; a table has one column per distinct name.
    pub values: Vec<(String, f64)>,
    /// Named words (a verdict, a status), in text columns after `n`.
    pub texts: Vec<(String, String)>,
}

impl StatRow {
    /// A row with no values yet.
    pub fn new(label: String, n: usize) -> Self {
        Self {
            label,
            n,
            values: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// Adds a named word.
    pub fn with_text(mut self, name: &str, v: impl Into<String>) -> Self {
        self.texts.push((name.to_string(), v.into()));
        self
    }

    /// Adds a named value.
    pub fn with(mut self, name: &str, v: f64) -> Self {
        self.values.push((name.to_string(), v));
        self
    }
}

/// A DataFrame with columns `statistic`, `n` and one nullable float column per value name
/// (in first-seen order), after a text column per word name; NaN values and missing words
/// become nulls.
pub fn stats_df(rows: &[StatRow]) -> Result<DataFrame> {
    let mut words: Vec<&str> = Vec::new();
    for r in rows {
        for (k, _) in &r.texts {
            if !words.contains(&k.as_str()) {
                words.push(k);
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        for (k, _) in &r.values {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
    }
    let mut cols = vec![
        col(
            "statistic",
            rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
        ),
        col("n", rows.iter().map(|r| r.n as u64).collect::<Vec<_>>()),
    ];
    for name in words {
        let v: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.texts
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        cols.push(col(name, v));
    }
    for name in names {
        let v: Vec<Option<f64>> = rows
            .iter()
            .map(|r| {
                r.values
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| *v)
                    .filter(|v| v.is_finite())
            })
            .collect();
        cols.push(col(name, v));
    }
    DataFrame::new_infer_height(cols).map_err(|e| Error::Table(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_value_names_and_nan_is_null() {
        let rows = vec![
            StatRow::new("a".into(), 3).with("rho", 0.5),
            StatRow::new("b".into(), 0)
                .with("rho", f64::NAN)
                .with("kappa", 1.0),
        ];
        let df = stats_df(&rows).unwrap();
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, ["statistic", "n", "rho", "kappa"]);
        assert_eq!(df.column("rho").unwrap().null_count(), 1);
        assert_eq!(df.column("kappa").unwrap().null_count(), 1);
    }
}
