//! Chat templates render exactly what transformers' `apply_chat_template` renders
//! (fixtures recorded by scripts/fixtures/gen_template_fixtures.py).

mod common;

use hf_candle::template::{ChatTemplate, RenderInput};
use serde_json::Value;

#[test]
fn templates_match_transformers_byte_for_byte() {
    let dir = common::fixtures().join("templates");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!(
            "note: {} is absent; skipping template fixtures",
            dir.display()
        );
        return;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in &files {
        let fx = common::read_json(path);
        let tmpl = ChatTemplate::new(fx["template"].as_str().unwrap()).unwrap();
        for case in fx["cases"].as_array().unwrap() {
            let messages = case["messages"].as_array().unwrap().clone();
            let tools = case["tools"].as_array().cloned();
            let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
            let got = tmpl.render(&RenderInput {
                messages: &messages,
                tools: tools.as_deref(),
                add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
                bos_token: fx["bos_token"].as_str(),
                eos_token: fx["eos_token"].as_str(),
                kwargs: &kwargs,
            });
            let name = format!(
                "{}:{}",
                path.file_name().unwrap().to_string_lossy(),
                case["name"]
            );
            match (got, &case["expected"]) {
                (Ok(text), Value::String(want)) if &text == want => {}
                (got, want) => failures.push(format!("{name}\n  want: {want:?}\n  got:  {got:?}")),
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked} template cases match");
}
