//! [`ChatModel`]: the one facade front ends use, over whichever plugin the config selects.
//!
//! Every call goes through one admission limit: at most `max_concurrent` calls run (the slot is
//! held for the whole call — for a stream, until it ends or is dropped) and at most `max_queue`
//! more wait; beyond that a call fails at once with [`Error::Overloaded`], which the HTTP server
//! answers with 429. Requests are validated and normalised by [`crate::validation`] before they
//! take a slot, so a bad request never waits. Plugin calls are blocking, so the async
//! methods run them on tokio's blocking pool and never stall the executor; the sync methods call
//! the plugin on the caller's thread and need no runtime (they also work, without panicking, when
//! called from inside one).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use switchyard_abi::{
    EngineBox, EngineError, EngineFfi_TO, ErrorKind, TokenStreamBox,
    abi_stable::sabi_trait::TD_Opaque,
    wire::{ChatRequest, EngineInfo, Event, Response, ScoreInput, ScoreRequest},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::{Config, Isolation};
use crate::error::{Error, Result};
use crate::registry::{Registry, resolve_plugin_dir};
use crate::validation;
use crate::worker::{WorkerEngine, WorkerLauncher};

struct Inner {
    engine: EngineBox,
    info: EngineInfo,
    plugin_path: std::path::PathBuf,
    config: Config,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    /// Calls admitted (running or waiting for a slot).
    admitted: AtomicUsize,
}

/// One admitted call, counted against `max_concurrent + max_queue` until dropped.
struct Ticket(Arc<Inner>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running call's slot; dropping it lets the next call in.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _ticket: Ticket,
}

/// A loaded backend behind a concurrency limit, with sync and async chat, stream and score calls.
///
/// Cheap to clone; clones share the engine and the limit.
#[derive(Clone)]
pub struct ChatModel {
    inner: Arc<Inner>,
    /// The named adapter stamped on requests that name none ([`ChatModel::with_adapter`]).
    adapter: Option<Arc<str>>,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("info", &self.inner.info)
            .field("max_concurrent", &self.inner.max_concurrent)
            .finish()
    }
}

impl ChatModel {
    /// Loads the config file, scans the plugin directory (`plugin_dir` flag first; see
    /// [`resolve_plugin_dir`]) and creates the selected engine.
    pub fn from_config_file(
        path: &Path,
        overrides: &[String],
        plugin_dir: Option<&Path>,
    ) -> Result<Self> {
        let config = Config::load(path, overrides)?;
        let dir = resolve_plugin_dir(plugin_dir, config.plugin_dir.as_deref());
        let registry = Registry::scan(&dir)?;
        Self::new(&registry, config)
    }

    /// Creates the engine `config.sample_backend` names, from an already scanned registry, in
    /// this process (`isolation = "process"` needs [`ChatModel::open`] with a launcher).
    pub fn new(registry: &Registry, config: Config) -> Result<Self> {
        Self::open(registry, config, None)
    }

