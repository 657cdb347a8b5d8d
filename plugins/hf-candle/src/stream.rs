//! The candle generation loop, as a pull iterator of stream events.
//!
//! Nothing runs until the host pulls: each `next()` runs model steps until there is text to
//! hand out (or a sequence ends), so dropping the stream stops generation at once, and the
//! cancel flag is checked before every step. The model instance is leased from the engine's
//! pool and returned when the stream ends or is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use native_llm::logprobs;
use native_llm::plan::GenPlan;
use native_llm::sampling::Sampler;
use switchyard_plugin::{CancelToken, EngineError, Event};

use crate::candle::Instance;
use crate::error::Result;
use crate::shared::Shared;
use crate::text::SeqText;
use crate::vision::Prepared;

struct SeqState {
    logits: Vec<f32>,
    to_feed: Option<u32>,
    seen: Vec<u32>,
    counts: HashMap<u32, u32>,
    text: SeqText,
}

/// The event iterator behind `stream_chat`.
pub struct GenStream {
    shared: Arc<Shared>,
    cancel: CancelToken,
    prompt: Vec<u32>,
    /// The prompt's images (vision-language models); fed with the prompt.
    images: Vec<Prepared>,
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
        Self::with_images(shared, prompt, Vec::new(), plan, cancel)
    }

    /// A stream whose prompt's image tokens take `images` (a vision-language model).
    pub fn with_images(
        shared: Arc<Shared>,
        prompt: Vec<u32>,
        images: Vec<Prepared>,
        plan: GenPlan,
        cancel: CancelToken,
    ) -> Self {
        let sampler = Sampler::new(plan.sampling.clone(), plan.seed);
        Self {
            shared,
            cancel,
            prompt,
            images,
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
            let logits = inst.feed_prompt(&self.prompt, &self.images)?;
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
                inst.feed_prompt(&self.prompt, &self.images)?
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
            counts: HashMap::new(),
            text: SeqText::new(
                self.seq,
                self.prompt.len(),
                &self.plan.stops,
                self.plan.end_logprob,
            ),
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
            // Log-probabilities come from the raw logits, before the sampler transforms them.
            let raw = self.plan.logprobs.map(|_| st.logits.clone());
            let id = self.sampler.sample(&mut st.logits, &st.seen, &st.counts);
            let logprobs = raw.map(|raw| logprobs::of(&raw, id, self.plan.logprobs.unwrap_or(0)));
            st.seen.push(id);
            *st.counts.entry(id).or_default() += 1;
            let ended = self.plan.finish_for(id, st.text.generated + 1);
            let event = st.text.push(tok, id, ended, skip, logprobs)?;
            if event.as_ref().is_some_and(|e| e.finish.is_some()) {
                self.cur = None;
                self.seq += 1;
                if self.seq >= self.plan.n {
                    self.release();
                }
                return Ok(event);
            }
            st.to_feed = Some(id);
            if event.is_some() {
                return Ok(event);
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
