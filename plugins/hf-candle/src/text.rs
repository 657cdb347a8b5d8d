//! The text side of a generated sequence, shared by both generation loops (`stream.rs` for
//! candle, `native_stream.rs` for the native engine): UTF-8-safe decoding, stop strings, and
//! the events it becomes.

use native_llm::logprobs::Logprobs;
use native_llm::plan;
use switchyard_plugin::{Event, Finish, FinishReason, TokenLogprob, TopLogprob};

use crate::error::Result;
use crate::stop::{Scan, StopBuffer};
use crate::tokenizer::{StreamDecoder, Tok};

/// The text side of one generated sequence.
pub(crate) struct SeqText {
    index: u32,
    prompt_len: u32,
    decoder: StreamDecoder,
    stops: StopBuffer,
    pending_ids: Vec<u32>,
    pending_logprobs: Vec<TokenLogprob>,
    /// List the end id's log-probability when the sequence stops on it.
    end_logprob: bool,
    /// Tokens sampled so far.
    pub(crate) generated: usize,
}

impl SeqText {
    /// Sequence `index` of a request whose prompt has `prompt_len` tokens.
    /// `end_logprob`: list the end id's log-probability (text completions do).
    pub(crate) fn new(
        index: usize,
        prompt_len: usize,
        stops: &[String],
        end_logprob: bool,
    ) -> Self {
        Self {
            index: index as u32,
            prompt_len: prompt_len as u32,
            decoder: StreamDecoder::default(),
            stops: StopBuffer::new(stops),
            pending_ids: Vec::new(),
            pending_logprobs: Vec::new(),
            end_logprob,
            generated: 0,
        }
    }

    /// Takes the sampled `id`. `ended` says the sampler ended the sequence with it: `Stop` for
    /// an end id (not decoded), `Length` for the limit. Returns the event to hand out, if
    /// there is text or the sequence ended (a stop string may end it here too). `logprobs`
    /// (when the request asked) travel with the event that carries the token; an end id has
    /// none, as it is not part of the text.
    pub(crate) fn push(
        &mut self,
        tok: &Tok,
        id: u32,
        ended: Option<plan::Finish>,
        skip_special: bool,
        logprobs: Option<Logprobs>,
    ) -> Result<Option<Event>> {
        let ended = ended.map(|f| match f {
            plan::Finish::Stop => FinishReason::Stop,
            plan::Finish::Length => FinishReason::Length,
        });
        self.generated += 1;
        self.pending_ids.push(id);
        let end_id = ended == Some(FinishReason::Stop);
        if let Some(lp) = logprobs.filter(|_| !end_id || self.end_logprob) {
            self.pending_logprobs.push(token_logprob(tok, id, lp));
        }
        let mut text = String::new();
        let mut reason = ended;
        let mut by_stop_string = false;
        if !end_id {
            let delta = self.decoder.push(tok, id, skip_special)?;
            match self.stops.push(&delta) {
                Scan::Stop(t) => {
                    text = t;
                    reason = Some(FinishReason::Stop);
                    by_stop_string = true;
                }
                Scan::Emit(t) => text = t,
            }
        }
        if reason.is_some() && !by_stop_string {
            // Ended without a stop string: release what the decoder and stop buffer hold,
            // unless that completes a stop string after all.
            let rest = self.decoder.flush(tok, skip_special)?;
            match self.stops.push(&rest) {
                Scan::Stop(t) => {
                    text.push_str(&t);
                    reason = Some(FinishReason::Stop);
                }
                Scan::Emit(t) => {
                    text.push_str(&t);
                    text.push_str(&self.stops.finish());
                }
            }
        }
        if reason.is_none() && text.is_empty() {
            return Ok(None);
        }
        Ok(Some(Event {
            index: self.index,
            delta: text,
            token_ids: std::mem::take(&mut self.pending_ids),
            logprobs: std::mem::take(&mut self.pending_logprobs),
            finish: reason.map(|reason| Finish {
                reason,
                prompt_length: self.prompt_len,
                response_length: self.generated as u32,
            }),
            ..Default::default()
        }))
    }
}

/// OpenAI's shape of a token's log-probability: text, id, exact bytes, alternatives.
pub(crate) fn token_logprob(tok: &Tok, id: u32, lp: Logprobs) -> TokenLogprob {
    let named = |id: u32| {
        let bytes = tok.token_bytes(id).to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (token, bytes) = named(id);
    TokenLogprob {
        token,
        token_id: Some(id),
        bytes,
        logprob: lp.logprob,
        top_logprobs: lp
            .top
            .into_iter()
            .map(|(id, logprob)| {
                let (token, bytes) = named(id);
                TopLogprob {
                    token,
                    token_id: Some(id),
                    bytes,
                    logprob,
                }
            })
            .collect(),
    }
}
