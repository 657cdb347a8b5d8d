//! [`Bridge`]: a Switchyard [`Backend`] over one server, attached or launched.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo,
    EventIter, PluginMetadata, Response, ScoreRequest,
};

use crate::client::{Client, Runtime, Timeouts};
use crate::error::{BridgeError, Result};
use crate::flavor::{Field, Flavor, LoraDialect};
use crate::launch::ServerProcess;
use crate::lora::Adapters;
use crate::options::{Options, ReasoningMode, launch_argv};
use crate::protocol::{Completion, chat_body, finish_reason, logprobs, tool_calls};
use crate::scores;
use crate::stream::{self, Assembler};

/// A backend that forwards requests to an OpenAI-compatible server.
pub struct Bridge {
    flavor: &'static Flavor,
    rt: Arc<Runtime>,
    client: Client,
    model: String,
    context_length: Option<u32>,
    reasoning: ReasoningMode,
    multimodal: bool,
    use_pooling: bool,
    details: Map<String, Value>,
    /// The LoRA adapters the server serves, and the always-on one's name.
    adapters: Adapters,
    /// Launch mode: the server; stopped when the bridge is dropped.
    server: Option<Mutex<ServerProcess>>,
}

/// The capabilities a flavor declares before a model is loaded.
pub fn capabilities(flavor: &Flavor, multimodal: bool) -> Capabilities {
    let media = multimodal && flavor.supports(Field::Media);
    Capabilities {
        chat: true,
        stream: true,
        scores: flavor.scores != crate::flavor::ScoreApi::None,
        tools: flavor.supports(Field::Tools),
        images: media,
        videos: media,
        audios: media,
        logprobs: flavor.supports(Field::Logprobs),
        constraints: flavor.constraints != crate::flavor::ConstraintDialect::None,
        tool_choice: flavor.supports(Field::ToolChoice),
        completions: crate::completions::supported(flavor),
        embeddings: crate::embeddings::supported(flavor),
    }
}

/// The plugin metadata for a flavor.
pub fn metadata(flavor: &Flavor, description: &str) -> PluginMetadata {
    PluginMetadata {
        backends: vec![flavor.backend.to_owned()],
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description: description.to_owned(),
        capabilities: capabilities(flavor, true),
    }
}

fn free_port(host: &str) -> Result<u16> {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BridgeError::Launch(format!("cannot find a free port on {host}: {e}")))
}

impl Bridge {
    /// Creates the engine from the host's config: attaches to `base_url`, or launches the server
    /// and waits for it; then learns the model name and context length.
    pub fn create(flavor: &'static Flavor, config: EngineConfig) -> Result<Self, EngineError> {
        Self::try_create(flavor, config).map_err(Into::into)
    }

