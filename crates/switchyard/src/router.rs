//! [`ModelRouter`]: several models behind one front end, each on its own backend, loaded on
//! first use (or at start), unloaded when idle or to make room.
//!
//! Each entry of a [`Catalog`] becomes a slot holding, when loaded, its own [`ChatModel`] — with
//! its own concurrency limit and queue. `get` finds a slot by name or alias and loads it when
//! needed; requests that arrive while it loads wait for that one load. Before a load, the least
//! recently used idle models are unloaded until the new one fits `max_loaded_mb` (a model's size
//! is what its weight files take on disk; a model served by a remote server counts zero). A
//! model whose load fails reports its error on every use and the others keep serving. Idle
//! models are unloaded after their `keep_alive` by [`ModelRouter::reap`] (a server calls it
//! periodically; [`ModelRouter::spawn_reaper`] runs it on a thread).
//!
//! Unloading drops the router's handle: requests already running keep their engine until they
//! end. With `isolation = "process"` the worker process exits then, so its memory goes back to
//! the system.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use switchyard_abi::{EngineError, ErrorKind};

use crate::catalog::{Catalog, EntrySpec, KeepAlive};
use crate::chat_model::ChatModel;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::worker::WorkerLauncher;

/// How long a request waits for another request's load of the same model.
const LOAD_WAIT: Duration = Duration::from_secs(900);

enum State {
    Unloaded,
    Loading,
    Loaded {
        model: ChatModel,
        last_used: Instant,
    },
    Failed(String),
}

struct Slot {
    spec: EntrySpec,
    size_mb: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// A per-request `keep_alive` overrides the entry's until the next request.
    keep_alive: Mutex<KeepAlive>,
}

struct Inner {
    slots: Vec<Slot>,
    registry: Registry,
    worker: Option<WorkerLauncher>,
    budget_mb: Option<u64>,
    /// Serialises the room-making and the start of loads (not the loads themselves).
    admit: Mutex<()>,
}

/// Where a model is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not loaded.
    Unloaded,
    /// Being loaded.
    Loading,
    /// Ready.
    Loaded,
    /// The last load failed with this error.
    Failed(String),
}

/// One model as `/v1/models` lists it.
#[derive(Clone, Debug)]
pub struct ModelStatus {
    /// The name clients send.
    pub name: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// The backend that serves it.
    pub backend: String,
    /// Loaded or not, or why not.
    pub status: Status,
    /// What it counts against `max_loaded_mb`.
    pub size_mb: u64,
    /// For a named LoRA adapter (`[model.lora_modules]`): the model it runs on.
    pub parent: Option<String>,
    /// For a named adapter: its folder.
    pub root: Option<String>,
}

/// Several models behind one name space (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct ModelRouter {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Disk size of a model file or folder, MiB (0 when it is not a local path).
fn size_mb(path: Option<&str>) -> u64 {
    fn bytes(p: &Path) -> u64 {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| bytes(&e.path())).sum())
                .unwrap_or(0),
            _ => 0,
        }
    }
    path.map_or(0, |p| bytes(Path::new(p)).div_ceil(1 << 20))
}

impl ModelRouter {
    /// A router over `catalog`'s entries, with plugins from `registry`; `worker` starts worker
    /// processes for entries with `isolation = "process"`. Entries with `preload` are loaded
    /// here (a failure is kept as that entry's status, not returned).
    pub fn new(catalog: Catalog, registry: Registry, worker: Option<WorkerLauncher>) -> Self {
        let default_keep = catalog.keep_alive;
        let slots = catalog
            .entries
            .into_iter()
            .map(|spec| Slot {
                size_mb: size_mb(spec.config.model.path.as_deref()),
                keep_alive: Mutex::new(spec.keep_alive.unwrap_or(default_keep)),
                spec,
                state: Mutex::new(State::Unloaded),
                changed: Condvar::new(),
            })
            .collect();
        let router = Self {
            inner: Arc::new(Inner {
                slots,
                registry,
                worker,
                budget_mb: catalog.max_loaded_mb,
                admit: Mutex::new(()),
            }),
        };
        for i in 0..router.inner.slots.len() {
            if router.inner.slots[i].spec.preload
                && let Err(e) = router.load_slot(i)
            {
                tracing::error!(model = %router.name_of(i), "preloading failed: {e}");
            }
        }
        router
    }

    /// Names a nameless entry (a single-model file) once the server knows what to call it.
    pub fn name_default(&mut self, name: String) {
        if let Some(inner) = Arc::get_mut(&mut self.inner)
            && let Some(slot) = inner.slots.first_mut()
            && slot.spec.name.is_none()
        {
            slot.spec.name = Some(name);
        }
    }

    fn name_of(&self, i: usize) -> String {
        self.inner.slots[i]
            .spec
            .name
            .clone()
            .unwrap_or_else(|| self.inner.slots[i].spec.config.sample_backend.clone())
    }

