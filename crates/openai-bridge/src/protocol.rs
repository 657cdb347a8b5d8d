//! The OpenAI chat protocol: request bodies from Switchyard requests, and lenient decoding of
//! responses and stream chunks (every field optional, unknown fields ignored).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_plugin::{
    ChatRequest, Constraint, FinishReason, FunctionCall, MediaInput, Message, Role, TokenLogprob,
    ToolCall, ToolCallDelta, ToolChoice, TopLogprob,
};

use switchyard_plugin::placeholders::{
    MediaKind, Placeholders, Segment, count, media_counts, place, segments,
};

use crate::error::{BridgeError, Result};
use crate::flavor::{ConstraintDialect, Field, Flavor, LoraDialect};

/// A chat completion or a stream chunk (`message` in the first, `delta` in the second).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Completion {
    /// The choices (empty in a usage chunk).
    pub choices: Vec<Choice>,
    /// Token counts, when sent.
    pub usage: Option<Usage>,
    /// An in-band error (`data: {"error": ...}`).
    pub error: Option<Value>,
}

/// One choice of a completion or chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Choice {
    /// Sequence index.
    pub index: u32,
    /// The whole message (non-streaming).
    pub message: Option<Delta>,
    /// The new part (streaming).
    pub delta: Option<Delta>,
    /// Why the sequence ended, on its last chunk.
    pub finish_reason: Option<String>,
    /// SGLang: the stop token id or string that matched.
    pub matched_stop: Option<Value>,
    /// vLLM: the stop token id or string that matched.
    pub stop_reason: Option<Value>,
    /// Token log-probabilities, when asked for.
    pub logprobs: Option<Value>,
}

/// Message or delta content.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Delta {
    /// Answer text.
    pub content: Option<String>,
    /// Reasoning text (vLLM ≥ Nov 2025).
    pub reasoning: Option<String>,
    /// Reasoning text (SGLang, older vLLM).
    pub reasoning_content: Option<String>,
    /// Tool calls (whole, or fragments in a stream).
    pub tool_calls: Option<Vec<Value>>,
}

impl Delta {
    /// The reasoning text under either name.
    pub fn reasoning_text(&self) -> Option<&str> {
        self.reasoning
            .as_deref()
            .or(self.reasoning_content.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// Token counts.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens (all choices together).
    pub completion_tokens: u32,
}

/// Maps a server finish reason; `Err` for `abort`/`error`, which mean the server gave up.
pub fn finish_reason(server: &str, reason: &str) -> Result<FinishReason> {
    match reason {
        "length" => Ok(FinishReason::Length),
        "tool_calls" | "function_call" => Ok(FinishReason::ToolCalls),
        "abort" | "error" => Err(BridgeError::InStream {
            server: server.to_owned(),
            code: None,
            message: format!(
                "generation ended with finish_reason `{reason}` (the server aborted the request; see its log)"
            ),
        }),
        _ => Ok(FinishReason::Stop),
    }
}

/// A server's tool call (whole, or a stream fragment) as a typed fragment, id preserved.
pub fn tool_call_delta(call: &Value) -> ToolCallDelta {
    let f = call.get("function").unwrap_or(call);
    let arguments = match f.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    ToolCallDelta {
        index: call
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0),
        id: call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        name: f
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        arguments,
    }
}

/// A server's finished tool calls (a non-streamed message) as typed calls, ids preserved.
pub fn tool_calls(calls: &[Value]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|c| {
            let d = tool_call_delta(c);
            ToolCall {
                id: d.id.unwrap_or_default(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: d.name.unwrap_or_default(),
                    arguments: d.arguments,
                },
            }
        })
        .collect()
}

fn data_url(media: &MediaInput, default_mime: &str) -> String {
    match media {
        MediaInput::Url { url } => url.clone(),
        MediaInput::Bytes {
            data_base64,
            mime_type,
        } => format!(
            "data:{};base64,{data_base64}",
            mime_type.as_deref().unwrap_or(default_mime)
        ),
    }
}

