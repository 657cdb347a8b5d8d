//! A forced tool call (OpenAI's `tool_choice: "required"` or a named function) read out of a
//! constrained generation: the backend constrained the text to exactly
//! `{"name": "<tool>", "arguments": {…}}` (see `switchyard-constrain`), and this turns each
//! sequence's text into one typed call, so every front end sees a tool call, not JSON text.

use std::collections::BTreeMap;

use serde_json::Value;
use switchyard_abi::wire::{Event, FinishReason, ToolCallDelta};

use crate::events::new_call_id;

/// What one sequence has produced so far.
#[derive(Default)]
struct Held {
    text: String,
    token_ids: Vec<u32>,
    logprobs: Vec<switchyard_abi::wire::TokenLogprob>,
}

/// Wraps a stream whose sequences each generate one JSON call; a sequence's text is held and
/// sent as a [`ToolCallDelta`] with its finish (reason `tool_calls`). A sequence cut by the
/// token limit before its call was complete keeps its text and its `length` finish.
pub struct ForcedCall<I> {
    inner: I,
    held: BTreeMap<u32, Held>,
}

impl<I> ForcedCall<I> {
    /// Reads one call per sequence out of `inner`.
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            held: BTreeMap::new(),
        }
    }
}

/// `{"name": ..., "arguments": {...}}` as (name, arguments JSON), if the text is one.
fn read_call(text: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_owned();
    let arguments = v
        .get("arguments")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    Some((name, arguments.to_string()))
}

impl<I, E> Iterator for ForcedCall<I>
where
    I: Iterator<Item = Result<Event, E>>,
{
    type Item = Result<Event, E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut event = match self.inner.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let held = self.held.entry(event.index).or_default();
            held.text.push_str(&std::mem::take(&mut event.delta));
            held.token_ids.append(&mut event.token_ids);
            held.logprobs.append(&mut event.logprobs);
            let Some(finish) = event.finish.as_mut() else {
                if event.reasoning.is_empty() && event.prompt_logprobs.is_empty() {
                    continue;
                }
                return Some(Ok(event));
            };
            let held = self.held.remove(&event.index).unwrap_or_default();
            event.token_ids = held.token_ids;
            event.logprobs = held.logprobs;
            match read_call(&held.text) {
                Some((name, arguments)) => {
                    event.tool_calls.push(ToolCallDelta {
                        index: 0,
                        id: Some(new_call_id()),
                        name: Some(name),
                        arguments,
                    });
                    if finish.reason == FinishReason::Stop {
                        finish.reason = FinishReason::ToolCalls;
                    }
                }
                None => event.delta = held.text,
            }
            return Some(Ok(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_abi::wire::Finish;

    fn ev(index: u32, delta: &str, finish: Option<FinishReason>) -> Result<Event, String> {
        Ok(Event {
            index,
            delta: delta.into(),
            token_ids: vec![7],
            finish: finish.map(|reason| Finish {
                reason,
                prompt_length: 3,
                response_length: 2,
            }),
            ..Default::default()
        })
    }

    #[test]
    fn each_sequence_becomes_one_typed_call() {
        let events = vec![
            ev(0, "{\"name\":\"get_", None),
            ev(1, "{\"name\":\"f\",", None),
            ev(
                0,
                "weather\",\"arguments\":{\"city\":\"Paris\"}}",
                Some(FinishReason::Stop),
            ),
            ev(1, "\"argu", Some(FinishReason::Length)),
        ];
        let out: Vec<Event> = ForcedCall::new(events.into_iter())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(out.len(), 2);
        let call = &out[0].tool_calls[0];
        assert_eq!(call.name.as_deref(), Some("get_weather"));
        assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
        assert!(call.id.as_deref().unwrap().starts_with("call_"));
        assert_eq!(
            out[0].finish.as_ref().unwrap().reason,
            FinishReason::ToolCalls
        );
        assert_eq!(out[0].token_ids, [7, 7]);
        // Cut short: no call, the text and the length finish are kept.
        assert!(out[1].tool_calls.is_empty());
        assert_eq!(out[1].delta, "{\"name\":\"f\",\"argu");
        assert_eq!(out[1].finish.as_ref().unwrap().reason, FinishReason::Length);
    }
}
