//! What comes back: responses, the stream events they are made of, finish reasons, tool-call
//! fragments and logprobs, and the folding of events into responses.

use serde::{Deserialize, Serialize};

use super::{FunctionCall, ToolCall, function_type};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token, stop id or stop string.
    Stop,
    /// The token limit.
    Length,
    /// The model called a tool.
    ToolCalls,
    /// The caller cancelled.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI-style name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }

    /// Parses the OpenAI-style name; unknown names read as `Stop`.
    pub fn parse(name: &str) -> Self {
        match name {
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "cancelled" => FinishReason::Cancelled,
            _ => FinishReason::Stop,
        }
    }
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The generated text (stop strings removed).
    pub text: String,
    /// Generated tokens.
    pub response_length: u32,
    /// Prompt tokens.
    pub prompt_length: u32,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Generated token ids, where the backend knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// The model's reasoning (the `<think>` part), kept out of `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls the model made, with their ids; their text is not in `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Per-token log-probabilities, when the request asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The prompt's tokens, when a text completion asked for `echo` (see
    /// [`super::ChatRequest::echo`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<Vec<TokenLogprob>>,
}

impl Response {
    /// An empty response, to be filled by [`Response::absorb`].
    pub fn empty() -> Self {
        Self {
            text: String::new(),
            response_length: 0,
            prompt_length: 0,
            finish_reason: FinishReason::Stop,
            token_ids: Some(Vec::new()),
            reasoning_content: None,
            tool_calls: None,
            logprobs: None,
            prompt_logprobs: None,
        }
    }

    /// Adds one stream event of this sequence: text, reasoning, tool-call fragments (a fragment
    /// with a new `index` starts a call; `name` and `arguments` fragments are appended, as in
    /// OpenAI's streaming), logprobs and the finish.
    pub fn absorb(&mut self, event: &Event) {
        self.text.push_str(&event.delta);
        if let Some(ids) = self.token_ids.as_mut() {
            ids.extend_from_slice(&event.token_ids);
        }
        if !event.reasoning.is_empty() {
            self.reasoning_content
                .get_or_insert_with(String::new)
                .push_str(&event.reasoning);
        }
        for d in &event.tool_calls {
            let calls = self.tool_calls.get_or_insert_with(Vec::new);
            let i = d.index as usize;
            while calls.len() <= i {
                calls.push(ToolCall {
                    id: String::new(),
                    kind: function_type(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
            }
            let call = &mut calls[i];
            if let Some(id) = &d.id {
                call.id.clone_from(id);
            }
            if let Some(name) = &d.name {
                call.function.name.push_str(name);
            }
            call.function.arguments.push_str(&d.arguments);
        }
        if !event.logprobs.is_empty() {
            self.logprobs
                .get_or_insert_with(Vec::new)
                .extend(event.logprobs.iter().cloned());
        }
        if !event.prompt_logprobs.is_empty() {
            self.prompt_logprobs
                .get_or_insert_with(Vec::new)
                .extend(event.prompt_logprobs.iter().cloned());
        }
        if let Some(f) = &event.finish {
            self.finish_reason = f.reason;
            self.prompt_length = f.prompt_length;
            self.response_length = f.response_length;
        }
    }
}

/// Folds stream events into one [`Response`] per sequence index, refusing indexes at or past
/// `max_sequences` (a broken producer must not make the host allocate without bound).
#[derive(Debug)]
pub struct ResponseCollector {
    responses: Vec<Response>,
    max_sequences: usize,
}

impl ResponseCollector {
    /// A collector for at most `max_sequences` sequences.
    pub fn new(max_sequences: usize) -> Self {
        Self {
            responses: Vec::new(),
            max_sequences: max_sequences.max(1),
        }
    }

    /// Adds an event; an error names the bad index.
    pub fn push(&mut self, event: &Event) -> Result<(), String> {
        let i = event.index as usize;
        if i >= self.max_sequences {
            return Err(format!(
                "the backend sent an event for sequence {i}, but the request asked for {} sequence(s)",
                self.max_sequences
            ));
        }
        while self.responses.len() <= i {
            self.responses.push(Response::empty());
        }
        self.responses[i].absorb(event);
        Ok(())
    }

    /// The responses; `token_ids` is `None` where the backend sent none.
    pub fn finish(mut self) -> Vec<Response> {
        for r in &mut self.responses {
            if r.token_ids.as_ref().is_some_and(|ids| ids.is_empty()) && r.response_length > 0 {
                r.token_ids = None;
            }
        }
        self.responses
    }
}

/// One alternative token and its log-probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text (lossy UTF-8 of `bytes`).
    pub token: String,
    /// The token id, where the backend knows it (servers behind a bridge name tokens by text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u32>,
    /// The token's bytes (a token may be part of a UTF-8 character).
    #[serde(default)]
    pub bytes: Vec<u8>,
    /// Natural-log probability under the model's distribution before sampling transforms
    /// (temperature, top-k/p, penalties).
    pub logprob: f32,
}

/// The log-probability of one generated token, with the most likely alternatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The generated token's text (lossy UTF-8 of `bytes`).
    pub token: String,
    /// The token id, where the backend knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u32>,
    /// The token's bytes.
    #[serde(default)]
    pub bytes: Vec<u8>,
    /// Natural-log probability (see [`TopLogprob::logprob`]).
    pub logprob: f32,
    /// The most likely tokens at this position, best first (`top_logprobs` of the request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TopLogprob>,
}

/// A fragment of a tool call in a stream. The first fragment of a call carries its `id` and
/// `name`; later ones append to `arguments` (a JSON text once joined).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of this sequence (0, 1, ...).
    #[serde(default)]
    pub index: u32,
    /// The call id, on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function name (or a part of it), on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Arguments text to append.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arguments: String,
}