/// One medium as an OpenAI content part with a `data:` (or the given) URL: `image_url`,
/// `video_url` (vLLM and SGLang) or `audio_url` (vLLM and SGLang).
fn media_part(kind: MediaKind, m: &MediaInput) -> Value {
    let (part, mime) = match kind {
        MediaKind::Image => ("image_url", "image/png"),
        MediaKind::Video => ("video_url", "video/mp4"),
        MediaKind::Audio => ("audio_url", "audio/wav"),
    };
    json!({"type": part, part: {"url": data_url(m, mime)}})
}

/// A message's text as content parts, each placeholder replaced by the next medium of its kind
/// (`next` counts how many of each kind earlier messages took).
fn content_parts(
    text: &str,
    request: &ChatRequest,
    tags: &Placeholders,
    next: &mut [usize; 3],
) -> Vec<Value> {
    segments(text, tags)
        .into_iter()
        .filter_map(|s| match s {
            Segment::Text(t) => Some(json!({"type": "text", "text": t})),
            Segment::Media(kind) => {
                let (list, i) = match kind {
                    MediaKind::Image => (&request.images, 0),
                    MediaKind::Video => (&request.videos, 1),
                    MediaKind::Audio => (&request.audios, 2),
                };
                let m = list.get(next[i])?;
                next[i] += 1;
                Some(media_part(kind, m))
            }
        })
        .collect()
}

fn message_json(m: &Message, tools: bool) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), m.role.as_str().into());
    o.insert("content".into(), m.content.clone().into());
    if let Some(name) = &m.name {
        o.insert("name".into(), name.clone().into());
    }
    if tools {
        if let Some(calls) = &m.tool_calls {
            o.insert("tool_calls".into(), json!(calls));
        }
        if let Some(id) = &m.tool_call_id {
            o.insert("tool_call_id".into(), id.clone().into());
        }
    }
    Value::Object(o)
}

/// The `messages` array: the request's `system` first (replacing a leading system message).
/// Media go where the messages' `<image>`/`<video>`/`<audio>` placeholders are, as content
/// parts in that order; with no placeholders, in front of the first user message
/// (LLaMA-Factory's rules, [`switchyard_plugin::placeholders`]).
pub fn messages(flavor: &Flavor, request: &ChatRequest) -> Result<Vec<Value>> {
    let mut msgs: Vec<Message> = request.messages.clone();
    if let Some(s) = &request.system {
        if msgs.first().is_some_and(|m| m.role == Role::System) {
            msgs.remove(0);
        }
        msgs.insert(0, Message::system(s.clone()));
    }
    let tools = flavor.supports(Field::Tools);
    let counts = media_counts(request);
    if counts == [0; 3] {
        return Ok(msgs.iter().map(|m| message_json(m, tools)).collect());
    }
    if !flavor.supports(Field::Media) {
        return Err(BridgeError::Unsupported(format!(
            "the {} server takes text only; drop the images/videos/audio",
            flavor.server
        )));
    }
    // The host has placed them already; placing again changes nothing then, and keeps the
    // bridge right when called on its own.
    let tags = Placeholders::from_env();
    place(&mut msgs, counts, &tags)?;
    let mut next = [0; 3];
    Ok(msgs
        .iter()
        .map(|m| {
            let mut v = message_json(m, tools);
            if m.role != Role::System && count(std::slice::from_ref(m), &tags) != [0; 3] {
                v["content"] = Value::Array(content_parts(&m.content, request, &tags, &mut next));
            }
            v
        })
        .collect())
}

