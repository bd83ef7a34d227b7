//! SIGINT and SIGTERM, caught so that a command stops cleanly: listened for from the moment a
//! [`Signals`] is made (a signal before the command first looks is kept, not lost), and told
//! apart so that the exit code can say which came (130 or 143).

use std::sync::{Arc, OnceLock};

use crate::Outcome;

/// The signal that asked a command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// How a command that stopped for this signal ends.
    pub fn outcome(self) -> Outcome {
        match self {
            Stop::Interrupt => Outcome::Interrupted,
            Stop::Terminate => Outcome::Terminated,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }
}

/// Which signal stopped a run, noted by [`Signals::shutdown`]'s future when one comes.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<OnceLock<Stop>>);

impl Seen {
    /// The signal that came, if one did.
    pub fn get(&self) -> Option<Stop> {
        self.0.get().copied()
    }

    /// How a run that ended interrupted exits: 143 after SIGTERM, else 130 (SIGINT).
    pub fn outcome(&self) -> Outcome {
        self.0.get().map_or(Outcome::Interrupted, |s| s.outcome())
    }
}

/// SIGINT and SIGTERM, caught from creation on.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching SIGINT and SIGTERM.
    pub fn listen() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => Stop::Interrupt,
                Some(()) = self.terminate.recv() => Stop::Terminate,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }

    /// A future that ends at the first signal, noting which one in `seen`: what a run takes
    /// as its shutdown.
    pub fn shutdown(mut self, seen: &Seen) -> impl Future<Output = ()> + Send + use<> {
        let cell = seen.0.clone();
        async move {
            let _ = cell.set(self.recv().await);
        }
    }

    /// For work that only stops at its own checkpoints (a blocking loop): the first signal is
    /// noted in `seen` and `on_first` runs; a second ends the process at once, with the
    /// second signal's exit code (what the work saved at its last checkpoint stays).
    /// Must be called inside the runtime, whose worker threads wait for the signals.
    pub fn watch(mut self, seen: &Seen, on_first: impl FnOnce(Stop) + Send + 'static) {
        let cell = seen.0.clone();
        tokio::spawn(async move {
            let first = self.recv().await;
            let _ = cell.set(first);
            on_first(first);
            let second = self.recv().await;
            eprintln!("{}: stopping at once", second.name());
            std::process::exit(i32::from(second.outcome().code()));
        });
    }

    /// The signal that came since the last look, if any, without waiting.
    pub fn received(&mut self) -> Option<Stop> {
        futures::FutureExt::now_or_never(self.recv())
    }
}
