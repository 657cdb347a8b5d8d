//! Helpers of the vision-language fixture tests: reading the recorded JSON, comparing floats,
//! and the part of a recorded greedy run that is a clear call.

use serde_json::Value;

/// A JSON array of numbers as f32.
pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON array of token ids.
pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The recorded greedy ids up to the first step whose top-2 margin (`step_margins`) is below
/// 1e-3 (a step that close is no clear call for either implementation).
pub fn clear_ids(case: &Value) -> Vec<u32> {
    let ids = u32s(&case["greedy_ids"]);
    let margins = f32s(&case["step_margins"]);
    let n = margins.iter().position(|&m| m < 1e-3).unwrap_or(ids.len());
    ids[..n].to_vec()
}

/// A fixture folder's `images/{name}.png` as a `data:` URL, as an OpenAI client sends it.
pub fn png_data_url(dir: &std::path::Path, name: &str) -> switchyard_plugin::MediaInput {
    use base64::Engine as _;
    let bytes = std::fs::read(dir.join(format!("images/{name}.png"))).unwrap();
    switchyard_plugin::MediaInput::Url {
        url: format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}
