//! Text completions (a [`ChatRequest`] with a raw `prompt`) through the servers'
//! `POST /v1/completions`; the host's `/tokenize` and `/detokenize` run on top of them (an
//! `echo` with no new tokens).
//!
//! - The body is the chat body's sampling fields ([`chat_body`]) with `prompt` (text or token
//!   ids) in place of `messages`, `echo`, and OpenAI's legacy `logprobs` as an integer top-N.
//! - `return_token_ids` brings the prompt's ids (`prompt_token_ids`, on a stream's first chunk)
//!   and the generated ids (`token_ids`) back, on vLLM and SGLang alike.
//! - With `echo` the prompt's tokens are wanted with their text, which only the legacy
//!   `logprobs` object carries, so `logprobs` is sent (at least 1: SGLang computes the prompt's
//!   logprobs only for a non-zero value) and the alternatives are cut back to what the request
//!   asked for; the values are dropped when it asked for none. The first prompt token has no
//!   context: logprob 0, no alternatives (as the contract says).
//! - vLLM takes `max_tokens: 0` with `echo` (it runs one step and returns the prompt only, but
//!   still reports that step's token in `token_ids` and the usage: both are dropped here).
//! - vLLM leaves the echoed prompt out of `text` when `return_token_ids` is set; SGLang puts it
//!   in front; it is stripped, so `text` (and the events' `delta`) is the completion only.
//!
//! - `echo` on a chat (the conversation's rendered tokens back, what the host's `/tokenize` with
//!   `messages` asks): vLLM renders the conversation with its `POST /tokenize` (`messages`,
//!   generation prompt on, as its chat endpoint renders them), and the ids go on as a token
//!   prompt ([`render_body`], [`rendered_ids`]). SGLang's `/tokenize` takes text only, so there
//!   it is refused by name; so are media with `echo` (their ids would come back without them).
//!
//! KTransformers' legacy server has no `/v1/completions` ([`supported`] is false).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_plugin::{
    ChatRequest, Event, Finish, FinishReason, Prompt, Response, TokenLogprob, TopLogprob,
};

use crate::error::{BridgeError, Result, parse_error_value};
use crate::flavor::Flavor;
use crate::protocol::{Usage, chat_body, finish_reason, messages};

/// The servers whose `/v1/completions` the bridge uses (the flavors' `server` names).
const SERVERS: &[&str] = &["vllm", "sglang", "ktransformers (sglang + kt-kernel)"];

/// The path every call goes to.
pub const PATH: &str = "/v1/completions";

/// Whether the flavor's server has `/v1/completions` (the bridge's `completions` capability).
pub fn supported(flavor: &Flavor) -> bool {
    SERVERS.contains(&flavor.server)
}

/// The `/v1/completions` body for a request with a `prompt`.
pub fn body(flavor: &Flavor, model: &str, request: &ChatRequest, stream: bool) -> Result<Value> {
    let Some(prompt) = &request.prompt else {
        return Err(BridgeError::Config(
            "a text completion needs `prompt`".into(),
        ));
    };
    // The chat body's sampling, adapter and constraint fields; the chat-only ones go.
    let sampling = ChatRequest {
        messages: Vec::new(),
        system: None,
        tools: None,
        chat_template_kwargs: Map::new(),
        logprobs: false,
        top_logprobs: 0,
        tool_choice: None,
        prompt: None,
        echo: false,
        ..request.clone()
    };
    let mut body = chat_body(flavor, model, &sampling, stream)?;
    let Value::Object(map) = &mut body else {
        unreachable!("chat_body builds an object")
    };
    map.remove("messages");
    map.insert(
        "prompt".into(),
        match prompt {
            Prompt::Text(t) => json!(t),
            Prompt::Tokens(ids) => json!(ids),
        },
    );
    if request.echo {
        map.insert("echo".into(), true.into());
    }
    let logprobs = match (request.echo, request.logprobs) {
        (true, _) => Some(request.top_logprobs.max(1)),
        (false, true) => Some(request.top_logprobs),
        (false, false) => None,
    };
    if let Some(n) = logprobs {
        map.insert("logprobs".into(), n.into());
    }
    map.insert("return_token_ids".into(), true.into());
    Ok(body)
}

