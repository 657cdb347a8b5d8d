//! The models one server offers: a config file's `[[models]]` entries, or the file itself as
//! its only entry.
//!
//! ```toml
//! max_loaded_mb = 4096        # budget for loaded models (their weight files' sizes)
//! keep_alive = "5m"           # unload a model idle this long ("0": after each reply, "-1": never)
//!
//! [[models]]
//! name = "small"
//! aliases = ["smollm2"]
//! sample_backend = "hf-candle"
//! preload = true              # load at start, not on first use
//! [models.model]
//! path = "~/.cache/switchyard/models/SmolLM2-135M-Instruct.Q4_1.gguf"
//!
//! [[models]]
//! name = "big"
//! config = "qwen-on-vllm.toml"  # or the entry's keys from another Switchyard config file
//! keep_alive = "-1"
//! ```
//!
//! Every key of a single-model config (`sample_backend`, `[model]`, `[generation]`,
//! `[backends.*]`, `max_concurrent`, `max_queue`, `isolation`) works inside an entry; a top-level
//! `plugin_dir` applies to all of them, and a top-level `max_concurrent`, `max_queue` or
//! `isolation` is the default of the entries that do not set it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, apply_override, file_dir, read_file, toml_error};
use crate::error::{Error, Result};

/// How long an idle model stays loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Until unloaded explicitly (or evicted for room).
    Forever,
    /// This long after its last request ended (zero: as soon as it is idle).
    For(Duration),
}

impl KeepAlive {
    /// Ollama's default: five minutes.
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

    /// Reads `"5m"`, `"30s"`, `"1h"`, `"0"`, `"-1"` (never), or a number of seconds.
    pub fn parse(value: &toml::Value) -> std::result::Result<Self, String> {
        match value {
            toml::Value::Integer(n) => Self::from_text(&n.to_string()),
            toml::Value::Float(f) => Self::from_text(&f.to_string()),
            toml::Value::String(s) => Self::from_text(s),
            other => Err(format!(
                "keep_alive = {other}: use e.g. \"5m\", \"30s\", 0 or -1"
            )),
        }
    }

    /// Reads `"5m"`, `"30s"`, `"1h"`, `"0"`, `"-1"` (never), or a number of seconds as text.
    pub fn from_text(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim().to_owned();
        if text.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        let (num, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => (&text[..i], &text[i..]),
            None => (text.as_str(), "s"),
        };
        let n: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("keep_alive = {text:?}: use e.g. \"5m\", \"30s\", 0 or -1"))?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("keep_alive = {text:?}: units are ms, s, m and h")),
        };
        Ok(KeepAlive::For(Duration::from_secs_f64(n * scale)))
    }
}

/// One model a server offers.
#[derive(Clone, Debug)]
pub struct EntrySpec {
    /// The name clients send as `model` (`None` for a single-model file: the server names it).
    pub name: Option<String>,
    /// Other names for it.
    pub aliases: Vec<String>,
    /// Its backend config.
    pub config: Config,
    /// Load at start rather than on first use.
    pub preload: bool,
    /// Idle time before it is unloaded (`None`: the catalog's default).
    pub keep_alive: Option<KeepAlive>,
}

/// The parsed `[[models]]` file.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// The entries, in file order (the first is the default model).
    pub entries: Vec<EntrySpec>,
    /// Budget for loaded models, MiB (`None`: no limit).
    pub max_loaded_mb: Option<u64>,
    /// Default idle time before a model is unloaded.
    pub keep_alive: KeepAlive,
    /// True for a single-model file (one entry, loaded at start, never unloaded).
    pub single: bool,
}

const TOP_KEYS: &[&str] = &[
    "plugin_dir",
    "max_loaded_mb",
    "keep_alive",
    "models",
    "max_concurrent",
    "max_queue",
    "isolation",
];

/// Top-level keys that are defaults for every entry that does not set them.
const ENTRY_DEFAULTS: &[&str] = &["max_concurrent", "max_queue", "isolation"];

