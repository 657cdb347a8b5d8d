//! Backends in a worker process (`isolation = "process"`).
//!
//! A plugin runs in the host's address space, so a bug there that is not a panic — an
//! allocation abort, a segfault in a SIMD kernel, a runaway thread — would take the host down.
//! With process isolation the plugin runs in a child (`switchyard worker FILE`, or any program
//! that calls [`serve_stdio`]) and the host talks to it over the child's stdin/stdout, one JSON
//! document per line ([`protocol`]). The host side ([`WorkerEngine`]) is an ordinary engine to
//! [`crate::ChatModel`]: it multiplexes every request over the one pipe, fails only the
//! in-flight requests of a worker that dies (as "unavailable", HTTP 503, with what happened),
//! and starts a new worker for the next request, at most once per [`RESTART_BACKOFF`].
//!
//! The cost is a JSON encode/decode and a pipe hop per event (measured in `BENCHMARKS.md`).

mod host;
pub mod protocol;
mod serve;

pub use host::{RESTART_BACKOFF, WorkerEngine, WorkerLauncher};
pub use serve::serve_stdio;
