//! What the output must match, and how each kind becomes an llguidance grammar.

use llguidance::api::TopLevelGrammar;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// What the generated text must match. The first five variants mirror
/// `switchyard_abi::wire::Constraint` one for one.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against this JSON Schema (the subset llguidance supports: types,
    /// `properties`/`required`/`additionalProperties`, `enum`/`const`, `anyOf`/`oneOf`/`allOf`,
    /// `$ref`/`$defs`, numeric bounds, string length/`pattern`/`format`, array item counts…;
    /// an unsupported keyword is an error, not silently ignored).
    JsonSchema {
        /// The schema.
        schema: Value,
    },
    /// Text matching this regular expression, whole (Rust `regex` syntax, no look-around or
    /// back-references).
    Regex {
        /// The pattern.
        pattern: String,
    },
    /// Text from this grammar, in llguidance's Lark syntax (`start: …` rules, `/regex/`
    /// terminals, `%json {…}` embedded schemas). GBNF (`::=`) is not accepted.
    Grammar {
        /// The grammar text.
        grammar: String,
    },
    /// Exactly one of these strings.
    Choice {
        /// The allowed outputs.
        choices: Vec<String>,
    },
    /// A call of one of these tools: `{"name":"<name>","arguments":{…}}` with the arguments
    /// valid against that tool's parameter schema. One tool is OpenAI's
    /// `tool_choice: {"type":"function","function":{"name":…}}`; several are
    /// `tool_choice: "required"`.
    ToolCall {
        /// The tools the model may call (at least one).
        tools: Vec<Tool>,
    },
}

/// A tool the model may call: its function name and the JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// The function name.
    pub name: String,
    /// JSON schema of the arguments object; `null` means the function takes no arguments
    /// (`arguments` must then be `{}`).
    pub parameters: Value,
}

impl Tool {
    /// A tool from its name and parameter schema.
    pub fn new(name: impl Into<String>, parameters: Value) -> Self {
        Tool {
            name: name.into(),
            parameters,
        }
    }
}

/// The llguidance JSON options this crate compiles every schema with (see the crate docs).
fn compact_options() -> Value {
    json!({ "whitespace_flexible": false })
}

impl Spec {
    /// A short name for errors and logs (the wire type's name, or `"tool_call"`).
    pub fn name(&self) -> &'static str {
        match self {
            Spec::JsonObject => "json_object",
            Spec::JsonSchema { .. } => "json_schema",
            Spec::Regex { .. } => "regex",
            Spec::Grammar { .. } => "grammar",
            Spec::Choice { .. } => "choice",
            Spec::ToolCall { .. } => "tool_call",
        }
    }

    /// The JSON schema a [`Spec::ToolCall`] over `tools` compiles to: for one tool
    /// `{"type":"object","properties":{"name":{"const":…},"arguments":…},"required":[…],
    /// "additionalProperties":false}`, for several an `anyOf` of those.
    pub fn tool_call_schema(tools: &[Tool]) -> Result<Value> {
        let invalid = |message: String| Error::InvalidSpec {
            kind: "tool_call",
            message,
        };
        if tools.is_empty() {
            return Err(invalid("no tools to call".into()));
        }
        let mut calls = Vec::with_capacity(tools.len());
        for (index, tool) in tools.iter().enumerate() {
            if tool.name.is_empty() {
                return Err(invalid(format!("tool #{index} has an empty name")));
            }
            let arguments = match &tool.parameters {
                Value::Null => json!({
                    "type": "object", "properties": {}, "additionalProperties": false
                }),
                Value::Object(params) => {
                    let mut params = params.clone();
                    // Make the parameters a schema resource of their own, so that `#/$defs/…`
                    // inside them resolves there and not at the root of the combined schema.
                    params
                        .entry("$id")
                        .or_insert_with(|| json!(format!("urn:switchyard:tool:{index}")));
                    Value::Object(params)
                }
                Value::Bool(true) => json!({ "type": "object" }),
                other => {
                    return Err(invalid(format!(
                        "parameters of tool {:?} are not a JSON schema object: {other}",
                        tool.name
                    )));
                }
            };
            // `properties` keeps insertion order (llguidance enables serde_json's
            // `preserve_order`), so the name comes first.
            calls.push(json!({
                "type": "object",
                "properties": {
                    "name": { "const": tool.name },
                    "arguments": arguments,
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            }));
        }
        Ok(if calls.len() == 1 {
            calls.remove(0)
        } else {
            json!({ "anyOf": calls })
        })
    }

    /// The llguidance grammar for this spec.
    pub(crate) fn to_grammar(&self) -> Result<TopLevelGrammar> {
        let invalid = |message: String| Error::InvalidSpec {
            kind: self.name(),
            message,
        };
        Ok(match self {
            Spec::JsonObject => json_grammar(json!({ "type": "object" })),
            Spec::JsonSchema { schema } => json_grammar(schema.clone()),
            Spec::ToolCall { tools } => json_grammar(Spec::tool_call_schema(tools)?),
            Spec::Regex { pattern } => TopLevelGrammar::from_regex(pattern),
            Spec::Grammar { grammar } => {
                if grammar.trim().is_empty() {
                    return Err(invalid("the grammar is empty".into()));
                }
                TopLevelGrammar::from_lark(grammar.clone())
            }
            Spec::Choice { choices } => {
                if choices.is_empty() {
                    return Err(invalid("no choices given".into()));
                }
                // Lark string literals are JSON strings, so JSON quoting escapes any choice.
                let alternatives = choices
                    .iter()
                    .map(|c| Value::String(c.clone()).to_string())
                    .collect::<Vec<_>>();
                TopLevelGrammar::from_lark(format!("start: {}\n", alternatives.join(" | ")))
            }
        })
    }
}

