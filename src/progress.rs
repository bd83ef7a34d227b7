//! Progress on stderr for every long command: a bar when stderr is a terminal; otherwise (a log
//! file, a pipe, a service manager) one line every 10 s — `INSTILL_PROGRESS_INTERVAL` seconds —
//! so that a log shows life. Nothing with --no-progress or -q.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{
    HumanBytes, HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle,
};

/// Seconds between progress lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether progress may be shown (as a bar or as log lines).
pub fn enabled(no_progress: bool) -> bool {
    !no_progress
}

/// What a bar counts, as its log line names it.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Bytes,
    Steps,
    Records,
    Accepted,
}

/// A bar over `total` bytes.
pub fn bytes(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {steady_eta}",
        Unit::Bytes,
    )
}

/// A bar over `total` training steps, its message carrying loss and speed.
pub fn steps(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "[{bar:30}] {pos}/{len} steps eta {steady_eta}  {msg}",
        Unit::Steps,
    )
}

/// A bar over `total` records.
pub fn rows(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "{msg} [{bar:30}] {human_pos}/{human_len} records {per_sec} eta {steady_eta}",
        Unit::Records,
    )
}

/// A bar over a target of `total` accepted tasks, its message carrying the run's rates.
pub fn accepted(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "[{bar:30}] {human_pos}/{human_len} accepted eta {steady_eta}  {msg}",
        Unit::Accepted,
    )
}

fn bar(enabled: bool, total: u64, message: String, template: &str, unit: Unit) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    if !std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
            .with_message(message);
        log_lines(&bar, unit);
        return bar;
    }
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("steady_eta", Pace::default())
        .progress_chars("=> ");
    let bar = ProgressBar::new(total)
        .with_style(style)
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// How often a line is logged: `INSTILL_PROGRESS_INTERVAL` seconds, else 10 s (as
/// [`read_interval`] read it).
static EVERY: OnceLock<Duration> = OnceLock::new();

fn interval() -> Duration {
    EVERY.get().copied().unwrap_or(LOG_EVERY)
}

/// Reads `INSTILL_PROGRESS_INTERVAL` once, at start: a value that is not a number of seconds
/// above 0 is an error naming the variable (exit 2), as a bad `INSTILL_CONNECT_GRACE` is.
pub fn read_interval() -> anyhow::Result<()> {
    if let Some(every) = env_seconds("INSTILL_PROGRESS_INTERVAL", false)? {
        let _ = EVERY.set(every);
    }
    Ok(())
}

/// The environment variable `name` as a duration in seconds: `None` when unset; an error naming
/// it when it is not a finite number above 0 (or 0 or more with `zero_ok`). At most a day.
pub fn env_seconds(name: &str, zero_ok: bool) -> anyhow::Result<Option<Duration>> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) => {
            Ok(Some(Duration::from_secs_f64(s.min(86_400.0))))
        }
        _ => anyhow::bail!(
            "{name}={text:?}: expected a number of seconds ({})",
            if zero_ok { "0 or more" } else { "above 0" }
        ),
    }
}

