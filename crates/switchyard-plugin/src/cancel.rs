//! A cheap, cloneable cancellation flag shared between the host's `cancel()` and the producer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Waker = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

/// Set when the host cancels or drops a stream. A producer that steps checks
/// [`CancelToken::is_cancelled`] between steps; one that waits (on a channel, a socket) registers
/// [`CancelToken::on_cancel`] to be woken instead of polling.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelToken")
            .field(&self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A fresh, unset token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation and runs the registered wakers (once).
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.0.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers {
            w();
        }
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::Acquire)
    }

    /// Runs `wake` when the token is cancelled (at once if it already is). Use it to unblock a
    /// producer that waits: send a message into its channel, notify its task.
    pub fn on_cancel(&self, wake: impl FnOnce() + Send + 'static) {
        {
            let mut wakers = self.0.wakers.lock().unwrap_or_else(|p| p.into_inner());
            if !self.is_cancelled() {
                wakers.push(Box::new(wake));
                return;
            }
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakers_run_once_on_cancel_and_at_once_after_it() {
        let t = CancelToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        t.on_cancel(move || tx.send(1).unwrap());
        assert!(rx.try_recv().is_err());
        t.clone().cancel();
        t.cancel();
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(rx.try_recv().is_err());
        t.on_cancel(move || tx2.send(2).unwrap());
        assert_eq!(rx.try_recv(), Ok(2));
        assert!(t.is_cancelled());
    }
}
