//! The sizes a model file declares, checked before anything is allocated for them: a file
//! that claims a billion layers or zero heads is an error that names the value, never an
//! allocation abort, a division by zero or silent garbage.

use crate::error::{Error, Result};

/// The declared sizes of a decoder.
pub(crate) struct Dims {
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
}

/// Largest plausible values (far above any released model; below what would exhaust memory
/// through the per-layer and per-position buffers they size).
const MAX_LAYERS: usize = 1 << 12;
const MAX_WIDTH: usize = 1 << 18;
const MAX_CONTEXT: usize = 1 << 24;

/// Checks `d` (from `source`, e.g. "GGUF metadata", "config.json"); `has_layer(i)` tells
/// whether layer `i`'s weights are in the files.
pub(crate) fn check(d: &Dims, source: &str, has_layer: impl Fn(usize) -> bool) -> Result<()> {
    let bad = |what: String| Err(Error::Unsupported(format!("{source}: {what}")));
    for (name, v, max) in [
        ("hidden size", d.hidden, MAX_WIDTH),
        ("layer count", d.n_layers, MAX_LAYERS),
        ("attention head count", d.n_heads, MAX_WIDTH),
        ("key/value head count", d.n_kv_heads, MAX_WIDTH),
        ("head size", d.head_dim, MAX_WIDTH),
        ("context length", d.context, MAX_CONTEXT),
    ] {
        if v == 0 || v > max {
            return bad(format!("{name} = {v} is not a usable size (1 to {max})"));
        }
    }
    if !d.n_heads.is_multiple_of(d.n_kv_heads) {
        return bad(format!(
            "{} attention heads do not share {} key/value heads evenly",
            d.n_heads, d.n_kv_heads
        ));
    }
    if !has_layer(0) || !has_layer(d.n_layers - 1) || has_layer(d.n_layers) {
        let present = (0..=MAX_LAYERS).take_while(|&l| has_layer(l)).count();
        return bad(format!(
            "the layer count is {}, but the files hold the weights of {present} layers",
            d.n_layers
        ));
    }
    Ok(())
}

/// Checks the rotary frequencies computed from `source`'s rope settings.
pub(crate) fn check_rope(inv_freq: &[f64], source: &str) -> Result<()> {
    match inv_freq.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        Some(f) => Err(Error::Unsupported(format!(
            "{source}: a rotary frequency is {f} (check rope_theta / rope.freq_base: it must be a positive number)"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(n_layers: usize, n_heads: usize) -> Dims {
        Dims {
            hidden: 64,
            n_layers,
            n_heads,
            n_kv_heads: 2,
            head_dim: 16,
            context: 2048,
        }
    }

    #[test]
    fn absurd_sizes_are_named_errors() {
        let layers = |n: usize| move |l: usize| l < n;
        assert!(check(&dims(4, 4), "t", layers(4)).is_ok());
        let e = check(&dims(1_000_000_000, 4), "t", layers(4))
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer count = 1000000000"), "{e}");
        let e = check(&dims(6, 4), "t", layers(4)).unwrap_err().to_string();
        assert!(e.contains("weights of 4 layers"), "{e}");
        let e = check(&dims(4, 0), "t", layers(4)).unwrap_err().to_string();
        assert!(e.contains("attention head count = 0"), "{e}");
        assert!(check_rope(&[1.0, 0.5], "t").is_ok());
        let e = check_rope(&[f64::INFINITY], "t").unwrap_err().to_string();
        assert!(e.contains("rope_theta"), "{e}");
    }
}
