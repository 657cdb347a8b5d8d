//! The event stream of a request run by the batcher: turns its token messages into text
//! deltas (UTF-8-safe decoding, stop strings) and tells the batcher when to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use switchyard_plugin::{CancelToken, EngineError, Event};

use native_llm::batcher::Msg;
use native_llm::plan::GenPlan;

use crate::text::SeqText;
use crate::tokenizer::Tok;

struct Seq {
    text: SeqText,
    done: bool,
}

/// The iterator `stream_chat` returns for natively run models.
pub struct NativeStream {
    tok: Arc<Tok>,
    rx: Receiver<Msg>,
    stop: Arc<[AtomicBool]>,
    cancel: CancelToken,
    plan: GenPlan,
    seqs: Vec<Seq>,
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
            .map(|i| Seq {
                text: SeqText::new(i, prompt_len, &plan.stops, plan.end_logprob),
                done: false,
            })
            .collect();
        Self {
            tok,
            rx,
            stop,
            cancel,
            plan,
            seqs,
            finished: false,
        }
    }

    /// Lets `cancel` stop the request in the batcher at once, whoever holds the stream.
    pub fn watch_cancel(cancel: &CancelToken, stop: &Arc<[AtomicBool]>) {
        let stop = Arc::clone(stop);
        cancel.on_cancel(move || {
            for f in stop.iter() {
                f.store(true, Ordering::Relaxed);
            }
        });
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
            // No polling: a cancel sets the stop flags (see `watch_cancel`), the batcher retires
            // the request at its next step and drops its sender, which ends this wait.
            let msg = match self.rx.recv() {
                Ok(m) => m,
                Err(_) if self.cancel.is_cancelled() => return Err(EngineError::cancelled()),
                Err(_) => {
                    return Err(EngineError::backend(
                        "the hf-candle generation thread stopped before this request finished",
                    ));
                }
            };
            let (index, id, finish, logprobs) = match msg {
                Msg::Failed(e) => return Err(EngineError::backend(e)),
                Msg::Token {
                    index,
                    id,
                    finish,
                    logprobs,
                } => (index, id, finish, logprobs),
            };
            let Some(st) = self.seqs.get_mut(index).filter(|s| !s.done) else {
                continue;
            };
            let Some(event) =
                st.text
                    .push(&self.tok, id, finish, self.plan.skip_special, logprobs)?
            else {
                continue;
            };
            if event.finish.is_some() {
                st.done = true;
                // The batcher may still be running this sequence (stop string): end it.
                self.stop[index].store(true, Ordering::Relaxed);
            }
            return Ok(Some(event));
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
