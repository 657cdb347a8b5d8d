//! A conversation to pieces: `Template._encode`, `encode_oneturn`, `encode_multiturn` and their
//! `Llama2Template` / `ReasoningTemplate` variants.

use serde_json::Value;

use crate::pyjson::{dumps, py_str};
use crate::tools::FunctionCall;
use crate::{Error, Kind, Piece, Result, Slot, Template};

/// A message role as LLaMA-Factory names them. Even positions are `User` or `Observation`,
/// odd ones `Assistant` or `Function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user's turn.
    User,
    /// The assistant's answer.
    Assistant,
    /// The assistant's tool calls: content is `{"name", "arguments"}` JSON, or a list of them.
    Function,
    /// Tool results.
    Observation,
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Turn {
    /// A turn.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A conversation as LLaMA-Factory's `encode_*` take it.
#[derive(Clone, Copy, Debug)]
pub struct Conversation<'a> {
    /// The messages.
    pub messages: &'a [Turn],
    /// The system prompt (`None` or empty: the template's default).
    pub system: Option<&'a str>,
    /// Tool definitions (`{"name", "description", "parameters"}`, optionally wrapped in
    /// `{"type": "function", "function": ...}`); `Some` even when empty writes the system block.
    pub tools: Option<&'a [Value]>,
}

/// What the encoder needs from outside: the tokenizer's own special tokens (before the
/// template's fixes) and the settings LLaMA-Factory takes from its data arguments.
#[derive(Clone, Debug)]
pub struct Options {
    /// The tokenizer's BOS token (`None`: BOS slots write nothing).
    pub bos_token: Option<String>,
    /// The tokenizer's EOS token.
    pub eos_token: Option<String>,
    /// Today as `%d %b %Y` (`26 Jul 2024`), written by the `llama3` tool format.
    pub date: String,
    /// `enable_thinking` (reasoning templates): `Some(true)` is LLaMA-Factory's default.
    pub enable_thinking: Option<bool>,
    /// `preserve_thinking`: keep earlier turns' thoughts in `encode_oneturn`.
    pub preserve_thinking: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bos_token: None,
            eos_token: None,
            date: String::new(),
            enable_thinking: Some(true),
            preserve_thinking: false,
        }
    }
}

/// The special tokens after LLaMA-Factory's `fix_special_tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    /// BOS (unchanged).
    pub bos: Option<String>,
    /// EOS: the first stop word with `replace_eos`, `<|endoftext|>` when the tokenizer had none.
    pub eos: String,
    /// Tokens that stop generation: EOS and every stop word (`get_stop_token_ids`).
    pub stop: Vec<String>,
}

/// One formatter element before BOS/EOS are resolved.
enum Elem {
    Text(String),
    Slot(Slot),
}

impl Template {
    /// LLaMA-Factory's token fixes for a tokenizer with these BOS / EOS tokens.
    pub fn special_tokens(&self, bos: Option<&str>, eos: Option<&str>) -> SpecialTokens {
        let eos = match (self.replace_eos, self.stop_words.first(), eos) {
            (true, Some(first), _) => (*first).to_owned(),
            (_, _, Some(e)) => e.to_owned(),
            _ => "<|endoftext|>".to_owned(),
        };
        let mut stop = vec![eos.clone()];
        for w in self.stop_words {
            if !stop.iter().any(|s| s == w) {
                stop.push((*w).to_owned());
            }
        }
        SpecialTokens {
            bos: bos.map(str::to_owned),
            eos,
            stop,
        }
    }