/// Logs `bar`'s state on stderr every [`interval`] from a thread of its own, until the bar is
/// finished or dropped.
fn log_lines(bar: &ProgressBar, unit: Unit) {
    let weak = bar.downgrade();
    let every = interval();
    let nap = every.min(Duration::from_millis(100));
    let spawned = std::thread::Builder::new()
        .name("progress-log".into())
        .spawn(move || {
            let mut last = Instant::now();
            let mut pace = Pace::default();
            loop {
                std::thread::sleep(nap);
                let Some(bar) = weak.upgrade() else { return };
                if bar.is_finished() {
                    return;
                }
                pace.observe(bar.position(), Instant::now());
                if last.elapsed() >= every {
                    last = Instant::now();
                    eprintln!("{}", line(&bar, unit, &pace, last));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no progress lines: cannot start their thread: {e}");
    }
}

/// `progress: POS/LEN UNIT, RATE/s, eta ETA | MESSAGE`, the rate and the time left at `pace`.
fn line(bar: &ProgressBar, unit: Unit, pace: &Pace, now: Instant) -> String {
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    let rate = pace.rate().unwrap_or(0.0);
    let count = |n: u64| match unit {
        Unit::Bytes => HumanBytes(n).to_string(),
        _ => HumanCount(n).to_string(),
    };
    let done = if len > 0 {
        format!("{}/{}", count(pos), count(len))
    } else {
        count(pos)
    };
    let (name, speed) = match unit {
        Unit::Bytes => ("", format!("{}/s", HumanBytes(rate as u64))),
        Unit::Steps => (" steps", format!("{rate:.2}/s")),
        Unit::Records => (" records", format!("{rate:.0}/s")),
        Unit::Accepted => (" accepted", format!("{rate:.1}/s")),
    };
    let eta = match pace.eta(len, now) {
        Some(eta) if len > pos => format!(", eta {}", HumanDuration(eta)),
        _ => String::new(),
    };
    let message = bar.message();
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(" | {message}")
    };
    format!("progress: {done}{name}, {speed}{eta}{message}")
}

/// A bar's pace since its position first moved: units per second over that whole span, and
/// the time left at that pace. indicatif's own estimate decays while nothing moves, so a bar
/// whose steps each take longer than its window (training a larger model on a CPU) showed
/// "eta 60 years" between two steps. Anchoring at the first move rather than at the start keeps
/// a resumed run (whose position jumps to where it left off) from counting old steps as new.
#[derive(Debug, Clone, Default)]
struct Pace {
    /// The position last observed.
    seen: Option<u64>,
    /// Where and when the position first moved.
    anchor: Option<(u64, Instant)>,
    /// Where and when it last moved.
    last: Option<(u64, Instant)>,
}

impl Pace {
    fn observe(&mut self, pos: u64, now: Instant) {
        let Some(before) = self.seen else {
            self.seen = Some(pos);
            return;
        };
        if pos == before {
            return;
        }
        self.seen = Some(pos);
        match self.anchor {
            None => self.anchor = Some((pos, now)),
            Some(_) => self.last = Some((pos, now)),
        }
    }

    /// Units per second between the first and the last move.
    fn rate(&self) -> Option<f64> {
        let ((p0, t0), (p1, t1)) = (self.anchor?, self.last?);
        let span = t1.duration_since(t0).as_secs_f64();
        (p1 > p0 && span > 0.0).then(|| (p1 - p0) as f64 / span)
    }

    /// The time left to `len` at [`Pace::rate`], less the time since the last move.
    fn eta(&self, len: u64, now: Instant) -> Option<Duration> {
        let (pos, at) = self.last?;
        let left = len.saturating_sub(pos) as f64 / self.rate()?;
        Some(Duration::from_secs_f64(left).saturating_sub(now.duration_since(at)))
    }
}

impl indicatif::style::ProgressTracker for Pace {
    fn clone_box(&self) -> Box<dyn indicatif::style::ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &indicatif::ProgressState, now: Instant) {
        self.observe(state.pos(), now);
    }

    fn reset(&mut self, _: &indicatif::ProgressState, _: Instant) {
        *self = Pace::default();
    }

    fn write(&self, state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
        let eta = self.eta(state.len().unwrap_or(0), Instant::now());
        let _ = match eta {
            Some(eta) => write!(w, "{}", HumanDuration(eta)),
            None => write!(w, "-"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_names_the_count_the_rate_and_the_message() {
        let bar = ProgressBar::with_draw_target(Some(2000), ProgressDrawTarget::hidden())
            .with_message("accept 70%");
        bar.set_position(500);
        let l = line(&bar, Unit::Accepted, &Pace::default(), Instant::now());
        assert!(l.starts_with("progress: 500/2,000 accepted, "), "{l}");
        assert!(l.ends_with(" | accept 70%"), "{l}");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_position(3 << 20);
        let l = line(&bar, Unit::Bytes, &Pace::default(), Instant::now());
        assert!(l.starts_with("progress: 3.00 MiB, "), "{l}");
    }

    #[test]
    fn the_pace_counts_from_the_first_move_and_does_not_decay_between_steps() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pace = Pace::default();
        // A resumed run: the bar starts at 0, jumps to step 500, then a step every 60 s.
        pace.observe(0, at(0));
        pace.observe(500, at(30));
        assert_eq!(pace.rate(), None);
        pace.observe(501, at(90));
        pace.observe(502, at(150));
        let rate = pace.rate().expect("two moves");
        assert!((rate - 1.0 / 60.0).abs() < 1e-9, "{rate}");
        // Ten minutes after the last step, 98 steps to go: 98 minutes less the ten.
        assert_eq!(
            pace.eta(600, at(750)),
            Some(Duration::from_secs(98 * 60 - 600))
        );
        // Long past the expected end: nothing left rather than a negative or growing time.
        assert_eq!(pace.eta(600, at(150 + 100 * 60)), Some(Duration::ZERO));
    }
}
