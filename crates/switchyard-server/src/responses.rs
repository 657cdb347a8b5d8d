//! Switchyard's typed responses and stream events in OpenAI's chat-completions shape.
//!
//! The backend has already read reasoning and tool calls out of the model's output (or the
//! server behind a bridge has), so this is a mapping only: `reasoning_content`, `tool_calls`
//! with their ids, and `logprobs`. When a client did not ask for reasoning
//! (`include_reasoning`), it is put back in front of the answer as `<think>…</think>`, the text
//! the model wrote.

use serde_json::{Value, json};
use switchyard::{Response, TokenLogprob, ToolCall, ToolCallDelta};

/// OpenAI's `logprobs` object for some tokens.
pub fn logprobs_json(tokens: &[TokenLogprob]) -> Value {
    json!({"content": tokens.iter().map(|t| json!({
        "token": t.token, "logprob": t.logprob, "bytes": t.bytes,
        "top_logprobs": t.top_logprobs.iter().map(|a| json!({
            "token": a.token, "logprob": a.logprob, "bytes": a.bytes,
        })).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()})
}

fn tool_call_json(index: usize, call: &ToolCall) -> Value {
    json!({
        "index": index, "id": call.id, "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    })
}

/// A tool-call fragment in a stream chunk.
pub fn tool_call_delta_json(d: &ToolCallDelta) -> Value {
    let mut v = json!({"index": d.index});
    if let Some(id) = &d.id {
        v["id"] = json!(id);
        v["type"] = json!("function");
    }
    let mut f = serde_json::Map::new();
    if let Some(name) = &d.name {
        f.insert("name".into(), json!(name));
    }
    f.insert("arguments".into(), json!(d.arguments));
    v["function"] = Value::Object(f);
    v
}

/// One choice of a whole (non-streamed) completion.
pub fn choice_json(index: usize, r: &Response, include_reasoning: bool) -> Value {
    let calls = r.tool_calls.as_deref().unwrap_or_default();
    // Whitespace that only separated the answer from the reasoning or the calls is dropped.
    let mut content = if calls.is_empty() {
        r.text.clone()
    } else {
        r.text.trim().to_owned()
    };
    let mut m = json!({"role": "assistant"});
    match &r.reasoning_content {
        Some(reasoning) if include_reasoning => {
            m["reasoning_content"] = json!(reasoning);
            content = content.trim_start().to_owned();
        }
        Some(reasoning) => content = format!("<think>{reasoning}</think>{content}"),
        None => {}
    }
    m["content"] = if content.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(content)
    };
    if !calls.is_empty() {
        m["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, c)| tool_call_json(i, c))
            .collect();
    }
    json!({
        "index": index,
        "message": m,
        "finish_reason": r.finish_reason.as_str(),
        "logprobs": r.logprobs.as_deref().map(logprobs_json),
    })
}

/// Per-choice state of a stream: whether `<think>` was opened in the content (for clients that
/// did not ask for reasoning).
#[derive(Default, Debug)]
pub struct ChoiceStream {
    think_open: bool,
    /// The choice's last event came.
    pub finished: bool,
}

impl ChoiceStream {
    /// The delta objects for one event's reasoning, text and tool-call fragments.
    pub fn deltas(
        &mut self,
        reasoning: &str,
        text: &str,
        calls: &[ToolCallDelta],
        include_reasoning: bool,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let mut content = String::new();
        if !reasoning.is_empty() {
            if include_reasoning {
                out.push(json!({"reasoning_content": reasoning}));
            } else {
                if !self.think_open {
                    content.push_str("<think>");
                    self.think_open = true;
                }
                content.push_str(reasoning);
            }
        }
        if self.think_open && (!text.is_empty() || !calls.is_empty()) {
            content.push_str("</think>");
            self.think_open = false;
        }
        content.push_str(text);
        if !content.is_empty() {
            out.push(json!({"content": content}));
        }
        if !calls.is_empty() {
            out.push(
                json!({"tool_calls": calls.iter().map(tool_call_delta_json).collect::<Vec<_>>()}),
            );
        }
        out
    }

    /// What is left to close when the choice ends, then the finish reason.
    pub fn close(&mut self) -> Option<Value> {
        self.finished = true;
        std::mem::take(&mut self.think_open).then(|| json!({"content": "</think>"}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::{FinishReason, FunctionCall};

    fn response() -> Response {
        let mut r = Response::empty();
        r.text = "".into();
        r.reasoning_content = Some("think".into());
        r.tool_calls = Some(vec![ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "f".into(),
                arguments: "{}".into(),
            },
        }]);
        r.finish_reason = FinishReason::ToolCalls;
        r
    }

    #[test]
    fn a_whole_choice_keeps_ids_and_places_reasoning_as_asked() {
        let c = choice_json(0, &response(), true);
        assert_eq!(c["message"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(c["message"]["reasoning_content"], "think");
        assert_eq!(c["message"]["content"], Value::Null);
        assert_eq!(c["finish_reason"], "tool_calls");
        let c = choice_json(0, &response(), false);
        assert_eq!(c["message"]["content"], "<think>think</think>");
    }

    #[test]
    fn streamed_reasoning_is_inlined_and_closed_for_clients_that_did_not_ask() {
        let mut s = ChoiceStream::default();
        let a = s.deltas("hm", "", &[], false);
        let b = s.deltas("", "Yes", &[], false);
        assert_eq!(a, vec![json!({"content": "<think>hm"})]);
        assert_eq!(b, vec![json!({"content": "</think>Yes"})]);
        assert_eq!(s.close(), None);
        let mut s = ChoiceStream::default();
        s.deltas("hm", "", &[], false);
        assert_eq!(s.close(), Some(json!({"content": "</think>"})));
    }
}
