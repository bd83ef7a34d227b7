//! Facts about the model server's address: whether it is on this machine (no key needed), and
//! whether this process has ever reached it. Until one request gets an answer, failures to
//! connect (DNS, refused, TLS, connect timeout) are given up on once they have gone on for a
//! grace period: a wrong URL or a server that is not running stops the run with a message instead
//! of retrying for ever. After the first answer they are retried like any transient failure.
//! It also counts failed attempts by kind as they happen, for progress output.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long connection failures may go on, with no answer ever received, before a run stops.
pub const CONNECT_GRACE: Duration = Duration::from_secs(10);

/// Whether `url`'s host is this machine (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`).
/// A URL that cannot be parsed is not.
pub fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = host.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// Whether the server has answered yet, and the failed attempts so far by kind; shared by every
/// clone of a client.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reached: AtomicBool,
    first_failure: Mutex<Option<Instant>>,
    grace: Duration,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Contact {
    /// A server not reached yet, given up on after `grace` of failures to connect.
    pub(crate) fn new(grace: Duration) -> Contact {
        Contact {
            inner: Arc::new(Inner {
                reached: AtomicBool::new(false),
                first_failure: Mutex::new(None),
                grace,
                failures: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The server answered (with any status).
    pub(crate) fn reached(&self) {
        self.inner.reached.store(true, Ordering::Relaxed);
    }

    /// A connection failed: whether to give up (no answer ever, and failures for the grace
    /// period).
    pub(crate) fn give_up(&self) -> bool {
        if self.inner.reached.load(Ordering::Relaxed) {
            return false;
        }
        let mut first = self
            .inner
            .first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now).elapsed() >= self.inner.grace
    }

    /// The grace period.
    pub(crate) fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// Counts one failed attempt of `kind`.
    pub(crate) fn failed(&self, kind: &'static str) {
        let mut f = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *f.entry(kind).or_default() += 1;
    }

    /// Failed attempts so far, by kind.
    pub(crate) fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.inner
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://localhost:11434/v1",
            "http://LOCALHOST./v1",
            "http://vllm.localhost:8000/v1",
            "http://127.0.0.1:8000/v1",
            "http://127.8.9.10/v1",
            "http://[::1]:8080/v1",
            "http://[::ffff:127.0.0.1]:8080/v1",
            "http://user:pw@127.0.0.1/v1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://api.openai.com/v1",
            "http://10.0.0.5:8000/v1",
            "http://localhost.example.com/v1",
            "http://[::2]/v1",
            "not a url",
            "",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn gives_up_only_before_the_first_answer_and_after_the_grace_and_counts_failures() {
        let c = Contact::new(Duration::ZERO);
        assert!(c.give_up());
        c.clone().reached();
        assert!(!c.give_up());
        let c = Contact::new(Duration::from_secs(3600));
        assert!(!c.give_up());
        assert!(!c.give_up());
        c.failed("connection");
        c.clone().failed("connection");
        c.failed("timeout");
        assert_eq!(
            c.failures().into_iter().collect::<Vec<_>>(),
            [("connection", 2), ("timeout", 1)]
        );
    }
}
