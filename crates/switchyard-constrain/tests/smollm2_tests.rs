//! End-to-end checks on the real SmolLM2 vocabulary (49,152 tokens), without a model: a
//! deterministic stand-in "model" picks among the allowed tokens until the matcher finishes, the
//! ids are decoded with the `tokenizers` crate, and the text is checked independently (serde_json
//! + jsonschema, regex, …). Skipped, with a note, when the tokenizer is not on disk.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_constrain::{Error, Matcher, Spec, Tool, Vocabulary};
use tokenizers::Tokenizer;

/// `<|im_end|>`, SmolLM2-Instruct's end of turn.
const EOS: u32 = 2;
/// Tokens a stand-in model may emit before it is cut off as a failure.
const MAX_STEPS: usize = 400;
/// Steps picked at random before the stand-in model steers towards the end.
const RANDOM_STEPS: usize = 40;
/// Random runs per spec (plus one steered from the start).
const SEEDS: u64 = 6;

struct Fixture {
    vocab: Vocabulary,
    tokenizer: Tokenizer,
    /// Ids of tokens that tend to end things, best first: a quote (closes a string, or opens
    /// one that the next quote closes), closers, then digits.
    steer: Vec<u32>,
}

fn tokenizer_path() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/switchyard/models/SmolLM2-135M-Instruct-hf/tokenizer.json")
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let path = tokenizer_path();
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!("note: {} is absent; skipping SmolLM2 tests", path.display());
                return None;
            };
            let start = Instant::now();
            let vocab = Vocabulary::from_tokenizer_json(&bytes, &[EOS]).expect("vocabulary");
            eprintln!("Vocabulary::from_tokenizer_json: {:?}", start.elapsed());
            let tokenizer = Tokenizer::from_bytes(&bytes).expect("tokenizer");
            let steer = ["\"", ")", "]", "}", ";", "0", "1", "2", "5", "9"]
                .iter()
                .filter_map(|t| tokenizer.token_to_id(t))
                .collect();
            Some(Fixture {
                vocab,
                tokenizer,
                steer,
            })
        })
        .as_ref()
}

/// splitmix64: a tiny seeded generator, so runs are reproducible without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How the stand-in model picks. Steering: EOS if allowed, else the first allowed of
/// `Fixture::steer`, else the lowest allowed id. `None` steers from the first step (the shortest
/// outputs); `Some(seed)` picks uniformly at random for `RANDOM_STEPS` steps, then steers.
struct Run {
    text: String,
    steps: usize,
    mask_time: Duration,
}

fn generate(fx: &Fixture, spec: &Spec, seed: Option<u64>) -> Run {
    let mut m = Matcher::new(&fx.vocab, spec).expect("matcher");
    let mut rng = seed.map(Rng);
    let mut ids = Vec::new();
    let mut mask_time = Duration::ZERO;
    for step in 0..MAX_STEPS {
        let finished = m.is_finished();
        let start = Instant::now();
        let mask = m.allowed().expect("mask");
        mask_time += start.elapsed();
        let allowed = mask.allowed_ids();
        assert!(
            !allowed.is_empty(),
            "empty mask at step {step} for {spec:?}"
        );
        if finished {
            assert_eq!(allowed, [EOS], "a finished matcher allows only EOS");
        }
        let pick = match rng.as_mut() {
            Some(rng) if step < RANDOM_STEPS => {
                allowed[(rng.next() % allowed.len() as u64) as usize]
            }
            _ if mask.is_allowed(EOS) => EOS,
            _ => fx
                .steer
                .iter()
                .copied()
                .find(|&id| mask.is_allowed(id))
                .unwrap_or(allowed[0]),
        };
        let start = Instant::now();
        m.consume(pick).expect("consume an allowed token");
        mask_time += start.elapsed();
        if pick == EOS {
            assert!(m.is_finished(), "EOS consumed but not finished");
            let text = fx.tokenizer.decode(&ids, false).expect("decode");
            return Run {
                text,
                steps: step + 1,
                mask_time,
            };
        }
        ids.push(pick);
    }
    let text = fx.tokenizer.decode(&ids, false).unwrap_or_default();
    panic!("no EOS after {MAX_STEPS} tokens for {spec:?}: {text:?}");
}

/// Every run of `spec` (steered, then each seed), checked by `check`.
fn each_run(spec: &Spec, mut check: impl FnMut(&str)) {
    let Some(fx) = fixture() else { return };
    for seed in std::iter::once(None).chain((0..SEEDS).map(Some)) {
        let run = generate(fx, spec, seed);
        eprintln!("{} seed {seed:?}: {:?}", spec.name(), run.text);
        check(&run.text);
    }
}

fn assert_valid(schema: &Value, instance: &Value, text: &str) {
    if let Err(e) = jsonschema::validate(schema, instance) {
        panic!("{text:?} does not validate: {e}");
    }
}

