//! Qwen2-VL against Transformers (tests/fixtures/hf/qwen2-vl, scripts/fixtures/gen_tiny_qwen2vl.py):
//! the image processor's pixel values, the model's last-position logits and greedy ids for one
//! image, two images and a multi-turn chat.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use hf_candle::vision::image::{Patches, Qwen2VlProcessor, decode_image, media_bytes};
use hf_candle::vision::qwen2vl::Qwen2Vl;
use serde_json::Value;
use switchyard_plugin::MediaInput;

fn dir() -> PathBuf {
    common::fixtures().join("hf/qwen2-vl")
}

fn expected() -> Value {
    common::read_json(&dir().join("expected.json"))
}

fn processed(name: &str) -> Patches {
    let p = Qwen2VlProcessor::from_folder(&dir()).unwrap();
    let bytes = std::fs::read(dir().join(format!("images/{name}.png"))).unwrap();
    p.preprocess(&decode_image(&bytes, 0).unwrap()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn pixel_values_equal_the_processors() {
    let exp = expected();
    for (name, e) in exp["images"].as_object().unwrap() {
        let got = processed(name);
        let grid: Vec<usize> = u32s(&e["image_grid_thw"])
            .into_iter()
            .map(|x| x as usize)
            .collect();
        assert_eq!(got.grid_thw.to_vec(), grid, "{name}: grid");
        let want = f32s(&e["pixel_values"]);
        assert_eq!(got.pixel_values.len(), want.len(), "{name}: length");
        let worst = got
            .pixel_values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{name}: max |diff| {worst}");
    }
}

#[test]
fn logits_and_greedy_ids_equal_transformers() {
    let exp = expected();
    let mut model = Qwen2Vl::load(&dir(), &Device::Cpu).unwrap();
    for (case, e) in exp["cases"].as_object().unwrap() {
        let images: Vec<Patches> = e["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| processed(n.as_str().unwrap()))
            .collect();
        let ids = u32s(&e["prompt_ids"]);
        let logits = model.prefill(&ids, &images).unwrap();
        let want = f32s(&e["last_logits"]);
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{case}: logits max |diff| {worst}");
        let greedy_want = u32s(&e["greedy_ids"]);
        let got = model.greedy(&ids, &images, greedy_want.len()).unwrap();
        assert_eq!(got, greedy_want, "{case}: greedy ids");
    }
}

#[test]
fn bad_images_are_named_errors() {
    let err = decode_image(b"definitely not an image", 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image 2") && err.contains("not a recognised image"),
        "{err}"
    );
    // A PNG cut short: the header says PNG, the data ends early.
    let png = std::fs::read(dir().join("images/square.png")).unwrap();
    let err = decode_image(&png[..png.len() / 2], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot decode the Png data"), "{err}");
    let err = media_bytes(
        &MediaInput::Url {
            url: "https://example.com/cat.png".into(),
        },
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("image 1") && err.contains("`https:`"), "{err}");
    let err = media_bytes(
        &MediaInput::Url {
            url: "data:image/png;base64,@@@".into(),
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad base64"), "{err}");
}
