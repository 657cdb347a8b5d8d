//! The text side of a generated sequence, shared by both generation loops (`stream.rs` for
//! candle, `native_stream.rs` for the native engine): UTF-8-safe decoding, stop strings, and
//! the events it becomes.

use native_llm::plan;
use switchyard_plugin::{Event, Finish, FinishReason};

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
    /// Tokens sampled so far.
    pub(crate) generated: usize,
}

impl SeqText {
    /// Sequence `index` of a request whose prompt has `prompt_len` tokens.
    pub(crate) fn new(index: usize, prompt_len: usize, stops: &[String]) -> Self {
        Self {
            index: index as u32,
            prompt_len: prompt_len as u32,
            decoder: StreamDecoder::default(),
            stops: StopBuffer::new(stops),
            pending_ids: Vec::new(),
            generated: 0,
        }
    }

    /// Takes the sampled `id`. `ended` says the sampler ended the sequence with it: `Stop` for
    /// an end id (not decoded), `Length` for the limit. Returns the event to hand out, if
    /// there is text or the sequence ended (a stop string may end it here too).
    pub(crate) fn push(
        &mut self,
        tok: &Tok,
        id: u32,
        ended: Option<plan::Finish>,
        skip_special: bool,
    ) -> Result<Option<Event>> {
        let ended = ended.map(|f| match f {
            plan::Finish::Stop => FinishReason::Stop,
            plan::Finish::Length => FinishReason::Length,
        });
        self.generated += 1;
        self.pending_ids.push(id);
        let end_id = ended == Some(FinishReason::Stop);
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
            finish: reason.map(|reason| Finish {
                reason,
                prompt_length: self.prompt_len,
                response_length: self.generated as u32,
            }),
            ..Default::default()
        }))
    }
}
