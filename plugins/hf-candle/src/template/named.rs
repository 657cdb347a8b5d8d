//! `[model] template = "NAME"`: LLaMA-Factory's named templates (`switchyard-templates`)
//! instead of the model's Jinja template. The conversation is mapped the way LLaMA-Factory's
//! own API maps an OpenAI request (a leading system message becomes the system prompt, an
//! assistant's tool calls a `function` turn, a tool result an `observation`, the tool list
//! the function definitions), the template's pieces are tokenized one by one, as
//! `_convert_elements_to_ids` does, and the generation prompt is the conversation plus an empty
//! assistant turn (LLaMA-Factory's chat engine).

use serde_json::{Map, Value};
use switchyard_plugin::{Message, Role};
use switchyard_templates::{Conversation, Options, Piece, Template, ToolFormat, Turn};

use crate::error::{Error, Result};
use crate::tokenizer::Tok;

/// A named template checked against the model's tokenizer.
#[derive(Debug)]
pub struct NamedTemplate {
    template: Template,
    /// The tokenizer's own BOS / EOS (before the template's fixes, which `encode` applies).
    bos: Option<String>,
    eos: Option<String>,
    /// EOS after the template's fixes and every stop word, as ids.
    stop_ids: Vec<u32>,
    /// Break special-token text in what clients write (`escape_special_tokens`).
    escape_specials: bool,
}

