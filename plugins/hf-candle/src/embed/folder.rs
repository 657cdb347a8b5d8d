//! A sentence-transformers folder's module list, read as sentence-transformers reads it:
//! `modules.json` (Transformer, Pooling, Normalize), `1_Pooling/config.json` (the pooling mode),
//! `sentence_bert_config.json` (`max_seq_length`, `do_lower_case`); and the pooling itself.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// One pooling strategy of `1_Pooling/config.json`. With several flags set, sentence-transformers
/// concatenates the pooled vectors in this order (cls, max, mean, mean_sqrt_len).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The first token's vector (`pooling_mode_cls_token`).
    Cls,
    /// The element-wise maximum over real tokens (`pooling_mode_max_tokens`).
    Max,
    /// The mean over real tokens (`pooling_mode_mean_tokens`).
    Mean,
    /// The sum over real tokens divided by the square root of their count
    /// (`pooling_mode_mean_sqrt_len_tokens`).
    MeanSqrtLen,
}

impl Pool {
    /// The config key that selects this mode.
    pub fn key(self) -> &'static str {
        match self {
            Pool::Cls => "pooling_mode_cls_token",
            Pool::Max => "pooling_mode_max_tokens",
            Pool::Mean => "pooling_mode_mean_tokens",
            Pool::MeanSqrtLen => "pooling_mode_mean_sqrt_len_tokens",
        }
    }

    /// A short name for `EngineInfo::details`.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Cls => "cls",
            Pool::Max => "max",
            Pool::Mean => "mean",
            Pool::MeanSqrtLen => "mean_sqrt_len",
        }
    }
}

/// The `pooling_mode` names newer sentence-transformers versions write instead of the flags.
const POOL_NAMES: &[(&str, Pool)] = &[
    ("cls", Pool::Cls),
    ("max", Pool::Max),
    ("mean", Pool::Mean),
    ("mean_sqrt_len_tokens", Pool::MeanSqrtLen),
];

/// Flags of modes sentence-transformers has and this backend does not.
const UNSUPPORTED_FLAGS: &[&str] = &["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"];

/// What the folder asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The folder holding the encoder's `config.json`, weights and tokenizer.
    pub encoder_dir: PathBuf,
    /// The pooling modes, concatenated in this order.
    pub pools: Vec<Pool>,
    /// `Normalize` is listed: L2-normalise the pooled vector.
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`, when set.
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` of `sentence_bert_config.json`: the text is lowercased before tokenizing.
    pub lower_case: bool,
    /// `modules.json` is missing: a plain encoder folder, mean-pooled as sentence-transformers
    /// does when it wraps a Transformers model.
    pub implicit: bool,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot be read ({e})")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("is not valid JSON ({e})")))
}

/// `true` for a folder this module serves: it has `modules.json` (a sentence-transformers
/// folder), or its `config.json` says `model_type: "bert"`.
pub fn is_sentence_encoder(path: &Path) -> bool {
    if !path.is_dir() {
        return false;
    }
    if path.join("modules.json").is_file() {
        return true;
    }
    read_json(&path.join("config.json"))
        .ok()
        .and_then(|c| {
            c.get("model_type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .is_some_and(|t| t == "bert")
}

/// Reads the folder's module list and configs.
pub fn read(dir: &Path) -> Result<Pipeline> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(Pipeline {
            encoder_dir: dir.to_owned(),
            pools: vec![Pool::Mean],
            normalize: false,
            max_seq_length: None,
            lower_case: false,
            implicit: true,
        });
    }
    let modules = read_json(&modules_path)?;
    let modules = modules.as_array().ok_or_else(|| {
        Error::file(
            &modules_path,
            "must be a list of modules ({idx, name, path, type})",
        )
    })?;
    let mut encoder_dir = None;
    let mut pools = None;
    let mut normalize = false;
    for (i, m) in modules.iter().enumerate() {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
        let sub = dir.join(m.get("path").and_then(Value::as_str).unwrap_or(""));
        // sentence_transformers.models.Pooling, ...sentence_transformer.modules.Pooling, ...
        match kind.rsplit('.').next().unwrap_or("") {
            "Transformer" if encoder_dir.is_none() && pools.is_none() => encoder_dir = Some(sub),
            "Pooling" if encoder_dir.is_some() && pools.is_none() => {
                pools = Some(read_pooling(&sub.join("config.json"))?)
            }
            "Normalize" if pools.is_some() => normalize = true,
            _ => {
                return Err(Error::file(
                    &modules_path,
                    format!(
                        "module {i} has type `{kind}`; hf-candle serves Transformer -> Pooling -> Normalize (optional), in that order (Dense and other modules are not supported)"
                    ),
                ));
            }
        }
    }
    let (Some(encoder_dir), Some(pools)) = (encoder_dir, pools) else {
        return Err(Error::file(
            &modules_path,
            "needs a Transformer module followed by a Pooling module",
        ));
    };
    let st_config = dir.join("sentence_bert_config.json");
    let (max_seq_length, lower_case) = if st_config.is_file() {
        let v = read_json(&st_config)?;
        (
            v.get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
            v.get("do_lower_case")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )
    } else {
        (None, false)
    };
    Ok(Pipeline {
        encoder_dir,
        pools,
        normalize,
        max_seq_length,
        lower_case,
        implicit: false,
    })
}

/// The pooling modes of `1_Pooling/config.json` (the flags, or a `pooling_mode` name).
fn read_pooling(path: &Path) -> Result<Vec<Pool>> {
    let v = read_json(path)?;
    let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(key) = UNSUPPORTED_FLAGS.iter().find(|k| flag(k)) {
        return Err(Error::file(
            path,
            format!(
                "sets `{key}`, a pooling mode hf-candle does not implement; supported: pooling_mode_cls_token, pooling_mode_mean_tokens, pooling_mode_max_tokens, pooling_mode_mean_sqrt_len_tokens"
            ),
        ));
    }
    let mut pools: Vec<Pool> = [Pool::Cls, Pool::Max, Pool::Mean, Pool::MeanSqrtLen]
        .into_iter()
        .filter(|p| flag(p.key()))
        .collect();
    if let (true, Some(name)) = (
        pools.is_empty(),
        v.get("pooling_mode").and_then(Value::as_str),
    ) {
        let pool = POOL_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "pooling_mode = \"{name}\" is not implemented by hf-candle; supported: cls, mean, max, mean_sqrt_len_tokens"
                    ),
                )
            })?;
        pools.push(pool);
    }
    if pools.is_empty() {
        return Err(Error::file(
            path,
            "sets no pooling mode; set one of pooling_mode_mean_tokens, pooling_mode_cls_token, pooling_mode_max_tokens, pooling_mode_mean_sqrt_len_tokens",
        ));
    }
    Ok(pools)
}

