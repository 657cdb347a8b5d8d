//! The `constrained` table: what structured outputs cost in decode speed. One child loads the
//! model once and alternates rounds of greedy decoding of the same prompt free and under two
//! constraints: a regex that accepts any text (the mask is computed every step but the tokens
//! are the free run's, so the rates compare like for like, and it is llguidance's widest mask)
//! and a nested JSON schema (other tokens, the per-token forward cost is the same). The rate is
//! tokens after the first over the time after the first, as the speed table's.

use serde_json::{Value, json};
use switchyard::{ChatRequest, Constraint};

use crate::{Args, STORY, decode_span, load, median, request, run_child};

/// Rounds in the child (each decodes every side once, in an order that alternates).
const ROUNDS: usize = 3;

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40},
        "keeper": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 18, "maximum": 99}},
            "required": ["name", "age"], "additionalProperties": false},
        "events": {"type": "array", "items": {"type": "string", "maxLength": 40},
                   "minItems": 1, "maxItems": 8},
        "mood": {"enum": ["calm", "stormy", "eerie"]}},
        "required": ["title", "keeper", "events", "mood"], "additionalProperties": false})
}

fn side(k: usize, tokens: u32) -> ChatRequest {
    let mut r = request(STORY, tokens);
    r.constraint = match k {
        0 => None,
        1 => Some(Constraint::Regex {
            pattern: "(.|\n)*".into(),
        }),
        _ => Some(Constraint::JsonSchema { schema: schema() }),
    };
    r
}

/// The child: medians of each side's decode rate and token counts.
pub fn child(a: &Args) -> anyhow::Result<Value> {
    let model = load(a, a.threads[0], "prefix_cache_mb = 0", 1)?;
    // Warm-up, which also builds the constraint vocabulary once.
    for k in 0..3 {
        model.chat(side(k, 4))?;
    }
    let mut rates = vec![vec![]; 3];
    let mut tokens = vec![0; 3];
    let mut same = true;
    let mut free_ids = Vec::new();
    for round in 0..ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2]
        } else {
            vec![2, 1, 0]
        };
        for k in order {
            let d = decode_span(model.stream_chat(side(k, a.gen_tokens))?)?;
            rates[k].push(d.rate());
            tokens[k] = d.n;
            match k {
                0 => free_ids = d.ids,
                1 => same &= free_ids.is_empty() || d.ids == free_ids,
                _ => {}
            }
        }
    }
    Ok(json!({
        "free": median(rates[0].clone()), "any": median(rates[1].clone()),
        "schema": median(rates[2].clone()), "tokens": tokens, "same_tokens": same,
    }))
}

/// Runs the child `a.reps` times and prints the table.
pub fn table(a: &Args) -> anyhow::Result<()> {
    let t = a.threads[0];
    let mut runs = Vec::new();
    for _ in 0..a.reps {
        runs.push(run_child(a, "constrained", t, &a.model, &a.dtype)?.0);
    }
    let m = |key: &str| {
        median(
            runs.iter()
                .map(|v| v[key].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let (free, any, schema) = (m("free"), m("any"), m("schema"));
    let same = runs.iter().all(|v| v["same_tokens"] == true);
    println!(
        "\nconstrained decoding: {} ({t} threads, {} new tokens, reps: {}; sides alternate in one child)\n",
        a.model.display(),
        a.gen_tokens,
        a.reps
    );
    println!("| decode | t/s | vs free |");
    println!("|---|---:|---:|");
    println!("| free | {free:.1} | 1.000x |");
    println!(
        "| regex accepting any text (same tokens as free: {same}) | {any:.1} | {:.3}x |",
        any / free
    );
    println!(
        "| nested JSON schema ({} tokens) | {schema:.1} | {:.3}x |",
        runs[0]["tokens"][2],
        schema / free
    );
    Ok(())
}
