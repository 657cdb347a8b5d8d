//! The event stream of a request run by the batcher: turns its token messages into text
//! deltas (UTF-8-safe decoding, stop strings) and tells the batcher when to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use switchyard_plugin::{CancelToken, EngineError, Event, Finish, FinishReason};

use super::batcher::Msg;
use crate::stop::{Scan, StopBuffer};
use crate::stream::GenPlan;
use crate::tokenizer::{StreamDecoder, Tok};

/// How often a waiting stream looks at its cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(20);

struct SeqText {
    decoder: StreamDecoder,
    stops: StopBuffer,
    pending_ids: Vec<u32>,
    generated: usize,
    done: bool,
}

/// The iterator `stream_chat` returns for natively run models.
pub struct NativeStream {
    tok: Arc<Tok>,
    rx: Receiver<Msg>,
    stop: Arc<[AtomicBool]>,
    cancel: CancelToken,
    plan: GenPlan,
    prompt_len: usize,
    seqs: Vec<SeqText>,
    finished: bool,
}

impl NativeStream {
    /// A stream reading `rx`; `stop` has one flag per sequence.
    pub fn new(
        tok: Arc<Tok>,
        rx: Receiver<Msg>,
        stop: Arc<[AtomicBool]>,
        cancel: CancelToken,
        plan: GenPlan,
        prompt_len: usize,
    ) -> Self {
        let seqs = (0..plan.n.max(1))
            .map(|_| SeqText {
                decoder: StreamDecoder::default(),
                stops: StopBuffer::new(&plan.stops),
                pending_ids: Vec::new(),
                generated: 0,
                done: false,
            })
            .collect();
        Self {
            tok,
            rx,
            stop,
            cancel,
            plan,
            prompt_len,
            seqs,
            finished: false,
        }
    }

    fn stop_all(&self) {
        for f in self.stop.iter() {
            f.store(true, Ordering::Relaxed);
        }
    }

    fn advance(&mut self) -> Result<Option<Event>, EngineError> {
        loop {
            if self.seqs.iter().all(|s| s.done) {
                return Ok(None);
            }
            if self.cancel.is_cancelled() {
                return Err(EngineError::cancelled());
            }
            let msg = match self.rx.recv_timeout(CANCEL_POLL) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(EngineError::backend(
                        "the hf-candle generation thread stopped before this request finished",
                    ));
                }
            };
            let (index, id, finish) = match msg {
                Msg::Failed(e) => return Err(EngineError::backend(e)),
                Msg::Token { index, id, finish } => (index, id, finish),
            };
            let skip = self.plan.skip_special;
            let tok = Arc::clone(&self.tok);
            let Some(st) = self.seqs.get_mut(index).filter(|s| !s.done) else {
                continue;
            };
            st.generated += 1;
            st.pending_ids.push(id);
            let mut text = String::new();
            let mut reason = finish;
            let stop_id = finish == Some(FinishReason::Stop);
            if !stop_id {
                let delta = st.decoder.push(&tok, id, skip)?;
                match st.stops.push(&delta) {
                    Scan::Stop(t) => {
                        text = t;
                        reason = Some(FinishReason::Stop);
                    }
                    Scan::Emit(t) => text = t,
                }
            }
            let by_stop_string = reason == Some(FinishReason::Stop) && !stop_id;
            if reason.is_some() && !by_stop_string {
                // Ended without a stop string: release what the decoder and stop buffer hold,
                // unless that completes a stop string after all.
                let rest = st.decoder.flush(&tok, skip)?;
                match st.stops.push(&rest) {
                    Scan::Stop(t) => {
                        text.push_str(&t);
                        reason = Some(FinishReason::Stop);
                    }
                    Scan::Emit(t) => {
                        text.push_str(&t);
                        text.push_str(&st.stops.finish());
                    }
                }
            }
            if let Some(reason) = reason {
                st.done = true;
                // The batcher may still be running this sequence (stop string): end it.
                self.stop[index].store(true, Ordering::Relaxed);
                return Ok(Some(Event {
                    index: index as u32,
                    delta: text,
                    token_ids: std::mem::take(&mut st.pending_ids),
                    finish: Some(Finish {
                        reason,
                        prompt_length: self.prompt_len as u32,
                        response_length: st.generated as u32,
                    }),
                }));
            }
            if !text.is_empty() {
                return Ok(Some(Event {
                    index: index as u32,
                    delta: text,
                    token_ids: std::mem::take(&mut st.pending_ids),
                    finish: None,
                }));
            }
        }
    }
}

impl Iterator for NativeStream {
    type Item = Result<Event, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.advance() {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.finished = true;
                self.stop_all();
                None
            }
            Err(e) => {
                self.finished = true;
                self.stop_all();
                Some(Err(e))
            }
        }
    }
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        self.stop_all();
    }
}
