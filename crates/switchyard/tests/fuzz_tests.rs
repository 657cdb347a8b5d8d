//! Property tests (bounded fuzzing) of the config loader and the generation-settings seam:
//! arbitrary input never panics, and what is accepted is in range. Failing cases are kept in
//! `proptest-regressions/` and replayed first on every run.

use proptest::prelude::*;
use switchyard::{Config, GenerationParams, generation};

const KEYS: &[&str] = &[
    "sample_backend",
    "max_concurrent",
    "max_queue",
    "plugin_dir",
    "model.path",
    "model.chat_template",
    "generation.temperature",
    "generation.top_p",
    "generation.top_k",
    "generation.max_new_tokens",
    "generation.stop",
    "generation.num_return_sequences",
    "backends.echo.delay_ms",
    "nonsense",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        "[a-z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("true".to_owned()),
        Just("[\"###\", \"\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        "[^\\n]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_config_loader(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "fuzz.toml", &[]);
    }

    #[test]
    fn arbitrary_keys_and_values_get_a_config_or_a_named_error(
        lines in proptest::collection::vec((0..KEYS.len(), toml_value()), 0..8),
        overrides in proptest::collection::vec((0..KEYS.len(), toml_value()), 0..3),
    ) {
        let mut text = String::new();
        let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (k, v) in &lines {
            let key = KEYS[*k];
            match key.rsplit_once('.') {
                Some((table, field)) => tables.entry(table.to_owned()).or_default().push(format!("{field} = {v}")),
                None => text.push_str(&format!("{key} = {v}\n")),
            }
        }
        for (table, fields) in tables {
            text.push_str(&format!("[{table}]\n{}\n", fields.join("\n")));
        }
        let overrides: Vec<String> =
            overrides.iter().map(|(k, v)| format!("{}={v}", KEYS[*k])).collect();
        match Config::parse(&text, "fuzz.toml", &overrides) {
            Ok(c) => prop_assert!(c.max_concurrent() >= 1),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn resolved_settings_are_in_range_or_refused(
        temperature in proptest::option::of(any::<f32>()),
        top_p in proptest::option::of(any::<f32>()),
        n in proptest::option::of(any::<u32>()),
        max_new in proptest::option::of(any::<u32>()),
        rep in proptest::option::of(any::<f32>()),
        presence in proptest::option::of(any::<f32>()),
        stop in proptest::option::of(proptest::collection::vec("\\PC{0,3}", 0..20)),
    ) {
        let request = GenerationParams {
            temperature, top_p, num_return_sequences: n, max_new_tokens: max_new,
            repetition_penalty: rep, presence_penalty: presence, stop,
            ..Default::default()
        };
        if let Ok(p) = generation::resolve(&GenerationParams::default(), &request) {
            prop_assert!(p.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)));
            prop_assert!(p.top_p.is_none_or(|t| t > 0.0 && t <= 1.0));
            prop_assert!(p.num_return_sequences.is_none_or(|n| (1..=16).contains(&n)));
            prop_assert!(p.max_new_tokens != Some(0));
            prop_assert!(p.repetition_penalty.is_none_or(|r| r > 0.0 && r.is_finite()));
            prop_assert!(p.presence_penalty.is_none_or(|v| (-2.0..=2.0).contains(&v)));
            prop_assert!(p.stop.as_ref().is_none_or(|s| s.len() <= 16 && s.iter().all(|x| !x.is_empty())));
        }
    }
}