/// The chat completions request body for `flavor`. Settings the server does not accept are left
/// out and named in a warning.
pub fn chat_body(
    flavor: &Flavor,
    model: &str,
    request: &ChatRequest,
    stream: bool,
) -> Result<Value> {
    let g = &request.generation;
    let mut body = Map::new();
    // The adapter (a served adapter's name): vLLM takes it as the model, SGLang in `lora_path`.
    match (flavor.lora, request.adapter.as_deref()) {
        (_, None) => {
            body.insert("model".into(), model.into());
        }
        (LoraDialect::Vllm, Some(adapter)) => {
            body.insert("model".into(), adapter.into());
        }
        (LoraDialect::Sglang, Some(adapter)) => {
            body.insert("model".into(), model.into());
            body.insert("lora_path".into(), adapter.into());
        }
        (LoraDialect::None, Some(adapter)) => {
            return Err(BridgeError::Unsupported(format!(
                "the {} has no LoRA serving, so the adapter `{adapter}` cannot be applied",
                flavor.server
            )));
        }
    }
    body.insert("messages".into(), messages(flavor, request)?.into());
    if let Some(n) = g.max_new_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    if g.do_sample == Some(false) {
        body.insert("temperature".into(), json!(0.0));
    } else if let Some(t) = g.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = g.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(p) = g.presence_penalty {
        body.insert("presence_penalty".into(), json!(p));
    }
    if let Some(p) = g.frequency_penalty {
        body.insert("frequency_penalty".into(), json!(p));
    }
    let mut ignored: Vec<&str> = Vec::new();
    let n = g.num_return_sequences.filter(|n| *n > 1);
    let kwargs = (!request.chat_template_kwargs.is_empty())
        .then(|| Value::Object(request.chat_template_kwargs.clone()));
    let optional: [(Field, &str, Option<Value>); 9] = [
        (
            Field::TopK,
            "top_k",
            g.top_k.map(|k| if k == 0 { json!(-1) } else { json!(k) }),
        ),
        (
            Field::RepetitionPenalty,
            "repetition_penalty",
            g.repetition_penalty.map(|p| json!(p)),
        ),
        (Field::Stop, "stop", g.stop.as_ref().map(|s| json!(s))),
        (
            Field::StopTokenIds,
            "stop_token_ids",
            g.stop_token_ids.as_ref().map(|s| json!(s)),
        ),
        (
            Field::SkipSpecialTokens,
            "skip_special_tokens",
            g.skip_special_tokens.map(Value::Bool),
        ),
        (Field::ChatTemplateKwargs, "chat_template_kwargs", kwargs),
        (Field::Seed, "seed", g.seed.map(|s| json!(s))),
        (Field::N, "n", n.map(|n| json!(n))),
        (
            Field::Tools,
            "tools",
            request.tools.as_ref().map(|t| json!(t)),
        ),
    ];
    for (field, key, value) in optional {
        let Some(value) = value else { continue };
        if flavor.supports(field) {
            body.insert(key.into(), value);
        } else {
            ignored.push(key);
        }
    }
    if g.max_length.is_some() {
        ignored.push("max_length");
    }
    if !ignored.is_empty() {
        tracing::warn!(
            server = flavor.server,
            "the {} server does not take these settings; they are ignored: {}",
            flavor.server,
            ignored.join(", ")
        );
    }
    for (key, value) in contract_fields(flavor, request)? {
        body.insert(key.into(), value);
    }
    if stream {
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

/// The request fields that change what comes back (logprobs, forced tool use, a
/// structured-output constraint), in the server's dialect. The host refuses them before a
/// bridge sees them when the flavor's capabilities lack them; a server that cannot take one is
/// an error here too, never a silent drop.
fn contract_fields(flavor: &Flavor, request: &ChatRequest) -> Result<Vec<(&'static str, Value)>> {
    let refuse = |what: &str| {
        Err(BridgeError::Unsupported(format!(
            "the {} server does not take {what}; drop it from the request",
            flavor.server
        )))
    };
    let mut out = Vec::new();
    if request.logprobs {
        if !flavor.supports(Field::Logprobs) {
            return refuse("`logprobs`");
        }
        out.push(("logprobs", json!(true)));
        if request.top_logprobs > 0 {
            out.push(("top_logprobs", json!(request.top_logprobs)));
        }
    }
    if let Some(choice) = &request.tool_choice {
        if !flavor.supports(Field::ToolChoice) {
            return refuse("`tool_choice`");
        }
        out.push((
            "tool_choice",
            match choice {
                ToolChoice::Required => json!("required"),
                ToolChoice::Function { name } => {
                    json!({"type": "function", "function": {"name": name}})
                }
            },
        ));
    }
    if let Some(c) = &request.constraint {
        let json_format = |schema: Option<&Value>| match schema {
            Some(schema) => json!({"type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": true}}),
            None => json!({"type": "json_object"}),
        };
        match (flavor.constraints, c) {
            (ConstraintDialect::None, _) => return refuse("structured-output constraints"),
            (_, Constraint::JsonObject) => out.push(("response_format", json_format(None))),
            (_, Constraint::JsonSchema { schema }) => {
                out.push(("response_format", json_format(Some(schema))))
            }
            (ConstraintDialect::Vllm, Constraint::Regex { pattern }) => {
                out.push(("structured_outputs", json!({"regex": pattern})))
            }
            (ConstraintDialect::Vllm, Constraint::Choice { choices }) => {
                out.push(("structured_outputs", json!({"choice": choices})))
            }
            (ConstraintDialect::Vllm, Constraint::Grammar { grammar }) => {
                out.push(("structured_outputs", json!({"grammar": grammar})))
            }
            (ConstraintDialect::Sglang, Constraint::Regex { pattern }) => {
                out.push(("regex", json!(pattern)))
            }
            (ConstraintDialect::Sglang, Constraint::Choice { choices }) => {
                let alternatives: Vec<String> = choices.iter().map(|c| regex_escape(c)).collect();
                out.push(("regex", json!(format!("({})", alternatives.join("|")))))
            }
            (ConstraintDialect::Sglang, Constraint::Grammar { grammar }) => {
                out.push(("ebnf", json!(grammar)))
            }
        }
    }
    Ok(out)
}

/// `text` as a regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A server's `logprobs` object (`{"content": [{token, logprob, bytes, top_logprobs}]}`) as
/// typed token logprobs; servers name tokens by text, so `token_id` stays unset.
pub fn logprobs(value: Option<&Value>) -> Vec<TokenLogprob> {
    let Some(items) = value
        .and_then(|v| v.get("content"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let bytes_of = |v: &Value| -> Vec<u8> {
        match v.get("bytes").and_then(Value::as_array) {
            Some(b) => b
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u8))
                .collect(),
            None => v
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        }
    };
    let text = |v: &Value| {
        v.get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let logprob = |v: &Value| {
        v.get("logprob")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NEG_INFINITY) as f32
    };
    items
        .iter()
        .map(|t| TokenLogprob {
            token: text(t),
            token_id: None,
            bytes: bytes_of(t),
            logprob: logprob(t),
            top_logprobs: t
                .get("top_logprobs")
                .and_then(Value::as_array)
                .map(|alts| {
                    alts.iter()
                        .map(|a| TopLogprob {
                            token: text(a),
                            token_id: None,
                            bytes: bytes_of(a),
                            logprob: logprob(a),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::{KT_LEGACY, KT_SGLANG, SGLANG, VLLM};
    use switchyard_plugin::GenerationParams;

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message::system("old"), Message::user("Say hi")],
            system: Some("You are helpful.".into()),
            generation: GenerationParams {
                do_sample: Some(false),
                top_k: Some(0),
                seed: Some(7),
                max_new_tokens: Some(16),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn system_replaces_the_leading_one_and_greedy_sends_temperature_zero() {
        let b = chat_body(&VLLM, "m", &request(), true).unwrap();
        assert_eq!(b["messages"][0]["content"], "You are helpful.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["top_k"], -1);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn legacy_drops_what_it_cannot_take_and_refuses_media() {
        let mut r = request();
        let b = chat_body(&KT_LEGACY, "m", &r, false).unwrap();
        assert!(b.get("top_k").is_none() && b.get("seed").is_none());
        r.images.push(MediaInput::Url {
            url: "data:image/png;base64,AA".into(),
        });
        assert!(chat_body(&KT_LEGACY, "m", &r, false).is_err());
        let b = chat_body(&VLLM, "m", &r, false).unwrap();
        // No placeholder: the image goes in front of the first user message (LLaMA-Factory).
        assert_eq!(
            b["messages"][1]["content"][0]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(b["messages"][1]["content"][1]["text"], "Say hi");
    }

    #[test]
    fn placeholders_become_content_parts_at_their_positions() {
        // The part shapes are those of OpenAI's chat API (`image_url`) and vLLM's and SGLang's
        // multimodal docs (`video_url`, `audio_url`).
        let mut r = request();
        r.messages = vec![
            Message::user("First <image> then <video>."),
            Message::assistant("ok"),
            Message::user("<audio>And <image>"),
        ];
        r.images = vec![
            MediaInput::Url {
                url: "data:image/png;base64,AA".into(),
            },
            MediaInput::Bytes {
                data_base64: "BB".into(),
                mime_type: Some("image/jpeg".into()),
            },
        ];
        r.videos = vec![MediaInput::Url {
            url: "http://x/v.mp4".into(),
        }];
        r.audios = vec![MediaInput::Bytes {
            data_base64: "CC".into(),
            mime_type: None,
        }];
        for flavor in [&VLLM, &SGLANG, &KT_SGLANG] {
            let b = chat_body(flavor, "m", &r, false).unwrap();
            let m = &b["messages"];
            assert_eq!(m[0]["content"], "You are helpful.");
            assert_eq!(
                m[1]["content"],
                json!([
                    {"type": "text", "text": "First "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    {"type": "text", "text": " then "},
                    {"type": "video_url", "video_url": {"url": "http://x/v.mp4"}},
                    {"type": "text", "text": "."},
                ])
            );
            assert_eq!(m[2]["content"], "ok");
            assert_eq!(
                m[3]["content"],
                json!([
                    {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,CC"}},
                    {"type": "text", "text": "And "},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BB"}},
                ])
            );
        }
        // One image too many for the placeholders: refused, naming the count.
        r.images.push(MediaInput::Url {
            url: "data:image/png;base64,DD".into(),
        });
        let e = chat_body(&VLLM, "m", &r, false).unwrap_err();
        assert!(e.to_string().contains("number of images (3)"), "{e}");
        assert_eq!(e.kind(), switchyard_plugin::ErrorKind::INVALID_REQUEST);
    }

    #[test]
    fn tool_calls_keep_their_ids_and_arguments() {
        let calls = vec![
            json!({"id":"call_abc","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}),
            json!({"index":1,"function":{"name":"g","arguments":{"b":2}}}),
        ];
        let typed = tool_calls(&calls);
        assert_eq!(typed[0].id, "call_abc");
        assert_eq!(typed[0].function.arguments, "{\"a\": 1}");
        assert_eq!(typed[1].function.name, "g");
        assert_eq!(typed[1].function.arguments, "{\"b\":2}");
    }

    #[test]
    fn an_adapter_goes_as_vllms_model_and_sglangs_lora_path() {
        // vLLM's docs: `"model": "sql-lora"` (the --lora-modules name); SGLang's OpenAI example:
        // `model` the base, `extra_body={"lora_path": "sql"}`.
        let mut r = request();
        r.adapter = Some("sql".into());
        let b = chat_body(&VLLM, "base", &r, false).unwrap();
        assert_eq!(b["model"], "sql");
        assert!(b.get("lora_path").is_none(), "{b}");
        for flavor in [&SGLANG, &KT_SGLANG] {
            let b = chat_body(flavor, "base", &r, true).unwrap();
            assert_eq!(
                (&b["model"], &b["lora_path"]),
                (&json!("base"), &json!("sql"))
            );
        }
        let e = chat_body(&KT_LEGACY, "base", &r, false).unwrap_err();
        assert!(e.to_string().contains("`sql`"), "{e}");
        r.adapter = None;
        for flavor in [&VLLM, &SGLANG, &KT_LEGACY] {
            let b = chat_body(flavor, "base", &r, false).unwrap();
            assert_eq!(b["model"], "base");
            assert!(b.get("lora_path").is_none(), "{b}");
        }
    }
}
