//! Turning a server's SSE chat stream into Switchyard events, and the async stream into the
//! blocking pull iterator the plugin API wants.
//!
//! A task on the bridge's runtime reads the body, decodes chunks and sends events through a
//! bounded channel; the iterator waits on the channel while watching the [`CancelToken`].
//! Dropping the iterator (or cancelling) aborts the task, which drops the response and closes the
//! connection, so the server sees the client go away and stops generating.
//!
//! Servers differ in where `finish_reason` and the usage come (vLLM: with the last delta, then a
//! usage chunk; SGLang: a separate empty finish chunk, then usage; KTransformers legacy: usage,
//! then a finish chunk that may repeat), so finish events are held back until `[DONE]` (or the
//! end of the body) and then carry the usage counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Value;
use switchyard_plugin::{CancelToken, EngineError, Event, Finish, FinishReason};
use tokio::sync::{mpsc, watch};

use crate::client::{Client, Runtime};
use crate::error::{BridgeError, parse_error_value};
use crate::options::ReasoningMode;
use crate::protocol::{Completion, Usage, finish_reason, logprobs, tool_call_delta};
use crate::sse::SseDecoder;

type Item = Result<Event, EngineError>;

#[derive(Default)]
struct Seq {
    finish: Option<FinishReason>,
    /// Cut at the token limit the server ignored.
    cut: bool,
    chunks: u32,
    /// Tool-call fragments seen (then the sequence ended in tool calls).
    tool_calls: u32,
}

/// A choice index the request did not ask for (a broken or hostile server): refused before
/// anything is sized by it.
pub fn wild_index(server: &str, index: u32, choices: u32) -> BridgeError {
    BridgeError::Decode {
        server: server.to_owned(),
        path: "/v1/chat/completions".into(),
        cause: format!(
            "the server sent choice index {index}, but the request asked for {choices} choice(s)"
        ),
    }
}

/// Assembles events from decoded chunks.
pub struct Assembler {
    server: &'static str,
    reasoning: ReasoningMode,
    seqs: BTreeMap<u32, Seq>,
    usage: Option<Usage>,
    /// The request's `max_new_tokens`: a server that sends more chunks than that (each holds
    /// at least one token) ignored the limit, and the sequence is cut there.
    max_chunks: Option<u32>,
    /// The request's `n`: a chunk for a choice index at or beyond it is an error.
    choices: u32,
}

impl Assembler {
    /// A fresh assembler for a request with `max_new_tokens` = `max_chunks` and `n` = `choices`.
    pub fn new(
        server: &'static str,
        reasoning: ReasoningMode,
        max_chunks: Option<u32>,
        choices: u32,
    ) -> Self {
        Self {
            server,
            reasoning,
            choices: choices.max(1),
            seqs: BTreeMap::new(),
            usage: None,
            max_chunks,
        }
    }

    /// Every sequence was cut at the token limit: the rest of the stream is not needed.
    pub fn all_cut(&self) -> bool {
        !self.seqs.is_empty() && self.seqs.values().all(|s| s.cut)
    }

