//! LLaMA-Factory's tool formats (`tool_format`): how the tool list is written into the system
//! prompt, how an assistant's calls are written into its turn, and how calls are read back out
//! of generated text (`tool_extractor`, the inverse of the call writer).

use serde_json::{Map, Value};

use crate::pyjson::{dumps, py_str};
use crate::{Error, Result};

/// A tool call as LLaMA-Factory passes it between formatters: the function name and its
/// arguments as `json.dumps(arguments, ensure_ascii=False)` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, JSON text.
    pub arguments: String,
}

/// A `tool_format` of LLaMA-Factory (`tool_utils.py`'s `TOOLS`); the ones the named templates here use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// `Action: name` / `Action Input: {json}` lines, tools described as a bullet list.
    Default,
    /// GLM-4: `name\n{json}`, one call per turn, a Chinese system preamble.
    Glm4,
    /// Llama 3.x JSON calls (`{"name", "parameters"}`), tools as indented JSON with today's date.
    Llama3,
    /// Mistral v0.3: `[AVAILABLE_TOOLS]` / `[TOOL_CALLS]` JSON lists.
    Mistral,
    /// Qwen 2.5 / Hermes: `<tools>` in the system prompt, `<tool_call>{json}</tool_call>` calls.
    Qwen,
}

impl ToolFormat {
    /// The name LLaMA-Factory gives it (`tool_format: NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Glm4 => "glm4",
            Self::Llama3 => "llama3",
            Self::Mistral => "mistral",
            Self::Qwen => "qwen",
        }
    }

    /// The tool descriptions written into the system prompt (`tool_formatter`). `date` is today
    /// as `%d %b %Y` (only `llama3` writes it).
    pub fn tool_text(self, tools: &[Value], date: &str) -> Result<String> {
        match self {
            Self::Default => default_tools(tools),
            Self::Glm4 => {
                let mut text = String::new();
                for tool in tools {
                    let tool = unwrap_function(tool);
                    text.push_str(&format!(
                        "\n\n## {}\n\n{}\n在调用上述函数时，请使用 Json 格式表示调用的参数。",
                        py_str(field(tool, "name")?),
                        dumps(tool, Some(4))
                    ));
                }
                Ok(format!(
                    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，\
                     你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{text}"
                ))
            }
            Self::Llama3 => {
                let mut text = String::new();
                for tool in tools {
                    text.push_str(&dumps(&wrap_function(tool), Some(4)));
                    text.push_str("\n\n");
                }
                Ok(format!(
                    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n\
                     You have access to the following functions. To call a function, please respond with JSON for a function call. \
                     Respond in the format {{\"name\": function name, \"parameters\": dictionary of argument name and its value}}. \
                     Do not use variables.\n\n{text}"
                ))
            }
            Self::Mistral => {
                let wrapped: Vec<Value> = tools.iter().map(wrap_function).collect();
                Ok(format!(
                    "[AVAILABLE_TOOLS] {}[/AVAILABLE_TOOLS]",
                    dumps(&Value::Array(wrapped), None)
                ))
            }
            Self::Qwen => {
                let mut text = String::new();
                for tool in tools {
                    text.push('\n');
                    text.push_str(&dumps(&wrap_function(tool), None));
                }
                Ok(format!(
                    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
                     You are provided with function signatures within <tools></tools> XML tags:\n<tools>{text}\n</tools>\n\n\
                     For each function call, return a json object with function name and arguments within \
                     <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \
                     \"arguments\": <args-json-object>}}\n</tool_call>"
                ))
            }
        }
    }

    /// An assistant's calls as the model writes them (`function_formatter`).
    pub fn calls_text(self, calls: &[FunctionCall]) -> Result<String> {
        let parsed = |c: &FunctionCall| -> Result<Value> {
            serde_json::from_str(&c.arguments).map_err(|e| Error::BadFunctionCall {
                content: c.arguments.clone(),
                reason: e.to_string(),
            })
        };
        match self {
            Self::Default => Ok(calls
                .iter()
                .map(|c| format!("Action: {}\nAction Input: {}", c.name, c.arguments))
                .collect::<Vec<_>>()
                .join("\n")),
            Self::Glm4 => match calls {
                [one] => Ok(format!("{}\n{}", one.name, one.arguments)),
                _ => Err(Error::ParallelCalls { format: "glm4" }),
            },
            Self::Llama3 => {
                let objects = calls
                    .iter()
                    .map(|c| Ok(call_object(&c.name, "parameters", parsed(c)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(match <[Value; 1]>::try_from(objects) {
                    Ok([one]) => dumps(&one, None),
                    Err(many) => dumps(&Value::Array(many), None),
                })
            }
            Self::Mistral => {
                let objects = calls
                    .iter()
                    .map(|c| Ok(call_object(&c.name, "arguments", parsed(c)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(dumps(&Value::Array(objects), None))
            }
            Self::Qwen => Ok(calls
                .iter()
                .map(|c| {
                    Ok(format!(
                        "<tool_call>\n{}\n</tool_call>",
                        dumps(&call_object(&c.name, "arguments", parsed(c)?), None)
                    ))
                })
                .collect::<Result<Vec<_>>>()?
                .join("\n")),
        }
    }

    /// Calls read out of generated text (`tool_extractor`); `None` when the text holds none
    /// (LLaMA-Factory then returns the text as the answer).
    pub fn extract(self, content: &str) -> Option<Vec<FunctionCall>> {
        match self {
            Self::Default => extract_default(content),
            Self::Glm4 => {
                let (name, input) = content.split_once('\n')?;
                let args: Value = serde_json::from_str(input.trim()).ok()?;
                Some(vec![FunctionCall {
                    name: name.to_owned(),
                    arguments: dumps(&args, None),
                }])
            }
            Self::Llama3 => extract_json_calls(content, "parameters"),
            Self::Mistral => extract_json_calls(content, "arguments"),
            Self::Qwen => extract_qwen(content),
        }
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| Error::BadTools {
        reason: format!("a tool has no `{key}`"),
    })
}

/// `tool["function"]` for `{"type": "function", "function": {...}}`, else the tool itself.
fn unwrap_function(tool: &Value) -> &Value {
    if tool.get("type").and_then(Value::as_str) == Some("function") {
        tool.get("function").unwrap_or(&Value::Null)
    } else {
        tool
    }
}

/// `{"type": "function", "function": tool}` unless it already is.
fn wrap_function(tool: &Value) -> Value {
    if tool.get("type").and_then(Value::as_str) == Some("function") {
        tool.clone()
    } else {
        let mut m = Map::new();
        m.insert("type".into(), "function".into());
        m.insert("function".into(), tool.clone());
        Value::Object(m)
    }
}

fn call_object(name: &str, key: &str, args: Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert(key.into(), args);
    Value::Object(m)
}

fn default_tools(tools: &[Value]) -> Result<String> {
    let mut text = String::new();
    let mut names = Vec::new();
    for tool in tools {
        let tool = unwrap_function(tool);
        let params = field(tool, "parameters")?;
        let props = field(params, "properties")?
            .as_object()
            .ok_or_else(|| Error::BadTools {
                reason: "a tool's `parameters.properties` is not an object".into(),
            })?;
        let required: Vec<&Value> = params
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let mut args = String::new();
        for (name, param) in props {
            let get = |k: &str| param.get(k).map(py_str).unwrap_or_default();
            let req = if required.iter().any(|r| r.as_str() == Some(name)) {
                ", required"
            } else {
                ""
            };
            let enum_text = match param.get("enum").and_then(Value::as_array) {
                Some(items) if !items.is_empty() => format!(
                    ", should be one of [{}]",
                    items.iter().map(py_str).collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            };
            let items_text = match param.get("items") {
                Some(items) if truthy(items) => format!(
                    ", where each item should be {}",
                    items.get("type").map(py_str).unwrap_or_default()
                ),
                _ => String::new(),
            };
            args.push_str(&format!(
                "  - {name} ({}{req}): {}{enum_text}{items_text}\n",
                get("type"),
                get("description")
            ));
        }
        let name = py_str(field(tool, "name")?);
        let desc = tool.get("description").map(py_str).unwrap_or_default();
        text.push_str(&format!(
            "> Tool Name: {name}\nTool Description: {desc}\nTool Args:\n{args}\n"
        ));
        names.push(name);
    }
    Ok(format!(
        "You have access to the following tools:\n{text}Use the following format if using a tool:\n```\n\
         Action: tool name (one of [{}])\n\
         Action Input: the input to the tool, in a JSON format representing the kwargs \
         (e.g. ```{{\"input\": \"hello world\", \"num_beams\": 5}}```)\n```\n",
        names.join(", ")
    ))
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// `Action:\s*(\w+)\s*Action Input:\s*(.+?)(?=\s*Action:|\s*$)`, each input stripped of
/// whitespace, `"` and backticks and parsed as JSON; any unparsable input means no calls.
fn extract_default(content: &str) -> Option<Vec<FunctionCall>> {
    const ACTION: &str = "Action:";
    const INPUT: &str = "Action Input:";
    let mut calls = Vec::new();
    let mut at = 0;
    while let Some(found) = content[at..].find(ACTION) {
        let start = at + found + ACTION.len();
        let rest = content[start..].trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after_name = rest[name_len..].trim_start();
        if name_len == 0 || !after_name.starts_with(INPUT) {
            at = start;
            continue;
        }
        let input_start = content.len() - after_name.len() + INPUT.len();
        let body = content[input_start..].trim_start();
        let body_start = content.len() - body.len();
        // The input ends where the next `Action:` starts (at least one character in).
        let end = body
            .char_indices()
            .nth(1)
            .and_then(|(i, _)| body[i..].find(ACTION).map(|j| body_start + i + j))
            .unwrap_or(content.len());
        if body.is_empty() {
            break;
        }
        let input = content[body_start..end]
            .trim()
            .trim_matches('"')
            .trim_matches('`');
        let args: Value = serde_json::from_str(input).ok()?;
        calls.push(FunctionCall {
            name: rest[..name_len].to_owned(),
            arguments: dumps(&args, None),
        });
        at = end;
    }
    (!calls.is_empty()).then_some(calls)
}

/// The whole text is one JSON call object or a list of them, with `args_key` holding the arguments.
fn extract_json_calls(content: &str, args_key: &str) -> Option<Vec<FunctionCall>> {
    let v: Value = serde_json::from_str(content.trim()).ok()?;
    let items = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .map(|item| {
            Some(FunctionCall {
                name: py_str(item.get("name")?),
                arguments: dumps(item.get(args_key)?, None),
            })
        })
        .collect()
}

/// `<tool_call>(.+?)</tool_call>` blocks, each followed only by whitespace and the next block
/// (or the end); each a JSON object with `name` and `arguments`.
fn extract_qwen(content: &str) -> Option<Vec<FunctionCall>> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut calls = Vec::new();
    let mut at = 0;
    while let Some(found) = content[at..].find(OPEN) {
        let body_start = at + found + OPEN.len();
        // Non-greedy body, then the lookahead: the first close tag after which only whitespace
        // and another block (or the end) follow.
        let mut search = body_start + 1;
        let mut matched = None;
        while search <= content.len() {
            let Some(c) = content.get(search..).and_then(|s| s.find(CLOSE)) else {
                break;
            };
            let close = search + c;
            let tail = content[close + CLOSE.len()..].trim_start();
            if tail.is_empty() || tail.starts_with(OPEN) {
                matched = Some(close);
                break;
            }
            search = close + 1;
        }
        let Some(close) = matched else {
            at = body_start;
            continue;
        };
        let v: Value = serde_json::from_str(content[body_start..close].trim()).ok()?;
        calls.push(FunctionCall {
            name: py_str(v.get("name")?),
            arguments: dumps(v.get("arguments")?, None),
        });
        at = close + CLOSE.len();
    }
    (!calls.is_empty()).then_some(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_written_are_read_back() {
        let calls = vec![
            FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into(),
            },
            FunctionCall {
                name: "add".into(),
                arguments: r#"{"a": 1, "b": [2, 3]}"#.into(),
            },
        ];
        for f in [
            ToolFormat::Default,
            ToolFormat::Llama3,
            ToolFormat::Mistral,
            ToolFormat::Qwen,
        ] {
            let text = f.calls_text(&calls).unwrap();
            assert_eq!(
                f.extract(&text).as_deref(),
                Some(&calls[..]),
                "{f:?}: {text}"
            );
        }
        let one = &calls[..1];
        let text = ToolFormat::Glm4.calls_text(one).unwrap();
        assert_eq!(ToolFormat::Glm4.extract(&text).as_deref(), Some(one));
        assert!(ToolFormat::Glm4.calls_text(&calls).is_err());
        for f in [ToolFormat::Default, ToolFormat::Qwen, ToolFormat::Llama3] {
            assert_eq!(f.extract("Just an answer."), None);
        }
    }
}
