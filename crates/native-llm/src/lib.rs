//! `native-llm`: the native CPU engine behind Switchyard's embedded `hf-candle` backend.

#![warn(missing_docs)]

pub mod kernels;
