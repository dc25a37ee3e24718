//! Progress reporting: the runner announces phases and steps; the caller decides how to show
//! them (an indicatif bar in the CLI, plain lines on stdout in notebooks, nothing in tests).

/// Receives progress from a run.
pub trait Progress {
    /// A phase begins with `total` steps.
    fn start(&mut self, phase: &str, total: usize);
    /// One step of the current phase is done.
    fn step(&mut self, label: &str);
    /// A message worth showing (warnings, results).
    fn note(&mut self, message: &str);
    /// The current phase is over.
    fn finish(&mut self);
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: usize) {}
    fn step(&mut self, _: &str) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self) {}
}

/// Plain progress lines on stdout (about every 10 %), for notebooks: nothing goes to stderr,
/// so a notebook run shows no error output.
#[derive(Debug, Default)]
pub struct Lines {
    phase: String,
    total: usize,
    done: usize,
    started: Option<std::time::Instant>,
}

impl Progress for Lines {
    fn start(&mut self, phase: &str, total: usize) {
        self.phase = phase.to_string();
        self.total = total;
        self.done = 0;
        self.started = Some(std::time::Instant::now());
        println!("{phase}: {total} steps");
    }
    fn step(&mut self, label: &str) {
        self.done += 1;
        let every = (self.total / 10).max(1);
        if self.done % every == 0 || self.done == self.total {
            let el = self
                .started
                .map(|s| s.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            let eta = if self.done > 0 {
                el / self.done as f64 * (self.total - self.done) as f64
            } else {
                0.0
            };
            println!(
                "{}: {}/{} ({label}) elapsed {el:.0}s, eta {eta:.0}s",
                self.phase, self.done, self.total
            );
        }
    }
    fn note(&mut self, message: &str) {
        println!("{message}");
    }
    fn finish(&mut self) {}
}
