//! The generation loop, as a pull iterator of stream events.
//!
//! Nothing runs until the host pulls: each `next()` runs model steps until there is text to
//! hand out (or a sequence ends), so dropping the stream stops generation at once, and the
//! cancel flag is checked before every step. The model instance is leased from the engine's
//! pool and returned when the stream ends or is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use switchyard_plugin::{CancelToken, EngineError, Event, Finish, FinishReason};

use crate::engine::Shared;
use crate::error::Result;
use crate::model::Instance;
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::{Scan, StopBuffer};
use crate::tokenizer::StreamDecoder;

/// Everything generation needs to know about one request, resolved.
#[derive(Clone, Debug)]
pub struct GenPlan {
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// RNG seed.
    pub seed: Option<u64>,
    /// New-token limit (already capped by the context window).
    pub max_new: usize,
    /// Stop strings.
    pub stops: Vec<String>,
    /// Ids that end a sequence.
    pub stop_ids: HashSet<u32>,
    /// Drop special tokens from the text.
    pub skip_special: bool,
    /// Sequences to generate.
    pub n: usize,
}

struct SeqState {
    logits: Vec<f32>,
    to_feed: Option<u32>,
    seen: Vec<u32>,
    generated: usize,
    counts: HashMap<u32, u32>,
    decoder: StreamDecoder,
    stops: StopBuffer,
    pending_ids: Vec<u32>,
}

/// The event iterator behind `stream_chat`.
pub struct GenStream {
    shared: Arc<Shared>,
    cancel: CancelToken,
    prompt: Vec<u32>,
    plan: GenPlan,
    sampler: Sampler,
    inst: Option<Instance>,
    snapshot: Option<(Instance, Vec<f32>)>,
    seq: usize,
    cur: Option<SeqState>,
    finished: bool,
}

impl GenStream {
    /// A stream for `prompt` (already checked against the context window).
    pub fn new(shared: Arc<Shared>, prompt: Vec<u32>, plan: GenPlan, cancel: CancelToken) -> Self {
        let sampler = Sampler::new(plan.sampling.clone(), plan.seed);
        Self {
            shared,
            cancel,
            prompt,
            plan,
            sampler,
            inst: None,
            snapshot: None,
            seq: 0,
            cur: None,
            finished: false,
        }
    }

    fn release(&mut self) {
        self.snapshot = None;
        if let Some(i) = self.inst.take() {
            self.shared.checkin(i);
        }
    }

    fn start_sequence(&mut self) -> Result<()> {
        let logits = if self.seq == 0 {
            let mut inst = self.shared.checkout()?;
            inst.reset();
            let logits = inst.feed(&self.prompt)?;
            if self.plan.n > 1 {
                self.snapshot = Some((inst.try_clone()?, logits.clone()));
            }
            self.inst = Some(inst);
            logits
        } else {
            let (snap, logits) = self
                .snapshot
                .as_ref()
                .expect("snapshot taken after the prompt");
            let mut inst = snap.try_clone()?;
            let logits = if inst.position() == self.prompt.len() {
                logits.clone()
            } else {
                inst.reset();
                inst.feed(&self.prompt)?
            };
            if let Some(old) = self.inst.replace(inst) {
                self.shared.checkin(old);
            }
            logits
        };
        self.cur = Some(SeqState {
            logits,
            to_feed: None,
            seen: self.prompt.clone(),
            generated: 0,
            counts: HashMap::new(),
            decoder: StreamDecoder::default(),
            stops: StopBuffer::new(&self.plan.stops),
            pending_ids: Vec::new(),
        });
        Ok(())
    }

    /// Runs steps until an event is ready; `None` when every sequence is done.
    fn advance(&mut self) -> Result<Option<Event>, EngineError> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(EngineError::cancelled());
            }
            if self.cur.is_none() {
                if self.seq >= self.plan.n {
                    return Ok(None);
                }
                self.start_sequence()?;
                continue;
            }
            let tok = &self.shared.tok;
            let skip = self.plan.skip_special;
            let st = self.cur.as_mut().expect("checked above");
            if let Some(t) = st.to_feed.take() {
                let inst = self.inst.as_mut().expect("leased at sequence start");
                st.logits = inst.feed(&[t])?;
                continue;
            }
            let id = self.sampler.sample(&mut st.logits, &st.seen, &st.counts);
            st.seen.push(id);
            st.generated += 1;
            *st.counts.entry(id).or_default() += 1;
            st.pending_ids.push(id);
            let mut text = String::new();
            let mut reason = None;
            if self.plan.stop_ids.contains(&id) {
                reason = Some(FinishReason::Stop);
            } else {
                let delta = st.decoder.push(tok, id, skip)?;
                match st.stops.push(&delta) {
                    Scan::Stop(t) => {
                        text = t;
                        reason = Some(FinishReason::Stop);
                    }
                    Scan::Emit(t) => text = t,
                }
                if reason.is_none() && st.generated >= self.plan.max_new {
                    reason = Some(FinishReason::Length);
                }
            }
            if reason.is_some_and(|r| r != FinishReason::Stop || self.plan.stop_ids.contains(&id)) {
                // Ended without a stop string: release what the decoder and stop buffer hold,
                // unless that completes a stop string after all.
                let rest = st.decoder.flush(tok, skip)?;
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
                let event = Event {
                    index: self.seq as u32,
                    delta: text,
                    token_ids: std::mem::take(&mut st.pending_ids),
                    finish: Some(Finish {
                        reason,
                        prompt_length: self.prompt.len() as u32,
                        response_length: st.generated as u32,
                    }),
                };
                self.cur = None;
                self.seq += 1;
                if self.seq >= self.plan.n {
                    self.release();
                }
                return Ok(Some(event));
            }
            st.to_feed = Some(id);
            if !text.is_empty() {
                return Ok(Some(Event {
                    index: self.seq as u32,
                    delta: text,
                    token_ids: std::mem::take(&mut st.pending_ids),
                    finish: None,
                }));
            }
        }
    }
}

impl Iterator for GenStream {
    type Item = Result<Event, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        match shared.threads.install(|| self.advance()) {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.finished = true;
                self.release();
                None
            }
            Err(e) => {
                self.finished = true;
                self.release();
                Some(Err(e))
            }
        }
    }
}

impl Drop for GenStream {
    fn drop(&mut self) {
        self.release();
    }
}
