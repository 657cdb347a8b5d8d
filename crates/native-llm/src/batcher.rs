//! Continuous batching: one thread owns the model and runs steps over every live sequence at
//! once. A request joins between two steps (its prompt is prefilled in the same forward pass
//! as the others' decode tokens) and leaves as soon as it ends, is cancelled or its stream is
//! dropped. Finished sequences park their KV cache in the [`PrefixCache`], so the next turn of
//! a conversation prefills only its new tokens.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};

use crate::filter::TokenFilter;
use crate::kv::{KvCache, PrefixCache};
use crate::logprobs::{self, Logprobs};
use crate::model::{SeqStep, Transformer};
use crate::plan::{Finish, GenPlan};
use crate::sampling::Sampler;

/// What the batcher tells a request's stream.
#[derive(Debug)]
pub enum Msg {
    /// Sequence `index` produced `id`; `finish` when that ended it (an end id, or the limit).
    Token {
        /// Sequence index within the request.
        index: usize,
        /// The token.
        id: u32,
        /// Why the sequence ended with this token, if it did.
        finish: Option<Finish>,
        /// Its log-probability and the top alternatives, when the plan asks for them.
        logprobs: Option<Logprobs>,
    },
    /// The model failed; the request is over.
    Failed(String),
}

/// A request handed to the batcher.
pub struct Job {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Resolved generation settings.
    pub plan: GenPlan,
    /// Where tokens go.
    pub out: Sender<Msg>,
    /// Per-sequence stop flags, set by the stream (stop string, cancel, drop).
    pub stop: Arc<[AtomicBool]>,
    /// Which tokens may come next (structured outputs); forked for each extra sequence.
    pub filter: Option<Box<dyn TokenFilter>>,
    /// The attached LoRA adapter to run with (`Transformer::attach_adapter`), if any.
    pub adapter: Option<usize>,
}

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Prompt tokens prefilled per step across all joining requests (longer prompts take
    /// several steps, so running streams keep decoding meanwhile).
    pub prefill_chunk: usize,
    /// Byte budget of the prefix cache (0 turns reuse off).
    pub prefix_cache_bytes: usize,
}

/// Counters the batching thread keeps (for tests, benchmarks and logs).
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub steps: AtomicU64,
    /// Most sequences that ran in one forward pass.
    pub max_batch: AtomicUsize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused_tokens: AtomicU64,
    /// Prompt tokens actually run.
    pub prefilled_tokens: AtomicU64,
}

/// A copy of [`BatchStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Forward passes run.
    pub steps: u64,
    /// Most sequences that ran in one forward pass.
    pub max_batch: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused_tokens: u64,
    /// Prompt tokens actually run.
    pub prefilled_tokens: u64,
}

impl BatchStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            steps: self.steps.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            reused_tokens: self.reused_tokens.load(Ordering::Relaxed),
            prefilled_tokens: self.prefilled_tokens.load(Ordering::Relaxed),
        }
    }
}

/// The handle streams submit to.
pub struct Batcher {
    tx: Sender<Job>,
    stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts the batching thread; it runs the model inside `pool`.
    pub fn start(
        model: Arc<Transformer>,
        pool: Arc<rayon::ThreadPool>,
        config: BatchConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(BatchStats::default());
        let worker = Worker::new(model, pool, config, Arc::clone(&stats));
        std::thread::Builder::new()
            .name("hf-candle-batcher".into())
            .spawn(move || worker.run(rx))?;
        Ok(Self { tx, stats })
    }

    /// The batching thread's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Queues a request; `false` when the batching thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

struct Seq {
    index: usize,
    plan: Arc<GenPlan>,
    /// Exactly the tokens whose keys and values are in `kv`.
    fed: Vec<u32>,
    /// Tokens still to run.
    pending: Vec<u32>,
    kv: KvCache,
    sampler: Sampler,
    /// Prompt plus generated tokens (what penalties look at).
    seen: Vec<u32>,
    counts: HashMap<u32, u32>,
    generated: usize,
    out: Sender<Msg>,
    stop: Arc<[AtomicBool]>,
    /// Copies to make after the prompt (`num_return_sequences - 1`).
    forks: usize,
    filter: Option<Box<dyn TokenFilter>>,
    adapter: Option<usize>,
}

impl Seq {
    fn stopped(&self) -> bool {
        self.stop[self.index].load(Ordering::Relaxed)
    }
}

struct Worker {
    model: Arc<Transformer>,
    pool: Arc<rayon::ThreadPool>,
    config: BatchConfig,
    prefix: PrefixCache,
    live: Vec<Seq>,
    stats: Arc<BatchStats>,
}

impl Worker {
    fn new(
        model: Arc<Transformer>,
        pool: Arc<rayon::ThreadPool>,
        config: BatchConfig,
        stats: Arc<BatchStats>,
    ) -> Self {
        Self {
            stats,
            prefix: PrefixCache::new(config.prefix_cache_bytes),
            model,
            pool,
            config,
            live: Vec::new(),
        }
    }

