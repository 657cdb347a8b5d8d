//! LoRA adapters through the servers: which adapters a model serves, the launch flags that load
//! them, the check that a server really serves them, and the name a request sends.
//!
//! Two config keys feed it:
//!
//! - `[model.lora_modules]` (`NAME = "DIR"`): named adapters a request picks
//!   (`ChatRequest::adapter`). They are served under their own names.
//! - `[model] adapter_name_or_path`: the always-on adapter. As in LLaMA-Factory's vLLM engine
//!   (`LoRARequest("default", 1, adapter_name_or_path[0])` on every generation) there is exactly
//!   one; it is served under a generated name (`default` for vLLM, `lora0` for SGLang, the names
//!   LLaMA-Factory's engines use) and that name goes with every request.
//!
//! The servers apply one adapter per request, so a named adapter cannot run *on top of* an
//! always-on one (what the contract asks of the two keys together): that combination is refused
//! at load, with the fix (merge the always-on adapter into the base).
//!
//! In attach mode (and in launch mode with a custom `command`) the server's `/v1/models` must
//! list every adapter: vLLM lists each one with its `parent` (the base model) and `root` (the
//! folder it was loaded from). The always-on adapter is found by its folder, else by the
//! generated name.

use std::path::Path;

use serde_json::Value;
use switchyard_plugin::EngineConfig;

use crate::error::{BridgeError, Result};
use crate::flavor::{Flavor, LoraDialect};
use crate::options::Options;

/// The ranks vLLM accepts for `--max-lora-rank` (`MaxLoRARanks` in `vllm/config/lora.py`).
pub const VLLM_RANKS: &[u32] = &[1, 8, 16, 32, 64, 128, 256, 320, 512];

/// The adapters one model serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adapters {
    /// `(name, folder)` of every adapter the server loads, in launch order.
    pub served: Vec<(String, String)>,
    /// The always-on adapter's name on the wire (sent with every request).
    pub always_on: Option<String>,
}

/// The generated name of the always-on adapter.
fn always_on_name(dialect: LoraDialect) -> &'static str {
    match dialect {
        LoraDialect::Sglang => "lora0",
        LoraDialect::Vllm | LoraDialect::None => "default",
    }
}