impl NamedTemplate {
    /// The template called `name` for a model with tokenizer `tok`. Every token the template
    /// writes by name (EOS after `replace_eos`, stop words) must be one token of the vocabulary:
    /// LLaMA-Factory adds missing ones as new tokens (`resize_vocab`), which a model it
    /// fine-tuned has in its own tokenizer.
    pub fn new(name: &str, tok: &Tok, escape_specials: bool) -> Result<Self> {
        let template = switchyard_templates::get(name)
            .map_err(|e| Error::Config(format!("[model] template: {e}")))?;
        let specials = template.special_tokens(tok.bos_token.as_deref(), tok.eos_token.as_deref());
        let stop_ids = specials
            .stop
            .iter()
            .map(|t| {
                tok.token_id(t).ok_or_else(|| {
                    Error::Config(format!(
                        "[model] template = {name:?} stops on {t:?}, which is not a token of this model's tokenizer \
                         (LLaMA-Factory adds it as a new token when it fine-tunes with this template); \
                         pick the template the model was trained with"
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Self {
            template,
            bos: tok.bos_token.clone(),
            eos: tok.eos_token.clone(),
            stop_ids,
            escape_specials,
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        self.template.name()
    }

    /// Ids that end generation: EOS after the template's fixes and the stop words.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// `replace_eos`: the model's own EOS no longer ends generation (the first stop word does).
    pub fn replaces_eos(&self) -> bool {
        self.template.replace_eos()
    }

    /// Whether the model reasons in thought words (`qwen3`, not `qwen3_nothink`).
    pub fn thinks(&self) -> bool {
        self.template.thinks()
    }

    /// How tool calls are written in the model's output.
    pub fn tool_format(&self) -> ToolFormat {
        self.template.tool_format()
    }

    /// The prompt's text and ids. `system` is the system prompt the request or the config
    /// gives (else the template's default). With `add_generation_prompt` the conversation is
    /// followed by an empty assistant turn, as LLaMA-Factory generates; without it (scores)
    /// every message is encoded. Special-token text the client wrote is broken unless the
    /// config opts out (`escape_special_tokens`).
    pub fn encode(
        &self,
        tok: &Tok,
        messages: &[Message],
        system: Option<&str>,
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
        kwargs: &Map<String, Value>,
    ) -> Result<(String, Vec<u32>)> {
        let escape = |t: &str| {
            if self.escape_specials {
                tok.escape_specials(t)
            } else {
                t.to_owned()
            }
        };
        let (turns, leading_system) = turns(messages, &escape)?;
        let system = system.map(escape).or(leading_system);
        let tools: Option<Vec<Value>> = tools
            .filter(|t| !t.is_empty())
            .map(|t| t.iter().map(function_definition).collect());
        let opts = Options {
            bos_token: self.bos.clone(),
            eos_token: self.eos.clone(),
            date: crate::template::format_time(now(), "%d %b %Y"),
            enable_thinking: match kwargs.get("enable_thinking") {
                Some(Value::Bool(b)) => Some(*b),
                Some(Value::Null) => None,
                _ => Some(true),
            },
            preserve_thinking: false,
        };
        let conv = Conversation {
            messages: &turns,
            system: system.as_deref(),
            tools: tools.as_deref(),
        };
        let bad = |e: switchyard_templates::Error| {
            Error::InvalidRequest(format!("template {:?}: {e}", self.name()))
        };
        let pieces = if add_generation_prompt {
            self.template.generation_prompt(&conv, &opts).map_err(bad)?
        } else {
            self.template
                .encode_messages(&conv, &opts)
                .map_err(bad)?
                .concat()
        };
        let mut text = String::new();
        let mut ids = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => {
                    ids.extend(tok.encode(&t, false)?);
                    text.push_str(&t);
                }
                Piece::Token(name) => {
                    ids.push(tok.token_id(&name).ok_or_else(|| {
                        Error::Config(format!(
                            "template {:?} writes the token {name:?}, which this model's tokenizer lacks",
                            self.name()
                        ))
                    })?);
                    text.push_str(&name);
                }
            }
        }
        Ok((text, ids))
    }
}

/// Seconds since the Unix epoch (the `llama3` tool prompt writes today's date).
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A tool as LLaMA-Factory's API passes it on: the `function` of `{"type": "function", ...}`
/// with `name`, `description`, `parameters` in that order.
fn function_definition(tool: &Value) -> Value {
    let f = tool.get("function").unwrap_or(tool);
    let mut out = Map::new();
    for key in ["name", "description", "parameters"] {
        if let Some(v) = f.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// The messages as LLaMA-Factory's turns, and a leading system message's text. Like
/// LLaMA-Factory's API, turns must alternate: user or tool first, then assistant, and so on.
fn turns(
    messages: &[Message],
    escape: &dyn Fn(&str) -> String,
) -> Result<(Vec<Turn>, Option<String>)> {
    use switchyard_templates::Role as R;
    let (system, rest) = match messages.split_first() {
        Some((first, rest)) if first.role == Role::System => (Some(escape(&first.content)), rest),
        _ => (None, messages),
    };
    let mut out = Vec::with_capacity(rest.len());
    for (i, m) in rest.iter().enumerate() {
        let turn = match m.role {
            Role::User => Turn::new(R::User, escape(&m.content)),
            Role::Tool => Turn::new(R::Observation, escape(&m.content)),
            Role::Assistant => match m.tool_calls.as_deref() {
                Some(calls) if !calls.is_empty() => {
                    // `{"name", "arguments"}` per call; arguments parsed back to JSON, as in
                    // LLaMA-Factory's training data (text that is not JSON stays text).
                    let list: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            let args = serde_json::from_str(&c.function.arguments)
                                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                            serde_json::json!({"name": c.function.name, "arguments": args})
                        })
                        .collect();
                    Turn::new(R::Function, escape(&Value::Array(list).to_string()))
                }
                _ => Turn::new(R::Assistant, escape(&m.content)),
            },
            Role::System => {
                return Err(Error::InvalidRequest(format!(
                    "message {}: a system message is only accepted first with a named template",
                    i + 1 + usize::from(system.is_some())
                )));
            }
        };
        let even = i % 2 == 0;
        if even != matches!(turn.role, R::User | R::Observation) {
            return Err(Error::InvalidRequest(format!(
                "message {}: LLaMA-Factory's templates take alternating turns (user or tool, then assistant, ...); merge consecutive messages of one side",
                i + 1 + usize::from(system.is_some())
            )));
        }
        out.push(turn);
    }
    Ok((out, system))
}

/// Tool calls in a tool format `switchyard-formats` does not read (`default`'s `Action:` lines,
/// `glm4`'s `name\n{json}`): while tools are offered, each sequence's answer text is held and,
/// at its finish, read with LLaMA-Factory's extractor for that format — calls come back typed
/// (finish reason `tool_calls`), anything else is sent as the answer.
pub struct HeldCalls<I> {
    inner: I,
    format: ToolFormat,
    held: std::collections::BTreeMap<u32, String>,
}

impl<I> HeldCalls<I> {
    /// Reads `format` calls out of `inner`'s answers.
    pub fn new(inner: I, format: ToolFormat) -> Self {
        Self {
            inner,
            format,
            held: Default::default(),
        }
    }

    /// Whether `format` needs this (the others are read by `switchyard-formats`).
    pub fn needed(format: ToolFormat) -> bool {
        matches!(format, ToolFormat::Default | ToolFormat::Glm4)
    }
}

impl<I, E> Iterator for HeldCalls<I>
where
    I: Iterator<Item = std::result::Result<switchyard_plugin::Event, E>>,
{
    type Item = std::result::Result<switchyard_plugin::Event, E>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut event = match self.inner.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let text = self.held.entry(event.index).or_default();
        text.push_str(&std::mem::take(&mut event.delta));
        if let Some(finish) = event.finish.as_mut() {
            let text = self.held.remove(&event.index).unwrap_or_default();
            match self.format.extract(&text) {
                Some(calls) => {
                    if finish.reason == switchyard_plugin::FinishReason::Stop {
                        finish.reason = switchyard_plugin::FinishReason::ToolCalls;
                    }
                    let first = event.tool_calls.len() as u32;
                    event
                        .tool_calls
                        .extend(calls.into_iter().enumerate().map(|(i, c)| {
                            switchyard_plugin::ToolCallDelta {
                                index: first + i as u32,
                                id: Some(switchyard_formats::events::new_call_id()),
                                name: Some(c.name),
                                arguments: c.arguments,
                            }
                        }));
                }
                None => event.delta = text,
            }
        }
        Some(Ok(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::{Event, Finish, FinishReason};

    fn run(format: ToolFormat, deltas: &[&str]) -> (String, Vec<(String, String)>, FinishReason) {
        let n = deltas.len();
        let events = deltas.iter().enumerate().map(|(i, d)| {
            Ok::<_, ()>(Event {
                delta: (*d).into(),
                finish: (i + 1 == n).then_some(Finish {
                    reason: FinishReason::Stop,
                    prompt_length: 1,
                    response_length: n as u32,
                }),
                ..Default::default()
            })
        });
        let (mut text, mut calls, mut reason) = (String::new(), Vec::new(), FinishReason::Length);
        for e in HeldCalls::new(events, format) {
            let e = e.unwrap();
            text.push_str(&e.delta);
            calls.extend(
                e.tool_calls
                    .into_iter()
                    .map(|c| (c.name.unwrap(), c.arguments)),
            );
            if let Some(f) = e.finish {
                reason = f.reason;
            }
        }
        (text, calls, reason)
    }

    #[test]
    fn default_and_glm4_calls_come_back_typed() {
        let (text, calls, reason) = run(
            ToolFormat::Default,
            &[
                "Action: get_",
                "weather\nAction Input: {\"city\":",
                " \"Paris\"}",
            ],
        );
        assert_eq!(text, "");
        assert_eq!(
            calls,
            [("get_weather".into(), r#"{"city": "Paris"}"#.into())]
        );
        assert_eq!(reason, FinishReason::ToolCalls);
        let (_, calls, _) = run(ToolFormat::Glm4, &["get_weather\n", "{\"city\": \"Oslo\"}"]);
        assert_eq!(
            calls,
            [("get_weather".into(), r#"{"city": "Oslo"}"#.into())]
        );
        let (text, calls, reason) = run(ToolFormat::Default, &["Just ", "an answer."]);
        assert_eq!(
            (text.as_str(), calls.len(), reason),
            ("Just an answer.", 0, FinishReason::Stop)
        );
    }
}