    fn run(mut self, rx: Receiver<Job>) {
        loop {
            if self.live.is_empty() {
                match rx.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.admit(job);
            }
            self.retire_stopped();
            if self.live.is_empty() {
                continue;
            }
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| self.step())) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%what, "hf-candle model step panicked; failing the running requests");
                for s in self.live.drain(..) {
                    let _ = s
                        .out
                        .send(Msg::Failed(format!("the model step panicked: {what}")));
                }
            }
        }
    }

    fn admit(&mut self, job: Job) {
        let kv = self.prefix.take_for(job.adapter, &job.prompt);
        let reused = kv.as_ref().map_or(0, KvCache::len);
        let kv = kv.unwrap_or_else(|| self.model.new_cache());
        self.stats
            .reused_tokens
            .fetch_add(reused as u64, Ordering::Relaxed);
        self.stats
            .prefilled_tokens
            .fetch_add((job.prompt.len() - reused) as u64, Ordering::Relaxed);
        tracing::debug!(
            prompt = job.prompt.len(),
            reused,
            live = self.live.len(),
            "request joins the batch"
        );
        let n = job.plan.n.max(1);
        self.live.push(Seq {
            index: 0,
            sampler: Sampler::new(job.plan.sampling.clone(), job.plan.seed),
            fed: job.prompt[..reused].to_vec(),
            pending: job.prompt[reused..].to_vec(),
            seen: job.prompt,
            plan: Arc::new(job.plan),
            kv,
            counts: HashMap::new(),
            generated: 0,
            out: job.out,
            stop: job.stop,
            forks: n - 1,
            filter: job.filter,
            adapter: job.adapter,
        });
    }

    fn park(&mut self, s: Seq) {
        if s.index == 0 {
            self.prefix.put_for(s.adapter, s.fed, s.kv);
        }
    }

    fn retire_stopped(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].stopped() {
                let s = self.live.swap_remove(i);
                self.park(s);
            } else {
                i += 1;
            }
        }
    }

    /// One forward pass over every live sequence, then sampling for those whose input is done.
    fn step(&mut self) {
        let mut budget = self.config.prefill_chunk.max(1);
        let mut take: Vec<usize> = Vec::with_capacity(self.live.len());
        for s in &self.live {
            let n = if s.pending.len() <= 1 {
                s.pending.len()
            } else {
                let n = s.pending.len().min(budget);
                budget -= n;
                n
            };
            take.push(n);
        }
        let model = Arc::clone(&self.model);
        let logits = {
            let mut steps: Vec<SeqStep<'_>> = Vec::new();
            let mut idx = Vec::new();
            for (i, (s, &n)) in self.live.iter_mut().zip(&take).enumerate() {
                if n > 0 {
                    steps.push(SeqStep {
                        kv: &mut s.kv,
                        tokens: &s.pending[..n],
                        adapter: s.adapter,
                    });
                    idx.push(i);
                }
            }
            if steps.is_empty() {
                return;
            }
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
            self.stats
                .max_batch
                .fetch_max(steps.len(), Ordering::Relaxed);
            let tokens: usize = steps.iter().map(|s| s.tokens.len()).sum();
            let started = std::time::Instant::now();
            let out = self.pool.install(|| model.forward(&mut steps));
            tracing::trace!(
                seqs = steps.len(),
                tokens,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "step"
            );
            idx.into_iter().zip(out).collect::<Vec<_>>()
        };
        let mut new_forks = Vec::new();
        let mut done = Vec::new();
        for (i, mut lg) in logits {
            let n = take[i];
            let s = &mut self.live[i];
            s.fed.extend(s.pending.drain(..n));
            if !s.pending.is_empty() {
                continue; // still prefilling
            }
            for f in 0..s.forks {
                let index = f + 1;
                let seed = s.plan.seed.map(|x| x.wrapping_add(index as u64));
                new_forks.push((
                    Seq {
                        index,
                        plan: Arc::clone(&s.plan),
                        fed: s.fed.clone(),
                        pending: Vec::new(),
                        kv: s.kv.clone(),
                        sampler: Sampler::new(s.plan.sampling.clone(), seed),
                        seen: s.seen.clone(),
                        counts: HashMap::new(),
                        generated: 0,
                        out: s.out.clone(),
                        stop: Arc::clone(&s.stop),
                        forks: 0,
                        filter: s.filter.as_ref().map(|f| f.fork()),
                        adapter: s.adapter,
                    },
                    lg.clone(),
                ));
            }
            s.forks = 0;
            if sample_and_send(s, &mut lg) {
                done.push(i);
            }
        }
        for (mut f, mut lg) in new_forks {
            if !sample_and_send(&mut f, &mut lg) {
                self.live.push(f);
            }
        }
        // Remove finished ones, highest index first so the others keep their places.
        done.sort_unstable();
        for i in done.into_iter().rev() {
            let s = self.live.swap_remove(i);
            self.park(s);
        }
    }
}

/// Samples the next token, tells the stream, queues it to run; `true` when the sequence ended.
fn sample_and_send(s: &mut Seq, logits: &mut [f32]) -> bool {
    // Log-probabilities come from the raw logits, before the sampler transforms them.
    let raw = s.plan.logprobs.map(|_| logits.to_vec());
    if let Some(f) = s.filter.as_mut()
        && let Err(e) = f.mask(logits)
    {
        let _ = s.out.send(Msg::Failed(e));
        return true;
    }
    let id = s.sampler.sample(logits, &s.seen, &s.counts);
    if let Some(f) = s.filter.as_mut()
        && let Err(e) = f.accept(id)
    {
        let _ = s.out.send(Msg::Failed(e));
        return true;
    }
    let logprobs = raw.map(|raw| logprobs::of(&raw, id, s.plan.logprobs.unwrap_or(0)));
    s.seen.push(id);
    *s.counts.entry(id).or_default() += 1;
    s.generated += 1;
    let finish = s.plan.finish_for(id, s.generated);
    let sent = s
        .out
        .send(Msg::Token {
            index: s.index,
            id,
            finish,
            logprobs,
        })
        .is_ok();
    if finish.is_none() {
        s.pending.push(id);
    }
    finish.is_some() || !sent
}
