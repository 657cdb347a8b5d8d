//! What generation needs to know about one request, resolved ([`GenPlan`]), and why sampling
//! ended a sequence ([`Finish`]). Shared by the batcher here and by any other generation loop
//! (the plugin's candle loop uses it too).

use std::collections::HashSet;

use crate::sampling::SamplingParams;

/// Why sampling a token ended its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end id (one of [`GenPlan::stop_ids`]).
    Stop,
    /// The new-token limit ([`GenPlan::max_new`]).
    Length,
}

/// Everything generation needs to know about one request, resolved.
#[derive(Clone, Debug)]
pub struct GenPlan {
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// RNG seed.
    pub seed: Option<u64>,
    /// New-token limit (already capped by the context window).
    pub max_new: usize,
    /// Stop strings (matched on the text, by the caller: the engine sees only ids).
    pub stops: Vec<String>,
    /// Ids that end a sequence.
    pub stop_ids: HashSet<u32>,
    /// Drop special tokens from the text (the caller's decoding).
    pub skip_special: bool,
    /// Sequences to generate.
    pub n: usize,
    /// Report each sampled token's log-probability and this many alternatives (`None`: off).
    pub logprobs: Option<usize>,
    /// Report the end id's log-probability too when a sequence stops on it (text completions
    /// list it, as OpenAI's and vLLM's do; chat replies leave it out).
    pub end_logprob: bool,
}

impl GenPlan {
    /// Why sampling `id` as the `generated`-th new token ends its sequence, if it does: an end
    /// id (`Stop`) or the new-token limit (`Length`). Stop strings are the text side's.
    pub fn finish_for(&self, id: u32, generated: usize) -> Option<Finish> {
        if self.stop_ids.contains(&id) {
            Some(Finish::Stop)
        } else if generated >= self.max_new {
            Some(Finish::Length)
        } else {
            None
        }
    }
}
