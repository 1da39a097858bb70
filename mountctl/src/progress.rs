//! Join progress as the user sees it: a bar (entries, bytes, rate, ETA) on a
//! terminal, a plain line every few seconds otherwise. The daemon reports
//! [`Step`]s; the `mountctl join` that started it renders them.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How far a join has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub entries: u64,
    /// Entries done plus those the best-informed member still has for us.
    pub total: u64,
    pub bytes: u64,
}

impl Step {
    /// The line the daemon writes to the waiting `mountctl`.
    pub fn to_line(self) -> String {
        format!("progress {} {} {}", self.entries, self.total, self.bytes)
    }

    pub fn parse(line: &str) -> Option<Step> {
        let mut w = line.strip_prefix("progress ")?.split(' ').map(|x| x.parse().ok());
        Some(Step {
            entries: w.next()??,
            total: w.next()??,
            bytes: w.next()??,
        })
    }
}

pub struct Renderer {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(2);

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

impl Renderer {
    pub fn new() -> Renderer {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("joining [{bar:30}] {pos}/{len} entries  {msg}  ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        Renderer {
            bar,
            started: Instant::now(),
            last_line: None,
        }
    }

    pub fn show(&mut self, s: Step) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let msg = format!("{:.1} MiB, {:.1} MiB/s", mib(s.bytes), mib(s.bytes) / secs);
        match &self.bar {
            Some(b) => {
                b.set_length(s.total.max(s.entries));
                b.set_position(s.entries);
                b.set_message(msg);
            }
            None => {
                if s.total > 0 && self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    self.last_line = Some(Instant::now());
                    eprintln!("joining: {}/{} entries, {msg}", s.entries, s.total.max(s.entries));
                }
            }
        }
    }

    /// The join finished (or failed): clear the bar, say how it went.
    pub fn finish(self, last: Option<Step>) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(s) = last {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!("joined: {} entries, {:.1} MiB in {secs:.1} s", s.entries, mib(s.bytes));
        }
    }
}