/// The path of vLLM's tokenizer endpoint (at the server root).
pub const TOKENIZE_PATH: &str = "/tokenize";

/// The `/tokenize` body that renders a chat request's conversation with the server's chat
/// template, for `echo` on a chat; refused where the server cannot render it.
pub fn render_body(flavor: &Flavor, model: &str, request: &ChatRequest) -> Result<Value> {
    if flavor.server != "vllm" {
        return Err(BridgeError::Unsupported(format!(
            "`echo` on a chat needs the conversation rendered by the server, and the {} server's /tokenize takes text only; send the rendered text as `prompt` (a text completion) instead",
            flavor.server
        )));
    }
    if !(request.images.is_empty() && request.videos.is_empty() && request.audios.is_empty()) {
        return Err(BridgeError::Unsupported(
            "`echo` with images/videos/audio: the prompt's ids would come back without the media; drop `echo` or the media".into(),
        ));
    }
    let mut body = json!({
        "model": model,
        "messages": messages(flavor, request)?,
        "add_generation_prompt": true,
    });
    if !request.chat_template_kwargs.is_empty() {
        body["chat_template_kwargs"] = Value::Object(request.chat_template_kwargs.clone());
    }
    if let Some(tools) = &request.tools {
        body["tools"] = json!(tools);
    }
    Ok(body)
}

/// The token ids of a `/tokenize` answer (`{"count", "max_model_len", "tokens": [ids]}`).
pub fn rendered_ids(server: &str, raw: &Value) -> Result<Vec<u32>> {
    raw.get("tokens")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                .collect::<Option<Vec<u32>>>()
        })
        .ok_or_else(|| BridgeError::Decode {
            server: server.to_owned(),
            path: TOKENIZE_PATH.into(),
            cause: format!(
                "no token id list in `tokens`: {}",
                raw.to_string().chars().take(200).collect::<String>()
            ),
        })
}

/// OpenAI's legacy `logprobs` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Legacy {
    tokens: Vec<String>,
    token_logprobs: Vec<Option<f32>>,
    top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
}

/// One choice of a text completion or of a stream chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextChoice {
    index: u32,
    text: String,
    finish_reason: Option<String>,
    logprobs: Option<Legacy>,
    token_ids: Option<Vec<u32>>,
    prompt_token_ids: Option<Vec<u32>>,
}

/// A text completion or a stream chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextCompletion {
    choices: Vec<TextChoice>,
    usage: Option<Usage>,
}

/// What the mapping needs to know of the request.
#[derive(Clone, Debug)]
struct Ask {
    server: &'static str,
    prompt: Prompt,
    echo: bool,
    logprobs: bool,
    top: usize,
    /// `max_tokens: 0`: only the prompt is wanted.
    prompt_only: bool,
    choices: u32,
}

impl Ask {
    fn new(flavor: &Flavor, request: &ChatRequest) -> Self {
        Self {
            server: flavor.server,
            prompt: request
                .prompt
                .clone()
                .unwrap_or(Prompt::Text(String::new())),
            echo: request.echo,
            logprobs: request.logprobs,
            top: request.top_logprobs as usize,
            prompt_only: request.generation.max_new_tokens == Some(0),
            choices: request.generation.num_return_sequences.unwrap_or(1).max(1),
        }
    }

    fn decode(&self, cause: String) -> BridgeError {
        BridgeError::Decode {
            server: self.server.to_owned(),
            path: PATH.into(),
            cause,
        }
    }

    /// One token of the legacy object: its text, id, logprob and alternatives (best first, as
    /// many as asked for), or zeros where no context or no logprobs were asked for.
    fn token(&self, lp: &Legacy, i: usize, id: Option<u32>, context: bool) -> TokenLogprob {
        let token = lp.tokens.get(i).cloned().unwrap_or_default();
        let scored = self.logprobs && context;
        let mut top: Vec<TopLogprob> = match lp.top_logprobs.get(i) {
            Some(Some(alts)) if scored => alts
                .iter()
                .map(|(t, l)| TopLogprob {
                    token: t.clone(),
                    token_id: None,
                    bytes: t.as_bytes().to_vec(),
                    logprob: *l,
                })
                .collect(),
            _ => Vec::new(),
        };
        top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        top.truncate(self.top);
        TokenLogprob {
            bytes: token.as_bytes().to_vec(),
            token,
            token_id: id,
            logprob: if scored {
                lp.token_logprobs.get(i).copied().flatten().unwrap_or(0.0)
            } else {
                0.0
            },
            top_logprobs: top,
        }
    }

