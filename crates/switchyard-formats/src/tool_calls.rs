//! Tool calls in a model's own output format, whole or streamed.
//!
//! Formats: Qwen/Hermes (`<tool_call>{"name", "arguments"}</tool_call>`, repeated), Mistral
//! (`[TOOL_CALLS][{"name", "arguments"}, ...]`), Llama 3.x JSON (`{"name", "parameters"}`,
//! optionally after `<|python_tag|>`).

use serde_json::Value;
use switchyard_abi::wire::FunctionCall;

use crate::partial_tag;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

fn call_from_json(v: &Value) -> Option<FunctionCall> {
    let name = v.get("name")?.as_str()?.to_owned();
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(FunctionCall { name, arguments })
}

/// Parses tool calls from a whole generated text. Returns the remaining content and the calls
/// (empty when the text holds none).
pub fn parse_tool_calls(text: &str) -> (String, Vec<FunctionCall>) {
    // Qwen / Hermes.
    if text.contains(HERMES_OPEN) {
        let mut calls = Vec::new();
        let mut content = String::new();
        let mut rest = text;
        while let Some(start) = rest.find(HERMES_OPEN) {
            content.push_str(&rest[..start]);
            let after = &rest[start + HERMES_OPEN.len()..];
            let (body, next) = match after.find(HERMES_CLOSE) {
                Some(end) => (&after[..end], &after[end + HERMES_CLOSE.len()..]),
                None => (after, ""),
            };
            match serde_json::from_str::<Value>(body.trim())
                .ok()
                .as_ref()
                .and_then(call_from_json)
            {
                Some(c) => calls.push(c),
                None => return (text.to_owned(), Vec::new()),
            }
            rest = next;
        }
        content.push_str(rest);
        return (content.trim().to_owned(), calls);
    }
    // Mistral.
    if let Some(pos) = text.find(MISTRAL) {
        let body = text[pos + MISTRAL.len()..].trim();
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(body) {
            let calls: Vec<_> = items.iter().filter_map(call_from_json).collect();
            if calls.len() == items.len() && !calls.is_empty() {
                return (text[..pos].trim().to_owned(), calls);
            }
        }
        return (text.to_owned(), Vec::new());
    }
    // Llama 3.x JSON (the whole output is one call, or several separated by `;`).
    let body = text.trim().trim_start_matches(PYTHON_TAG).trim();
    if body.starts_with('{') {
        let mut calls = Vec::new();
        for part in body.split(";\n").flat_map(|p| p.split("; ")) {
            match serde_json::from_str::<Value>(part.trim())
                .ok()
                .as_ref()
                .and_then(call_from_json)
            {
                Some(c) => calls.push(c),
                None => return (text.to_owned(), Vec::new()),
            }
        }
        return (String::new(), calls);
    }
    (text.to_owned(), Vec::new())
}

/// Streams content while tools are offered: text is passed through until something that may be
/// a tool call starts; from there on it is held, and parsed at the end.
#[derive(Default, Debug)]
pub struct ToolCallHolder {
    text: String,
    emitted: usize,
    holding: bool,
}

impl ToolCallHolder {
    /// Feeds a content delta; returns what can be shown now.
    pub fn push(&mut self, delta: &str) -> String {
        self.text.push_str(delta);
        if self.holding {
            return String::new();
        }
        let trimmed = self.text.trim_start();
        let lead = self.text.len() - trimmed.len();
        // At the very start, JSON or a marker means a probable call.
        if self.emitted <= lead
            && (trimmed.starts_with('{')
                || [HERMES_OPEN, MISTRAL, PYTHON_TAG].iter().any(|m| {
                    trimmed.starts_with(m) || (!trimmed.is_empty() && m.starts_with(trimmed))
                }))
        {
            if trimmed.starts_with('{')
                || [HERMES_OPEN, MISTRAL, PYTHON_TAG]
                    .iter()
                    .any(|m| trimmed.starts_with(m))
            {
                self.holding = true;
            }
            return String::new();
        }
        if let Some(at) = self.text[self.emitted..]
            .find(HERMES_OPEN)
            .map(|i| i + self.emitted)
        {
            let out = self.text[self.emitted..at].to_owned();
            self.emitted = at;
            self.holding = true;
            return out;
        }
        let keep = partial_tag(&self.text[self.emitted..], HERMES_OPEN);
        let end = self.text.len() - keep;
        let out = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        out
    }

    /// At the end: (remaining content to show, tool calls).
    pub fn finish(&mut self) -> (String, Vec<FunctionCall>) {
        let (content, calls) = parse_tool_calls(&self.text);
        if calls.is_empty() {
            let rest = self.text[self.emitted..].to_owned();
            self.emitted = self.text.len();
            return (rest, calls);
        }
        // Content before the calls was already shown where it preceded the held part.
        let shown = &self.text[..self.emitted];
        let rest = content
            .strip_prefix(shown.trim())
            .unwrap_or("")
            .trim()
            .to_owned();
        (rest, calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_mistral_and_llama_calls_are_parsed() {
        let (c, calls) = parse_tool_calls(
            "I'll check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(c, "I'll check.");
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        let (_, calls) = parse_tool_calls(
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {\"x\": 1}}]",
        );
        assert_eq!(
            calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let (c, calls) =
            parse_tool_calls("<|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\": \"x\"}}");
        assert_eq!(
            (c.as_str(), calls[0].arguments.as_str()),
            ("", "{\"q\":\"x\"}")
        );
        let (c, calls) = parse_tool_calls("Just {text} here");
        assert!(calls.is_empty());
        assert_eq!(c, "Just {text} here");
        let (c, calls) = parse_tool_calls("<tool_call>not json</tool_call>");
        assert!(calls.is_empty() && c.contains("not json"));
    }

    #[test]
    fn the_holder_streams_text_and_holds_calls() {
        let mut h = ToolCallHolder::default();
        let mut shown = String::new();
        for d in [
            "Let me ",
            "look. <tool",
            "_call>{\"name\": \"f\", ",
            "\"arguments\": {}}</tool_call>",
        ] {
            shown.push_str(&h.push(d));
        }
        assert_eq!(shown, "Let me look. ");
        let (rest, calls) = h.finish();
        assert_eq!((rest.as_str(), calls.len()), ("", 1));

        let mut h = ToolCallHolder::default();
        let mut shown = String::new();
        for d in ["Plain ", "answer <b>", " done"] {
            shown.push_str(&h.push(d));
        }
        let (rest, calls) = h.finish();
        shown.push_str(&rest);
        assert!(calls.is_empty());
        assert_eq!(shown, "Plain answer <b> done");
    }
}
