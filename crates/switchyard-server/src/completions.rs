//! `POST /v1/completions`: OpenAI's legacy text completions, as vLLM serves them — a raw
//! prompt (text, several texts, token ids or several lists of them) with no chat template,
//! `echo` of the prompt with its token log-probabilities (what lm-evaluation-harness's
//! loglikelihood tasks read), `logprobs` as an integer top-N, and streaming.
//!
//! Each prompt becomes one host request (`ChatRequest::prompt`), validated like any other;
//! choices are numbered prompt by prompt, `n` each. Log-probabilities come in OpenAI's legacy
//! shape (`tokens`, `token_logprobs`, `top_logprobs` as token → logprob maps, `text_offset`
//! into the choice's `text`); the first prompt token has no context, so its values are null.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard::{ChatRequest, Prompt, TokenLogprob};

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::{body_bytes, collect_events, failed, model_for, now_secs, parse_body};
use crate::protocol::{Sampling, StreamOptions};

/// Most prompts in one request.
const MAX_PROMPTS: usize = 64;

/// OpenAI's (and vLLM's) `max_tokens` when a completion request leaves it out.
const DEFAULT_MAX_TOKENS: u32 = 16;

/// `POST /v1/completions` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompletionRequest {
    /// The model name.
    pub model: String,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub prompt: Value,
    /// Sampling settings, shared with chat.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Return the prompt in front of the completion (with its logprobs when asked).
    pub echo: bool,
    /// Log-probabilities of each token with this many alternatives (0 to 20).
    pub logprobs: Option<u32>,
    /// Stream with server-sent events.
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Text after the completion (insertion): not supported.
    pub suffix: Option<String>,
    /// Server-side best-of sampling: not supported beyond `n`.
    pub best_of: Option<u32>,
    /// Per-token logit offsets: not supported.
    pub logit_bias: Option<Map<String, Value>>,
    /// Ollama's: how long the model stays loaded after this request.
    pub keep_alive: Option<Value>,
}

/// The prompts of a request: `prompt` in any of its four forms.
fn prompts(v: &Value) -> Result<Vec<Prompt>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of token ids",
            Some("prompt"),
        )
    };
    let ids = |v: &[Value]| -> Result<Vec<u32>, ApiError> {
        v.iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(bad)
            })
            .collect()
    };
    let out = match v {
        Value::String(s) => vec![Prompt::Text(s.clone())],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|s| Prompt::Text(s.as_str().unwrap_or_default().to_owned()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![Prompt::Tokens(ids(items)?)]
        }
        Value::Array(items) => items
            .iter()
            .map(|p| {
                p.as_array()
                    .map(|a| ids(a))
                    .ok_or_else(bad)?
                    .map(Prompt::Tokens)
            })
            .collect::<Result<_, _>>()?,
        Value::Null => {
            return Err(ApiError::invalid(
                "`prompt` is missing; send the text to complete",
                Some("prompt"),
            ));
        }
        _ => return Err(bad()),
    };
    if out.is_empty() || out.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            format!(
                "`prompt` holds {} prompts; send 1 to {MAX_PROMPTS}",
                out.len()
            ),
            Some("prompt"),
        ));
    }
    Ok(out)
}

impl CompletionRequest {
    /// One host request per prompt; fields no backend here can honour are refused by name.
    fn requests(self) -> Result<(Vec<ChatRequest>, Vec<Prompt>), ApiError> {
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "`suffix` (text insertion) is not supported; leave it out",
                Some("suffix"),
            ));
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid(
                "`logit_bias` is not supported; leave it out",
                Some("logit_bias"),
            ));
        }
        let n = self.sampling.n.unwrap_or(1);
        if self.best_of.is_some_and(|b| b != n && b != 1) {
            return Err(ApiError::invalid(
                "`best_of` other than `n` is not supported; use `n` and pick on the client",
                Some("best_of"),
            ));
        }
        let prompts = prompts(&self.prompt)?;
        let max_new = Some(self.sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
        let generation = self.sampling.generation(max_new);
        let requests = prompts
            .iter()
            .map(|p| ChatRequest {
                prompt: Some(p.clone()),
                echo: self.echo,
                logprobs: self.logprobs.is_some(),
                top_logprobs: self.logprobs.unwrap_or(0),
                generation: generation.clone(),
                ..Default::default()
            })
            .collect();
        Ok((requests, prompts))
    }
}