    /// Creates the engine `config.sample_backend` names. With `isolation = "process"` in the
    /// config the plugin runs in a worker process started with `worker` (see
    /// [`crate::worker`]).
    pub fn open(
        registry: &Registry,
        config: Config,
        worker: Option<&WorkerLauncher>,
    ) -> Result<Self> {
        if config.sample_backend.is_empty() {
            return Err(Error::Config(format!(
                "`sample_backend` is not set; choose one of: {}",
                registry.backend_names().join(", ")
            )));
        }
        let isolated = match (config.isolation, worker) {
            (Some(Isolation::Process), Some(w)) => Some(w),
            (Some(Isolation::Process), None) => {
                return Err(Error::Config(
                    "isolation = \"process\" needs a worker program: the `switchyard` command has one; a host app passes a `WorkerLauncher` to `ChatModel::open` (its binary calls `switchyard::worker::serve_stdio`)".to_owned(),
                ));
            }
            _ => None,
        };
        let (engine, plugin) = match isolated {
            None => registry.create_engine(&config.engine_config())?,
            Some(launcher) => {
                let plugin = registry.plugin_for(&config.sample_backend)?;
                let engine =
                    WorkerEngine::start(launcher.clone(), &plugin.path, &config.engine_config())?;
                (EngineFfi_TO::from_value(engine, TD_Opaque), plugin)
            }
        };
        let info: EngineInfo = serde_json::from_str(engine.info().as_str()).unwrap_or_default();
        let max_concurrent = config.max_concurrent();
        let max_queue = config.max_queue();
        tracing::info!(
            backend = %config.sample_backend,
            model = %info.model,
            plugin = %plugin.path.display(),
            max_concurrent,
            "engine ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                info,
                plugin_path: plugin.path.clone(),
                config,
                permits: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_queue,
                admitted: AtomicUsize::new(0),
            }),
            adapter: None,
        })
    }

    /// This model with a named adapter of its `[model.lora_modules]` applied to every request
    /// that names none (`None`: the base model). Shares the engine and the admission limit.
    pub fn with_adapter(self, adapter: Option<String>) -> Self {
        Self {
            adapter: adapter.map(Arc::from),
            ..self
        }
    }

    /// The named adapter this handle applies, if any.
    pub fn adapter(&self) -> Option<&str> {
        self.adapter.as_deref()
    }

    /// What the engine reports about itself.
    pub fn info(&self) -> &EngineInfo {
        &self.inner.info
    }

    /// The config the model was created from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The plugin library serving this model.
    pub fn plugin_path(&self) -> &Path {
        &self.inner.plugin_path
    }

    /// The concurrency limit.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent
    }

    /// Requests running right now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_concurrent - self.inner.permits.available_permits()
    }

    /// Requests waiting for a slot right now.
    pub fn waiting(&self) -> usize {
        self.inner
            .admitted
            .load(Ordering::Acquire)
            .saturating_sub(self.in_flight())
    }

    /// Asks the backend whether it can serve.
    pub fn health(&self) -> Result<()> {
        self.inner
            .engine
            .health()
            .into_result()
            .map_err(Error::Engine)
    }

    /// Validates the request and resolves its generation settings against the config (see
    /// [`crate::validation`]); returns the JSON the plugin receives.
    fn prepare(&self, mut request: ChatRequest) -> Result<String> {
        if request.adapter.is_none() {
            request.adapter = self.adapter.as_deref().map(str::to_owned);
        }
        let config = &self.inner.config;
        for (key, value) in &config.chat_template_kwargs {
            (request.chat_template_kwargs)
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        validation::check_adapter(&request, &config.model.lora_modules)?;
        let request = validation::prepare(request, &config.generation, &self.inner.info)?;
        serde_json::to_string(&request)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode request: {e}")))
    }

    /// Counts a call against the admission limit, or refuses it.
    fn admit(&self) -> Result<Ticket> {
        let limit = self.inner.max_concurrent + self.inner.max_queue;
        let before = self.inner.admitted.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket(self.inner.clone());
        if before >= limit {
            return Err(Error::Overloaded(limit));
        }
        Ok(ticket)
    }

    fn acquire_blocking(&self) -> Result<Slot> {
        let ticket = self.admit()?;
        // `futures`' executor parks this thread; unlike `Runtime::block_on` it is safe to call
        // from inside a tokio runtime (it only blocks that worker).
        let permit = futures::executor::block_on(self.inner.permits.clone().acquire_owned())
            .expect("the semaphore is never closed");
        Ok(Slot {
            _permit: permit,
            _ticket: ticket,
        })
    }

    /// Waits for a slot without blocking the executor.
    async fn acquire(&self) -> Result<Slot> {
        let ticket = self.admit()?;
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Ok(Slot {
            _permit: permit,
            _ticket: ticket,
        })
    }

    /// Takes a slot without waiting, or fails with [`Error::Overloaded`].
    fn try_acquire(&self) -> Result<Slot> {
        let ticket = self.admit()?;
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded(self.inner.max_concurrent))?;
        Ok(Slot {
            _permit: permit,
            _ticket: ticket,
        })
    }

    fn run_chat(&self, json: &str) -> Result<Vec<Response>> {
        let out = self.inner.engine.chat(json.into()).into_result()?;
        serde_json::from_str(out.as_str()).map_err(|e| {
            Error::Engine(EngineError::backend(format!(
                "malformed response JSON from plugin: {e}"
            )))
        })
    }

    fn start_stream(&self, json: &str) -> Result<TokenStreamBox> {
        Ok(self.inner.engine.stream_chat(json.into()).into_result()?)
    }

    fn run_scores(&self, request: &ScoreRequest) -> Result<Vec<f32>> {
        validation::check_scores(request, &self.inner.info)?;
        let json = serde_json::to_string(request)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode request: {e}")))?;
        Ok(self
            .inner
            .engine
            .get_scores(json.as_str().into())
            .into_result()?
            .into_vec())
    }

    /// Runs a chat request to completion (one [`Response`] per returned sequence).
    pub fn chat(&self, request: ChatRequest) -> Result<Vec<Response>> {
        let json = self.prepare(request)?;
        let _slot = self.acquire_blocking()?;
        self.run_chat(&json)
    }

    /// Streams a chat request. The slot is held until the iterator ends or is dropped; dropping
    /// it cancels generation.
    pub fn stream_chat(&self, request: ChatRequest) -> Result<EventIter> {
        let json = self.prepare(request)?;
        self.iter_started(&json, self.acquire_blocking()?)
    }

    /// Like [`ChatModel::stream_chat`], but fails with [`Error::Overloaded`] instead of waiting
    /// for a slot.
    pub fn try_stream_chat(&self, request: ChatRequest) -> Result<EventIter> {
        let json = self.prepare(request)?;
        self.iter_started(&json, self.try_acquire()?)
    }

    fn iter_started(&self, json: &str, slot: Slot) -> Result<EventIter> {
        let stream = self.start_stream(json)?;
        Ok(EventIter {
            stream: Some(Arc::new(stream)),
            _slot: slot,
        })
    }

    /// Reward scores, one per input.
    pub fn get_scores(&self, request: &ScoreRequest) -> Result<Vec<f32>> {
        let _slot = self.acquire_blocking()?;
        self.run_scores(request)
    }

    /// Runs many requests, up to `max_concurrent` at a time, results in input order.
    pub fn batch(&self, requests: Vec<ChatRequest>) -> Vec<Result<Vec<Response>>> {
        let n = requests.len();
        let queue = std::sync::Mutex::new(requests.into_iter().enumerate());
        let results = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..self.inner.max_concurrent.min(n) {
                s.spawn(|| {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((i, request)) = next else { break };
                        let r = self.chat(request);
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Engine(EngineError::cancelled()))))
            .collect()
    }

    /// Async [`ChatModel::chat`].
    pub async fn achat(&self, request: ChatRequest) -> Result<Vec<Response>> {
        let json = self.prepare(request)?;
        let slot = self.acquire().await?;
        let this = self.clone();
        spawn_blocking(move || {
            let _slot = slot;
            this.run_chat(&json)
        })
        .await
    }

    /// Async [`ChatModel::stream_chat`]: validation and the start of generation happen before this
    /// returns, so errors come back here rather than inside the stream.
    pub async fn astream_chat(&self, request: ChatRequest) -> Result<EventStream> {
        let json = self.prepare(request)?;
        let slot = self.acquire().await?;
        self.astream_started(json, slot).await
    }

    /// Like [`ChatModel::astream_chat`], but fails with [`Error::Overloaded`] at once when every
    /// slot is busy (an HTTP server turns that into 429).
    pub async fn try_astream_chat(&self, request: ChatRequest) -> Result<EventStream> {
        let json = self.prepare(request)?;
        let slot = self.try_acquire()?;
        self.astream_started(json, slot).await
    }

    async fn astream_started(&self, json: String, slot: Slot) -> Result<EventStream> {
        let this = self.clone();
        let stream = Arc::new(spawn_blocking(move || this.start_stream(&json)).await?);
        let (tx, rx) = mpsc::channel(8);
        let producer = stream.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            loop {
                let item = match producer.next_event().into_result() {
                    Ok(abi_stable_option) => match abi_stable_option.into_option() {
                        Some(e) => Ok(Event::from(e)),
                        None => break,
                    },
                    Err(e) => Err(Error::Engine(e)),
                };
                let is_err = item.is_err();
                if tx.blocking_send(item).is_err() {
                    producer.cancel();
                    break;
                }
                if is_err {
                    break;
                }
            }
        });
        Ok(EventStream { rx, stream })
    }

    /// Async [`ChatModel::get_scores`].
    pub async fn aget_scores(&self, request: ScoreRequest) -> Result<Vec<f32>> {
        let slot = self.acquire().await?;
        let this = self.clone();
        spawn_blocking(move || {
            let _slot = slot;
            this.run_scores(&request)
        })
        .await
    }

    /// Sentence embeddings, one vector per input (needs the `embeddings` capability): a
    /// [`ScoreRequest`] with `embed` set, whose flat answer is split into equal parts.
    pub fn embed(&self, inputs: Vec<ScoreInput>) -> Result<Vec<Vec<f32>>> {
        let n = inputs.len();
        let flat = self.get_scores(&ScoreRequest {
            inputs,
            max_length: None,
            embed: true,
        })?;
        split_embeddings(flat, n)
    }

    /// Async [`ChatModel::embed`].
    pub async fn aembed(&self, inputs: Vec<ScoreInput>) -> Result<Vec<Vec<f32>>> {
        let n = inputs.len();
        let flat = self
            .aget_scores(ScoreRequest {
                inputs,
                max_length: None,
                embed: true,
            })
            .await?;
        split_embeddings(flat, n)
    }

    /// Async [`ChatModel::batch`].
    pub async fn abatch(&self, requests: Vec<ChatRequest>) -> Vec<Result<Vec<Response>>> {
        futures::future::join_all(requests.into_iter().map(|r| self.achat(r))).await
    }
}