impl Adapters {
    /// Checks the `[model]` adapter keys for `flavor` and lists what the server must serve.
    pub fn plan(flavor: &Flavor, config: &EngineConfig) -> Result<Self> {
        let model = &config.model;
        let always_on = &model.adapter_name_or_path;
        if always_on.is_empty() && model.lora_modules.is_empty() {
            return Ok(Self::default());
        }
        if flavor.lora == LoraDialect::None {
            let key = match always_on.first() {
                Some(a) => format!("[model] adapter_name_or_path ({a})"),
                None => format!(
                    "[model.lora_modules] ({})",
                    model
                        .lora_modules
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(BridgeError::Config(format!(
                "{key}: the {} has no LoRA serving; merge the adapter into the base model, use KTransformers' SGLang server (`server = \"sglang\"` in [backends.{}]), or use hf-candle",
                flavor.server, flavor.backend
            )));
        }
        if always_on.len() > 1 {
            return Err(BridgeError::Config(format!(
                "[model] adapter_name_or_path lists {} adapters: the {} server applies one LoRA adapter per request (as LLaMA-Factory's vLLM engine, which accepts a single adapter); merge them into one first (llamafactory-cli export), or serve them as [model.lora_modules] picked per request",
                always_on.len(),
                flavor.server
            )));
        }
        if let (Some(a), Some(name)) = (always_on.first(), model.lora_modules.keys().next()) {
            return Err(BridgeError::Config(format!(
                "[model] adapter_name_or_path ({a}) with [model.lora_modules] ({name}, ...): the {} server applies one LoRA adapter per request, so a named adapter cannot run on top of the always-on one; merge adapter_name_or_path into the base model (llamafactory-cli export) and serve the merged model, or drop one of the two keys",
                flavor.server
            )));
        }
        let mut served = Vec::new();
        for (name, dir) in &model.lora_modules {
            check_name(flavor, name)?;
            served.push((name.clone(), dir.clone()));
        }
        let always_on = always_on.first().map(|dir| {
            let name = always_on_name(flavor.lora).to_owned();
            served.push((name.clone(), dir.clone()));
            name
        });
        Ok(Self { served, always_on })
    }

    /// Whether the model has no adapters.
    pub fn is_empty(&self) -> bool {
        self.served.is_empty()
    }

    /// The launch flags that load the adapters (none without adapters).
    pub fn launch_flags(&self, flavor: &Flavor, options: &Options) -> Result<Vec<String>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = vec!["--enable-lora".to_owned()];
        match flavor.lora {
            LoraDialect::None => {}
            LoraDialect::Vllm => {
                argv.push("--lora-modules".into());
                // vLLM splits `NAME=DIR` on every `=` and takes an item with a `,` for JSON.
                argv.extend(self.served.iter().map(|(name, dir)| {
                    if dir.contains(['=', ',']) {
                        serde_json::json!({"name": name, "path": dir}).to_string()
                    } else {
                        format!("{name}={dir}")
                    }
                }));
                argv.extend([
                    "--max-lora-rank".into(),
                    self.vllm_rank(flavor, options)?.to_string(),
                ]);
            }
            LoraDialect::Sglang => {
                argv.push("--lora-paths".into());
                argv.extend(self.served.iter().map(|(name, dir)| {
                    if dir.contains('=') {
                        serde_json::json!({"lora_name": name, "lora_path": dir}).to_string()
                    } else {
                        format!("{name}={dir}")
                    }
                }));
                // SGLang infers the rank from the adapters; an explicit one is passed on.
                if let Some(r) = options.max_lora_rank {
                    argv.extend(["--max-lora-rank".into(), r.to_string()]);
                }
            }
        }
        Ok(argv)
    }

    /// vLLM's `--max-lora-rank`: `max_lora_rank` from the backend table (one of
    /// [`VLLM_RANKS`]), else the largest adapter rank rounded up to one vLLM accepts.
    fn vllm_rank(&self, flavor: &Flavor, options: &Options) -> Result<u32> {
        let ranks = || {
            VLLM_RANKS
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(r) = options.max_lora_rank {
            if !VLLM_RANKS.contains(&r) {
                return Err(BridgeError::Config(format!(
                    "[backends.{}] max_lora_rank = {r}: vLLM takes one of {}",
                    flavor.backend,
                    ranks()
                )));
            }
            // An explicit rank below an adapter's own fails in the server; say so now.
            for (name, dir) in &self.served {
                if let Ok(need) = adapter_rank(Path::new(dir))
                    && need > r
                {
                    return Err(BridgeError::Config(format!(
                        "[backends.{}] max_lora_rank = {r} is below the rank {need} of the adapter `{name}` ({dir}); raise it or leave it out",
                        flavor.backend
                    )));
                }
            }
            return Ok(r);
        }
        let mut need = 1;
        for (name, dir) in &self.served {
            let r = adapter_rank(Path::new(dir)).map_err(|e| {
                BridgeError::Config(format!(
                    "the LoRA adapter `{name}`: {e}; vLLM needs `--max-lora-rank`, so set max_lora_rank in [backends.{}] (one of {})",
                    flavor.backend,
                    ranks()
                ))
            })?;
            need = need.max(r);
        }
        VLLM_RANKS
            .iter()
            .copied()
            .find(|&r| r >= need)
            .ok_or_else(|| {
                BridgeError::Config(format!(
                    "a LoRA adapter has rank {need}; vLLM serves ranks up to {}",
                    VLLM_RANKS[VLLM_RANKS.len() - 1]
                ))
            })
    }

    /// Checks that the server's `/v1/models` answer lists every adapter, and takes the
    /// always-on adapter's name from it (the card whose `root` is its folder, else the
    /// generated name). SGLang's listing may leave adapters out; then nothing can be checked.
    pub fn verify_listed(&mut self, flavor: &Flavor, url: &str, listed: &Value) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let cards: &[Value] = listed
            .get("data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let id = |c: &Value| c.get("id").and_then(Value::as_str).map(str::to_owned);
        let adapters: Vec<&Value> = cards
            .iter()
            .filter(|c| c.get("parent").is_some_and(|p| !p.is_null()))
            .collect();
        if flavor.lora == LoraDialect::Sglang && adapters.is_empty() {
            tracing::warn!(
                server = flavor.server,
                "the server's /v1/models lists no LoRA adapters, so the adapters {:?} cannot be checked before the first request",
                self.served.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
            return Ok(());
        }
        let ids: Vec<String> = cards.iter().filter_map(id).collect();
        let flag = match flavor.lora {
            LoraDialect::Sglang => "--enable-lora --lora-paths",
            _ => "--enable-lora --lora-modules",
        };
        let missing = |key: String, name: &str, dir: &str| {
            BridgeError::Config(format!(
                "the {} server at {url} does not serve the LoRA adapter {key} (it serves {ids:?}); start it with `{flag} {name}={dir}`{}, or remove `base_url` in [backends.{}] to let Switchyard launch it with the adapters",
                flavor.server,
                if flavor.lora == LoraDialect::Vllm {
                    " and a `--max-lora-rank` at least the adapter's rank"
                } else {
                    ""
                },
                flavor.backend
            ))
        };
        let always_on = self.always_on.clone();
        for (name, dir) in &self.served {
            if always_on.as_deref() == Some(name.as_str()) {
                let by_root = adapters.iter().find(|c| {
                    c.get("root")
                        .and_then(Value::as_str)
                        .is_some_and(|root| same_folder(root, dir))
                });
                let found = by_root
                    .and_then(|c| id(c))
                    .or_else(|| ids.iter().find(|i| *i == name).cloned());
                match found {
                    Some(wire) => self.always_on = Some(wire),
                    None => {
                        return Err(missing(
                            format!("of [model] adapter_name_or_path ({dir})"),
                            name,
                            dir,
                        ));
                    }
                }
            } else if !ids.contains(name) {
                return Err(missing(
                    format!("`{name}` of [model.lora_modules]"),
                    name,
                    dir,
                ));
            }
        }
        Ok(())
    }

    /// The adapter name a request sends: the one it picked, else the always-on one.
    pub fn wire_name<'a>(&'a self, picked: Option<&'a str>) -> Option<&'a str> {
        picked.or(self.always_on.as_deref())
    }
}

/// A name the server's flag syntax can carry.
fn check_name(flavor: &Flavor, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['=', ',', '{']) || name.contains(char::is_whitespace) {
        return Err(BridgeError::Config(format!(
            "[model.lora_modules] {name:?}: the {} server's adapter flags cannot carry this name; use letters, digits, `-`, `_`, `.` or `/`",
            flavor.server
        )));
    }
    Ok(())
}

/// Whether two spellings of a folder are the same folder.
fn same_folder(a: &str, b: &str) -> bool {
    let trim = |s: &str| s.trim_end_matches('/').to_owned();
    if trim(a) == trim(b) {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// An adapter's LoRA rank: PEFT's `r` in `adapter_config.json`, or the largest of its
/// per-module `rank_pattern` ranks.
pub fn adapter_rank(dir: &Path) -> Result<u32, String> {
    let file = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
    let as_rank = |v: &Value| v.as_u64().and_then(|r| u32::try_from(r).ok());
    let r = config
        .get("r")
        .and_then(as_rank)
        .ok_or_else(|| format!("{} has no integer `r`", file.display()))?;
    let pattern = config
        .get("rank_pattern")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values().filter_map(as_rank));
    Ok(pattern.fold(r, u32::max))
}

#[cfg(test)]
mod tests {
    //! The flag spellings are the servers' documented ones: vLLM's LoRA docs
    //! (`vllm serve ... --enable-lora --lora-modules sql-lora=$DIR`, `--max-lora-rank` one of
    //! `MaxLoRARanks`), SGLang's LoRA docs and LLaMA-Factory's `sglang_engine.py`
    //! (`--enable-lora --lora-paths lora0=DIR`). The adapter folders are real PEFT saves
    //! (`tests/fixtures/hf/llama-lora`, r = 8 and r = 16).
    use super::*;
    use crate::flavor::{KT_LEGACY, KT_SGLANG, SGLANG, VLLM};
    use crate::options::launch_argv;
    use serde_json::json;

    fn fixture(name: &str) -> String {
        format!(
            "{}/../../tests/fixtures/hf/llama-lora/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn config(always_on: &[&str], named: &[(&str, &str)]) -> EngineConfig {
        let mut c = EngineConfig::default();
        c.model.path = Some("/m/base".into());
        c.model.adapter_name_or_path = always_on.iter().map(|s| s.to_string()).collect();
        c.model.lora_modules = named
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c
    }

    fn argv(flavor: &Flavor, options: Value, config: &EngineConfig) -> Result<String> {
        let o = Options::parse(flavor, &options)?;
        let adapters = Adapters::plan(flavor, config)?;
        Ok(launch_argv(flavor, &o, config, &adapters, "127.0.0.1", 8000)?.join(" "))
    }

    /// A folder with an `adapter_config.json` holding `config`.
    fn adapter(config: Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
        dir
    }

    #[test]
    fn vllm_named_adapters_get_lora_modules_and_the_largest_rank() {
        let (qv, all) = (fixture("qv"), fixture("rslora-all"));
        let c = config(&[], &[("sql", &qv), ("chat", &all)]);
        let line = argv(&VLLM, json!({"args": ["--max-num-seqs", "8"]}), &c).unwrap();
        // lora_modules is a sorted map: chat before sql.
        assert_eq!(
            line,
            format!(
                "vllm serve /m/base --host 127.0.0.1 --port 8000 --enable-lora --lora-modules chat={all} sql={qv} --max-lora-rank 16 --max-num-seqs 8"
            )
        );
        let a = Adapters::plan(&VLLM, &c).unwrap();
        assert_eq!(a.always_on, None);
        assert_eq!(a.wire_name(Some("sql")), Some("sql"));
        assert_eq!(a.wire_name(None), None, "no adapter: the base model");
    }

    #[test]
    fn vllm_always_on_adapter_is_llamafactorys_default_request() {
        let qv = fixture("qv");
        let c = config(&[&qv], &[]);
        assert_eq!(
            argv(&VLLM, json!({}), &c).unwrap(),
            format!(
                "vllm serve /m/base --host 127.0.0.1 --port 8000 --enable-lora --lora-modules default={qv} --max-lora-rank 8"
            )
        );
        let a = Adapters::plan(&VLLM, &c).unwrap();
        assert_eq!(a.wire_name(None), Some("default"));
    }

    #[test]
    fn vllm_rank_rounds_up_to_an_accepted_one_or_takes_max_lora_rank() {
        let r24 = adapter(json!({"r": 24, "rank_pattern": {}}));
        let patterned =
            adapter(json!({"r": 8, "rank_pattern": {"model.layers.0.self_attn.q_proj": 40}}));
        let r600 = adapter(json!({"r": 600}));
        let dir = |d: &tempfile::TempDir| d.path().display().to_string();
        let rank_of = |d: &tempfile::TempDir, options: Value| {
            argv(&VLLM, options, &config(&[], &[("a", &dir(d))]))
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(rank_of(&r24, json!({})).unwrap(), "32");
        assert_eq!(rank_of(&patterned, json!({})).unwrap(), "64");
        let e = rank_of(&r600, json!({})).unwrap_err().to_string();
        assert!(e.contains("600") && e.contains("512"), "{e}");
        assert_eq!(rank_of(&r24, json!({"max_lora_rank": 64})).unwrap(), "64");
        let e = rank_of(&r24, json!({"max_lora_rank": 48}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_lora_rank = 48") && e.contains("320"), "{e}");
        let e = rank_of(&r24, json!({"max_lora_rank": 16}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the rank 24"), "{e}");
        // A folder that is not here (a hub id): the rank must be given.
        let c = config(&[], &[("hub", "someone/adapter")]);
        let e = argv(&VLLM, json!({}), &c).unwrap_err().to_string();
        assert!(e.contains("`hub`") && e.contains("max_lora_rank"), "{e}");
        assert!(
            argv(&VLLM, json!({"max_lora_rank": 32}), &c)
                .unwrap()
                .ends_with("--lora-modules hub=someone/adapter --max-lora-rank 32")
        );
    }

    #[test]
    fn vllm_uses_the_json_form_for_a_folder_with_an_equals_sign() {
        let c = config(&[], &[("a", "/runs/lr=1e-4")]);
        let line = argv(&VLLM, json!({"max_lora_rank": 8}), &c).unwrap();
        assert!(
            line.contains(
                r#"--lora-modules {"name":"a","path":"/runs/lr=1e-4"} --max-lora-rank 8"#
            ),
            "{line}"
        );
    }

    #[test]
    fn sglang_and_ktransformers_get_lora_paths() {
        let qv = fixture("qv");
        let c = config(&[&qv], &[]);
        assert_eq!(
            argv(
                &SGLANG,
                json!({"max_loras_per_batch": 1, "lora_backend": "triton"}),
                &c
            )
            .unwrap(),
            format!(
                "python3 -m sglang.launch_server --model-path /m/base --host 127.0.0.1 --port 8000 --max-loras-per-batch 1 --lora-backend triton --enable-lora --lora-paths lora0={qv}"
            )
        );
        assert_eq!(
            Adapters::plan(&SGLANG, &c).unwrap().wire_name(None),
            Some("lora0")
        );
        let c = config(&[], &[("lora1", &qv)]);
        assert_eq!(
            argv(
                &KT_SGLANG,
                json!({"kt_method": "AMXINT8", "max_lora_rank": 8}),
                &c
            )
            .unwrap(),
            format!(
                "python3 -m sglang.launch_server --model-path /m/base --host 127.0.0.1 --port 8000 --kt-method AMXINT8 --enable-lora --lora-paths lora1={qv} --max-lora-rank 8"
            )
        );
    }

    #[test]
    fn what_the_servers_cannot_do_is_refused_by_key() {
        let e = Adapters::plan(&KT_LEGACY, &config(&["/a"], &[])).unwrap_err();
        assert!(e.to_string().contains("adapter_name_or_path (/a)"), "{e}");
        let e = Adapters::plan(&KT_LEGACY, &config(&[], &[("x", "/a")])).unwrap_err();
        assert!(e.to_string().contains("[model.lora_modules] (x)"), "{e}");
        // LLaMA-Factory: "vLLM only accepts a single adapter. Merge them first."
        let e = Adapters::plan(&VLLM, &config(&["/a", "/b"], &[])).unwrap_err();
        assert!(
            e.to_string().contains("adapter_name_or_path lists 2"),
            "{e}"
        );
        let e = Adapters::plan(&SGLANG, &config(&["/a"], &[("x", "/b")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("adapter_name_or_path (/a) with [model.lora_modules]"),
            "{e}"
        );
        let e = Adapters::plan(&VLLM, &config(&[], &[("a=b", "/x")])).unwrap_err();
        assert!(e.to_string().contains("\"a=b\""), "{e}");
        assert!(
            Adapters::plan(&KT_LEGACY, &config(&[], &[]))
                .unwrap()
                .is_empty()
        );
    }

    /// `/v1/models` of `vllm serve base --enable-lora --lora-modules sql=/srv/sql`: the base
    /// card, then one card per adapter with `root` (its folder) and `parent` (vLLM's
    /// `OpenAIServingModels.show_available_models`).
    fn vllm_listing(adapters: &[(&str, &str)]) -> Value {
        let mut data = vec![json!({"id": "base", "object": "model", "owned_by": "vllm",
            "root": "/m/base", "parent": null, "max_model_len": 4096})];
        data.extend(adapters.iter().map(|(id, root)| {
            json!({"id": id, "object": "model", "owned_by": "vllm", "root": root,
                "parent": "base", "max_model_len": null})
        }));
        json!({"object": "list", "data": data})
    }

    #[test]
    fn attach_checks_the_listing_and_finds_the_always_on_adapter_by_folder() {
        let mut a = Adapters::plan(&VLLM, &config(&[], &[("sql", "/srv/sql")])).unwrap();
        a.verify_listed(&VLLM, "http://h", &vllm_listing(&[("sql", "/srv/sql")]))
            .unwrap();
        let e = a
            .verify_listed(&VLLM, "http://h", &vllm_listing(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sql` of [model.lora_modules]")
                && e.contains("--enable-lora --lora-modules sql=/srv/sql"),
            "{e}"
        );
        let mut a = Adapters::plan(&VLLM, &config(&["/srv/sft/"], &[])).unwrap();
        a.verify_listed(&VLLM, "http://h", &vllm_listing(&[("my-sft", "/srv/sft")]))
            .unwrap();
        assert_eq!(
            a.wire_name(None),
            Some("my-sft"),
            "the server's name for it"
        );
        let mut a = Adapters::plan(&VLLM, &config(&["/srv/sft"], &[])).unwrap();
        let e = a
            .verify_listed(&VLLM, "http://h", &vllm_listing(&[("other", "/srv/other")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("adapter_name_or_path (/srv/sft)"), "{e}");
        // SGLang's listing names no adapters: nothing to check against.
        let mut a = Adapters::plan(&SGLANG, &config(&[], &[("sql", "/srv/sql")])).unwrap();
        let listing = json!({"object": "list", "data": [{"id": "base", "object": "model"}]});
        a.verify_listed(&SGLANG, "http://h", &listing).unwrap();
    }
}