/// A JSON-schema grammar with compact whitespace, unless the schema sets its own options.
fn json_grammar(schema: Value) -> TopLevelGrammar {
    let schema = match schema {
        Value::Object(mut map) => {
            map.entry("x-guidance").or_insert_with(compact_options);
            Value::Object(map)
        }
        // `true`/`false` schemas: wrap them so the options have somewhere to go.
        other => {
            let mut map = Map::new();
            map.insert("allOf".into(), Value::Array(vec![other]));
            map.insert("x-guidance".into(), compact_options());
            Value::Object(map)
        }
    };
    TopLevelGrammar::from_json_schema(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tool_is_a_plain_object_schema() {
        let schema =
            Spec::tool_call_schema(&[Tool::new("f", json!({"type": "object"}))]).expect("schema");
        assert_eq!(schema["properties"]["name"]["const"], "f");
        assert_eq!(
            schema["properties"]["arguments"]["$id"],
            "urn:switchyard:tool:0"
        );
        let keys: Vec<_> = schema["properties"]
            .as_object()
            .expect("object")
            .keys()
            .collect();
        assert_eq!(keys, ["name", "arguments"]);
    }

    #[test]
    fn several_tools_are_any_of() {
        let tools = [Tool::new("a", Value::Null), Tool::new("b", Value::Null)];
        let schema = Spec::tool_call_schema(&tools).expect("schema");
        assert_eq!(schema["anyOf"].as_array().map(Vec::len), Some(2));
        assert!(Spec::tool_call_schema(&[]).is_err());
        assert!(Spec::tool_call_schema(&[Tool::new("x", json!(3))]).is_err());
    }

    #[test]
    fn schemas_get_compact_whitespace_unless_they_say_otherwise() {
        let g = json_grammar(json!({"type": "object"}));
        let schema = g.grammars[0].json_schema.as_ref().expect("schema");
        assert_eq!(schema["x-guidance"]["whitespace_flexible"], false);
        let g = json_grammar(json!({"x-guidance": {"whitespace_flexible": true}}));
        let schema = g.grammars[0].json_schema.as_ref().expect("schema");
        assert_eq!(schema["x-guidance"]["whitespace_flexible"], true);
    }
}
