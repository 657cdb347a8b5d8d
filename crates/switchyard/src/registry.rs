//! Finding and loading backend plugins from a directory.
//!
//! Each shared library in the directory is loaded on its own with
//! `abi_stable::library::lib_header_from_path` + `init_root_module` (not
//! `RootModule::load_from_*`, which caches one module per root-module type and would hand back
//! the first plugin for every file). `abi_stable` checks its own version, the version of
//! `switchyard-abi` the plugin was built with, and the layout of every type in the interface; we
//! then check [`ABI_VERSION`]. A file that fails any step is recorded with its path and reason and
//! the scan goes on, so one bad file never hides the good ones.
//!
//! Libraries loaded this way are never unloaded: a plugin's statics live as long as the process.
//!
//! Loading a library runs its constructors, so a hostile or broken file (one that aborts,
//! overflows its stack or calls `exit` when loaded) would take the scanning process with it.
//! [`Registry::scan_with`] therefore lets a binary inspect each file somewhere else — the
//! `switchyard` command runs [`inspect_file`] in a child process of itself — and then loads into
//! the host only the one file whose backend is selected, when the engine is created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard_abi::{
    ABI_VERSION, EngineBox, PluginModRef,
    abi_stable::library::{LibraryError, lib_header_from_path},
    wire::{EngineConfig, PluginMetadata},
};

use crate::error::{Error, Result};

/// Environment variable naming the plugin directory.
pub const PLUGIN_DIR_ENV: &str = "SWITCHYARD_PLUGIN_DIR";

/// A plugin file that loaded (or, scanned with [`Registry::scan_with`], was inspected and is
/// loaded when its engine is first created).
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The library file.
    pub path: PathBuf,
    /// What the plugin declares about itself.
    pub metadata: PluginMetadata,
    module: std::sync::OnceLock<PluginModRef>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// A file that could not be used, and why.
#[derive(Clone, Debug)]
pub struct PluginProblem {
    /// The file.
    pub path: PathBuf,
    /// What went wrong, in words a user can act on.
    pub reason: String,
}

/// The plugins found in one directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    plugins: Vec<LoadedPlugin>,
    by_backend: BTreeMap<String, usize>,
    problems: Vec<PluginProblem>,
}

/// Whether a file name looks like a shared library on this platform.
fn is_shared_library(path: &Path) -> bool {
    let ext = std::env::consts::DLL_EXTENSION;
    path.extension().is_some_and(|e| e == ext)
        || (ext == "so"
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".so.")))
}

fn describe_library_error(e: &LibraryError) -> String {
    let text = e.to_string();
    match e {
        LibraryError::OpenError { .. } => {
            format!("not a loadable shared library ({text})")
        }
        LibraryError::GetSymbolError { .. } => {
            "not a Switchyard plugin: it does not export a Switchyard root module (build it with `switchyard_plugin::export_backend!`)".to_owned()
        }
        LibraryError::InvalidAbiHeader(_)
        | LibraryError::IncompatibleVersionNumber { .. }
        | LibraryError::AbiInstability(_) => format!(
            "built for an incompatible plugin ABI; rebuild it against switchyard-abi contract {} (details: {})",
            switchyard_abi::CONTRACT_VERSION,
            first_lines(&text, 6)
        ),
        _ => first_lines(&text, 6),
    }
}

fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = lines
        .iter()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join(" / ");
    if lines.len() > n {
        out.push_str(" / ...");
    }
    out
}

pub(crate) fn open_module(path: &Path) -> std::result::Result<PluginModRef, String> {
    let header = lib_header_from_path(path).map_err(|e| describe_library_error(&e))?;
    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|e| describe_library_error(&e))?;
    let abi = module.abi_version();
    if abi != ABI_VERSION {
        return Err(format!(
            "built for Switchyard plugin ABI {abi}, but this host speaks ABI {ABI_VERSION}; rebuild the plugin against this version of switchyard-abi"
        ));
    }
    Ok(module)
}

fn metadata_of(module: PluginModRef) -> std::result::Result<PluginMetadata, String> {
    let json = (module.metadata())();
    let metadata: PluginMetadata = serde_json::from_str(json.as_str())
        .map_err(|e| format!("malformed plugin metadata: {e}"))?;
    if metadata.backends.is_empty() {
        return Err("the plugin declares no backend names".to_owned());
    }
    Ok(metadata)
}

fn load_one(path: &Path) -> std::result::Result<LoadedPlugin, String> {
    let module = open_module(path)?;
    let metadata = metadata_of(module)?;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        metadata,
        module: module.into(),
    })
}

/// Loads one plugin file in this process and returns what it declares — what a child process
/// runs for [`Registry::scan_with`] (the library stays loaded; call it where that is safe).
pub fn inspect_file(path: &Path) -> std::result::Result<PluginMetadata, String> {
    metadata_of(open_module(path)?)
}

impl Registry {
    /// Loads every shared library in `dir` (not recursive). Fails only when the directory
    /// itself cannot be read; problems with single files are kept in [`Registry::problems`].
    pub fn scan(dir: &Path) -> Result<Self> {
        let files = Self::library_files(dir)?;
        let mut reg = Self::empty(dir);
        for path in files {
            match load_one(&path) {
                Ok(plugin) => reg.add(plugin),
                Err(reason) => reg.problem(path, reason),
            }
        }
        Ok(reg)
    }