    /// `Template._encode`: each message's pieces, in order.
    pub fn encode_messages(
        &self,
        conv: &Conversation<'_>,
        opts: &Options,
    ) -> Result<Vec<Vec<Piece>>> {
        let specials = self.special_tokens(opts.bos_token.as_deref(), opts.eos_token.as_deref());
        let system = match conv.system {
            Some(s) if !s.is_empty() => s,
            _ => self.default_system,
        };
        let mut out = Vec::with_capacity(conv.messages.len());
        for (i, turn) in conv.messages.iter().enumerate() {
            let mut elems = Vec::new();
            let mut system_text = String::new();
            if i == 0 {
                elems.extend(self.prefix.iter().map(|s| Elem::Slot(*s)));
                if !system.is_empty() || conv.tools.is_some() {
                    let tool_text = match conv.tools {
                        Some(tools) if !tools.is_empty() => {
                            self.tool_format.tool_text(tools, &opts.date)?
                        }
                        _ => String::new(),
                    };
                    let block = apply(self.system, &format!("{system}{tool_text}"), None);
                    if self.kind == Kind::Llama2 {
                        // Only the system format's first slot, folded into the first user turn.
                        if let Some(Elem::Text(t)) = block.into_iter().next() {
                            system_text = t;
                        }
                    } else {
                        elems.extend(block);
                    }
                }
            }
            let idx = (i / 2).to_string();
            match turn.role {
                Role::User if self.kind == Kind::Llama2 => elems.extend(apply(
                    self.user,
                    &format!("{system_text}{}", turn.content),
                    None,
                )),
                Role::User => elems.extend(apply(self.user, &turn.content, Some(&idx))),
                Role::Assistant => elems.extend(apply(self.assistant, &turn.content, None)),
                Role::Observation => elems.extend(apply(self.observation, &turn.content, None)),
                Role::Function => {
                    let text = self.function_text(&turn.content, self.kind != Kind::Llama2)?;
                    elems.extend(apply(self.function, &text, None));
                }
            }
            out.push(resolve(elems, &specials));
        }
        Ok(out)
    }

    /// `encode_oneturn`: (prompt, response) — every message but the last, and the last.
    pub fn encode_oneturn(
        &self,
        conv: &Conversation<'_>,
        opts: &Options,
    ) -> Result<(Vec<Piece>, Vec<Piece>)> {
        if self.kind != Kind::Reasoning {
            return self.oneturn(conv, opts);
        }
        let mut messages = conv.messages.to_vec();
        let n = messages.len();
        if !opts.preserve_thinking {
            for i in (1..n.saturating_sub(2)).step_by(2) {
                messages[i].content = self.remove_thought(&messages[i].content);
            }
        }
        if let Some(last) = messages.last_mut()
            && opts.enable_thinking == Some(false)
        {
            last.content = self.remove_thought(&last.content);
        }
        let (mut prompt, mut response) = self.oneturn(
            &Conversation {
                messages: &messages,
                ..*conv
            },
            opts,
        )?;
        if let Some(last) = messages.last()
            && !self.has_thought(&last.content)
        {
            if opts.enable_thinking != Some(true) {
                prompt.push(self.empty_thought());
            } else {
                response.insert(0, self.empty_thought());
            }
        }
        Ok((prompt, response))
    }

    /// `encode_multiturn`: (prompt, response) per exchange.
    pub fn encode_multiturn(
        &self,
        conv: &Conversation<'_>,
        opts: &Options,
    ) -> Result<Vec<(Vec<Piece>, Vec<Piece>)>> {
        let mut messages = conv.messages.to_vec();
        if self.kind == Kind::Reasoning && opts.enable_thinking == Some(false) {
            for m in messages.iter_mut().skip(1).step_by(2) {
                m.content = self.remove_thought(&m.content);
            }
        }
        let mut encoded = self.encode_messages(
            &Conversation {
                messages: &messages,
                ..*conv
            },
            opts,
        )?;
        if self.kind == Kind::Reasoning {
            for i in (0..messages.len()).step_by(2) {
                let Some(answer) = messages.get(i + 1) else {
                    break;
                };
                if !self.has_thought(&answer.content) {
                    if opts.enable_thinking != Some(true) {
                        encoded[i].push(self.empty_thought());
                    } else {
                        encoded[i + 1].insert(0, self.empty_thought());
                    }
                }
            }
        }
        let mut pairs = Vec::new();
        let mut it = encoded.into_iter();
        while let Some(prompt) = it.next() {
            pairs.push((prompt, it.next().unwrap_or_default()));
        }
        Ok(pairs)
    }