#[test]
fn vocabulary_covers_the_tokenizer() {
    let Some(fx) = fixture() else { return };
    assert_eq!(fx.vocab.len(), fx.tokenizer.get_vocab_size(true));
    assert_eq!(fx.vocab.len(), 49152);
}

#[test]
fn json_object_parses() {
    each_run(&Spec::JsonObject, |text| {
        let v: Value = serde_json::from_str(text).expect("valid JSON");
        assert!(v.is_object(), "{text:?}");
    });
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "pattern": "^[a-z]{3}-[0-9]{2,4}$" },
            "age": { "type": "integer", "minimum": 18, "maximum": 99 },
            "color": { "enum": ["red", "green", "blue"] },
            "tags": {
                "type": "array",
                "items": { "type": "string", "maxLength": 6 },
                "minItems": 2,
                "maxItems": 3
            },
            "address": {
                "type": "object",
                "properties": {
                    "city": { "type": "string", "minLength": 1, "maxLength": 12 },
                    "zip": { "type": "integer", "minimum": 10000, "maximum": 99999 }
                },
                "required": ["city", "zip"],
                "additionalProperties": false
            }
        },
        "required": ["id", "age", "color", "tags", "address"],
        "additionalProperties": false
    })
}

#[test]
fn json_schema_output_validates() {
    let schema = person_schema();
    let spec = Spec::JsonSchema {
        schema: schema.clone(),
    };
    each_run(&spec, |text| {
        let v: Value = serde_json::from_str(text).expect("valid JSON");
        assert_valid(&schema, &v, text);
        // Compact: re-serializing (key order is kept) gives the same text back when there are
        // no escapes to differ on.
        if !text.contains('\\') {
            assert_eq!(serde_json::to_string(&v).expect("json"), text);
        }
    });
}

#[test]
fn regex_output_matches() {
    let pattern = r"(?:[A-Z][a-z]{2,5} )?[0-9]{3}-[0-9]{4}( ext\. [0-9]+)?";
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).expect("regex");
    let spec = Spec::Regex {
        pattern: pattern.into(),
    };
    each_run(&spec, |text| assert!(re.is_match(text), "{text:?}"));
}

#[test]
fn choice_output_is_one_of_the_choices() {
    let choices = vec![
        "yes".to_string(),
        "no".to_string(),
        "not sure".to_string(),
        "say \"hi\"\n\\".to_string(),
    ];
    let spec = Spec::Choice {
        choices: choices.clone(),
    };
    each_run(&spec, |text| {
        assert!(choices.iter().any(|c| c == text), "{text:?}");
    });
}

#[test]
fn grammar_output_is_in_the_language() {
    let grammar = r#"
start: "let " NAME " = " expr ";"
expr: term (("+" | "*") term)*
term: NUMBER | NAME | "(" expr ")"
NAME: /[a-z][a-z0-9_]{0,7}/
NUMBER: /[0-9]{1,4}/
"#;
    let shape = regex::Regex::new(r"^let [a-z][a-z0-9_]{0,7} = [a-z0-9_+*()]+;$").expect("regex");
    let spec = Spec::Grammar {
        grammar: grammar.into(),
    };
    each_run(&spec, |text| {
        assert!(shape.is_match(text), "{text:?}");
        let mut depth = 0i32;
        for c in text.chars() {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "{text:?}");
        }
        assert_eq!(depth, 0, "{text:?}");
    });
}

fn weather_tool() -> Tool {
    Tool::new(
        "get_weather",
        json!({
            "type": "object",
            "properties": {
                "location": { "type": "string", "maxLength": 20 },
                "unit": { "enum": ["celsius", "fahrenheit"] }
            },
            "required": ["location", "unit"],
            "additionalProperties": false
        }),
    )
}

#[test]
fn tool_call_names_the_tool_and_validates_its_arguments() {
    let tool = weather_tool();
    let spec = Spec::ToolCall {
        tools: vec![tool.clone()],
    };
    each_run(&spec, |text| {
        let v: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(v["name"], "get_weather", "{text:?}");
        assert_valid(&tool.parameters, &v["arguments"], text);
        assert!(
            text.starts_with(r#"{"name":"get_weather","arguments":{"#),
            "{text:?}"
        );
    });
}

#[test]
fn required_tool_call_picks_one_of_several() {
    let tools = vec![
        weather_tool(),
        Tool::new(
            "convert",
            json!({
                "type": "object",
                "$defs": { "amount": { "type": "integer", "minimum": 0, "maximum": 1000 } },
                "properties": {
                    "value": { "$ref": "#/$defs/amount" },
                    "to": { "type": "string", "enum": ["EUR", "USD"] }
                },
                "required": ["value", "to"],
                "additionalProperties": false
            }),
        ),
        Tool::new("now", Value::Null),
    ];
    let spec = Spec::ToolCall {
        tools: tools.clone(),
    };
    let mut seen = std::collections::BTreeSet::new();
    each_run(&spec, |text| {
        let v: Value = serde_json::from_str(text).expect("valid JSON");
        let name = v["name"].as_str().expect("a name");
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("unknown tool in {text:?}"));
        if tool.parameters.is_null() {
            assert_eq!(v["arguments"], json!({}), "{text:?}");
        } else {
            assert_valid(&tool.parameters, &v["arguments"], text);
        }
        seen.insert(name.to_string());
    });
    eprintln!("tools called: {seen:?}");
}