/// OpenAI's legacy `logprobs` object for `tokens`, whose text starts at `offset` in the
/// choice's text; `context_free` tokens (the first prompt token) get nulls.
fn legacy_logprobs(tokens: &[(&TokenLogprob, bool)], offset: usize) -> Value {
    let mut at = offset;
    let mut text_offset = Vec::with_capacity(tokens.len());
    for (t, _) in tokens {
        text_offset.push(at);
        at += t.token.chars().count();
    }
    json!({
        "tokens": tokens.iter().map(|(t, _)| t.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|(t, free)| if *free { Value::Null } else { json!(t.logprob) }).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|(t, free)| if *free { Value::Null } else {
            Value::Object(t.top_logprobs.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect())
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// The echoed prompt's text: the string as sent, or the tokens' bytes for token ids.
fn echo_text(prompt: &Prompt, tokens: &[TokenLogprob]) -> String {
    match prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Tokens(_) => String::from_utf8_lossy(
            &tokens
                .iter()
                .flat_map(|t| t.bytes.clone())
                .collect::<Vec<u8>>(),
        )
        .into_owned(),
    }
}

/// One choice of a whole completion.
fn choice_json(
    index: usize,
    prompt: &Prompt,
    r: &switchyard::Response,
    echo: bool,
    logprobs: bool,
) -> Value {
    let shown: Vec<TokenLogprob> = if echo {
        r.prompt_logprobs.clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut text = if echo {
        echo_text(prompt, &shown)
    } else {
        String::new()
    };
    text.push_str(&r.text);
    let lp = logprobs.then(|| {
        let tokens: Vec<(&TokenLogprob, bool)> = shown
            .iter()
            .enumerate()
            .map(|(i, t)| (t, i == 0))
            .chain(r.logprobs.iter().flatten().map(|t| (t, false)))
            .collect();
        legacy_logprobs(&tokens, 0)
    });
    json!({"index": index, "text": text, "logprobs": lp, "finish_reason": r.finish_reason.as_str()})
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state
        .metrics
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let body = body_bytes(&state, body)?;
    let req: CompletionRequest = parse_body(&body).map_err(|e| failed(&state, e))?;
    let (name, model) = model_for(&state, &req.model, req.keep_alive.as_ref())
        .await
        .map_err(|e| failed(&state, e))?;
    let (stream, include_usage, echo, logprobs) = (
        req.stream,
        req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        req.echo,
        req.logprobs.is_some(),
    );
    let (requests, prompts) = req.requests().map_err(|e| failed(&state, e))?;
    let n = requests[0].generation.num_return_sequences.unwrap_or(1) as usize;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if !stream {
        let (mut choices, mut prompt_tokens, mut completion_tokens) = (Vec::new(), 0, 0);
        for (p, (request, prompt)) in requests.into_iter().zip(&prompts).enumerate() {
            let events = model
                .astream_chat(request)
                .await
                .map_err(|e| failed(&state, e))?;
            let responses = collect_events(events, n)
                .await
                .map_err(|e| failed(&state, e))?;
            prompt_tokens += responses.first().map_or(0, |r| r.prompt_length);
            for (j, r) in responses.iter().enumerate() {
                completion_tokens += r.response_length;
                choices.push(choice_json(p * n + j, prompt, r, echo, logprobs));
            }
        }
        state
            .metrics
            .count_tokens(&name, prompt_tokens, completion_tokens);
        state.metrics.observe_latency(started.elapsed());
        return Ok(Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }))
        .into_response());
    }
    // Streamed: the first prompt starts here, so its errors are HTTP statuses; the others
    // start when the one before has ended.
    let mut requests = requests.into_iter();
    let first = requests.next().expect("at least one prompt");
    let events = model
        .astream_chat(first)
        .await
        .map_err(|e| failed(&state, e))?;
    let ctx = Chunks {
        state,
        model_name: name,
        id,
        created,
        n,
        echo,
        logprobs,
        include_usage,
        started,
        prompt_tokens: 0,
        completion_tokens: 0,
        offsets: vec![0; n],
    };
    let queue: Vec<(ChatRequest, Prompt)> = requests.zip(prompts.iter().skip(1).cloned()).collect();
    let body = futures::stream::unfold(
        Some((
            ctx,
            model,
            0usize,
            prompts[0].clone(),
            events,
            queue.into_iter(),
        )),
        |state| async move {
            let (mut ctx, model, p, prompt, mut events, mut queue) = state?;
            match events.next().await {
                Some(Ok(e)) => {
                    let out = ctx.event(p, &prompt, e);
                    Some((out, Some((ctx, model, p, prompt, events, queue))))
                }
                Some(Err(e)) => Some((ctx.failure(e.into()), None)),
                None => match queue.next() {
                    Some((request, next)) => match model.astream_chat(request).await {
                        Ok(events) => {
                            ctx.offsets.iter_mut().for_each(|o| *o = 0);
                            Some((Vec::new(), Some((ctx, model, p + 1, next, events, queue))))
                        }
                        Err(e) => Some((ctx.failure(e.into()), None)),
                    },
                    None => Some((ctx.end(), None)),
                },
            }
        },
    );
    let body = body
        .flat_map(futures::stream::iter)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(body).into_response())
}

