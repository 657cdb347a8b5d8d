//! The TOML configuration: which backend, which model, generation defaults, backend tables.
//!
//! ```toml
//! sample_backend = "hf-candle"      # which plugin backend serves requests
//! max_concurrent = 1                # requests run at once (LLaMA-Factory's MAX_CONCURRENT)
//! # max_queue = 16                  # requests that may wait beyond that; more get "overloaded"
//! # isolation = "process"           # the backend in a worker process ("in-process" otherwise)
//! # plugin_dir = "plugins"          # where plugin libraries live
//!
//! [model]
//! path = "~/.cache/switchyard/models/SmolLM2-135M-Instruct.Q4_1.gguf"
//! # chat_template = "..."  /  chat_template_file = "template.jinja"
//! # default_system = "You are a helpful assistant."
//! # adapter_name_or_path = "lora/"   # or a list: LoRA adapters merged in order
//! # template = "qwen3_nothink"       # a LLaMA-Factory template name instead of the model's own
//!
//! # [model.lora_modules]            # named adapters a request picks with its `model` field
//! # sql = "adapters/sql"
//!
//! [generation]                      # defaults; requests override them
//! temperature = 0.7
//! max_new_tokens = 512
//!
//! [backends.hf-candle]              # passed to that plugin as is
//! threads = 2
//! ```
//!
//! Unknown keys, wrong types and bad TOML are errors that name the file, the line and the key,
//! and list what is allowed. Every command takes `--set key=value` overrides, applied before
//! validation (`--set generation.temperature=0`, `--set model.path=/models/x.gguf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_abi::wire::{EngineConfig, GenerationParams, ModelConfig};

use crate::error::{Error, Result};

/// Where a backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In the host process: fastest to start, but a crash in the backend is a crash of the host.
    InProcess,
    /// In a worker process: a backend that dies fails only its in-flight requests.
    Process,
}

/// The parsed configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The backend name that serves requests (`hf-candle`, `vllm`, `sglang`, `ktransformers`, or
    /// a third-party plugin's name).
    pub sample_backend: String,
    /// Where to look for plugin libraries (relative to the config file).
    pub plugin_dir: Option<PathBuf>,
    /// How many requests run at once; further ones wait. Default 1.
    pub max_concurrent: Option<u32>,
    /// How many requests may wait for a slot beyond `max_concurrent`; more are refused at once
    /// as overloaded (HTTP 429). Default 16.
    pub max_queue: Option<u32>,
    /// Where the backend runs: `"in-process"`, or `"process"` (a worker process the host
    /// restarts when it dies; see [`crate::worker`]). Default: the front end's choice (the
    /// `switchyard api` server isolates, the other commands and host apps do not).
    pub isolation: Option<Isolation>,
    /// Shared model settings.
    pub model: ModelConfig,
    /// Generation defaults.
    pub generation: GenerationParams,
    /// Chat-template variables every request gets unless it sets them itself (e.g.
    /// `enable_thinking = false`, what a LLaMA-Factory config's `enable_thinking` becomes).
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Per-backend tables, passed to the plugin as is.
    pub backends: BTreeMap<String, toml::Value>,
    /// The directory of the file this config came from (not a TOML key).
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "sample_backend",
    "plugin_dir",
    "max_concurrent",
    "max_queue",
    "isolation",
    "model",
    "generation",
    "chat_template_kwargs",
    "backends",
];