/// A stream event in plain Rust form (the FFI form is [`crate::StreamEvent`]).
///
/// `delta` is the answer text only: reasoning and tool calls, which a backend reads out of the
/// model's output in the model's own format, travel in their own fields (across the FFI in the
/// event's `extra` JSON, which older hosts ignore). Its serde form is used where events cross a
/// process boundary (the host's backend worker).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// Sequence index (for `num_return_sequences > 1`).
    pub index: u32,
    /// New answer text.
    pub delta: String,
    /// Token ids behind this event.
    pub token_ids: Vec<u32>,
    /// New reasoning text.
    pub reasoning: String,
    /// Tool-call fragments.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Log-probabilities of the tokens behind this event, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// The prompt's tokens (a text completion with `echo`), on the sequence's first event.
    pub prompt_logprobs: Vec<TokenLogprob>,
    /// Set on the last event of a sequence.
    pub finish: Option<Finish>,
}

/// The typed additions of an [`Event`], as the JSON of [`crate::StreamEvent::extra`].
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct EventExtra {
    #[serde(skip_serializing_if = "String::is_empty")]
    reasoning: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallDelta>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logprobs: Vec<TokenLogprob>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prompt_logprobs: Vec<TokenLogprob>,
}

/// The end of one streamed sequence, in plain Rust form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// Why it ended.
    pub reason: FinishReason,
    /// Prompt tokens.
    pub prompt_length: u32,
    /// Generated tokens.
    pub response_length: u32,
}

impl From<Event> for crate::StreamEvent {
    fn from(e: Event) -> Self {
        use abi_stable::std_types::{ROption, RString, RVec};
        let extra = if e.reasoning.is_empty()
            && e.tool_calls.is_empty()
            && e.logprobs.is_empty()
            && e.prompt_logprobs.is_empty()
        {
            RString::new()
        } else {
            let extra = EventExtra {
                reasoning: e.reasoning,
                tool_calls: e.tool_calls,
                logprobs: e.logprobs,
                prompt_logprobs: e.prompt_logprobs,
            };
            RString::from(serde_json::to_string(&extra).unwrap_or_default())
        };
        crate::StreamEvent {
            index: e.index,
            delta: RString::from(e.delta),
            token_ids: RVec::from(e.token_ids),
            finish: match e.finish {
                Some(f) => ROption::RSome(crate::StreamFinish {
                    reason: RString::from(f.reason.as_str()),
                    prompt_length: u64::from(f.prompt_length),
                    response_length: u64::from(f.response_length),
                }),
                None => ROption::RNone,
            },
            extra,
        }
    }
}