/// The state of one streamed completion.
struct Chunks {
    state: Arc<AppState>,
    model_name: String,
    id: String,
    created: u64,
    n: usize,
    echo: bool,
    logprobs: bool,
    include_usage: bool,
    started: Instant,
    prompt_tokens: u32,
    completion_tokens: u32,
    /// Characters sent so far per choice of the current prompt (for `text_offset`).
    offsets: Vec<usize>,
}

impl Chunks {
    fn chunk(&self, choice: Value) -> SseEvent {
        SseEvent::default().data(
            json!({"id": self.id, "object": "text_completion", "created": self.created,
                   "model": self.model_name, "choices": [choice]})
            .to_string(),
        )
    }

    fn event(&mut self, p: usize, prompt: &Prompt, e: switchyard::Event) -> Vec<SseEvent> {
        let j = e.index as usize;
        if j >= self.n {
            return self.failure(ApiError::from(switchyard::Error::Engine(
                switchyard::EngineError::backend(format!(
                    "the backend sent an event for choice {j}, but the request asked for {}",
                    self.n
                )),
            )));
        }
        let mut text = String::new();
        let mut tokens: Vec<(&TokenLogprob, bool)> = Vec::new();
        if self.echo && !e.prompt_logprobs.is_empty() {
            text = echo_text(prompt, &e.prompt_logprobs);
            tokens.extend(
                e.prompt_logprobs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t, i == 0)),
            );
        }
        text.push_str(&e.delta);
        tokens.extend(e.logprobs.iter().map(|t| (t, false)));
        let lp = (self.logprobs && !tokens.is_empty())
            .then(|| legacy_logprobs(&tokens, self.offsets[j]));
        self.offsets[j] += text.chars().count();
        let finish = e.finish.as_ref().map(|f| f.reason.as_str());
        if let Some(f) = &e.finish {
            if j == 0 {
                self.prompt_tokens += f.prompt_length;
            }
            self.completion_tokens += f.response_length;
        }
        if text.is_empty() && finish.is_none() && lp.is_none() {
            return Vec::new();
        }
        vec![self.chunk(
            json!({"index": p * self.n + j, "text": text, "logprobs": lp, "finish_reason": finish}),
        )]
    }

    fn failure(&mut self, e: ApiError) -> Vec<SseEvent> {
        let e = failed(&self.state, e);
        vec![
            SseEvent::default().data(e.body().to_string()),
            SseEvent::default().data("[DONE]"),
        ]
    }

    fn end(&mut self) -> Vec<SseEvent> {
        let (p, c) = (self.prompt_tokens, self.completion_tokens);
        self.state.metrics.count_tokens(&self.model_name, p, c);
        self.state.metrics.observe_latency(self.started.elapsed());
        let mut out = Vec::new();
        if self.include_usage {
            out.push(SseEvent::default().data(
                json!({"id": self.id, "object": "text_completion", "created": self.created,
                       "model": self.model_name, "choices": [],
                       "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
                .to_string(),
            ));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_prompt_forms_and_their_errors() {
        assert_eq!(prompts(&json!("hi")).unwrap(), [Prompt::Text("hi".into())]);
        assert_eq!(prompts(&json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(
            prompts(&json!([1, 2, 3])).unwrap(),
            [Prompt::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(
            prompts(&json!([[1], [2, 3]])).unwrap(),
            [Prompt::Tokens(vec![1]), Prompt::Tokens(vec![2, 3])]
        );
        for bad in [
            json!(null),
            json!([]),
            json!([-1]),
            json!(["a", 1]),
            json!({"a": 1}),
            json!([[1], "a"]),
        ] {
            let e = prompts(&bad).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("prompt"), "{bad}");
        }
        let many: Vec<&str> = vec!["x"; MAX_PROMPTS + 1];
        assert!(prompts(&json!(many)).is_err());
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        for (field, value) in [
            ("suffix", json!("end")),
            ("logit_bias", json!({"50256": -100})),
            ("best_of", json!(3)),
        ] {
            let mut body = json!({"model": "m", "prompt": "hi"});
            body[field] = value;
            let req: CompletionRequest = serde_json::from_value(body).unwrap();
            let e = req.requests().unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field));
        }
        let req: CompletionRequest = serde_json::from_value(
            json!({"model": "m", "prompt": "hi", "echo": true, "logprobs": 3}),
        )
        .unwrap();
        let (r, _) = req.requests().unwrap();
        assert!(r[0].echo && r[0].logprobs && r[0].top_logprobs == 3);
        assert_eq!(r[0].generation.max_new_tokens, Some(DEFAULT_MAX_TOKENS));
    }
}