    /// The prompt LLaMA-Factory's chat engine generates from: the conversation plus an empty
    /// assistant turn, `encode_oneturn`'s prompt part.
    pub fn generation_prompt(&self, conv: &Conversation<'_>, opts: &Options) -> Result<Vec<Piece>> {
        let mut messages = conv.messages.to_vec();
        messages.push(Turn::new(Role::Assistant, ""));
        let (prompt, _) = self.encode_oneturn(
            &Conversation {
                messages: &messages,
                ..*conv
            },
            opts,
        )?;
        Ok(prompt)
    }

    fn oneturn(&self, conv: &Conversation<'_>, opts: &Options) -> Result<(Vec<Piece>, Vec<Piece>)> {
        let mut encoded = self.encode_messages(conv, opts)?;
        let response = encoded.pop().unwrap_or_default();
        Ok((encoded.concat(), response))
    }

    /// `add_thought()`: the empty thought, one piece (tokenized on its own).
    fn empty_thought(&self) -> Piece {
        Piece::Text(format!("{}{}", self.thought_words.0, self.thought_words.1))
    }

    fn has_thought(&self, content: &str) -> bool {
        content.contains(self.thought_words.0.trim())
            || content.contains(self.thought_words.1.trim())
    }

    /// `remove_thought`: every `open … close` span (shortest, left to right) removed, then
    /// leading newlines.
    pub fn remove_thought(&self, content: &str) -> String {
        let (open, close) = self.thought_words;
        let mut out = String::new();
        let mut rest = content;
        while let Some(s) = rest.find(open) {
            let Some(e) = rest[s + open.len()..].find(close) else {
                break;
            };
            out.push_str(&rest[..s]);
            rest = &rest[s + open.len() + e + close.len()..];
        }
        out.push_str(rest);
        out.trim_start_matches('\n').to_owned()
    }

    /// `FunctionFormatter.apply`'s text: calls (inside tool-call words if present, else the
    /// whole content less a thought span) written in the function tool format, with the
    /// thought (or the text around the tool-call words) kept before them. `Llama2Template`
    /// passes no thought or tool-call words (`words` false).
    fn function_text(&self, content: &str, words: bool) -> Result<String> {
        let tool_call = words
            .then(|| shortest_span(content, self.tool_call_words))
            .flatten();
        if let Some((whole, inner)) = tool_call {
            let calls = parse_calls(inner)?;
            let rest = content.replace(whole, "");
            return Ok(rest + &self.function_format.calls_text(&calls)?);
        }
        let thought = words
            .then(|| shortest_span(content, self.thought_words))
            .flatten();
        let json_part = match thought {
            Some((whole, _)) => content.replace(whole, ""),
            None => content.to_owned(),
        };
        let text = self.function_format.calls_text(&parse_calls(&json_part)?)?;
        Ok(match thought {
            Some((whole, _)) => format!("{whole}{text}"),
            None => text,
        })
    }
}

/// The first `open(.*?)close` span: (whole match, inside).
fn shortest_span<'a>(content: &'a str, (open, close): (&str, &str)) -> Option<(&'a str, &'a str)> {
    let s = content.find(open)?;
    let inner_start = s + open.len();
    let e = content[inner_start..].find(close)? + inner_start;
    Some((&content[s..e + close.len()], &content[inner_start..e]))
}