    /// Every model name (not aliases), in catalog order.
    pub fn names(&self) -> Vec<String> {
        (0..self.inner.slots.len())
            .map(|i| self.name_of(i))
            .collect()
    }

    /// Every name a client may send: models, then each model's named adapters.
    fn known(&self) -> Vec<String> {
        let mut known = self.names();
        for s in &self.inner.slots {
            known.extend(s.spec.config.model.lora_modules.keys().cloned());
        }
        known
    }

    /// The slot `name` refers to (a name or an alias; empty: the first model).
    fn find(&self, name: &str) -> Result<usize> {
        self.resolve(name).map(|(i, _)| i)
    }

    /// The slot `name` refers to and, when it names one of that model's
    /// `[model.lora_modules]` adapters, the adapter.
    fn resolve(&self, name: &str) -> Result<(usize, Option<String>)> {
        if name.is_empty() {
            return Ok((0, None));
        }
        let slots = &self.inner.slots;
        if let Some(i) = (0..slots.len())
            .find(|&i| self.name_of(i) == name || slots[i].spec.aliases.iter().any(|a| a == name))
        {
            return Ok((i, None));
        }
        slots
            .iter()
            .position(|s| s.spec.config.model.lora_modules.contains_key(name))
            .map(|i| (i, Some(name.to_owned())))
            .ok_or_else(|| Error::UnknownModel {
                asked: name.to_owned(),
                known: self.known(),
            })
    }

    /// The name of the model `name` refers to (a name, an alias, or empty for the first); an
    /// adapter's name is its own.
    pub fn canonical(&self, name: &str) -> Result<String> {
        self.resolve(name)
            .map(|(i, adapter)| adapter.unwrap_or_else(|| self.name_of(i)))
    }

    /// The model called `name` (empty: the first), loaded if needed; waits while another
    /// request loads it. A named adapter gives its model bound to the adapter
    /// ([`ChatModel::with_adapter`]). Blocking: use [`ModelRouter::aget`] from async code.
    pub fn get(&self, name: &str) -> Result<ChatModel> {
        self.get_with_keep_alive(name, None)
    }

    /// Like [`ModelRouter::get`], with a per-request `keep_alive` for this model.
    pub fn get_with_keep_alive(&self, name: &str, keep: Option<KeepAlive>) -> Result<ChatModel> {
        let (i, adapter) = self.resolve(name)?;
        if let Some(k) = keep {
            *lock(&self.inner.slots[i].keep_alive) = k;
        }
        Ok(self.load_slot(i)?.with_adapter(adapter))
    }

    /// Async [`ModelRouter::get_with_keep_alive`] (loading runs on the blocking pool).
    pub async fn aget(&self, name: &str, keep: Option<KeepAlive>) -> Result<ChatModel> {
        let (i, adapter) = self.resolve(name)?;
        if let Some(k) = keep {
            *lock(&self.inner.slots[i].keep_alive) = k;
        }
        if let State::Loaded { model, last_used } = &mut *lock(&self.inner.slots[i].state) {
            *last_used = Instant::now();
            return Ok(model.clone().with_adapter(adapter));
        }
        let this = self.clone();
        let model = tokio::task::spawn_blocking(move || this.load_slot(i))
            .await
            .map_err(|e| Error::Config(format!("loading the model failed on the host: {e}")))??;
        Ok(model.with_adapter(adapter))
    }

