//! Progress reporting: the runner announces stages and steps; the caller decides how to show
//! them (an indicatif bar in the CLI, a few plain lines in notebooks, nothing in tests).
//! Every run also writes the full detail to `run.log` in its results folder.

use std::io::Write;
use std::time::Instant;

/// Receives progress from a run.
pub trait Progress {
    /// A stage begins with `total` steps.
    fn start(&mut self, stage: &str, total: usize);
    /// One step of the current stage is done; `cached` when it was reused from the store.
    fn step(&mut self, label: &str, cached: bool);
    /// A message worth showing (warnings, failures, results).
    fn note(&mut self, message: &str);
    /// The current stage is over.
    fn finish(&mut self);
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: usize) {}
    fn step(&mut self, _: &str, _: bool) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self) {}
}

/// Plain lines on stdout for notebooks: one when a stage starts, one when it ends
/// (`generate: 40 answers (8 reused) in 58 s`), and on a stage longer than a minute at most
/// one line a minute in between. Nothing goes to stderr, so a notebook shows no error output.
#[derive(Debug, Default)]
pub struct Lines {
    stage: String,
    total: usize,
    done: usize,
    cached: usize,
    started: Option<Instant>,
    last_line: Option<Instant>,
}

impl Progress for Lines {
    fn start(&mut self, stage: &str, total: usize) {
        *self = Lines {
            stage: stage.to_string(),
            total,
            started: Some(Instant::now()),
            last_line: Some(Instant::now()),
            ..Default::default()
        };
        println!("{stage}: {total} to do");
    }
    fn step(&mut self, _label: &str, cached: bool) {
        self.done += 1;
        self.cached += usize::from(cached);
        let now = Instant::now();
        if self.done < self.total
            && self
                .last_line
                .is_some_and(|t| now.duration_since(t).as_secs() >= 60)
        {
            self.last_line = Some(now);
            let el = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            let eta = el / self.done as f64 * (self.total - self.done) as f64;
            println!(
                "{}: {}/{} after {el:.0} s, about {eta:.0} s to go",
                self.stage, self.done, self.total
            );
        }
    }
    fn note(&mut self, message: &str) {
        println!("{message}");
    }
    fn finish(&mut self) {
        if self.stage.is_empty() {
            return;
        }
        let el = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let reused = if self.cached > 0 {
            format!(" ({} reused)", self.cached)
        } else {
            String::new()
        };
        println!("{}: {} done{reused} in {el:.0} s", self.stage, self.done);
        self.stage.clear();
    }
}

/// Forwards to another sink and writes every step, note and timing to a log file.
pub(crate) struct Logged<'a> {
    inner: &'a mut dyn Progress,
    file: Option<std::fs::File>,
    stage: String,
    started: Instant,
}

impl<'a> Logged<'a> {
    /// Appends to `path` (the log is best effort: a file that cannot be opened is skipped).
    pub(crate) fn new(inner: &'a mut dyn Progress, path: &std::path::Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok();
        let mut me = Self {
            inner,
            file,
            stage: String::new(),
            started: Instant::now(),
        };
        me.log(&format!(
            "run started, llm-judge {}",
            env!("CARGO_PKG_VERSION")
        ));
        me
    }

    fn log(&mut self, line: &str) {
        if let Some(f) = &mut self.file {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ = writeln!(f, "{t} {line}");
        }
    }
}

impl Progress for Logged<'_> {
    fn start(&mut self, stage: &str, total: usize) {
        self.stage = stage.to_string();
        self.started = Instant::now();
        self.log(&format!("{stage}: start, {total} steps"));
        self.inner.start(stage, total);
    }
    fn step(&mut self, label: &str, cached: bool) {
        let what = if cached { "reused" } else { "done" };
        self.log(&format!("{}: {what} {label}", self.stage));
        self.inner.step(label, cached);
    }
    fn note(&mut self, message: &str) {
        self.log(message);
        self.inner.note(message);
    }
    fn finish(&mut self) {
        let s = self.started.elapsed().as_secs_f64();
        self.log(&format!("{}: finished in {s:.1} s", self.stage));
        self.inner.finish();
    }
}