fn invalid_message(spec: Spec) -> String {
    let Some(fx) = fixture() else {
        return String::new();
    };
    match Matcher::new(&fx.vocab, &spec) {
        Err(e @ Error::InvalidSpec { .. }) => {
            eprintln!("{e}");
            e.to_string()
        }
        other => panic!("{spec:?} should be invalid, got {other:?}"),
    }
}

#[test]
fn bad_specs_name_the_problem() {
    if fixture().is_none() {
        return;
    }
    let msg = invalid_message(Spec::Regex {
        pattern: "ab(c".into(),
    });
    assert!(msg.starts_with("invalid regex:"), "{msg}");
    assert!(msg.to_lowercase().contains("unclosed group"), "{msg}");

    let msg = invalid_message(Spec::JsonSchema {
        schema: json!({ "type": "frobnicate" }),
    });
    assert!(msg.starts_with("invalid json_schema:"), "{msg}");
    assert!(msg.contains("frobnicate"), "{msg}");

    let msg = invalid_message(Spec::JsonSchema {
        schema: json!({ "type": "object", "properties": { "a": { "$ref": "#/$defs/missing" } } }),
    });
    assert!(msg.contains("missing"), "{msg}");

    let msg = invalid_message(Spec::Grammar {
        grammar: "start: undefined_rule".into(),
    });
    assert!(msg.starts_with("invalid grammar:"), "{msg}");
    assert!(msg.contains("undefined_rule"), "{msg}");

    let msg = invalid_message(Spec::Grammar {
        grammar: "root ::= \"a\"".into(),
    });
    assert!(msg.starts_with("invalid grammar:"), "{msg}");

    let msg = invalid_message(Spec::Choice { choices: vec![] });
    assert!(msg.contains("no choices"), "{msg}");
    let msg = invalid_message(Spec::ToolCall { tools: vec![] });
    assert!(msg.contains("no tools"), "{msg}");
}

#[test]
fn consuming_a_disallowed_token_is_an_error() {
    let Some(fx) = fixture() else { return };
    let mut m = Matcher::new(&fx.vocab, &Spec::JsonObject).expect("matcher");
    let a = fx.tokenizer.token_to_id("a").expect("token a");
    assert!(matches!(m.consume(a), Err(Error::NotAllowed { token }) if token == a));
    assert!(matches!(m.consume(EOS), Err(Error::NotAllowed { .. })));
    assert!(matches!(m.consume(60_000), Err(Error::NotAllowed { .. })));
    // Still usable: `{` then `}` completes the object.
    let open = fx.tokenizer.token_to_id("{").expect("token {");
    let close = fx.tokenizer.token_to_id("}").expect("token }");
    m.consume(open).expect("{");
    m.consume(close).expect("}");
    assert!(m.allowed().expect("mask").is_allowed(EOS));
    let mut logits = vec![0.0f32; 49_280];
    m.apply(&mut logits).expect("apply");
    assert!(logits[EOS as usize].is_finite());
    assert!(logits[49_200].is_infinite());
}

/// Per-token cost of `allowed()` + `consume()` on the SmolLM2 vocabulary (printed, not
/// asserted: it depends on the build profile and the machine).
#[test]
fn mask_time_per_token() {
    let Some(fx) = fixture() else { return };
    let start = Instant::now();
    let spec = Spec::JsonSchema {
        schema: person_schema(),
    };
    let _ = Matcher::new(&fx.vocab, &spec).expect("matcher");
    eprintln!("Matcher::new (person schema): {:?}", start.elapsed());
    for (name, spec) in [
        ("json_schema", spec),
        ("json_object", Spec::JsonObject),
        (
            "tool_call",
            Spec::ToolCall {
                tools: vec![weather_tool()],
            },
        ),
    ] {
        let (mut steps, mut time) = (0, Duration::ZERO);
        for seed in 0..SEEDS {
            let run = generate(fx, &spec, Some(seed));
            steps += run.steps;
            time += run.mask_time;
        }
        eprintln!(
            "{name}: {steps} tokens, allowed()+consume() {:?} per token",
            time / steps as u32
        );
    }
}