impl Catalog {
    /// Reads a config file: `[[models]]` entries, or a single-model config.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        if crate::llamafactory::is_llamafactory_file(path) {
            // A LLaMA-Factory config describes one model.
            return Ok(Self::single(Config::load(path, overrides)?));
        }
        let text = read_file(path)?;
        Self::parse(
            &text,
            &path.display().to_string(),
            overrides,
            Some(file_dir(path)),
        )
    }

    /// A catalog of one model, loaded at start and never unloaded.
    fn single(config: Config) -> Self {
        Catalog {
            entries: vec![EntrySpec {
                name: None,
                aliases: Vec::new(),
                config,
                preload: true,
                keep_alive: Some(KeepAlive::Forever),
            }],
            max_loaded_mb: None,
            keep_alive: KeepAlive::Forever,
            single: true,
        }
    }

    /// Parses config text; relative paths resolve against `dir`.
    pub fn parse(
        text: &str,
        origin: &str,
        overrides: &[String],
        dir: Option<PathBuf>,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let Some(models) = table.remove("models") else {
            let mut config = Config::from_table(table, origin, text)?;
            config.set_dir(dir);
            return Ok(Self::single(config));
        };
        let bad = |msg: String| Error::Config(format!("invalid config: {origin}: {msg}"));
        if let Some(k) = table
            .keys()
            .find(|k| !TOP_KEYS.contains(&k.as_str()) && *k != "models")
        {
            return Err(bad(format!(
                "`{k}` at the top level of a [[models]] file; allowed there: {} (the rest goes in each [[models]] entry)",
                TOP_KEYS.join(", ")
            )));
        }
        let plugin_dir = table.get("plugin_dir").cloned();
        let max_loaded_mb = match table.get("max_loaded_mb") {
            None => None,
            Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
            Some(v) => {
                return Err(bad(format!(
                    "max_loaded_mb = {v}: use a positive number of MiB"
                )));
            }
        };
        let keep_alive = match table.get("keep_alive") {
            None => KeepAlive::DEFAULT,
            Some(v) => KeepAlive::parse(v).map_err(bad)?,
        };
        let toml::Value::Array(items) = models else {
            return Err(bad("`models` must be an array of tables: [[models]]".into()));
        };
        let mut entries = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let toml::Value::Table(mut t) = item else {
                return Err(bad(format!("models[{i}] must be a table")));
            };
            let here = format!("{origin} [[models]] #{}", i + 1);
            let name = match t.remove("name") {
                Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
                _ => {
                    return Err(bad(format!(
                        "models[{i}] needs a `name` (the `model` clients send)"
                    )));
                }
            };
            let aliases: Vec<String> = match t.remove("aliases") {
                None => Vec::new(),
                Some(v) => v
                    .try_into()
                    .map_err(|_| bad(format!("`{name}`: aliases must be a list of strings")))?,
            };
            for n in std::iter::once(&name).chain(&aliases) {
                if names.contains(n) {
                    return Err(bad(format!(
                        "the model name `{n}` is used twice (model names, aliases and the adapter names of [model.lora_modules] are one name space)"
                    )));
                }
                names.push(n.clone());
            }
            let preload = match t.remove("preload") {
                None => false,
                Some(toml::Value::Boolean(b)) => b,
                Some(v) => return Err(bad(format!("`{name}`: preload = {v}: use true or false"))),
            };
            let keep = match t.remove("keep_alive") {
                None => None,
                Some(v) => Some(KeepAlive::parse(&v).map_err(|e| bad(format!("`{name}`: {e}")))?),
            };
            for key in ENTRY_DEFAULTS {
                if let Some(v) = table.get(*key)
                    && !t.contains_key(*key)
                    && !t.contains_key("config")
                {
                    t.insert((*key).to_owned(), v.clone());
                }
            }
            let mut config = match t.remove("config") {
                Some(toml::Value::String(file)) => {
                    if let Some(k) = t.keys().next() {
                        return Err(bad(format!(
                            "`{name}` takes its settings from `config = \"{file}\"`; `{k}` cannot be set beside it"
                        )));
                    }
                    let path = dir
                        .as_deref()
                        .map_or(PathBuf::from(&file), |d| d.join(&file));
                    Config::load(&path, &[])?
                }
                Some(v) => return Err(bad(format!("`{name}`: config = {v}: give a file path"))),
                None => {
                    if let Some(pd) = &plugin_dir {
                        t.entry("plugin_dir").or_insert_with(|| pd.clone());
                    }
                    let mut c = Config::from_table(t, &here, text)?;
                    c.set_dir(dir.clone());
                    c
                }
            };
            if config.sample_backend.is_empty() {
                return Err(bad(format!("`{name}` has no `sample_backend`")));
            }
            for adapter in config.model.lora_modules.keys() {
                if names.contains(adapter) {
                    return Err(bad(format!(
                        "the adapter name `{adapter}` of `{name}` is already a model or adapter name; names in [model.lora_modules] are what clients send as `model`, so rename one"
                    )));
                }
                names.push(adapter.clone());
            }
            if config.plugin_dir.is_none()
                && let Some(toml::Value::String(pd)) = &plugin_dir
            {
                config.plugin_dir = Some(dir.as_deref().map_or(PathBuf::from(pd), |d| d.join(pd)));
            }
            entries.push(EntrySpec {
                name: Some(name),
                aliases,
                config,
                preload,
                keep_alive: keep,
            });
        }
        if entries.is_empty() {
            return Err(bad(
                "`models` is empty; add at least one [[models]] entry".into()
            ));
        }
        Ok(Catalog {
            entries,
            max_loaded_mb,
            keep_alive,
            single: false,
        })
    }

    /// The plugin directory the entries share (the first entry's).
    pub fn plugin_dir(&self) -> Option<&Path> {
        self.entries
            .first()
            .and_then(|e| e.config.plugin_dir.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_ollama_durations() {
        let v = |s: &str| KeepAlive::parse(&toml::Value::String(s.into())).unwrap();
        assert_eq!(v("5m"), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(v("0"), KeepAlive::For(Duration::ZERO));
        assert_eq!(v("-1"), KeepAlive::Forever);
        assert_eq!(v("1.5h"), KeepAlive::For(Duration::from_secs(5400)));
        assert_eq!(
            KeepAlive::parse(&toml::Value::Integer(30)).unwrap(),
            KeepAlive::For(Duration::from_secs(30))
        );
        assert!(KeepAlive::parse(&toml::Value::String("5 fortnights".into())).is_err());
    }

    #[test]
    fn a_models_file_gives_named_entries_and_a_single_file_one() {
        let c = Catalog::parse(
            "max_loaded_mb = 100\nkeep_alive = \"1m\"\n[[models]]\nname = \"a\"\naliases = [\"x\"]\nsample_backend = \"echo\"\npreload = true\n[models.backends.echo]\ndelay_ms = 1\n[[models]]\nname = \"b\"\nsample_backend = \"echo\"\nkeep_alive = 0\nmax_concurrent = 2\n",
            "m.toml",
            &[],
            None,
        )
        .unwrap();
        assert!(!c.single);
        assert_eq!(c.max_loaded_mb, Some(100));
        assert_eq!(c.entries[0].name.as_deref(), Some("a"));
        assert_eq!(c.entries[0].aliases, ["x"]);
        assert!(c.entries[0].preload);
        assert_eq!(c.entries[0].config.engine_config().options["delay_ms"], 1);
        assert_eq!(c.entries[1].config.max_concurrent(), 2);
        assert_eq!(
            c.entries[1].keep_alive,
            Some(KeepAlive::For(Duration::ZERO))
        );
        let single = Catalog::parse("sample_backend = \"echo\"\n", "s.toml", &[], None).unwrap();
        assert!(single.single && single.entries.len() == 1);
    }

    #[test]
    fn bad_model_files_are_named_errors() {
        for (text, needle) in [
            ("[[models]]\nsample_backend = \"echo\"\n", "needs a `name`"),
            ("[[models]]\nname = \"a\"\n", "no `sample_backend`"),
            (
                "[[models]]\nname = \"a\"\nsample_backend = \"e\"\n[[models]]\nname = \"a\"\nsample_backend = \"e\"\n",
                "used twice",
            ),
            (
                "sample_backend = \"e\"\n[[models]]\nname = \"a\"\nsample_backend = \"e\"\n",
                "top level",
            ),
            (
                "[[models]]\nname = \"a\"\nsample_backend = \"e\"\ntemprature = 1\n",
                "temprature",
            ),
            ("models = []\n", "empty"),
        ] {
            let e = Catalog::parse(text, "m.toml", &[], None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
