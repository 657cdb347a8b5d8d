//! A cheap, cloneable cancellation flag shared between the host's `cancel()` and the producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the host cancels or drops a stream. Check [`CancelToken::is_cancelled`] between
/// generation steps.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, unset token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