    /// Handles one chunk payload; returns the events it completes.
    pub fn chunk(&mut self, payload: &str) -> Result<Vec<Event>, BridgeError> {
        let raw: Value = serde_json::from_str(payload).map_err(|e| BridgeError::Decode {
            server: self.server.to_owned(),
            path: "/v1/chat/completions".into(),
            cause: format!(
                "bad stream chunk ({e}): {}",
                payload.chars().take(200).collect::<String>()
            ),
        })?;
        if raw.get("error").is_some_and(|e| !e.is_null()) {
            let (message, code) =
                parse_error_value(&raw).unwrap_or_else(|| (raw.to_string(), None));
            return Err(BridgeError::InStream {
                server: self.server.to_owned(),
                code,
                message,
            });
        }
        let chunk: Completion = serde_json::from_value(raw).map_err(|e| BridgeError::Decode {
            server: self.server.to_owned(),
            path: "/v1/chat/completions".into(),
            cause: format!(
                "a stream chunk is not a chat completion chunk ({e}): {}",
                payload.chars().take(200).collect::<String>()
            ),
        })?;
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let mut out = Vec::new();
        for choice in chunk.choices {
            if choice.index >= self.choices {
                return Err(wild_index(self.server, choice.index, self.choices));
            }
            let seq = self.seqs.entry(choice.index).or_default();
            if seq.cut {
                continue;
            }
            if self.max_chunks.is_some_and(|m| seq.chunks >= m)
                && choice.delta.as_ref().is_some_and(|d| {
                    d.content.as_deref().is_some_and(|c| !c.is_empty())
                        || d.reasoning_text().is_some()
                })
            {
                tracing::warn!(
                    server = self.server,
                    index = choice.index,
                    "the server sent more than max_tokens; the sequence is cut there"
                );
                seq.cut = true;
                seq.finish = Some(FinishReason::Length);
                continue;
            }
            let mut event = Event {
                index: choice.index,
                ..Default::default()
            };
            if let Some(d) = &choice.delta {
                if let Some(r) = d.reasoning_text()
                    && self.reasoning == ReasoningMode::Keep
                {
                    event.reasoning.push_str(r);
                }
                if let Some(c) = d.content.as_deref() {
                    event.delta.push_str(c);
                }
                event
                    .tool_calls
                    .extend(d.tool_calls.iter().flatten().map(tool_call_delta));
                seq.tool_calls += event.tool_calls.len() as u32;
            }
            event.logprobs = logprobs(choice.logprobs.as_ref());
            if !event.delta.is_empty() || !event.reasoning.is_empty() {
                seq.chunks += 1;
            }
            if let Some(reason) = choice.finish_reason.as_deref().filter(|r| !r.is_empty()) {
                if let Some(m) = choice.matched_stop.as_ref().or(choice.stop_reason.as_ref())
                    && !m.is_null()
                {
                    tracing::debug!(
                        server = self.server,
                        index = choice.index,
                        "matched stop: {m}"
                    );
                }
                let reason = finish_reason(self.server, reason)?;
                // A repeated finish chunk (KTransformers legacy) keeps the first reason.
                seq.finish.get_or_insert(reason);
            }
            if !event.delta.is_empty()
                || !event.reasoning.is_empty()
                || !event.tool_calls.is_empty()
                || !event.logprobs.is_empty()
            {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// The finish events, once the stream is complete.
    pub fn finish(&mut self) -> Vec<Event> {
        if self.seqs.is_empty() {
            self.seqs.insert(0, Seq::default());
        }
        let usage = self.usage.unwrap_or_default();
        let single = self.seqs.len() == 1;
        let mut out = Vec::new();
        for (&index, seq) in &mut self.seqs {
            let mut reason = seq.finish.unwrap_or(FinishReason::Stop);
            if seq.tool_calls > 0 && reason == FinishReason::Stop {
                reason = FinishReason::ToolCalls;
            }
            let response_length = if single && self.usage.is_some() {
                usage.completion_tokens
            } else {
                seq.chunks
            };
            out.push(Event {
                index,
                finish: Some(Finish {
                    reason,
                    prompt_length: usage.prompt_tokens,
                    response_length,
                }),
                ..Default::default()
            });
        }
        out
    }
}

/// What turns a server's SSE payloads into events: [`Assembler`] for chat chunks, and
/// [`crate::completions::TextAssembler`] for text-completion chunks.
pub trait Chunks: Send + 'static {
    /// The path the stream comes from, for errors.
    fn path(&self) -> &'static str;
    /// Handles one chunk payload; returns the events it completes.
    fn chunk(&mut self, payload: &str) -> Result<Vec<Event>, BridgeError>;
    /// The finish events, once the stream is complete.
    fn finish(&mut self) -> Vec<Event>;
    /// Every sequence was cut: the rest of the stream is not needed.
    fn all_cut(&self) -> bool;
    /// Every sequence said how it finished (a body that ends without `[DONE]` is complete).
    fn complete(&self) -> bool;
}

impl Chunks for Assembler {
    fn path(&self) -> &'static str {
        "/v1/chat/completions"
    }
    fn chunk(&mut self, payload: &str) -> Result<Vec<Event>, BridgeError> {
        Assembler::chunk(self, payload)
    }
    fn finish(&mut self) -> Vec<Event> {
        Assembler::finish(self)
    }
    fn all_cut(&self) -> bool {
        Assembler::all_cut(self)
    }
    fn complete(&self) -> bool {
        !self.seqs.is_empty() && self.seqs.values().all(|s| s.finish.is_some())
    }
}

/// Aborts the producer task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The blocking side of a stream.
pub struct BlockingEvents {
    rx: mpsc::Receiver<Item>,
    rt: Arc<Runtime>,
    cancel: watch::Receiver<bool>,
    task: AbortOnDrop,
    done: bool,
}

/// A receiver the token wakes when it is cancelled (no polling).
fn cancel_signal(cancel: &CancelToken) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(cancel.is_cancelled());
    cancel.on_cancel(move || {
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once the signal says cancelled (or its token is gone).
async fn cancelled(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|c| *c).await;
}

impl Iterator for BlockingEvents {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        let (rx, cancel) = (&mut self.rx, &mut self.cancel);
        let next = self.rt.block_on(async {
            tokio::select! {
                item = rx.recv() => Some(item),
                () = cancelled(cancel) => None,
            }
        });
        match next {
            None => {
                self.done = true;
                self.task.0.abort();
                Some(Err(EngineError::cancelled()))
            }
            Some(None) => {
                self.done = true;
                None
            }
            Some(Some(Err(e))) => {
                self.done = true;
                Some(Err(e))
            }
            Some(Some(Ok(e))) => Some(Ok(e)),
        }
    }
}

/// Starts reading `resp` as a stream of `assembler`'s chunks on the runtime and returns the
/// blocking iterator.
pub fn spawn<A: Chunks>(
    rt: Arc<Runtime>,
    client: Client,
    resp: reqwest::Response,
    assembler: A,
    cancel: CancelToken,
) -> BlockingEvents {
    let (tx, rx) = mpsc::channel(32);
    let signal = cancel_signal(&cancel);
    let mut task_signal = signal.clone();
    let task = rt.spawn(async move {
        tokio::select! {
            () = produce(client, resp, assembler, &tx) => {}
            () = cancelled(&mut task_signal) => {
                tracing::debug!("stream cancelled; closing the connection");
            }
        }
    });
    BlockingEvents {
        rx,
        rt,
        cancel: signal,
        task: AbortOnDrop(task),
        done: false,
    }
}

async fn produce<A: Chunks>(
    client: Client,
    resp: reqwest::Response,
    mut assembler: A,
    tx: &mpsc::Sender<Item>,
) {
    let path = assembler.path();
    let mut body = resp.bytes_stream();
    let mut sse = SseDecoder::new();
    let mut seen_any = false;
    loop {
        let (payloads, eof) = match body.next().await {
            Some(Ok(bytes)) => match sse.push(&bytes) {
                Ok(p) => (p, false),
                Err(e) => {
                    let _ = tx.send(Err(client.decode_error(path, &e).into())).await;
                    return;
                }
            },
            Some(Err(e)) => {
                let err = client.body_error(path, &e);
                let err = BridgeError::Connection {
                    server: client.server().to_owned(),
                    url: format!("{}{path}", client.root()),
                    cause: format!(
                        "the stream broke off{}: {err}",
                        if seen_any { " mid-generation" } else { "" }
                    ),
                };
                let _ = tx.send(Err(err.into())).await;
                return;
            }
            None => match sse.finish() {
                Ok(p) => (p, true),
                Err(e) => {
                    let _ = tx.send(Err(client.decode_error(path, &e).into())).await;
                    return;
                }
            },
        };
        for payload in payloads {
            if payload.trim() == "[DONE]" || assembler.all_cut() {
                for e in assembler.finish() {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                return;
            }
            match assembler.chunk(&payload) {
                Ok(events) => {
                    for e in events {
                        seen_any = true;
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    if assembler.all_cut() {
                        // Dropping the response closes the connection: the server stops.
                        for e in assembler.finish() {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            }
        }
        if eof {
            // No `[DONE]`: complete only if every sequence said how it finished.
            let item = if assembler.complete() {
                for e in assembler.finish() {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                return;
            } else {
                Err(BridgeError::Connection {
                    server: client.server().to_owned(),
                    url: format!("{}{path}", client.root()),
                    cause: "the server closed the stream before it finished (no `[DONE]`); it may have crashed or been stopped".into(),
                })
            };
            let _ = tx.send(item.map_err(Into::into)).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> Vec<Event> {
        let mut a = Assembler::new("t", ReasoningMode::Keep, None, 1);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(a.chunk(c).unwrap());
        }
        out.extend(a.finish());
        out
    }

    #[test]
    fn sglang_separate_finish_chunk_then_usage() {
        let ev = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi!"},"finish_reason":null,"matched_stop":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null},"finish_reason":"stop","matched_stop":151645}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":21,"total_tokens":23,"completion_tokens":2}}"#,
        ]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].delta, "Hi!");
        let f = ev[1].finish.as_ref().unwrap();
        assert_eq!((f.prompt_length, f.response_length), (21, 2));
    }

    #[test]
    fn reasoning_and_tool_calls_stay_typed_and_errors_surface() {
        let ev = run(&[
            r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":" ok"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Yes"},"finish_reason":"length"}]}"#,
        ]);
        let text: String = ev.iter().map(|e| e.delta.as_str()).collect();
        let reasoning: String = ev.iter().map(|e| e.reasoning.as_str()).collect();
        assert_eq!((text.as_str(), reasoning.as_str()), ("Yes", "hmm ok"));
        assert_eq!(
            ev.last().unwrap().finish.as_ref().unwrap().reason,
            FinishReason::Length
        );
        let mut a = Assembler::new("t", ReasoningMode::Keep, None, 1);
        let e = a
            .chunk(r#"{"error":{"message":"boom","code":500}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("boom"));
        let e = Assembler::new("t", ReasoningMode::Keep, None, 1)
            .chunk(r#"{"choices":"nope"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("not a chat completion chunk"), "{e}");
        let mut a = Assembler::new("t", ReasoningMode::Keep, Some(2), 1);
        let mut text = String::new();
        for w in ["a", "b", "c", "d"] {
            let chunk = format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"{w}"}}}}]}}"#);
            text.extend(a.chunk(&chunk).unwrap().iter().map(|e| e.delta.clone()));
        }
        assert_eq!(text, "ab");
        assert!(a.all_cut());
        assert_eq!(
            a.finish()[0].finish.as_ref().unwrap().reason,
            FinishReason::Length
        );

        let ev = run(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
        ]);
        let mut c = switchyard_plugin::ResponseCollector::new(1);
        for e in &ev {
            c.push(e).unwrap();
        }
        let r = c.finish().remove(0);
        let call = &r.tool_calls.unwrap()[0];
        assert_eq!(call.id, "call_9");
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, "{\"city\": \"Paris\"}");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    }
}