impl Config {
    /// Reads and validates a config file, applying `--set key=value` overrides.
    /// A `.yaml`, `.yml` or `.json` file is a LLaMA-Factory inference config
    /// ([`crate::llamafactory`]), whose overrides may also be LLaMA-Factory keys.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = read_file(path)?;
        let origin = path.display().to_string();
        let mut config = if crate::llamafactory::is_llamafactory_file(path) {
            let table = crate::llamafactory::to_table(&text, &origin, overrides)?;
            Self::from_table(table, &origin, &text)?
        } else {
            Self::parse(&text, &origin, overrides)?
        };
        config.set_dir(Some(file_dir(path)));
        Ok(config)
    }

    /// Parses config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        Self::from_table(table, origin, text)
    }

    /// A config from a TOML table already read (`text` is the file, for line numbers in errors).
    pub(crate) fn from_table(table: toml::Table, origin: &str, text: &str) -> Result<Self> {
        let mut unknown = Vec::new();
        let config: Config = serde_ignored::deserialize(toml::Value::Table(table), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|e| {
            // Values were already parsed, so the error is a type error; find its line.
            Error::Config(format!("{origin}: {e}"))
        })?;
        if let Some(key) = unknown.first() {
            return Err(Error::Config(unknown_key_message(origin, text, key)));
        }
        if config.max_concurrent == Some(0) {
            return Err(Error::Config(format!(
                "{origin}: max_concurrent = 0 would run no request; use 1 or more"
            )));
        }
        Ok(config)
    }

    /// Sets the directory relative paths are resolved against, and resolves them.
    pub(crate) fn set_dir(&mut self, dir: Option<PathBuf>) {
        self.config_dir = dir;
        self.resolve_paths();
    }

    /// Expands `~` and resolves relative paths against the config file's directory.
    fn resolve_paths(&mut self) {
        if let Some(p) = self.model.path.as_mut() {
            *p = expand_home(p);
            if let Some(dir) = &self.config_dir {
                let candidate = dir.join(&*p);
                if Path::new(p.as_str()).is_relative() && candidate.exists() {
                    *p = candidate.display().to_string();
                }
            }
        }
        let adapters = self.model.adapter_name_or_path.iter_mut();
        for p in adapters.chain(self.model.lora_modules.values_mut()) {
            *p = expand_home(p);
            if let Some(dir) = &self.config_dir {
                let candidate = dir.join(&*p);
                if Path::new(p.as_str()).is_relative() && candidate.exists() {
                    *p = candidate.display().to_string();
                }
            }
        }
        if let Some(p) = self.model.chat_template_file.as_mut() {
            *p = expand_home(p);
            if let Some(dir) = &self.config_dir
                && Path::new(p.as_str()).is_relative()
            {
                *p = dir.join(&*p).display().to_string();
            }
        }
        if let Some(p) = self.plugin_dir.as_mut() {
            *p = PathBuf::from(expand_home(&p.display().to_string()));
            if let Some(dir) = &self.config_dir
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        }
    }

    /// The concurrency limit (at least 1).
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or(1).max(1) as usize
    }

    /// How many requests may wait beyond the concurrency limit (default 16).
    pub fn max_queue(&self) -> usize {
        self.max_queue.unwrap_or(16) as usize
    }

    /// What the selected plugin's `create` receives.
    pub fn engine_config(&self) -> EngineConfig {
        let options = self
            .backends
            .get(&self.sample_backend)
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        EngineConfig {
            backend: self.sample_backend.clone(),
            model: self.model.clone(),
            generation: self.generation.clone(),
            max_concurrent: self.max_concurrent() as u32,
            options,
            config_dir: self.config_dir.as_ref().map(|d| d.display().to_string()),
        }
    }
}

/// A config file's text, or an error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read config file {}: {e}. Pass an existing file with --config",
            path.display()
        ))
    })
}

/// The directory a config file's relative paths are resolved against.
pub(crate) fn file_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest).display().to_string(),
        _ => p.to_owned(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

pub(crate) fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> Error {
    let location = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("").trim_end();
            format!("{origin}:{line}:{col}: {}\n  {line} | {src}", e.message())
        }
        None => format!("{origin}: {}", e.message()),
    };
    Error::Config(format!("invalid config: {location}"))
}

/// Applies one `key.path=value` override. The value is read as TOML (`0.7`, `true`, `["a"]`,
/// `"text"`) and, when that fails, taken as a plain string.
pub(crate) fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let Some((key, raw)) = spec.split_once('=') else {
        return Err(Error::Config(format!(
            "--set {spec}: expected key=value, e.g. --set generation.temperature=0"
        )));
    };
    let key = key.trim();
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--set {spec}: empty key segment in `{key}`"
        )));
    }
    let mut cur = table;
    for part in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| Error::Config(format!("--set {spec}: `{part}` is not a table")))?;
    }
    cur.insert(parts[parts.len() - 1].to_owned(), value);
    Ok(())
}