    fn load_slot(&self, i: usize) -> Result<ChatModel> {
        let slot = &self.inner.slots[i];
        let deadline = Instant::now() + LOAD_WAIT;
        let mut state = lock(&slot.state);
        loop {
            match &mut *state {
                State::Loaded { model, last_used } => {
                    *last_used = Instant::now();
                    return Ok(model.clone());
                }
                State::Loading => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Engine(EngineError::new(
                            ErrorKind::OVERLOADED,
                            format!(
                                "model `{}` is still loading after {} s; retry later",
                                self.name_of(i),
                                LOAD_WAIT.as_secs()
                            ),
                        )));
                    }
                    state = slot
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                State::Unloaded | State::Failed(_) => break,
            }
        }
        *state = State::Loading;
        drop(state);
        let result = self
            .make_room(i)
            .and_then(|()| self.open(i))
            .map_err(|e| self.labelled(i, e));
        let mut state = lock(&slot.state);
        *state = match &result {
            Ok(model) => State::Loaded {
                model: model.clone(),
                last_used: Instant::now(),
            },
            Err(e) => State::Failed(e.to_string()),
        };
        slot.changed.notify_all();
        result
    }

    /// A load failure, named after the model: the engine's own kind, or "unavailable" (503)
    /// for a model that cannot be set up at all (bad config, unknown backend, broken file).
    fn labelled(&self, i: usize, e: Error) -> Error {
        let name = self.name_of(i);
        match e {
            Error::Engine(mut ee) => {
                ee.message = format!("model `{name}`: {}", ee.message).into();
                Error::Engine(ee)
            }
            other => Error::Engine(EngineError::unavailable(format!(
                "model `{name}` cannot be loaded: {other}"
            ))),
        }
    }

    fn open(&self, i: usize) -> Result<ChatModel> {
        let slot = &self.inner.slots[i];
        let started = Instant::now();
        let model = ChatModel::open(
            &self.inner.registry,
            slot.spec.config.clone(),
            self.inner.worker.as_ref(),
        )?;
        tracing::info!(model = %self.name_of(i), secs = started.elapsed().as_secs_f64(), "model loaded");
        Ok(model)
    }

    /// Unloads least recently used idle models until slot `i` fits the budget.
    fn make_room(&self, i: usize) -> Result<()> {
        let Some(budget) = self.inner.budget_mb else {
            return Ok(());
        };
        let _admit = lock(&self.inner.admit);
        let need = self.inner.slots[i].size_mb;
        loop {
            let mut used = 0;
            let mut idle: Option<(Instant, usize)> = None;
            for (j, s) in self.inner.slots.iter().enumerate() {
                if let State::Loaded { model, last_used } = &*lock(&s.state) {
                    used += s.size_mb;
                    let busy = model.in_flight() + model.waiting() > 0;
                    if !busy && idle.is_none_or(|(t, _)| *last_used < t) {
                        idle = Some((*last_used, j));
                    }
                }
            }
            if used + need <= budget {
                return Ok(());
            }
            let Some((_, j)) = idle else {
                return Err(Error::Engine(EngineError::new(
                    ErrorKind::OVERLOADED,
                    format!(
                        "model `{}` ({need} MiB) does not fit max_loaded_mb = {budget} ({used} MiB loaded, all busy); retry when a request ends, or raise max_loaded_mb",
                        self.name_of(i)
                    ),
                )));
            };
            tracing::info!(model = %self.name_of(j), "unloading the least recently used idle model to make room");
            self.unload_slot(j);
        }
    }

    fn unload_slot(&self, j: usize) -> bool {
        let slot = &self.inner.slots[j];
        let mut state = lock(&slot.state);
        if matches!(&*state, State::Loaded { .. } | State::Failed(_)) {
            *state = State::Unloaded;
            slot.changed.notify_all();
            return true;
        }
        false
    }

    /// Loads `name` now (the admin `load` route).
    pub fn load(&self, name: &str) -> Result<()> {
        self.get(name).map(drop)
    }

    /// Unloads `name` now (the admin `unload` route); running requests finish first.
    pub fn unload(&self, name: &str) -> Result<bool> {
        let i = self.find(name)?;
        Ok(self.unload_slot(i))
    }

    /// Unloads the models idle for longer than their `keep_alive`; returns how many.
    pub fn reap(&self) -> usize {
        let mut n = 0;
        for (j, s) in self.inner.slots.iter().enumerate() {
            let KeepAlive::For(keep) = *lock(&s.keep_alive) else {
                continue;
            };
            let expired = match &*lock(&s.state) {
                State::Loaded { model, last_used } => {
                    model.in_flight() + model.waiting() == 0 && last_used.elapsed() >= keep
                }
                _ => false,
            };
            if expired && self.unload_slot(j) {
                tracing::info!(model = %self.name_of(j), "unloaded after its keep_alive");
                n += 1;
            }
        }
        n
    }

    /// Runs [`ModelRouter::reap`] every `every` on a thread until the router is dropped.
    pub fn spawn_reaper(&self, every: Duration) -> std::thread::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        std::thread::spawn(move || {
            while let Some(inner) = weak.upgrade() {
                ModelRouter { inner }.reap();
                std::thread::sleep(every);
            }
        })
    }

    /// Every model and where it is, each followed by its named adapters (with `parent`).
    pub fn status(&self) -> Vec<ModelStatus> {
        let mut all = Vec::new();
        for (i, s) in self.inner.slots.iter().enumerate() {
            let model = ModelStatus {
                name: self.name_of(i),
                aliases: s.spec.aliases.clone(),
                backend: s.spec.config.sample_backend.clone(),
                size_mb: s.size_mb,
                status: match &*lock(&s.state) {
                    State::Unloaded => Status::Unloaded,
                    State::Loading => Status::Loading,
                    State::Loaded { .. } => Status::Loaded,
                    State::Failed(e) => Status::Failed(e.clone()),
                },
                parent: None,
                root: None,
            };
            let adapters: Vec<ModelStatus> = (s.spec.config.model.lora_modules.iter())
                .map(|(name, dir)| ModelStatus {
                    name: name.clone(),
                    aliases: Vec::new(),
                    size_mb: 0,
                    parent: Some(model.name.clone()),
                    root: Some(dir.clone()),
                    ..model.clone()
                })
                .collect();
            all.push(model);
            all.extend(adapters);
        }
        all
    }

    /// The models loaded right now, with their names.
    pub fn loaded(&self) -> Vec<(String, ChatModel)> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &*lock(&s.state) {
                State::Loaded { model, .. } => Some((self.name_of(i), model.clone())),
                _ => None,
            })
            .collect()
    }
}
