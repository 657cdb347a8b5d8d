//! Checking a chat request before any work, the same way for every front end.
//!
//! The request-level rules live here (messages, media, logprobs, tool choice, constraints
//! against what the loaded engine declares it can do); the generation settings' merge,
//! normalisation and ranges live in [`crate::generation`]. A field the backend cannot honour is
//! an error that names it, never silently dropped.

use serde_json::Value;
use switchyard_abi::placeholders;
use switchyard_abi::wire::{
    ChatRequest, Constraint, EngineInfo, GenerationParams, Prompt, Role, ScoreRequest, ToolChoice,
};

use crate::error::{Error, Result};
use crate::generation;

/// Most alternatives per token for `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

fn unsupported(name: &str, info: &EngineInfo, what: &str) -> Error {
    Error::Unsupported {
        name: name.to_owned(),
        message: format!(
            "{what}, but backend `{}` with model `{}` cannot do it; drop `{name}` or use a backend that lists `{name}` in its capabilities (GET /v1/info)",
            info.backend, info.model
        ),
    }
}

fn invalid(name: &str, message: impl Into<String>) -> Error {
    Error::InvalidSetting {
        name: name.to_owned(),
        message: message.into(),
    }
}

/// A score (or embedding) request: some inputs, and the capability it needs.
pub fn check_scores(request: &ScoreRequest, info: &EngineInfo) -> Result<()> {
    if request.inputs.is_empty() {
        return Err(Error::InvalidRequest("no inputs to score".to_owned()));
    }
    if request.embed && !info.capabilities.embeddings {
        return Err(unsupported(
            "input",
            info,
            "the request asks for embeddings",
        ));
    }
    Ok(())
}

