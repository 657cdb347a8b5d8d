//! Reasoning and tool calls read out of a stream of raw text events, per sequence.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use switchyard_abi::wire::{Event, FinishReason, FunctionCall, ToolCallDelta};

use crate::reasoning::ReasoningSplitter;
use crate::tool_calls::ToolCallHolder;

/// Where a model's output starts relative to its reasoning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReasoningStart {
    /// The model does not reason in tags; text is passed through.
    #[default]
    None,
    /// Reasoning, if any, opens with `<think>` at the start of the output.
    Closed,
    /// The prompt already opened `<think>`: the output starts inside the reasoning.
    Opened,
}

/// What to read out of a model's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputFormat {
    /// How reasoning is marked.
    pub reasoning: ReasoningStart,
    /// Tools were offered, so calls are read out of the text.
    pub tools: bool,
}

impl OutputFormat {
    /// Whether anything is read out at all (otherwise events pass through untouched).
    pub fn is_plain(&self) -> bool {
        self.reasoning == ReasoningStart::None && !self.tools
    }
}

/// One sequence's parser: text in, (answer, reasoning) out, calls at the end.
#[derive(Debug)]
pub struct OutputParser {
    reasoning: Option<ReasoningSplitter>,
    tools: Option<ToolCallHolder>,
}

impl OutputParser {
    /// A parser for `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self {
            reasoning: match format.reasoning {
                ReasoningStart::None => None,
                ReasoningStart::Closed => Some(ReasoningSplitter::default()),
                ReasoningStart::Opened => Some(ReasoningSplitter::opened()),
            },
            tools: format.tools.then(ToolCallHolder::default),
        }
    }

    /// Feeds a text delta; returns the (answer, reasoning) text that can be shown now.
    pub fn push(&mut self, delta: &str) -> (String, String) {
        let (content, reasoning) = match &mut self.reasoning {
            Some(s) => s.push(delta),
            None => (delta.to_owned(), String::new()),
        };
        let content = match &mut self.tools {
            Some(h) => h.push(&content),
            None => content,
        };
        (content, reasoning)
    }

    /// At the end of the sequence: the (answer, reasoning) text held back, and the calls.
    pub fn finish(&mut self) -> (String, String, Vec<FunctionCall>) {
        let (content, reasoning) = match &mut self.reasoning {
            Some(s) => s.finish(),
            None => (String::new(), String::new()),
        };
        match &mut self.tools {
            Some(h) => {
                let mut content = h.push(&content);
                let (rest, calls) = h.finish();
                content.push_str(&rest);
                (content, reasoning, calls)
            }
            None => (content, reasoning, Vec::new()),
        }
    }
}

/// A fresh OpenAI-style call id (`call_` and 24 hex digits).
pub fn new_call_id() -> String {
    let mut rng = rand::rng();
    format!(
        "call_{:016x}{:08x}",
        rng.random::<u64>(),
        rng.random::<u32>()
    )
}

/// Wraps a stream of raw text events and reads reasoning and tool calls out of each sequence.
///
/// A sequence's calls are sent with its last event, one [`ToolCallDelta`] per call holding its
/// id, name and whole arguments; its finish reason becomes `tool_calls` when it ended normally.
pub struct ParsedEvents<I> {
    inner: I,
    format: OutputFormat,
    parsers: BTreeMap<u32, OutputParser>,
    ready: VecDeque<Event>,
    done: bool,
}