/// A plugin's concatenated vectors, one per input; the length must divide evenly.
fn split_embeddings(flat: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
    if n == 0 || flat.is_empty() || !flat.len().is_multiple_of(n) {
        return Err(Error::Engine(EngineError::backend(format!(
            "the plugin answered {} values for {n} inputs to embed; the contract asks for one vector of the same length per input",
            flat.len()
        ))));
    }
    Ok(flat.chunks(flat.len() / n).map(<[f32]>::to_vec).collect())
}

async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Engine(EngineError::new(
            ErrorKind::PANICKED,
            format!("the engine call failed on the host side: {e}"),
        ))),
    }
}

/// A blocking stream of [`Event`]s; dropping it cancels generation and frees the slot.
pub struct EventIter {
    stream: Option<Arc<TokenStreamBox>>,
    _slot: Slot,
}

impl EventIter {
    /// A handle that cancels this stream from another thread (e.g. a Ctrl-C handler).
    pub fn canceller(&self) -> Canceller {
        Canceller(self.stream.clone())
    }
}

impl Iterator for EventIter {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        let stream = self.stream.as_ref()?;
        match stream.next_event().into_result() {
            Ok(e) => match e.into_option() {
                Some(e) => Some(Ok(Event::from(e))),
                None => {
                    self.stream = None;
                    None
                }
            },
            Err(e) => {
                self.stream = None;
                Some(Err(Error::Engine(e)))
            }
        }
    }
}

impl Drop for EventIter {
    fn drop(&mut self) {
        if let Some(s) = &self.stream {
            s.cancel();
        }
    }
}

/// Cancels a stream from any thread.
#[derive(Clone)]
pub struct Canceller(Option<Arc<TokenStreamBox>>);

impl Canceller {
    /// Requests cancellation; the stream ends promptly.
    pub fn cancel(&self) {
        if let Some(s) = &self.0 {
            s.cancel();
        }
    }
}

/// An async stream of [`Event`]s; dropping it cancels generation and frees the slot.
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    stream: Arc<TokenStreamBox>,
}

impl EventStream {
    /// Cancels generation; the stream then ends.
    pub fn cancel(&self) {
        self.stream.cancel();
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stream.cancel();
    }
}