/// Pools one sequence's token vectors (`hidden`: `len` rows of `dim`, of which the first
/// `real` are tokens and the rest padding) as sentence-transformers' Pooling module does.
pub fn pool(hidden: &[f32], dim: usize, real: usize, pools: &[Pool]) -> Vec<f32> {
    let rows = || hidden.chunks_exact(dim).take(real);
    let mut out = Vec::with_capacity(dim * pools.len());
    for p in pools {
        match p {
            Pool::Cls => out.extend_from_slice(&hidden[..dim]),
            Pool::Max => {
                let mut m = vec![f32::NEG_INFINITY; dim];
                for row in rows() {
                    for (a, &b) in m.iter_mut().zip(row) {
                        *a = a.max(b);
                    }
                }
                out.extend(m);
            }
            Pool::Mean | Pool::MeanSqrtLen => {
                // Summed in f64: the order of f32 additions would otherwise depend on padding.
                let mut sum = vec![0f64; dim];
                for row in rows() {
                    for (a, &b) in sum.iter_mut().zip(row) {
                        *a += f64::from(b);
                    }
                }
                // sentence-transformers clamps the count at 1e-9.
                let n = (real as f64).max(1e-9);
                let d = if *p == Pool::Mean { n } else { n.sqrt() };
                out.extend(sum.into_iter().map(|s| (s / d) as f32));
            }
        }
    }
    out
}

/// L2-normalises `v` as `torch.nn.functional.normalize` does (the norm clamped at 1e-12).
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for x in v {
        *x = (f64::from(*x) / norm) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_follows_the_mask() {
        // Two real tokens and one padding row that must not count.
        let hidden = [1.0, -2.0, 3.0, 4.0, 100.0, 100.0];
        assert_eq!(pool(&hidden, 2, 2, &[Pool::Mean]), vec![2.0, 1.0]);
        assert_eq!(pool(&hidden, 2, 2, &[Pool::Max]), vec![3.0, 4.0]);
        assert_eq!(pool(&hidden, 2, 2, &[Pool::Cls]), vec![1.0, -2.0]);
        let s = pool(&hidden, 2, 2, &[Pool::MeanSqrtLen]);
        assert!((s[0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
        assert_eq!(pool(&hidden, 2, 2, &[Pool::Cls, Pool::Mean]).len(), 4);
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }

    #[test]
    fn unsupported_modes_and_modules_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("1_Pooling")).unwrap();
        std::fs::write(
            p.join("1_Pooling/config.json"),
            r#"{"pooling_mode_lasttoken": true}"#,
        )
        .unwrap();
        std::fs::write(
            p.join("modules.json"),
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        let e = read(p).unwrap_err().to_string();
        assert!(e.contains("pooling_mode_lasttoken"), "{e}");
        std::fs::write(
            p.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        assert_eq!(read(p).unwrap().pools, vec![Pool::Cls]);
        std::fs::write(
            p.join("modules.json"),
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
        )
        .unwrap();
        let e = read(p).unwrap_err().to_string();
        assert!(e.contains("sentence_transformers.models.Dense"), "{e}");
    }
}
