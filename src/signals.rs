//! SIGINT and SIGTERM, counted from the start of every command that starts child processes
//! (`run`, `validate`, `plan`), so that each phase (planning, generators, running, polling)
//! answers them.
//!
//! Code that runs children *watches*: a generator polls [`Signals::count`] while its child
//! runs ([`Signals::watch`]), the runner is told through a callback ([`Signals::subscribe`])
//! and stops its backends. A signal that arrives while nobody watches ends the process at once
//! with exit 130: nothing that needs stopping runs then. A leaf module: it knows nothing of
//! the pipeline.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::EXIT_INTERRUPTED;

type Callback = Box<dyn Fn(i32, usize) + Send>;

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    last: AtomicI32,
    watchers: AtomicUsize,
    subscriber: Mutex<Option<Callback>>,
}

/// The termination signals received so far; handlers are removed on drop.
pub struct Signals {
    inner: Arc<Inner>,
    handle: Option<signal_hook::iterator::Handle>,
}

impl Signals {
    /// Starts counting SIGINT and SIGTERM (a thread waits for them). If the handlers cannot
    /// be installed, signals keep their default action (the process ends at once).
    #[must_use]
    pub fn install() -> Self {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let inner = Arc::new(Inner::default());
        let handle = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .ok()
            .map(|mut signals| {
                let handle = signals.handle();
                let inner = Arc::clone(&inner);
                std::thread::spawn(move || {
                    for signal in signals.forever() {
                        deliver(&inner, signal);
                    }
                });
                handle
            });
        Self { inner, handle }
    }

    /// Counts signals without handlers, for tests and library callers that handle signals
    /// themselves.
    #[must_use]
    pub fn none() -> Self {
        Self {
            inner: Arc::new(Inner::default()),
            handle: None,
        }
    }

    /// How many SIGINT/SIGTERM arrived so far: 1 means stop gracefully, 2 or more stop at once.
    #[must_use]
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// The last signal received, if any.
    #[must_use]
    pub fn last(&self) -> Option<i32> {
        Some(self.inner.last.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }

    /// Marks the caller as watching (it polls [`Signals::count`] and stops its children), so
    /// that a signal no longer ends the process at once. Watching ends when the guard drops.
    #[must_use]
    pub fn watch(&self) -> Watch {
        self.inner.watchers.fetch_add(1, Ordering::SeqCst);
        Watch {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Calls `f(signal, count)` for every signal from now on (and watches) until the guard
    /// drops. One subscriber at a time: a new one replaces the old.
    #[must_use]
    pub fn subscribe(&self, f: impl Fn(i32, usize) + Send + 'static) -> Watch {
        *self.inner.subscriber.lock().expect("signal subscriber") = Some(Box::new(f));
        self.watch()
    }

    /// Handles `signal` as if it had arrived (tests): like a real one, it ends the process
    /// when nobody watches.
    pub fn raise(&self, signal: i32) {
        deliver(&self.inner, signal);
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.close();
        }
    }
}

/// A caller watching for signals (see [`Signals::watch`]).
pub struct Watch {
    inner: Arc<Inner>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Dropping a subscription's guard ends the subscription too.
        if self.inner.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.inner.subscriber.lock().expect("signal subscriber") = None;
        }
    }
}

fn deliver(inner: &Inner, signal: i32) {
    let count = inner.count.fetch_add(1, Ordering::SeqCst) + 1;
    inner.last.store(signal, Ordering::SeqCst);
    if let Some(f) = inner.subscriber.lock().expect("signal subscriber").as_ref() {
        f(signal, count);
        return;
    }
    if inner.watchers.load(Ordering::SeqCst) == 0 {
        eprintln!("poolparty: interrupted by signal {signal}");
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_forwards_to_the_subscriber() {
        let s = Signals::none();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let w = {
            let seen = Arc::clone(&seen);
            s.subscribe(move |sig, n| seen.lock().unwrap().push((sig, n)))
        };
        s.raise(2);
        s.raise(15);
        assert_eq!(s.count(), 2);
        assert_eq!(s.last(), Some(15));
        assert_eq!(*seen.lock().unwrap(), vec![(2, 1), (15, 2)]);
        drop(w);
        let g = s.watch();
        s.raise(2);
        assert_eq!(s.count(), 3);
        assert_eq!(seen.lock().unwrap().len(), 2, "unsubscribed");
        drop(g);
    }
}
