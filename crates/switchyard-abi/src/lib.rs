//! The stable-ABI contract between the Switchyard host and its backend plugins.
//!
//! Every backend (`hf-candle`, `vllm`, `sglang`, `ktransformers`, or a third party's) is a
//! `cdylib` that exports one root module, [`PluginMod`]. The host loads it at run time with
//! `abi_stable`, which checks — per file — that the library was built against a compatible
//! version of this contract and that every type reachable from the root module has the same
//! layout. On top of that the host checks [`ABI_VERSION`], our own contract number. How these
//! numbers move is the [compatibility policy](#compatibility-policy) below.
//!
//! # Design choices
//!
//! **Pull streams, not async.** [`TokenStreamFfi`] is a *blocking pull iterator*
//! (`next_event() -> Result<Option<StreamEvent>>`) with an explicit `cancel()`; dropping it cancels.
//! No async executor crosses the boundary: a `cdylib` has its own copy of every static, so it cannot
//! see the host's tokio runtime, and futures are not FFI-safe anyway. A simple plugin gets
//! backpressure for free — it produces the next token when the host pulls — but the contract does
//! not require it: a batching engine (hf-candle runs every live request in one forward pass) steps
//! all requests together and buffers each one's events until they are pulled, bounded by its
//! token limit. Cancellation is explicit and cheap (the plugin side's token wakes a producer that
//! waits and is checked between steps), and can be requested from another thread while a pull is
//! in progress. Each call crosses the boundary on its own, so each has its own panic scope:
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
//! last method with `#[sabi(last_prefix_field)]`, so a plugin with methods appended later still
//! loads in an older host — not the other way round, which is why adding one is a contract change.
//!
//! # Compatibility policy
//!
//! A plugin built against one version of this contract keeps loading in every host of the same
//! [`ABI_VERSION`], whatever the version of the rest of Switchyard: a release of the host, the
//! CLI or the server never refuses a plugin on its own. Three numbers say which contract a plugin
//! was built against, and they move together:
//!
//! | number | where | today | checked by |
//! |---|---|---|---|
//! | [`ABI_VERSION`] | `abi_version` in the root module | `1` | the host, exactly, after loading |
//! | [`CONTRACT_VERSION`] | the root module's `VERSION_STRINGS` | `"0.1.3"` | `abi_stable`, before any plugin code runs |
//! | this crate's version | `Cargo.toml`, not the workspace's | `0.1.3` | `abi_stable`'s layout check: every type's layout records the package and version that defined it |
//!
//! Both the contract and the crate version are `0.<ABI_VERSION>.<n>` (a unit test keeps the three
//! in step). The rules that make this work are `abi_stable` 0.11's, for versions below 1.0:
//! `LibHeader::init_root_module` (what the registry calls for each file) refuses a plugin whose
//! root-module version has another major, or a *lower* minor than the host's (`"0.1.0"` in a host
//! expecting `"0.2.0"`), and ignores the patch. Its layout check then wants each type's package
//! version *loosely compatible* (`VersionNumber::is_loosely_compatible`: below 1.0, the same
//! minor) and the layouts equal — except that a prefix type (the root module, the two traits'
//! vtables) may have *more* fields in the plugin than in the host, never fewer.
//!
//! **Additive changes** — plugins built before keep loading, and new plugins load in older hosts
//! of the same `ABI_VERSION`:
//! - a new field in a [`wire`] type, with a serde default so that its absence means what the
//!   older side did (older peers ignore unknown fields; neither side may require it);
//! - a new key in the `extra` JSON slot of [`StreamEvent`];
//! - a new [`ErrorKind`] code (an older host treats an unknown kind as a backend error).
//!
//! An addition bumps the patch of [`CONTRACT_VERSION`] (`"0.1.0"` → `"0.1.1"`), so a plugin's
//! header says which additions it knows of; the crate's version gets at least a patch bump with
//! it. The patch never refuses a plugin in either direction.
//!
//! **Contract changes** — anything the older side would misread or the layout check refuses:
//! removing, renaming, reordering or retyping a field of a typed (`repr(C)`) type; a new method in
//! [`EngineFfi`] or [`TokenStreamFfi`] or a new field in [`PluginMod`] — even after the one marked
//! `#[sabi(last_prefix_field)]`, which only lets a *newer plugin* into an *older host*: a host
//! whose vtable has a method more refuses every plugin built before it ("too many fields"); and
//! changing what an existing JSON field or error code means (its unit, its range, whether it is
//! required) or the rules of a call (one `finish` per sequence, what dropping a stream means,
//! which thread may call what). So new operations and new per-token data go through JSON (a
//! request field, the `extra` slot) while they can. A contract change bumps [`ABI_VERSION`], and
//! with it the minor of [`CONTRACT_VERSION`] and of this crate (`0.1.x` → `0.2.0`): the host then
//! refuses older plugins before running any of their code, and newer ones through the layout check
//! or the `ABI_VERSION` check, naming the versions. A change of meaning that no layout shows is
//! caught by `ABI_VERSION` alone, which is why it must never be skipped. (Keep the markers where
//! they are anyway: moving `last_prefix_field` is itself a layout change.)
//!
//! **Neither**: documentation; helpers that exist on one side only (constructors, `Display`,
//! conversions between [`wire`] and FFI types that keep the JSON the same); and any release of
//! the host crates, whose versions no plugin sees. Those may change this crate's patch version,
//! never the contract's. `tests/foundation.rs` loads a plugin built against a frozen copy of
//! contract `0.1.0` (`tests/plugins/frozen-0.1.0`) to hold the host to this.
#![deny(missing_docs)]
// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