fn allowed_keys(section: &str) -> Vec<String> {
    let keys_of = |v: serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    match section {
        "" => TOP_LEVEL_KEYS.iter().map(|s| s.to_string()).collect(),
        "model" => keys_of(serde_json::to_value(ModelConfig::default()).unwrap_or_default()),
        "generation" => {
            keys_of(serde_json::to_value(GenerationParams::default()).unwrap_or_default())
        }
        _ => Vec::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Finds the line where `section.key` is written (a `[section]` header followed by `key =`,
/// or a dotted `section.key =` at top level).
fn find_key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.trim_end_matches(']').trim().to_owned();
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let full = if current.is_empty() {
            k.to_owned()
        } else {
            format!("{current}.{k}")
        };
        let want = if section.is_empty() {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        if full == want {
            return Some(i + 1);
        }
    }
    None
}

fn unknown_key_message(origin: &str, text: &str, path: &str) -> String {
    let (section, key) = match path.rsplit_once('.') {
        Some((s, k)) => (s, k),
        None => ("", path),
    };
    let allowed = allowed_keys(section);
    let place = match find_key_line(text, section, key) {
        Some(line) => format!("{origin}:{line}"),
        None => format!("{origin} (from --set)"),
    };
    let table = if section.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in [{section}]")
    };
    let hint = allowed
        .iter()
        .min_by_key(|k| edit_distance(k, key))
        .filter(|k| edit_distance(k, key) <= 3)
        .map(|k| format!(" Did you mean `{k}`?"))
        .unwrap_or_default();
    format!(
        "invalid config: {place}: unknown key `{path}` {table}.{hint} Allowed keys {table}: {}",
        allowed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, overrides: &[&str]) -> String {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::parse(text, "test.toml", &o)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            "sample_backend = \"echo\"\nmax_concurrent = 3\n[model]\npath = \"m.gguf\"\n[generation]\ntemperature = 0.5\nstop = [\"x\"]\n[backends.echo]\nthreads = 2\n",
            "t",
            &[],
        )
        .unwrap();
        assert_eq!(c.sample_backend, "echo");
        assert_eq!(c.max_concurrent(), 3);
        assert_eq!(c.generation.temperature, Some(0.5));
        assert_eq!(c.generation.stop, Some(vec!["x".to_owned()]));
        assert_eq!(c.engine_config().options["threads"], 2);
    }

    #[test]
    fn adapters_are_one_path_or_a_list() {
        let one = Config::parse(
            "sample_backend = \"echo\"\n[model]\npath = \"m\"\nadapter_name_or_path = \"a\"\n",
            "test.toml",
            &[],
        )
        .unwrap();
        assert_eq!(one.model.adapter_name_or_path, ["a"]);
        let many = Config::parse(
            "sample_backend = \"echo\"\n[model]\npath = \"m\"\nadapter_name_or_path = [\"a\", \"b\"]\n",
            "test.toml",
            &[],
        )
        .unwrap();
        assert_eq!(many.model.adapter_name_or_path, ["a", "b"]);
        let none = Config::parse(
            "sample_backend = \"echo\"\n[model]\npath = \"m\"\n",
            "test.toml",
            &[],
        )
        .unwrap();
        assert!(none.model.adapter_name_or_path.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_key_and_allowed_keys() {
        let e = err(
            "sample_backend = \"x\"\n\n[generation]\ntempreature = 0.1\n",
            &[],
        );
        assert!(e.contains("test.toml:4"), "{e}");
        assert!(e.contains("generation.tempreature"), "{e}");
        assert!(e.contains("Did you mean `temperature`?"), "{e}");
        assert!(e.contains("max_new_tokens"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = err(
            "sample_backend = \"x\"\n[generation]\ntemperature = \"hot\"\n",
            &[],
        );
        assert!(e.contains("temperature"), "{e}");
        assert!(e.contains("hot"), "{e}");
    }

    #[test]
    fn bad_toml_names_line() {
        let e = err("sample_backend = \"x\"\n[generation\n", &[]);
        assert!(e.contains("test.toml:2"), "{e}");
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let c = Config::parse(
            "sample_backend = \"x\"\n",
            "t",
            &[
                "generation.temperature=0".into(),
                "model.path=/m/a b.gguf".into(),
                "backends.x.threads=4".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.generation.temperature, Some(0.0));
        assert_eq!(c.model.path.as_deref(), Some("/m/a b.gguf"));
        assert_eq!(c.engine_config().options["threads"], 4);
        let e = err("sample_backend = \"x\"\n", &["generation.topp=1"]);
        assert!(e.contains("from --set") && e.contains("top_p"), "{e}");
        let e = err("sample_backend = \"x\"\n", &["nonsense"]);
        assert!(e.contains("key=value"), "{e}");
    }
}