/// A request's named adapter must be one of the model's `[model.lora_modules]`.
pub fn check_adapter(
    request: &ChatRequest,
    adapters: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    match &request.adapter {
        Some(name) if !adapters.contains_key(name) => Err(invalid(
            "adapter",
            if adapters.is_empty() {
                format!(
                    "the request asks for the LoRA adapter `{name}`, but this model has no named adapters; add it under [model.lora_modules] ({name} = \"DIR\") or drop the field"
                )
            } else {
                format!(
                    "the request asks for the LoRA adapter `{name}`; this model has {} (set in [model.lora_modules])",
                    adapters
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )),
        _ => Ok(()),
    }
}

/// Validates `request` against the engine and resolves its generation settings over the
/// config's `defaults` and then the model's own (`info.generation_defaults`); what comes back
/// is what the plugin receives.
pub fn prepare(
    mut request: ChatRequest,
    defaults: &GenerationParams,
    info: &EngineInfo,
) -> Result<ChatRequest> {
    if !info.capabilities.chat {
        return Err(unsupported(
            "messages",
            info,
            "the request asks for a chat reply (this is a reward model: it computes scores, use /v1/score/evaluation)",
        ));
    }
    match &request.prompt {
        Some(prompt) => check_prompt(prompt, &request, info)?,
        None => check_messages(&request, info)?,
    }
    check_media(&request, info)?;
    // Where the media go: LLaMA-Factory's placeholders, the same for every backend.
    placeholders::place_request(&mut request, &placeholders::Placeholders::from_env())
        .map_err(|e| invalid("messages", e.to_string()))?;
    check_tools(&request, info)?;
    check_logprobs(&request, info)?;
    check_constraint(&request, info)?;
    let defaults = generation::layer(defaults, &info.generation_defaults);
    // `echo` with no new tokens scores the prompt alone (lm-eval's loglikelihood): the one
    // place a zero token limit is meaningful.
    let echo_only = request.echo && request.generation.max_new_tokens == Some(0);
    if echo_only {
        request.generation.max_new_tokens = Some(1);
    }
    request.generation = generation::resolve(&defaults, &request.generation)?;
    if echo_only {
        request.generation.max_new_tokens = Some(0);
    }
    Ok(request)
}

fn check_messages(request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    if request.echo && !info.capabilities.completions {
        return Err(unsupported(
            "echo",
            info,
            "the request asks for its prompt's tokens back (`echo`)",
        ));
    }
    if request.messages.is_empty() {
        return Err(invalid(
            "messages",
            "`messages` is empty; send at least one user message",
        ));
    }
    if let Some(i) = request
        .messages
        .iter()
        .skip(1)
        .position(|m| m.role == Role::System)
    {
        return Err(invalid(
            "messages",
            format!(
                "message {} has role `system`; a system message may only come first (or use the `system` field)",
                i + 1
            ),
        ));
    }
    Ok(())
}

/// A text completion: a raw prompt in place of the conversation.
fn check_prompt(prompt: &Prompt, request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    if !info.capabilities.completions {
        return Err(unsupported(
            "prompt",
            info,
            "the request is a text completion (a raw `prompt`)",
        ));
    }
    if !request.messages.is_empty() || request.system.is_some() {
        return Err(invalid(
            "prompt",
            "a request has either `messages` (a chat) or a `prompt` (a text completion), not both",
        ));
    }
    if request.tools.is_some() || request.tool_choice.is_some() {
        return Err(invalid(
            "tools",
            "`tools` need a chat: a text completion has no template to offer them in",
        ));
    }
    let empty = match prompt {
        Prompt::Text(t) => t.is_empty(),
        Prompt::Tokens(ids) => ids.is_empty(),
    };
    if empty {
        return Err(invalid(
            "prompt",
            "the prompt is empty; send at least one character or token id",
        ));
    }
    Ok(())
}

fn check_media(request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    let caps = &info.capabilities;
    for (name, count, ok) in [
        ("images", request.images.len(), caps.images),
        ("videos", request.videos.len(), caps.videos),
        ("audios", request.audios.len(), caps.audios),
    ] {
        if count > 0 && !ok {
            return Err(unsupported(
                name,
                info,
                &format!("the request has {count} {name}"),
            ));
        }
    }
    Ok(())
}

fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("function")?.get("name")?.as_str()
}

fn check_tools(request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    let tools = request.tools.as_deref().unwrap_or_default();
    if let Some(i) = tools.iter().position(|t| tool_name(t).is_none()) {
        return Err(invalid(
            &format!("tools[{i}]"),
            format!(
                "tools[{i}] has no function name; each tool is {{\"type\": \"function\", \"function\": {{\"name\", \"parameters\"?, ...}}}}"
            ),
        ));
    }
    if !tools.is_empty() && !info.capabilities.tools {
        return Err(unsupported(
            "tools",
            info,
            &format!("the request offers {} tools", tools.len()),
        ));
    }
    let Some(choice) = &request.tool_choice else {
        return Ok(());
    };
    if tools.is_empty() {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` forces a tool call, but the request offers no `tools`",
        ));
    }
    if let ToolChoice::Function { name } = choice
        && !tools.iter().any(|t| tool_name(t) == Some(name))
    {
        return Err(invalid(
            "tool_choice",
            format!(
                "`tool_choice` names function `{name}`, which is not among the offered tools ({})",
                tools
                    .iter()
                    .filter_map(tool_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !info.capabilities.tool_choice {
        return Err(unsupported(
            "tool_choice",
            info,
            "the request forces a tool call with `tool_choice`",
        ));
    }
    Ok(())
}

fn check_logprobs(request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    if request.top_logprobs > MAX_TOP_LOGPROBS {
        return Err(invalid(
            "top_logprobs",
            format!(
                "`top_logprobs` = {} is out of range; allowed: 0 to {MAX_TOP_LOGPROBS}",
                request.top_logprobs
            ),
        ));
    }
    if request.top_logprobs > 0 && !request.logprobs {
        return Err(invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        ));
    }
    if request.logprobs && !info.capabilities.logprobs {
        return Err(unsupported(
            "logprobs",
            info,
            "the request asks for token log-probabilities",
        ));
    }
    Ok(())
}

fn check_constraint(request: &ChatRequest, info: &EngineInfo) -> Result<()> {
    let Some(c) = &request.constraint else {
        return Ok(());
    };
    match c {
        Constraint::JsonSchema { schema } if !(schema.is_object() || schema.is_boolean()) => {
            return Err(invalid(
                "constraint",
                "the JSON schema must be an object (or true/false)",
            ));
        }
        Constraint::Choice { choices } if choices.is_empty() => {
            return Err(invalid("constraint", "the choice list is empty"));
        }
        _ => {}
    }
    if !info.capabilities.constraints {
        return Err(unsupported(
            "constraint",
            info,
            &format!(
                "the request constrains the output ({}; OpenAI's `response_format`)",
                c.name()
            ),
        ));
    }
    Ok(())
}
