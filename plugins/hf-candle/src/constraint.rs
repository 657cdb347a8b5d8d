//! Structured outputs on the native engine: a request's `constraint` (OpenAI's
//! `response_format`, vLLM's `guided_*`) or forced tool choice becomes a
//! [`switchyard_constrain::Matcher`] per sequence, which the batcher runs around each sampling
//! step as its [`TokenFilter`]. The vocabulary llguidance needs is built once per model, on the
//! first constrained request, from the same token bytes the logprobs report.

use std::sync::OnceLock;

use native_llm::filter::TokenFilter;
use serde_json::Value;
use switchyard_constrain::{Matcher, Spec, Tool, Vocabulary};
use switchyard_plugin::{ChatRequest, Constraint, ToolChoice};

use crate::error::{Error, Result};
use crate::tokenizer::{Tok, special_ids};

/// The per-model vocabulary, built on first use.
#[derive(Default)]
pub(crate) struct ConstraintVocab(OnceLock<std::result::Result<Vocabulary, String>>);

impl ConstraintVocab {
    fn get(&self, tok: &Tok) -> Result<&Vocabulary> {
        self.0
            .get_or_init(|| {
                let specials = special_ids(&tok.inner);
                let n = tok.inner.get_vocab_size(true) as u32;
                // A special token is marked with a leading 0xFF: grammar text never produces it.
                let tokens = (0..n)
                    .map(|id| {
                        let bytes = tok.token_bytes(id);
                        if specials.contains(&id) {
                            [&[0xFF], bytes].concat()
                        } else {
                            bytes.to_vec()
                        }
                    })
                    .collect();
                Vocabulary::from_token_bytes(tokens, &tok.eos_ids).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Unsupported(format!("structured outputs: {e}")))
    }
}

/// What the request constrains the output to, if anything; `true` with it when the output is
/// a forced tool call (to be read back as a typed call).
pub(crate) fn spec(request: &ChatRequest) -> Result<Option<(Spec, bool)>> {
    match (&request.tool_choice, &request.constraint) {
        (Some(_), Some(_)) => Err(Error::InvalidRequest(
            "a request can force a tool call (`tool_choice`) or constrain the output (`response_format`), not both".into(),
        )),
        (Some(choice), None) => {
            let tools: Vec<Tool> = request
                .tools
                .iter()
                .flatten()
                .filter_map(|t| {
                    let f = t.get("function")?;
                    let name = f.get("name")?.as_str()?;
                    let wanted = match choice {
                        ToolChoice::Required => true,
                        ToolChoice::Function { name: n } => n == name,
                    };
                    wanted.then(|| Tool::new(name, f.get("parameters").cloned().unwrap_or(Value::Null)))
                })
                .collect();
            Ok(Some((Spec::ToolCall { tools }, true)))
        }
        (None, Some(c)) => Ok(Some((
            match c {
                Constraint::JsonObject => Spec::JsonObject,
                Constraint::JsonSchema { schema } => Spec::JsonSchema {
                    schema: schema.clone(),
                },
                Constraint::Regex { pattern } => Spec::Regex {
                    pattern: pattern.clone(),
                },
                Constraint::Grammar { grammar } => Spec::Grammar {
                    grammar: grammar.clone(),
                },
                Constraint::Choice { choices } => Spec::Choice {
                    choices: choices.clone(),
                },
            },
            false,
        ))),
        (None, None) => Ok(None),
    }
}

/// A matcher for `spec` on this model's vocabulary; a bad schema, regex or grammar is an
/// invalid request that names the problem.
pub(crate) fn filter(
    vocab: &ConstraintVocab,
    tok: &Tok,
    spec: &Spec,
) -> Result<Box<dyn TokenFilter>> {
    let matcher = Matcher::new(vocab.get(tok)?, spec).map_err(|e| {
        Error::InvalidRequest(format!(
            "the {} constraint cannot be used: {e}",
            spec.name()
        ))
    })?;
    Ok(Box::new(Filter(matcher)))
}

struct Filter(Matcher);

impl TokenFilter for Filter {
    fn mask(&mut self, logits: &mut [f32]) -> std::result::Result<(), String> {
        self.0
            .apply(logits)
            .map_err(|e| format!("structured output: {e}"))
    }

    fn accept(&mut self, id: u32) -> std::result::Result<(), String> {
        self.0
            .consume(id)
            .map_err(|e| format!("structured output: {e}"))
    }

    fn fork(&self) -> Box<dyn TokenFilter> {
        Box::new(Filter(self.0.clone()))
    }
}