impl From<crate::StreamEvent> for Event {
    fn from(e: crate::StreamEvent) -> Self {
        // A malformed or unknown `extra` is ignored, as every other unknown field is.
        let extra: EventExtra = if e.extra.is_empty() {
            EventExtra::default()
        } else {
            serde_json::from_str(e.extra.as_str()).unwrap_or_default()
        };
        Event {
            index: e.index,
            delta: e.delta.into_string(),
            token_ids: e.token_ids.into_vec(),
            reasoning: extra.reasoning,
            tool_calls: extra.tool_calls,
            logprobs: extra.logprobs,
            prompt_logprobs: extra.prompt_logprobs,
            finish: e.finish.into_option().map(|f| Finish {
                reason: FinishReason::parse(f.reason.as_str()),
                prompt_length: u32::try_from(f.prompt_length).unwrap_or(u32::MAX),
                response_length: u32::try_from(f.response_length).unwrap_or(u32::MAX),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ChatRequest;
    use super::*;

    fn typed_event() -> Event {
        Event {
            index: 0,
            delta: "It is".into(),
            token_ids: vec![1, 2],
            reasoning: "look it up".into(),
            tool_calls: vec![ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get_weather".into()),
                arguments: "{\"city\":".into(),
            }],
            logprobs: vec![TokenLogprob {
                token: "It".into(),
                token_id: Some(1),
                bytes: b"It".to_vec(),
                logprob: -0.5,
                top_logprobs: vec![],
            }],
            prompt_logprobs: vec![TokenLogprob {
                token: "Q".into(),
                token_id: Some(7),
                bytes: b"Q".to_vec(),
                logprob: 0.0,
                top_logprobs: vec![],
            }],
            finish: None,
        }
    }

    #[test]
    fn typed_fields_cross_the_ffi_event_and_back() {
        let e = typed_event();
        let ffi = crate::StreamEvent::from(e.clone());
        assert!(!ffi.extra.is_empty());
        assert_eq!(Event::from(ffi), e);
        // A plain text event sends no extra JSON (the per-token hot path stays cheap).
        let plain = Event {
            delta: "x".into(),
            ..Default::default()
        };
        assert!(crate::StreamEvent::from(plain).extra.is_empty());
    }

    #[test]
    fn the_collector_joins_fragments_and_refuses_wild_indexes() {
        let mut c = ResponseCollector::new(2);
        c.push(&typed_event()).unwrap();
        c.push(&Event {
            tool_calls: vec![ToolCallDelta {
                index: 0,
                arguments: "\"Paris\"}".into(),
                ..Default::default()
            }],
            finish: Some(Finish {
                reason: FinishReason::ToolCalls,
                prompt_length: 3,
                response_length: 4,
            }),
            ..Default::default()
        })
        .unwrap();
        let e = c
            .push(&Event {
                index: 4_000_000_000,
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.contains("4000000000"), "{e}");
        let r = c.finish();
        assert_eq!(r.len(), 1);
        let call = &r[0].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id, "call_1");
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, "{\"city\":\"Paris\"}");
        assert_eq!(r[0].reasoning_content.as_deref(), Some("look it up"));
        assert_eq!(r[0].finish_reason, FinishReason::ToolCalls);
        assert_eq!(r[0].logprobs.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn older_peers_json_still_decodes() {
        let r: Response = serde_json::from_str(
            r#"{"text":"hi","response_length":1,"prompt_length":2,"finish_reason":"stop"}"#,
        )
        .unwrap();
        assert!(r.tool_calls.is_none() && r.logprobs.is_none());
        let q: ChatRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(!q.logprobs && q.constraint.is_none());
        // Fields left at their defaults are not sent to older plugins.
        let json = serde_json::to_string(&q).unwrap();
        assert!(
            !json.contains("logprobs") && !json.contains("constraint"),
            "{json}"
        );
    }
}
