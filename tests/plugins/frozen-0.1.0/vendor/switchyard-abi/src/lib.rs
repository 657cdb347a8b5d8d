//! The stable-ABI contract between the Switchyard host and its backend plugins.
//!
//! Every backend (`hf-candle`, `vllm`, `sglang`, `ktransformers`, or a third party's) is a
//! `cdylib` that exports one root module, [`PluginMod`]. The host loads it at run time with
//! `abi_stable`, which checks — per file — that the library was built against a compatible
//! version of this crate and that every type reachable from the root module has the same layout.
//! On top of that the host checks [`ABI_VERSION`], our own contract number.
//!
//! # Design choices
//!
//! **Pull streams, not async.** [`TokenStreamFfi`] is a *blocking pull iterator*
//! (`next_event() -> Result<Option<StreamEvent>>`) with an explicit `cancel()`; dropping it cancels.
//! No async executor crosses the boundary: a `cdylib` has its own copy of every static, so it cannot
//! see the host's tokio runtime, and futures are not FFI-safe anyway. Backpressure comes for free —
//! a plugin produces the next token when the host pulls. Cancellation is explicit and cheap (an
//! atomic flag the plugin checks between steps), and can be requested from another thread while a
//! pull is in progress. Each call crosses the boundary on its own, so each has its own panic scope:
//! the plugin side catches panics at every entry point (see the `switchyard-plugin` crate) and turns
//! them into [`ErrorKind::PANICKED`] errors instead of aborting the host.
//!
//! **JSON for requests and configuration, typed structs for the hot path.** Requests, responses,
//! engine configuration and metadata cross as JSON text (the [`wire`] module holds their serde
//! types). They are rich, nested and will grow; with JSON an older plugin simply ignores a field a
//! newer host sends, and a newer plugin sees defaults for fields an older host never sends — a
//! typed `StableAbi` struct would turn every added field into a layout mismatch that refuses to
//! load. The per-token [`StreamEvent`] and the [`EngineError`] are typed (`repr(C)`), because they
//! are produced once per token and must be cheap; they carry an `extra` JSON slot for additions.
//!
//! **Forward-compatible codes.** [`ErrorKind`] is a transparent `u32` with named constants, not a
//! Rust enum, so a newer plugin may report a kind an older host does not know (the host treats it
//! as a backend error) without breaking the layout check. The engine and stream traits mark their
//! last method with `#[sabi(last_prefix_field)]`, so methods can be appended later.
#![deny(missing_docs)]
// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

mod ffi;
pub mod wire;

pub use ffi::{
    EngineBox, EngineError, EngineFfi, EngineFfi_TO, ErrorKind, PluginMod, PluginModRef,
    StreamEvent, StreamFinish, TokenStreamBox, TokenStreamFfi, TokenStreamFfi_TO,
};

/// Our own contract number, checked by the host on top of `abi_stable`'s layout checks.
///
/// Bump it when the *meaning* of the interface changes in a way the layout check cannot see
/// (for example, a JSON field changing its unit). Plugins built for another value are refused
/// with a message that names both numbers.
pub const ABI_VERSION: u32 = 1;

/// Re-exported so plugins and the host use the exact same `abi_stable` version.
pub use abi_stable;