    /// Like [`Registry::scan`], but each file is inspected by `inspect` (e.g. [`inspect_file`]
    /// run in a child process) and nothing is loaded into this process until
    /// [`Registry::create_engine`] loads the one file it needs.
    pub fn scan_with(
        dir: &Path,
        inspect: impl Fn(&Path) -> std::result::Result<PluginMetadata, String>,
    ) -> Result<Self> {
        let files = Self::library_files(dir)?;
        let mut reg = Self::empty(dir);
        for path in files {
            match inspect(&path) {
                Ok(metadata) if metadata.backends.is_empty() => {
                    reg.problem(path, "the plugin declares no backend names".to_owned())
                }
                Ok(metadata) => reg.add(LoadedPlugin {
                    path,
                    metadata,
                    module: std::sync::OnceLock::new(),
                }),
                Err(reason) => reg.problem(path, reason),
            }
        }
        Ok(reg)
    }

    fn empty(dir: &Path) -> Self {
        Registry {
            dir: dir.to_path_buf(),
            plugins: Vec::new(),
            by_backend: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, path: PathBuf, reason: String) {
        tracing::warn!(path = %path.display(), "skipping plugin: {reason}");
        self.problems.push(PluginProblem { path, reason });
    }

    fn library_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::PluginDir {
            path: dir.to_path_buf(),
            reason: format!(
                "{e}. Pass --plugin-dir, set `plugin_dir` in the config or {PLUGIN_DIR_ENV}"
            ),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_shared_library(p))
            .collect();
        files.sort();
        Ok(files)
    }

    fn add(&mut self, plugin: LoadedPlugin) {
        let index = self.plugins.len();
        let mut claimed = false;
        for name in &plugin.metadata.backends {
            if let Some(&other) = self.by_backend.get(name) {
                self.problems.push(PluginProblem {
                    path: plugin.path.clone(),
                    reason: format!(
                        "backend name `{name}` is already provided by {}; this file's claim is ignored (remove one of the two)",
                        self.plugins[other].path.display()
                    ),
                });
            } else {
                self.by_backend.insert(name.clone(), index);
                claimed = true;
            }
        }
        if claimed {
            self.plugins.push(plugin);
        }
    }

    /// The directory that was scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugins that loaded.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Files that could not be used.
    pub fn problems(&self) -> &[PluginProblem] {
        &self.problems
    }

    /// Backend names, sorted.
    pub fn backend_names(&self) -> Vec<&str> {
        self.by_backend.keys().map(String::as_str).collect()
    }

    /// The plugin serving `backend`.
    pub fn plugin_for(&self, backend: &str) -> Result<&LoadedPlugin> {
        match self.by_backend.get(backend) {
            Some(&i) => Ok(&self.plugins[i]),
            None => {
                let names = self.backend_names();
                let known = if names.is_empty() {
                    "no loadable plugins".to_owned()
                } else {
                    format!(
                        "backends {}",
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let mut known = known;
                if !self.problems.is_empty() {
                    known.push_str(&format!(
                        " ({} file(s) failed to load; run `switchyard plugins` for details)",
                        self.problems.len()
                    ));
                }
                Err(Error::UnknownBackend {
                    name: backend.to_owned(),
                    dir: self.dir.display().to_string(),
                    known,
                })
            }
        }
    }

    /// Creates an engine for `config.backend`.
    pub fn create_engine(&self, config: &EngineConfig) -> Result<(EngineBox, &LoadedPlugin)> {
        let plugin = self.plugin_for(&config.backend)?;
        let module = match plugin.module.get() {
            Some(m) => *m,
            None => {
                let m = open_module(&plugin.path).map_err(|reason| Error::Plugin {
                    path: plugin.path.clone(),
                    reason,
                })?;
                *plugin.module.get_or_init(|| m)
            }
        };
        let json = serde_json::to_string(config)
            .map_err(|e| Error::Config(format!("cannot encode engine config: {e}")))?;
        let engine = (module.create())(json.as_str().into())
            .into_result()
            .map_err(Error::Engine)?;
        Ok((engine, plugin))
    }
}

/// Picks the plugin directory: `flag`, then the config's `plugin_dir`, then
/// `$SWITCHYARD_PLUGIN_DIR`, then `plugins/` next to the executable if it exists, else the
/// executable's own directory (where `cargo build --workspace` puts the plugin libraries).
pub fn resolve_plugin_dir(flag: Option<&Path>, config_dir: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = config_dir {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os(PLUGIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| std::fs::canonicalize(e).ok())
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    // Test binaries live in target/<profile>/deps; plugins one level up.
    let exe_dir = if exe_dir.ends_with("deps") {
        exe_dir.parent().map(Path::to_path_buf).unwrap_or(exe_dir)
    } else {
        exe_dir
    };
    let plugins = exe_dir.join("plugins");
    if plugins.is_dir() { plugins } else { exe_dir }
}