    /// The event of one choice; `first` when it is the choice's first chunk (the one that
    /// carries the echo), `usage_prompt` the prompt length when the server sent it.
    fn event(&self, c: TextChoice, first: bool, usage_prompt: Option<u32>) -> Result<Event> {
        let lp = c.logprobs.unwrap_or_default();
        let echoed = self.echo && first;
        let mut text = c.text;
        let mut prompt_logprobs = Vec::new();
        let mut skip = 0;
        if echoed {
            let ids = match (c.prompt_token_ids.as_ref(), &self.prompt) {
                (Some(ids), _) | (None, Prompt::Tokens(ids)) => ids.clone(),
                (None, Prompt::Text(_)) => match usage_prompt {
                    // No ids: the first `prompt_tokens` entries are the prompt's, ids unknown.
                    Some(n) => vec![u32::MAX; n as usize],
                    None => {
                        return Err(self.decode(
                            "`echo` came back without `prompt_token_ids`; the server is too old for `return_token_ids` (vLLM ≥ 0.10.2, or a recent SGLang)".into(),
                        ));
                    }
                },
            };
            skip = ids.len();
            prompt_logprobs = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| self.token(&lp, i, (id != u32::MAX).then_some(id), i > 0))
                .collect();
            // SGLang (and vLLM without `return_token_ids`) put the prompt in front of the text.
            let shown: String = prompt_logprobs.iter().map(|t| t.token.as_str()).collect();
            let as_sent = match &self.prompt {
                Prompt::Text(t) => Some(t.as_str()),
                Prompt::Tokens(_) => None,
            };
            let vllm_bare = self.server == "vllm" && c.prompt_token_ids.is_some();
            let stripped = as_sent
                .and_then(|p| text.strip_prefix(p))
                .or_else(|| text.strip_prefix(shown.as_str()));
            if let Some(rest) = stripped.filter(|_| !vllm_bare) {
                text = rest.to_owned();
            }
        }
        let token_ids = c.token_ids.unwrap_or_default();
        let logprobs = if self.logprobs && !lp.tokens.is_empty() {
            (skip..lp.tokens.len())
                .map(|i| self.token(&lp, i, token_ids.get(i - skip).copied(), true))
                .collect()
        } else {
            Vec::new()
        };
        let finish = c
            .finish_reason
            .as_deref()
            .map(|r| finish_reason(self.server, r))
            .transpose()?;
        let mut event = Event {
            index: c.index,
            delta: text,
            token_ids,
            logprobs,
            prompt_logprobs,
            // Only the reason here; the counts come with the usage.
            finish: finish.map(|reason| Finish {
                reason,
                prompt_length: 0,
                response_length: 0,
            }),
            ..Default::default()
        };
        if self.prompt_only {
            // vLLM runs one step for `max_tokens: 0` and reports its token: not asked for.
            event.delta.clear();
            event.token_ids.clear();
            event.logprobs.clear();
            if event.finish.is_some() {
                event.finish = Some(Finish {
                    reason: FinishReason::Length,
                    prompt_length: 0,
                    response_length: 0,
                });
            }
        }
        Ok(event)
    }

    fn parse(&self, raw: Value) -> Result<TextCompletion> {
        if raw.get("error").is_some_and(|e| !e.is_null()) {
            let (message, code) =
                parse_error_value(&raw).unwrap_or_else(|| (raw.to_string(), None));
            return Err(BridgeError::InStream {
                server: self.server.to_owned(),
                code,
                message,
            });
        }
        let completion: TextCompletion = serde_json::from_value(raw)
            .map_err(|e| self.decode(format!("not a text completion ({e})")))?;
        if let Some(c) = completion.choices.iter().find(|c| c.index >= self.choices) {
            return Err(self.decode(format!(
                "the server sent choice index {}, but the request asked for {} choice(s)",
                c.index, self.choices
            )));
        }
        Ok(completion)
    }
}

