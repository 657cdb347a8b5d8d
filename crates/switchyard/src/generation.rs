//! Merging generation settings (config defaults, then per-request values) and normalising them.
//!
//! The rules are LLaMA-Factory's, applied in its order, so settings mean the same here:
//!
//! 1. Merge: a request value wins when set; otherwise the config default applies, and then the
//!    model's own default (its `generation_config.json`, reported by the engine).
//! 2. `num_return_sequences > 1` forces sampling (`do_sample = true`, temperature defaults to 1.0).
//! 3. `temperature == 0` means greedy (`do_sample = false`).
//! 4. Greedy drops `temperature` and `top_p` (`top_k` is kept, as LLaMA-Factory does).
//! 5. `max_new_tokens` wins over `max_length`: when the request sets `max_new_tokens`,
//!    `max_length` is dropped; when it sets only `max_length`, the default `max_new_tokens` is
//!    dropped.
//!
//! Validation (ranges) happens here too, and only here: the HTTP API, the CLI, batch files and
//! host apps all get the same answer and the same error for the same value, and every backend
//! receives settings already checked and normalised.

use switchyard_abi::wire::GenerationParams;

use crate::error::{Error, Result};

macro_rules! merge_fields {
    ($base:ident, $over:ident, $($f:ident),* $(,)?) => {
        GenerationParams { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* }
    };
}

/// `over` with the fields it leaves unset taken from `under` (no normalisation): the config's
/// defaults over the model's own.
pub fn layer(over: &GenerationParams, under: &GenerationParams) -> GenerationParams {
    merge_all(under, over)
}

fn merge_all(base: &GenerationParams, over: &GenerationParams) -> GenerationParams {
    merge_fields!(
        base,
        over,
        do_sample,
        temperature,
        top_p,
        top_k,
        max_new_tokens,
        max_length,
        repetition_penalty,
        length_penalty,
        presence_penalty,
        frequency_penalty,
        num_return_sequences,
        seed,
        stop,
        stop_token_ids,
        skip_special_tokens,
    )
}

/// Merges `request` over `defaults` and normalises the result (see the module docs).
pub fn resolve(
    defaults: &GenerationParams,
    request: &GenerationParams,
) -> Result<GenerationParams> {
    let mut p = merge_all(defaults, request);
    validate(&p)?;
    if p.num_return_sequences.unwrap_or(1) > 1 {
        p.do_sample = Some(true);
        if p.temperature.is_none_or(|t| t == 0.0) {
            p.temperature = Some(1.0);
        }
    }
    if p.temperature == Some(0.0) {
        p.do_sample = Some(false);
    }
    if p.do_sample == Some(false) {
        p.temperature = None;
        p.top_p = None;
    }
    if request.max_new_tokens.is_some() {
        p.max_length = None;
    } else if request.max_length.is_some() {
        p.max_new_tokens = None;
    } else if p.max_new_tokens.is_some() {
        p.max_length = None;
    }
    Ok(p)
}

