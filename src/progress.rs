//! Progress bars on stderr: drawn only when stderr is a terminal and --no-progress is not given.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars may be drawn.
pub fn enabled(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

/// A bar over `total` bytes.
pub fn bytes(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
}

/// A bar over `total` training steps, its message carrying loss and speed.
pub fn steps(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "[{bar:30}] {pos}/{len} steps eta {eta}  {msg}",
    )
}

/// A bar over `total` records.
pub fn rows(enabled: bool, total: u64, message: String) -> ProgressBar {
    bar(
        enabled,
        total,
        message,
        "{msg} [{bar:30}] {human_pos}/{human_len} records {per_sec} eta {eta}",
    )
}

fn bar(enabled: bool, total: u64, message: String, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
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