impl<I> ParsedEvents<I> {
    /// Reads `format` out of `inner`.
    pub fn new(inner: I, format: OutputFormat) -> Self {
        Self {
            inner,
            format,
            parsers: BTreeMap::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    fn parse(&mut self, mut event: Event) {
        let parser = self
            .parsers
            .entry(event.index)
            .or_insert_with(|| OutputParser::new(self.format));
        let (mut content, mut reasoning) = parser.push(&event.delta);
        if let Some(finish) = event.finish.as_mut() {
            let (c, r, calls) = parser.finish();
            self.parsers.remove(&event.index);
            content.push_str(&c);
            reasoning.push_str(&r);
            if !calls.is_empty() && finish.reason == FinishReason::Stop {
                finish.reason = FinishReason::ToolCalls;
            }
            event
                .tool_calls
                .extend(calls.into_iter().enumerate().map(|(i, c)| ToolCallDelta {
                    index: i as u32,
                    id: Some(new_call_id()),
                    name: Some(c.name),
                    arguments: c.arguments,
                }));
        }
        event.delta = content;
        event.reasoning.push_str(&reasoning);
        let empty = event.delta.is_empty()
            && event.reasoning.is_empty()
            && event.token_ids.is_empty()
            && event.tool_calls.is_empty()
            && event.logprobs.is_empty()
            && event.prompt_logprobs.is_empty()
            && event.finish.is_none();
        if !empty {
            self.ready.push_back(event);
        }
    }

    /// The stream ended without a finish for some sequences (cancelled): flush what they held.
    fn flush(&mut self) {
        for (index, mut parser) in std::mem::take(&mut self.parsers) {
            let (delta, reasoning, _) = parser.finish();
            if !delta.is_empty() || !reasoning.is_empty() {
                self.ready.push_back(Event {
                    index,
                    delta,
                    reasoning,
                    ..Default::default()
                });
            }
        }
    }
}

impl<I, E> Iterator for ParsedEvents<I>
where
    I: Iterator<Item = Result<Event, E>>,
{
    type Item = Result<Event, E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.inner.next() {
                Some(Ok(event)) if self.format.is_plain() => return Some(Ok(event)),
                Some(Ok(event)) => self.parse(event),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    self.flush();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_abi::wire::{Finish, ResponseCollector};

    fn run(format: OutputFormat, deltas: &[&str]) -> switchyard_abi::wire::Response {
        let n = deltas.len();
        let events = deltas.iter().enumerate().map(|(i, d)| {
            Ok::<_, ()>(Event {
                delta: (*d).to_owned(),
                token_ids: vec![i as u32],
                finish: (i + 1 == n).then_some(Finish {
                    reason: FinishReason::Stop,
                    prompt_length: 5,
                    response_length: n as u32,
                }),
                ..Default::default()
            })
        });
        let mut c = ResponseCollector::new(1);
        for e in ParsedEvents::new(events, format) {
            c.push(&e.unwrap()).unwrap();
        }
        c.finish().remove(0)
    }

    #[test]
    fn a_streamed_hermes_call_becomes_a_typed_call_with_an_id() {
        let r = run(
            OutputFormat {
                reasoning: ReasoningStart::Closed,
                tools: true,
            },
            &[
                "<think>need",
                " weather</think>",
                "<tool_",
                "call>\n{\"name\": \"get_weather\", ",
                "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            ],
        );
        assert_eq!(r.text, "");
        assert_eq!(r.reasoning_content.as_deref(), Some("need weather"));
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.token_ids.as_ref().unwrap().len(), 5);
        let calls = r.tool_calls.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, "{\"city\":\"Paris\"}");
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
    }

    #[test]
    fn plain_text_passes_through_and_tags_stay_text_without_a_format() {
        let r = run(
            OutputFormat {
                reasoning: ReasoningStart::Closed,
                tools: true,
            },
            &["Hello ", "there"],
        );
        assert_eq!(
            (r.text.as_str(), r.finish_reason),
            ("Hello there", FinishReason::Stop)
        );
        assert!(r.tool_calls.is_none() && r.reasoning_content.is_none());
        let r = run(
            OutputFormat::default(),
            &["<think>x</think>", "<tool_call>{}"],
        );
        assert_eq!(r.text, "<think>x</think><tool_call>{}");
    }

    #[test]
    fn an_opened_prompt_routes_the_start_to_reasoning() {
        let r = run(
            OutputFormat {
                reasoning: ReasoningStart::Opened,
                tools: false,
            },
            &["so", "</think>\n\n4"],
        );
        assert_eq!(r.reasoning_content.as_deref(), Some("so"));
        assert_eq!(r.text, "\n\n4");
    }
}