/// Sets one generation setting by name from text, as `/set temperature=0.2` does in the CLI.
/// The value is read as JSON (`0.2`, `true`, `["###"]`) and otherwise taken as a string.
pub fn set_param(params: &mut GenerationParams, key: &str, raw: &str) -> Result<()> {
    let mut value = serde_json::to_value(&*params)
        .map_err(|e| Error::InvalidRequest(format!("cannot encode settings: {e}")))?;
    let map = value
        .as_object_mut()
        .expect("a struct encodes as an object");
    if !map.contains_key(key) {
        let known: Vec<&String> = map.keys().collect();
        return Err(Error::InvalidRequest(format!(
            "unknown generation setting `{key}`; known: {}",
            known
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let raw = raw.trim();
    let parsed = if raw.is_empty() || raw == "none" || raw == "null" {
        serde_json::Value::Null
    } else {
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
    };
    let parsed = match (key, parsed) {
        // A single stop string is a list of one.
        ("stop", serde_json::Value::String(s)) => serde_json::json!([s]),
        (_, v) => v,
    };
    map.insert(key.to_owned(), parsed);
    let updated: GenerationParams = serde_json::from_value(value)
        .map_err(|e| Error::InvalidRequest(format!("bad value for `{key}`: {e}")))?;
    validate(&updated)?;
    *params = updated;
    Ok(())
}

/// The allowed ranges, in one place for every front end (HTTP, CLI, batch files, host apps).
/// The server only renames OpenAI's fields (`n`, `max_tokens`) to these.
pub const MAX_SEQUENCES: u32 = 16;
/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;

fn validate(p: &GenerationParams) -> Result<()> {
    let bad = |name: &str, value: String, allowed: &str| {
        // The OpenAI name too, where it differs: HTTP and batch users may have written that.
        let alias = match name {
            "num_return_sequences" => " (OpenAI `n`)",
            "max_new_tokens" => " (OpenAI `max_tokens`)",
            _ => "",
        };
        Err(Error::InvalidSetting {
            name: name.to_owned(),
            message: format!("`{name}`{alias} = {value} is out of range; allowed: {allowed}"),
        })
    };
    let float = |name: &'static str, v: Option<f32>, ok: fn(f32) -> bool, allowed: &str| match v {
        Some(x) if x.is_nan() || !ok(x) => bad(name, x.to_string(), allowed),
        _ => Ok(()),
    };
    float(
        "temperature",
        p.temperature,
        |t| (0.0..=2.0).contains(&t),
        "0 to 2 (0 = greedy)",
    )?;
    float(
        "top_p",
        p.top_p,
        |t| t > 0.0 && t <= 1.0,
        "greater than 0 and at most 1",
    )?;
    float(
        "repetition_penalty",
        p.repetition_penalty,
        |r| r > 0.0 && r.is_finite(),
        "greater than 0 (1 = off)",
    )?;
    float(
        "length_penalty",
        p.length_penalty,
        f32::is_finite,
        "a finite number",
    )?;
    for (name, v) in [
        ("presence_penalty", p.presence_penalty),
        ("frequency_penalty", p.frequency_penalty),
    ] {
        float(name, v, |v| (-2.0..=2.0).contains(&v), "-2 to 2")?;
    }
    if let Some(n) = p.num_return_sequences
        && !(1..=MAX_SEQUENCES).contains(&n)
    {
        return bad(
            "num_return_sequences",
            n.to_string(),
            &format!("1 to {MAX_SEQUENCES}"),
        );
    }
    if p.max_new_tokens == Some(0) {
        return bad("max_new_tokens", "0".into(), "1 or more");
    }
    if p.max_length == Some(0) {
        return bad("max_length", "0".into(), "1 or more");
    }
    if let Some(stop) = &p.stop {
        if stop.iter().any(String::is_empty) {
            return bad("stop", "\"\"".into(), "non-empty strings");
        }
        if stop.len() > MAX_STOP_STRINGS {
            return bad(
                "stop",
                format!("{} strings", stop.len()),
                &format!("at most {MAX_STOP_STRINGS} strings"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> GenerationParams {
        GenerationParams {
            do_sample: Some(true),
            temperature: Some(0.95),
            top_p: Some(0.7),
            top_k: Some(50),
            max_new_tokens: Some(1024),
            max_length: Some(1024),
            ..Default::default()
        }
    }

    #[test]
    fn request_values_override_defaults() {
        let r = GenerationParams {
            temperature: Some(0.5),
            ..Default::default()
        };
        let p = resolve(&defaults(), &r).unwrap();
        assert_eq!(p.temperature, Some(0.5));
        assert_eq!(p.top_p, Some(0.7));
        assert_eq!(p.do_sample, Some(true));
    }

    #[test]
    fn temperature_zero_is_greedy_and_drops_sampling_knobs() {
        let r = GenerationParams {
            temperature: Some(0.0),
            ..Default::default()
        };
        let p = resolve(&defaults(), &r).unwrap();
        assert_eq!(p.do_sample, Some(false));
        assert_eq!(p.temperature, None);
        assert_eq!(p.top_p, None);
        assert_eq!(p.top_k, Some(50));
    }

    #[test]
    fn several_sequences_force_sampling() {
        let r = GenerationParams {
            num_return_sequences: Some(2),
            do_sample: Some(false),
            temperature: Some(0.0),
            ..Default::default()
        };
        let p = resolve(&defaults(), &r).unwrap();
        assert_eq!(p.do_sample, Some(true));
        assert_eq!(p.temperature, Some(1.0));
    }

    #[test]
    fn max_new_tokens_wins_over_max_length() {
        let p = resolve(&defaults(), &GenerationParams::default()).unwrap();
        assert_eq!((p.max_new_tokens, p.max_length), (Some(1024), None));
        let r = GenerationParams {
            max_length: Some(64),
            ..Default::default()
        };
        let p = resolve(&defaults(), &r).unwrap();
        assert_eq!((p.max_new_tokens, p.max_length), (None, Some(64)));
        let r = GenerationParams {
            max_length: Some(64),
            max_new_tokens: Some(8),
            ..Default::default()
        };
        let p = resolve(&defaults(), &r).unwrap();
        assert_eq!((p.max_new_tokens, p.max_length), (Some(8), None));
    }

    #[test]
    fn the_models_own_defaults_come_last() {
        let model = GenerationParams {
            do_sample: Some(true),
            temperature: Some(0.6),
            top_p: Some(0.95),
            top_k: Some(20),
            ..Default::default()
        };
        let config = GenerationParams {
            top_p: Some(0.8),
            ..Default::default()
        };
        let p = resolve(&layer(&config, &model), &GenerationParams::default()).unwrap();
        assert_eq!(
            (p.do_sample, p.temperature, p.top_p, p.top_k),
            (Some(true), Some(0.6), Some(0.8), Some(20))
        );
        let greedy = GenerationParams {
            temperature: Some(0.0),
            ..Default::default()
        };
        let p = resolve(&layer(&config, &model), &greedy).unwrap();
        assert_eq!(
            (p.do_sample, p.temperature, p.top_p),
            (Some(false), None, None)
        );
    }

    #[test]
    fn set_param_parses_and_validates() {
        let mut p = GenerationParams::default();
        set_param(&mut p, "temperature", "0.2").unwrap();
        set_param(&mut p, "stop", "###").unwrap();
        set_param(&mut p, "seed", "7").unwrap();
        assert_eq!(p.temperature, Some(0.2));
        assert_eq!(p.stop, Some(vec!["###".to_owned()]));
        assert_eq!(p.seed, Some(7));
        set_param(&mut p, "seed", "none").unwrap();
        assert_eq!(p.seed, None);
        assert!(
            set_param(&mut p, "temprature", "1")
                .unwrap_err()
                .to_string()
                .contains("known")
        );
        assert!(set_param(&mut p, "top_p", "2").is_err());
        assert!(set_param(&mut p, "temperature", "5").is_err());
        assert!(set_param(&mut p, "seed", "abc").is_err());
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_allowed_range() {
        for r in [
            GenerationParams {
                top_p: Some(0.0),
                ..Default::default()
            },
            GenerationParams {
                temperature: Some(-1.0),
                ..Default::default()
            },
            GenerationParams {
                num_return_sequences: Some(0),
                ..Default::default()
            },
        ] {
            let e = resolve(&defaults(), &r).unwrap_err().to_string();
            assert!(e.contains("allowed"), "{e}");
        }
    }
}