/// `_parse_functions`: one call object or a list; arguments re-written as `json.dumps` does.
fn parse_calls(json: &str) -> Result<Vec<FunctionCall>> {
    let bad = |reason: String| Error::BadFunctionCall {
        content: json.to_owned(),
        reason,
    };
    let v: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let items = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .map(|c| {
            let name = c.get("name").ok_or_else(|| bad("no `name`".into()))?;
            let args = c
                .get("arguments")
                .ok_or_else(|| bad("no `arguments`".into()))?;
            Ok(FunctionCall {
                name: py_str(name),
                arguments: dumps(args, None),
            })
        })
        .collect()
}

/// `StringFormatter.apply(content=..., idx=...)`: the first `{{content}}`, then the first
/// `{{idx}}`, replaced in each text slot (in that order, as Python's kwargs go).
fn apply(slots: &[Slot], content: &str, idx: Option<&str>) -> Vec<Elem> {
    slots
        .iter()
        .map(|slot| match slot {
            Slot::Text(t) => {
                let mut s = t.replacen("{{content}}", content, 1);
                if let Some(idx) = idx {
                    s = s.replacen("{{idx}}", idx, 1);
                }
                Elem::Text(s)
            }
            other => Elem::Slot(*other),
        })
        .collect()
}

/// `_convert_elements_to_ids` up to tokenization: empty strings dropped, BOS / EOS by name
/// (BOS only where the tokenizer has one).
fn resolve(elems: Vec<Elem>, specials: &crate::SpecialTokens) -> Vec<Piece> {
    elems
        .into_iter()
        .filter_map(|e| match e {
            Elem::Text(t) if t.is_empty() => None,
            Elem::Text(t) => Some(Piece::Text(t)),
            Elem::Slot(Slot::Text("")) => None,
            Elem::Slot(Slot::Text(t)) => Some(Piece::Text(t.to_owned())),
            Elem::Slot(Slot::Bos) => specials.bos.clone().map(Piece::Token),
            Elem::Slot(Slot::Eos) => Some(Piece::Token(specials.eos.clone())),
            Elem::Slot(Slot::Token(name)) => Some(Piece::Token(name.to_owned())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Token(t) => format!("[{t}]"),
            })
            .collect()
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = crate::get("qwen4").unwrap_err().to_string();
        assert!(
            e.contains("\"qwen4\"") && e.contains("qwen3_nothink") && e.contains("llama3"),
            "{e}"
        );
    }

    #[test]
    fn thoughts_are_removed_shortest_first() {
        let t = crate::get("qwen3").unwrap();
        assert_eq!(
            t.remove_thought("<think>\na\n</think>\n\nX<think>\nb\n</think>\n\nY"),
            "XY"
        );
        assert_eq!(t.remove_thought("\n\nno thought"), "no thought");
        assert_eq!(t.remove_thought("<think>\nopen only"), "<think>\nopen only");
    }

    #[test]
    fn reasoning_prompts_follow_enable_thinking() {
        let t = crate::get("qwen3").unwrap();
        let msgs = [Turn::new(Role::User, "hi")];
        let conv = Conversation {
            messages: &msgs,
            system: None,
            tools: None,
        };
        let on = t.generation_prompt(&conv, &Options::default()).unwrap();
        assert_eq!(
            texts(&on),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let off = Options {
            enable_thinking: Some(false),
            ..Options::default()
        };
        let off = t.generation_prompt(&conv, &off).unwrap();
        assert_eq!(texts(&off[1..]), "<think>\n\n</think>\n\n");
    }

    #[test]
    fn eos_is_replaced_or_supplied() {
        let chatml = crate::get("chatml").unwrap();
        let s = chatml.special_tokens(Some("<s>"), Some("</s>"));
        assert_eq!((s.eos.as_str(), s.stop.len()), ("<|im_end|>", 2));
        let alpaca = crate::get("alpaca").unwrap();
        assert_eq!(alpaca.special_tokens(None, None).eos, "<|endoftext|>");
        assert_eq!(alpaca.special_tokens(None, Some("</s>")).stop, ["</s>"]);
    }
}