mod ffi;
pub mod placeholders;
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

/// The version of the contract, `0.<ABI_VERSION>.<additions>`: what the root module reports as
/// its `abi_stable` version strings, in plugins and host alike.
///
/// A constant rather than `abi_stable::package_version_strings!()` so that no release of any
/// crate moves it: it changes only when the contract does (see the
/// [compatibility policy](crate#compatibility-policy)). Plugins built before it existed report
/// this crate's package version then, `"0.1.0"`, which is compatible.
///
/// History: `0.1.0` the first contract; `0.1.1` typed tool calls, reasoning and logprobs on
/// events and responses (in `extra` across the FFI), and the `logprobs`, `top_logprobs`,
/// `tool_choice` and `constraint` request fields with their capabilities — all JSON additions;
/// `0.1.2` raw-prompt text completions (`prompt`, `echo`, the `completions` capability),
/// `prompt_logprobs` on events and responses, and `[model] adapter_name_or_path`; `0.1.3`
/// named adapters (`[model] lora_modules`, `ChatRequest::adapter`), `[model] template`
/// (a LLaMA-Factory template name), and embeddings (`ScoreRequest::embed`, token-id score
/// inputs, the `embeddings` capability).
pub const CONTRACT_VERSION: &str = "0.1.3";

/// Re-exported so plugins and the host use the exact same `abi_stable` version.
pub use abi_stable;

#[cfg(test)]
mod tests {
    use super::{ABI_VERSION, CONTRACT_VERSION};
    use abi_stable::sabi_types::{VersionNumber, VersionStrings};

    fn parse(version: &'static str) -> VersionNumber {
        VersionStrings::new(version)
            .parsed()
            .expect("a valid version")
    }

    #[test]
    fn contract_and_crate_versions_follow_abi_version() {
        let contract = parse(CONTRACT_VERSION);
        let krate = parse(env!("CARGO_PKG_VERSION"));
        for (what, v) in [("CONTRACT_VERSION", contract), ("the crate version", krate)] {
            assert_eq!(
                (v.major, v.minor),
                (0, ABI_VERSION),
                "{what} is {v}; it must be 0.{ABI_VERSION}.<n> (see the compatibility policy)"
            );
        }
    }
}