    fn try_create(flavor: &'static Flavor, config: EngineConfig) -> Result<Self> {
        let mut adapters = Adapters::plan(flavor, &config)?;
        if let Some(t) = &config.model.template {
            return Err(BridgeError::Config(format!(
                "[model] template = {t:?}: the {} server renders prompts with the model's own chat template; drop `template`, or give the server a Jinja template with `chat_template_file`",
                flavor.server
            )));
        }
        let options = Options::parse(flavor, &config.options)?;
        let rt = Runtime::new()?;
        let timeouts = Timeouts {
            connect: options.connect_timeout(),
            request: options.request_timeout(),
            connect_retries: options.connect_retries(),
        };
        let mut details = Map::new();
        details.insert("server".into(), flavor.server.into());
        let (client, server) = if let Some(base_url) = &options.base_url {
            let hint = format!(
                "Is the server running? Start it (e.g. `{}`), fix `base_url` in [backends.{}], or remove `base_url` to let Switchyard launch the server",
                flavor.launch.program.join(" "),
                flavor.backend
            );
            let client = Client::new(
                flavor.server,
                flavor.backend,
                base_url,
                options.api_key.clone(),
                timeouts,
                hint,
            )?;
            details.insert("mode".into(), "attach".into());
            (client, None)
        } else {
            let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            let port = match options.port {
                Some(p) => p,
                None => free_port(&host)?,
            };
            let argv = launch_argv(flavor, &options, &config, &adapters, &host, port)?;
            let mut process = ServerProcess::spawn(
                flavor.server,
                &argv,
                &options.env,
                options.stop_timeout(),
                flavor.launch.install_hint,
            )?;
            let connect_host = if host == "0.0.0.0" {
                "127.0.0.1"
            } else {
                &host
            };
            let hint = format!(
                "The server was launched by Switchyard (pid {}); see its log lines (SWITCHYARD_LOG=info)",
                process.pid()
            );
            let client = Client::new(
                flavor.server,
                flavor.backend,
                &format!("http://{connect_host}:{port}"),
                options.api_key.clone(),
                timeouts,
                hint,
            )?;
            wait_ready(&rt, &client, flavor, &mut process, options.ready_timeout())?;
            details.insert("mode".into(), "launch".into());
            details.insert("pid".into(), process.pid().into());
            details.insert("command".into(), json!(argv));
            (client, Some(Mutex::new(process)))
        };
        details.insert("url".into(), client.root().into());
        let listed = rt.block_on(client.get_json("/v1/models"))?;
        adapters.verify_listed(flavor, client.root(), &listed)?;
        if !adapters.is_empty() {
            let names: Vec<&str> = adapters.served.iter().map(|(n, _)| n.as_str()).collect();
            details.insert("lora_adapters".into(), json!(names));
            if let Some(a) = &adapters.always_on {
                details.insert("always_on_adapter".into(), a.clone().into());
            }
        }
        let ids: Vec<&str> = listed
            .get("data")
            .and_then(Value::as_array)
            .map(|d| {
                // vLLM lists the adapters after the base, each with its `parent`.
                d.iter()
                    .filter(|m| m.get("parent").is_none_or(Value::is_null))
                    .filter_map(|m| m.get("id")?.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let model = match options.model.clone().or(options.served_model_name.clone()) {
            Some(m) => {
                if !ids.is_empty() && !ids.contains(&m.as_str()) {
                    tracing::warn!(
                        server = flavor.server,
                        "model `{m}` is not among the served models {ids:?}; the server may refuse it"
                    );
                }
                m
            }
            None => ids
                .first()
                .map(|s| s.to_string())
                .ok_or_else(|| BridgeError::Decode {
                    server: flavor.server.to_owned(),
                    path: "/v1/models".into(),
                    cause: format!(
                        "the server lists no models; set `model` in [backends.{}]",
                        flavor.backend
                    ),
                })?,
        };
        let context_length = listed
            .get("data")
            .and_then(Value::as_array)
            .and_then(|d| {
                d.iter()
                    .find(|m| m.get("id").and_then(Value::as_str) == Some(&model))
            })
            .and_then(|m| m.get("max_model_len"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        tracing::info!(server = flavor.server, url = client.root(), model = %model, "bridge ready");
        Ok(Self {
            flavor,
            rt,
            client,
            model,
            context_length,
            reasoning: options.reasoning_mode(),
            multimodal: options.multimodal.unwrap_or(true),
            use_pooling: options.score_endpoint.as_deref() == Some("pooling"),
            details,
            adapters,
            server,
        })
    }

    fn check_server(&self) -> Result<()> {
        if let Some(server) = &self.server {
            let mut s = server.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(status) = s.exited() {
                return Err(BridgeError::Launch(format!(
                    "the {} server launched by Switchyard has exited ({status}); last log lines:\n{}",
                    self.flavor.server,
                    s.log_tail()
                )));
            }
        }
        Ok(())
    }
}

/// Polls the readiness probe until it answers 200, the process exits, or the timeout passes.
fn wait_ready(
    rt: &Runtime,
    client: &Client,
    flavor: &Flavor,
    process: &mut ServerProcess,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    loop {
        if let Some(status) = process.exited() {
            return Err(BridgeError::Launch(format!(
                "the {} server exited before it was ready ({status}); last log lines:\n{}",
                flavor.server,
                process.log_tail()
            )));
        }
        let last = match rt.block_on(client.probe(flavor.ready_path)) {
            Ok(()) => {
                tracing::info!(
                    server = flavor.server,
                    "ready after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(e) => e.to_string(),
        };
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(BridgeError::Launch(format!(
                "the {} server did not become ready within {timeout:?} (probe {}{}: {last}); raise `ready_timeout_s` in [backends.{}] if it is still loading. Last log lines:\n{}",
                flavor.server,
                client.root(),
                flavor.ready_path,
                flavor.backend,
                process.log_tail()
            )));
        }
        if elapsed >= next_report {
            tracing::info!(
                server = flavor.server,
                "waiting for the server to become ready ({}s of {}s)",
                elapsed.as_secs(),
                timeout.as_secs()
            );
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Backend for Bridge {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            backend: self.flavor.backend.to_owned(),
            model: self.model.clone(),
            context_length: self.context_length,
            capabilities: capabilities(self.flavor, self.multimodal),
            // The server applies the model's generation_config itself.
            generation_defaults: Default::default(),
            details: self.details.clone(),
        }
    }

    fn health(&self) -> Result<(), EngineError> {
        self.check_server()?;
        Ok(self
            .rt
            .block_on(self.client.probe(self.flavor.ready_path))?)
    }

    fn stream_chat(
        &self,
        mut request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        self.check_server()?;
        self.pick_adapter(&mut request);
        if request.prompt.is_some() || request.echo {
            return self.stream_completion(&request, cancel);
        }
        let body = chat_body(self.flavor, &self.model, &request, true)?;
        let resp = self
            .rt
            .block_on(self.client.post_stream("/v1/chat/completions", &body))?;
        let events = stream::spawn(
            self.rt.clone(),
            self.client.clone(),
            resp,
            Assembler::new(
                self.flavor.server,
                self.reasoning,
                request.generation.max_new_tokens,
                request.generation.num_return_sequences.unwrap_or(1),
            ),
            cancel,
        );
        Ok(Box::new(events))
    }

    fn chat(&self, mut request: ChatRequest) -> Result<Vec<Response>, EngineError> {
        self.check_server()?;
        self.pick_adapter(&mut request);
        if request.prompt.is_some() || request.echo {
            return self.completion(&request);
        }
        let body = chat_body(self.flavor, &self.model, &request, false)?;
        let raw = self
            .rt
            .block_on(self.client.post_json("/v1/chat/completions", &body))?;
        Ok(self.responses(raw, request.generation.num_return_sequences.unwrap_or(1))?)
    }

    fn get_scores(&self, request: ScoreRequest) -> Result<Vec<f32>, EngineError> {
        self.check_server()?;
        if request.embed {
            return self.embed(&request);
        }
        let call = scores::plan(self.flavor, self.score_model()?, &request, self.use_pooling)?;
        let mut out = Vec::new();
        for (path, body) in call {
            let raw = self.rt.block_on(self.client.post_json(path, &body))?;
            out.extend(scores::read(self.flavor.server, path, &raw)?);
        }
        if out.len() != request.inputs.len() {
            return Err(BridgeError::Decode {
                server: self.flavor.server.to_owned(),
                path: "scores".into(),
                cause: format!("{} scores for {} inputs", out.len(), request.inputs.len()),
            }
            .into());
        }
        Ok(out)
    }
}

impl Bridge {
    /// A chat with `echo` as a text completion of the conversation's rendered ids.
    fn rendered(&self, request: &ChatRequest) -> Result<ChatRequest, EngineError> {
        use crate::completions as c;
        if request.prompt.is_some() {
            return Ok(request.clone());
        }
        let body = c::render_body(self.flavor, &self.model, request)?;
        let raw = self
            .rt
            .block_on(self.client.post_json(c::TOKENIZE_PATH, &body))?;
        let ids = c::rendered_ids(self.flavor.server, &raw)?;
        Ok(ChatRequest {
            prompt: Some(switchyard_plugin::Prompt::Tokens(ids)),
            messages: Vec::new(),
            system: None,
            tools: None,
            ..request.clone()
        })
    }

    /// `chat` with a raw `prompt` (or `echo`): `/v1/completions` ([`crate::completions`]).
    fn completion(&self, request: &ChatRequest) -> Result<Vec<Response>, EngineError> {
        use crate::completions as c;
        let request = &self.rendered(request)?;
        let body = c::body(self.flavor, &self.model, request, false)?;
        let raw = self.rt.block_on(self.client.post_json(c::PATH, &body))?;
        Ok(c::responses(self.flavor, request, raw)?)
    }

    /// `stream_chat` with a raw `prompt`.
    fn stream_completion(
        &self,
        request: &ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        use crate::completions as c;
        let request = &self.rendered(request)?;
        let body = c::body(self.flavor, &self.model, request, true)?;
        let resp = self.rt.block_on(self.client.post_stream(c::PATH, &body))?;
        let assembler = c::TextAssembler::new(self.flavor, request);
        let (rt, client) = (self.rt.clone(), self.client.clone());
        Ok(Box::new(stream::spawn(rt, client, resp, assembler, cancel)))
    }

    /// `get_scores` with `embed`: every input's vector from `/v1/embeddings`, concatenated.
    fn embed(&self, request: &ScoreRequest) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::new();
        for body in crate::embeddings::plan(self.flavor, self.score_model()?, request)? {
            let raw = (self.rt).block_on(self.client.post_json(crate::embeddings::PATH, &body))?;
            out.extend(crate::embeddings::read(self.flavor.server, &raw)?);
        }
        let dim = out.first().map_or(0, Vec::len);
        if out.len() != request.inputs.len() || out.iter().any(|v| v.len() != dim) {
            return Err(BridgeError::Decode {
                server: self.flavor.server.to_owned(),
                path: crate::embeddings::PATH.into(),
                cause: format!(
                    "{} vectors of unequal or zero length for {} inputs",
                    out.len(),
                    request.inputs.len()
                ),
            }
            .into());
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Puts the adapter the server must apply into the request: the one it picked (a
    /// `[model.lora_modules]` name, checked by the host), else the always-on one.
    fn pick_adapter(&self, request: &mut ChatRequest) {
        request.adapter = self
            .adapters
            .wire_name(request.adapter.as_deref())
            .map(str::to_owned);
    }

    /// The model scores are asked of: with an always-on adapter, vLLM's adapter name; SGLang's
    /// `/classify` takes no adapter, so scores are refused there rather than computed without it.
    fn score_model(&self) -> Result<&str> {
        match (&self.adapters.always_on, self.flavor.lora) {
            (None, _) => Ok(&self.model),
            (Some(name), LoraDialect::Vllm) => Ok(name),
            (Some(_), _) => Err(BridgeError::Unsupported(format!(
                "[model] adapter_name_or_path: the {} server's /classify takes no LoRA adapter, so scores would come from the base model; merge the adapter into the model to score with it",
                self.flavor.server
            ))),
        }
    }

    fn responses(&self, raw: Value, requested: u32) -> Result<Vec<Response>> {
        let server = self.flavor.server;
        if raw.get("error").is_some_and(|e| !e.is_null()) {
            let (message, code) =
                crate::error::parse_error_value(&raw).unwrap_or_else(|| (raw.to_string(), None));
            return Err(BridgeError::InStream {
                server: server.to_owned(),
                code,
                message,
            });
        }
        let completion: Completion =
            serde_json::from_value(raw).map_err(|e| BridgeError::Decode {
                server: server.to_owned(),
                path: "/v1/chat/completions".into(),
                cause: e.to_string(),
            })?;
        let usage = completion.usage.unwrap_or_default();
        let n = completion.choices.len().max(1) as u32;
        let mut choices = completion.choices;
        if let Some(c) = choices.iter().find(|c| c.index >= requested.max(1)) {
            return Err(crate::stream::wild_index(server, c.index, requested.max(1)));
        }
        choices.sort_by_key(|c| c.index);
        choices
            .into_iter()
            .map(|c| {
                let msg = c.message.unwrap_or_default();
                let mut reason =
                    finish_reason(server, c.finish_reason.as_deref().unwrap_or("stop"))?;
                let calls = msg
                    .tool_calls
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .map(tool_calls);
                if calls.is_some() && reason == switchyard_plugin::FinishReason::Stop {
                    reason = switchyard_plugin::FinishReason::ToolCalls;
                }
                let reasoning = match self.reasoning {
                    ReasoningMode::Keep => msg.reasoning_text().map(str::to_owned),
                    ReasoningMode::Drop => None,
                };
                Ok(Response {
                    text: msg.content.unwrap_or_default(),
                    // Usage covers all choices; with several, each gets an even share.
                    response_length: usage.completion_tokens / n,
                    prompt_length: usage.prompt_tokens,
                    finish_reason: reason,
                    token_ids: None,
                    reasoning_content: reasoning,
                    tool_calls: calls,
                    logprobs: Some(logprobs(c.logprobs.as_ref())).filter(|l| !l.is_empty()),
                    prompt_logprobs: None,
                })
            })
            .collect()
    }
}
