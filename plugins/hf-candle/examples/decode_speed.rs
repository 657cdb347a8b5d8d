//! Rough decode speed: `cargo run --release -p hf-candle --example decode_speed -- [model] [threads] [tokens] [greedy|top-p|top-k]`.
//! Prints prefill time and decode tokens per second through the engine's streaming path, greedy
//! or sampled (temperature 0.7 with top-p 0.9 alone, as OpenAI clients send it, or top-k 50).

use std::time::Instant;

use hf_candle::HfCandle;
use switchyard_plugin::{
    Backend, CancelToken, ChatRequest, EngineConfig, GenerationParams, Message,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).cloned().unwrap_or_else(|| {
        hf_candle::engine::default_model_path()
            .display()
            .to_string()
    });
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let tokens: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let mode = args.get(4).map_or("greedy", String::as_str);
    let (top_p, top_k) = match mode {
        "greedy" => (None, None),
        "top-p" => (Some(0.9), Some(0)),
        "top-k" => (Some(1.0), Some(50)),
        other => panic!("unknown sampling mode {other}; use greedy, top-p or top-k"),
    };
    let cfg: EngineConfig = serde_json::from_value(serde_json::json!({
        "backend": "hf-candle",
        "model": {"path": model},
        "options": {"threads": threads},
    }))
    .expect("config");
    let eng = HfCandle::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let req = ChatRequest {
        messages: vec![Message::user(
            "Write a long story about a lighthouse keeper.",
        )],
        generation: GenerationParams {
            do_sample: Some(mode != "greedy"),
            temperature: Some(0.7),
            top_p,
            top_k,
            seed: Some(1),
            repetition_penalty: Some(1.0),
            max_new_tokens: Some(tokens),
            ..Default::default()
        },
        ..Default::default()
    };
    for round in 0..2 {
        let t0 = Instant::now();
        let mut stream = eng
            .stream_chat(req.clone(), CancelToken::new())
            .expect("stream");
        let first = stream.next().expect("event").expect("ok");
        let t_first = t0.elapsed();
        let mut n = first.token_ids.len();
        for e in stream {
            n += e.expect("ok").token_ids.len();
        }
        let rest = t0.elapsed() - t_first;
        println!(
            "round {round}: {mode}, threads {threads}: first token {:.0} ms; {} tokens decoded at {:.1} tok/s",
            t_first.as_secs_f64() * 1e3,
            n - 1,
            (n - 1) as f64 / rest.as_secs_f64()
        );
    }
}