/// The responses of a non-streamed text completion, in choice order.
pub fn responses(flavor: &Flavor, request: &ChatRequest, raw: Value) -> Result<Vec<Response>> {
    let ask = Ask::new(flavor, request);
    let completion = ask.parse(raw)?;
    let usage = completion.usage.unwrap_or_default();
    let n = completion.choices.len().max(1) as u32;
    let mut choices = completion.choices;
    choices.sort_by_key(|c| c.index);
    choices
        .into_iter()
        .map(|c| {
            let event = ask.event(c, true, completion.usage.map(|u| u.prompt_tokens))?;
            let mut r = Response::empty();
            r.absorb(&event);
            r.finish_reason = match event.finish {
                Some(f) => f.reason,
                None => FinishReason::Stop,
            };
            r.prompt_length = usage.prompt_tokens;
            // Usage covers all choices; with several, each gets an even share.
            r.response_length = if ask.prompt_only {
                0
            } else {
                usage.completion_tokens / n
            };
            if r.token_ids.as_ref().is_some_and(Vec::is_empty) && r.response_length > 0 {
                r.token_ids = None;
            }
            Ok(r)
        })
        .collect()
}

/// Assembles events from a text-completion stream; finish events are held back until the end,
/// then carry the usage counts (as [`crate::stream::Assembler`] does for chat).
pub struct TextAssembler {
    ask: Ask,
    /// Per choice: its finish reason, and generated tokens seen.
    seqs: BTreeMap<u32, (Option<FinishReason>, u32)>,
    usage: Option<Usage>,
}

impl TextAssembler {
    /// A fresh assembler for `request`.
    pub fn new(flavor: &Flavor, request: &ChatRequest) -> Self {
        Self {
            ask: Ask::new(flavor, request),
            seqs: BTreeMap::new(),
            usage: None,
        }
    }
}

impl crate::stream::Chunks for TextAssembler {
    fn path(&self) -> &'static str {
        PATH
    }

    fn chunk(&mut self, payload: &str) -> std::result::Result<Vec<Event>, BridgeError> {
        let raw: Value = serde_json::from_str(payload).map_err(|e| {
            self.ask.decode(format!(
                "bad stream chunk ({e}): {}",
                payload.chars().take(200).collect::<String>()
            ))
        })?;
        let chunk = self.ask.parse(raw)?;
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let mut out = Vec::new();
        for choice in chunk.choices {
            let first = !self.seqs.contains_key(&choice.index);
            let seq = self.seqs.entry(choice.index).or_default();
            let mut event = self.ask.event(choice, first, None)?;
            if let Some(f) = event.finish.take() {
                seq.0 = Some(f.reason);
            }
            seq.1 += event.token_ids.len() as u32;
            if !event.delta.is_empty()
                || !event.token_ids.is_empty()
                || !event.logprobs.is_empty()
                || !event.prompt_logprobs.is_empty()
            {
                out.push(event);
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<Event> {
        if self.seqs.is_empty() {
            self.seqs.insert(0, (None, 0));
        }
        let usage = self.usage.unwrap_or_default();
        let single = self.seqs.len() == 1;
        self.seqs
            .iter()
            .map(|(&index, &(reason, tokens))| Event {
                index,
                finish: Some(Finish {
                    reason: reason.unwrap_or(FinishReason::Stop),
                    prompt_length: usage.prompt_tokens,
                    response_length: if self.ask.prompt_only {
                        0
                    } else if single && self.usage.is_some() {
                        usage.completion_tokens
                    } else {
                        tokens
                    },
                }),
                ..Default::default()
            })
            .collect()
    }

    fn all_cut(&self) -> bool {
        false
    }

    fn complete(&self) -> bool {
        !self.seqs.is_empty() && self.seqs.values().all(|s| s.0.is_some())
    }
}

#[cfg(test)]
#[path = "completions_tests.rs"]
mod tests;
