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
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        Unit::Bytes,
    )
}

/// A bar over `total` training steps, its message carrying loss and speed.
pub fn steps(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "[{bar:30}] {pos}/{len} steps eta {eta}  {msg}",
        Unit::Steps,
    )
}

/// A bar over `total` records.
pub fn rows(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "{msg} [{bar:30}] {human_pos}/{human_len} records {per_sec} eta {eta}",
        Unit::Records,
    )
}

/// A bar over a target of `total` accepted tasks, its message carrying the run's rates.
pub fn accepted(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "[{bar:30}] {human_pos}/{human_len} accepted eta {eta}  {msg}",
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
            loop {
                std::thread::sleep(nap);
                let Some(bar) = weak.upgrade() else { return };
                if bar.is_finished() {
                    return;
                }
                if last.elapsed() >= every {
                    last = Instant::now();
                    eprintln!("{}", line(&bar, unit));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no progress lines: cannot start their thread: {e}");
    }
}

/// `progress: POS/LEN UNIT, RATE/s, eta ETA | MESSAGE`.
fn line(bar: &ProgressBar, unit: Unit) -> String {
    let (pos, len, rate) = (bar.position(), bar.length().unwrap_or(0), bar.per_sec());
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
    let eta = if len > pos && rate > 0.0 {
        format!(", eta {}", HumanDuration(bar.eta()))
    } else {
        String::new()
    };
    let message = bar.message();
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(" | {message}")
    };
    format!("progress: {done}{name}, {speed}{eta}{message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_names_the_count_the_rate_and_the_message() {
        let bar = ProgressBar::with_draw_target(Some(2000), ProgressDrawTarget::hidden())
            .with_message("accept 70%");
        bar.set_position(500);
        let l = line(&bar, Unit::Accepted);
        assert!(l.starts_with("progress: 500/2,000 accepted, "), "{l}");
        assert!(l.ends_with(" | accept 70%"), "{l}");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_position(3 << 20);
        assert!(line(&bar, Unit::Bytes).starts_with("progress: 3.00 MiB, "));
    }
}
