//! The `instill` binary: parses the command line and hands each command to the library crates.

mod allocator;
mod card;
mod cli;
mod cmd;
mod dirlock;
mod evolution;
mod hub;
mod ingest;
mod lf_info;
mod outdir;
mod pair_card;
#[cfg(feature = "parquet")]
mod parquet_io;
mod progress;
mod render;
mod report;
mod scoreboard;
mod shards;
mod signals;
mod staging;

use std::process::ExitCode;

use crate::cli::{Cli, Command, GlobalArgs, SeedsCommand};

/// `instill stats | head` closes stdout early: Rust ignores SIGPIPE, so the next `println!`
/// panics. That is the reader's choice, not an error: exit quietly with 141 (128 + SIGPIPE),
/// as a command killed by SIGPIPE does, instead of a panic message. Every other panic keeps the
/// default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked: exit 0.
    Done,
    /// It finished, but some items failed (counted and reported): exit 1.
    Partial,
    /// It was interrupted (Ctrl-C) after saving its work: exit 130.
    Interrupted,
    /// It was stopped by SIGTERM after saving its work, or undoing it: exit 143.
    Terminated,
}

impl Outcome {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Partial => 1,
            Outcome::Interrupted => 130,
            Outcome::Terminated => 143,
        }
    }
}

fn main() -> ExitCode {
    let not_again = allocator::keep_freed_pages();
    quiet_on_closed_stdout();
    let mut cli = Cli::parse_args();
    // -q: only errors on stderr, so no progress either.
    cli.global.no_progress |= cli.global.quiet;
    init_logging(&cli.global);
    if let Some(e) = not_again {
        tracing::debug!("allocator: cannot run again with freed pages kept: {e}");
    }
    if let Err(e) = progress::read_interval() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            // One line: the context chain joined with ": ", with any URL's password hidden
            // (whatever layer formatted it).
            let message = instill_core::redact_urls_in(&error_chain(&e).replace('\n', " "));
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    let g = &cli.global;
    match &cli.command {
        Command::Seeds(SeedsCommand::Import(args)) => cmd::seeds::import(g, args).await,
        Command::Seeds(SeedsCommand::List(args)) => cmd::seeds::list(g, args).await,
        Command::Import(args) => cmd::import::run(g, args).await,
        Command::Export(args) => cmd::export::run(g, args).await,
        Command::Generate(args) => cmd::generate::run(g, args).await,
        Command::Evolve(args) => cmd::evolve::run(g, args).await,
        Command::Dedup(args) => cmd::dedup::run(g, args).await,
        Command::Filter(args) => cmd::filter::run(g, args).await,
        Command::Stats => cmd::stats::run(g).await,
        Command::Report(args) => cmd::report::run(g, args).await,
        Command::Train(args) => cmd::train::train(g, args).await,
        Command::Score(args) => cmd::score::run(g, args).await,
        Command::Pairs(args) => cmd::pairs::run(g, args).await,
        Command::Select(args) => cmd::select::run(g, args).await,
        Command::Eval(args) => cmd::eval::run(g, args).await,
        Command::MergeLora(args) => cmd::train::merge_lora(g, args).await,
    }
}

/// An error and its causes joined by `: `, skipping a cause whose text the error before it
/// already shows (an error that prints its source and also returns it would say it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(g: &GlobalArgs) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    // sqlx reports slow statements as warnings; a big import's COPY or commit is slow on purpose.
    let default = format!("{level},sqlx=error");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
