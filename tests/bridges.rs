//! The bridge plugins (`vllm`, `sglang`, `ktransformers`) through `switchyard::ChatModel`, with
//! the real built plugin libraries:
//!
//! - protocol fixtures: a scripted local server replays the exchanges recorded in
//!   `server-protocols.md` (vLLM's and SGLang's chunk orders, usage chunks, error shapes, reward
//!   answers, KTransformers' legacy quirks) and the tests check the requests field by field;
//! - a real peer: llama.cpp's `llama-server` serving SmolLM2 (see `peer.rs`).

#[path = "bridges/fake.rs"]
mod fake;
#[path = "bridges/lora.rs"]
mod lora;
#[path = "bridges/media.rs"]
mod media;
#[path = "bridges/peer.rs"]
mod peer;

use std::path::Path;
use std::time::{Duration, Instant};

use fake::{FakeServer, json, raw_sse, sse};
use serde_json::json as j;
use switchyard::{
    ChatModel, ChatRequest, ErrorKind, FinishReason, GenerationParams, MediaInput, Message,
    ScoreInput, ScoreRequest,
};
use switchyard_tests::{plugin_library, switchyard_bin, write_file};

/// The package that serves each backend name.
pub fn package(backend: &str) -> &'static str {
    match backend {
        "vllm" => "vllm-bridge",
        "sglang" => "sglang-bridge",
        "ktransformers" => "ktransformers-bridge",
        other => panic!("no bridge for {other}"),
    }
}

/// A temp plugin directory holding the three bridge libraries.
pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["vllm", "sglang", "ktransformers"] {
        let lib = plugin_library(package(backend));
        std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    }
    dir
}

/// Loads `backend` with `[backends.<backend>]` set to `table` (TOML lines) and extra top-level
/// TOML before it.
pub fn load(dir: &Path, backend: &str, top: &str, table: &str) -> switchyard::Result<ChatModel> {
    let config = write_file(
        dir,
        &format!("{backend}.toml"),
        &format!("sample_backend = \"{backend}\"\n{top}\n[backends.{backend}]\n{table}\n"),
    );
    ChatModel::from_config_file(&config, &[], Some(dir))
}

fn attach(dir: &Path, backend: &str, server: &FakeServer, extra: &str) -> ChatModel {
    attach_url(dir, backend, &format!("{}/v1", server.url), extra)
}

/// Loads `backend` attached to the server at `url`, with extra `[backends.*]` lines.
fn attach_url(dir: &Path, backend: &str, url: &str, extra: &str) -> ChatModel {
    load(dir, backend, "", &format!("base_url = \"{url}\"\n{extra}")).unwrap()
}

pub fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

const VLLM_CHAT: &str = r#"{"id":"chatcmpl-8f0a","object":"chat.completion","created":1735689600,"model":"my-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hi! How can I help you today?","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":21,"total_tokens":31,"completion_tokens":10,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}"#;

const VLLM_STREAM: &[&str] = &[
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"content":"!"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}"#,
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[],"usage":{"prompt_tokens":21,"total_tokens":23,"completion_tokens":2}}"#,
];

const SGLANG_STREAM: &[&str] = &[
    r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":null,"tool_calls":null},"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"role":null,"content":"Hi!","reasoning_content":null,"tool_calls":null},"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}"#,
    r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[{"index":0,"delta":{"role":null,"content":null,"reasoning_content":null,"tool_calls":null},"logprobs":null,"finish_reason":"stop","matched_stop":151645}],"usage":null}"#,
    r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1735689600,"model":"my-model","choices":[],"usage":{"prompt_tokens":21,"total_tokens":23,"completion_tokens":2,"prompt_tokens_details":null,"reasoning_tokens":0}}"#,
];

const KT_LEGACY_STREAM: &[&str] = &[
    r#"{"id":"9f2c4e0d8a7b4c1e9d3f5a6b7c8d9e0f","choices":[{"delta":{"content":"Hi","function_call":null,"refusal":null,"role":null,"tool_calls":null},"finish_reason":null,"index":0,"logprobs":null}],"created":1735689600,"model":"DeepSeek-V3","object":"chat.completion.chunk","service_tier":null,"system_fingerprint":"fp_1a2b3c4d5e6f","usage":null}"#,
    r#"{"id":"9f2c4e0d8a7b4c1e9d3f5a6b7c8d9e0f","choices":[{"delta":{"content":" there","function_call":null,"refusal":null,"role":null,"tool_calls":null},"finish_reason":"stop","index":0,"logprobs":null}],"created":1735689600,"model":"DeepSeek-V3","object":"chat.completion.chunk","service_tier":null,"system_fingerprint":"fp_1a2b3c4d5e6f","usage":null}"#,
    r#"{"id":"9f2c4e0d8a7b4c1e9d3f5a6b7c8d9e0f","choices":[],"created":1735689600,"model":"DeepSeek-V3","object":"chat.completion.chunk","service_tier":null,"system_fingerprint":"fp_1a2b3c4d5e6f","usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"prompt_tokens_details":null,"completion_tokens_details":null}}"#,
    r#"{"id":"9f2c4e0d8a7b4c1e9d3f5a6b7c8d9e0f","choices":[{"delta":{"content":null,"function_call":null,"refusal":null,"role":null,"tool_calls":null},"finish_reason":"stop","index":0,"logprobs":null}],"created":1735689600,"model":"DeepSeek-V3","object":"chat.completion.chunk","service_tier":null,"system_fingerprint":"fp_1a2b3c4d5e6f","usage":null}"#,
];

fn deltas_and_finish(model: &ChatModel, request: ChatRequest) -> (String, switchyard::Finish) {
    let events: Vec<_> = model
        .stream_chat(request)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let text = events.iter().map(|e| e.delta.as_str()).collect();
    let finish = events.last().unwrap().finish.clone().expect("finish event");
    assert_eq!(
        events.iter().filter(|e| e.finish.is_some()).count(),
        1,
        "one finish event: {events:?}"
    );
    (text, finish)
}

#[test]
fn vllm_sends_its_fields_and_reads_the_non_streaming_answer() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    let model = attach(dir.path(), "vllm", &server, "api_key = \"token-abc123\"");
    assert_eq!(model.info().model, "my-model", "first listed model");
    assert_eq!(model.info().context_length, Some(8192));
    assert_eq!(model.info().details["mode"], "attach");

    let mut request = ask("Say hi");
    request.system = Some("You are helpful.".into());
    request.generation = GenerationParams {
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(50),
        max_new_tokens: Some(32),
        repetition_penalty: Some(1.05),
        stop: Some(vec!["###".into()]),
        stop_token_ids: Some(vec![151645]),
        skip_special_tokens: Some(true),
        seed: Some(42),
        ..Default::default()
    };
    request
        .chat_template_kwargs
        .insert("enable_thinking".into(), j!(false));
    let r = &model.chat(request).unwrap()[0];
    assert_eq!(r.text, "Hi! How can I help you today?");
    assert_eq!((r.prompt_length, r.response_length), (21, 10));
    assert_eq!(r.finish_reason, FinishReason::Stop);

    let sent = server.requests("/v1/chat/completions").pop().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.headers["authorization"], "Bearer token-abc123");
    let b = sent.body;
    assert_eq!(b["model"], "my-model");
    assert_eq!(
        b["messages"],
        j!([{"role":"system","content":"You are helpful."},{"role":"user","content":"Say hi"}])
    );
    assert_eq!(b["max_tokens"], 32);
    assert!((b["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!((b["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(b["top_k"], 50);
    assert!((b["repetition_penalty"].as_f64().unwrap() - 1.05).abs() < 1e-6);
    assert_eq!(b["stop"], j!(["###"]));
    assert_eq!(b["stop_token_ids"], j!([151645]));
    assert_eq!(b["skip_special_tokens"], true);
    assert_eq!(b["chat_template_kwargs"], j!({"enable_thinking": false}));
    assert_eq!(b["seed"], 42);
    assert!(b.get("stream").is_none() && b.get("n").is_none(), "{b}");
}

#[test]
fn vllm_stream_holds_finish_for_the_usage_chunk() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/chat/completions", vec![sse(VLLM_STREAM)]);
    let model = attach(dir.path(), "vllm", &server, "");
    let (text, finish) = deltas_and_finish(&model, ask("Say hi"));
    assert_eq!(text, "Hi!");
    assert_eq!(finish.reason, FinishReason::Stop);
    assert_eq!((finish.prompt_length, finish.response_length), (21, 2));
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], j!({"include_usage": true}));
}

#[test]
fn vllm_reasoning_both_names_greedy_and_several_sequences() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let new_shape = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":1,"message":{"role":"assistant","content":"B","reasoning":"think b"},"finish_reason":"length","stop_reason":null,"token_ids":null},{"index":0,"message":{"role":"assistant","content":"A","reasoning_content":"think a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}"#;
    server
        .models("m")
        .route("POST", "/v1/chat/completions", vec![json(200, new_shape)]);
    let model = attach(dir.path(), "vllm", &server, "");
    let mut request = ask("x");
    request.generation.num_return_sequences = Some(2);
    let out = model.chat(request).unwrap();
    assert_eq!(out[0].text, "A");
    assert_eq!(out[0].reasoning_content.as_deref(), Some("think a"));
    assert_eq!(out[1].text, "B");
    assert_eq!(out[1].reasoning_content.as_deref(), Some("think b"));
    assert_eq!(out[1].finish_reason, FinishReason::Length);
    assert_eq!(server.last_body("/v1/chat/completions")["n"], 2);

    let model = attach(dir.path(), "vllm", &server, "reasoning = \"drop\"");
    let mut request = ask("x");
    request.generation.num_return_sequences = Some(2);
    let out = model.chat(request).unwrap();
    assert_eq!(out[0].text, "A");
    assert_eq!(out[0].reasoning_content, None);

    let one = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"A"},"finish_reason":"stop"}]}"#;
    server.route("POST", "/v1/chat/completions", vec![json(200, one)]);
    let mut greedy = ask("x");
    greedy.generation.temperature = Some(0.0);
    model.chat(greedy).unwrap();
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(
        b["temperature"], 0.0,
        "greedy is sent as temperature 0: {b}"
    );
}

/// A server that returns structured `tool_calls` and `reasoning_content` (vLLM with a tool and a
/// reasoning parser): the bridge passes them through typed, call ids preserved, whole and
/// streamed in fragments.
#[test]
fn structured_tool_calls_and_reasoning_pass_through_with_their_ids() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let whole = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning_content":"The user wants the weather.","tool_calls":[{"id":"chatcmpl-tool-5f1e","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},{"id":"chatcmpl-tool-77aa","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":30,"total_tokens":70}}"#;
    let stream = [
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"The user "},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"wants the weather."},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"chatcmpl-tool-5f1e","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":30,"total_tokens":70}}"#,
    ];
    server.models("m").route(
        "POST",
        "/v1/chat/completions",
        vec![json(200, whole), sse(&stream)],
    );
    let model = attach(dir.path(), "vllm", &server, "");
    let mut request = ask("Weather in Paris?");
    request.tools = Some(vec![
        j!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}),
        j!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}),
    ]);
    let r = model.chat(request.clone()).unwrap().remove(0);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.text, "");
    assert_eq!(
        r.reasoning_content.as_deref(),
        Some("The user wants the weather.")
    );
    let calls = r.tool_calls.unwrap();
    assert_eq!(
        calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["chatcmpl-tool-5f1e", "chatcmpl-tool-77aa"]
    );
    assert_eq!(calls[0].function.arguments, "{\"city\": \"Paris\"}");
    assert_eq!(
        server.last_body("/v1/chat/completions")["tools"][0]["function"]["name"],
        "get_weather"
    );

    let mut collected = switchyard::ResponseCollector::new(1);
    for e in model.stream_chat(request).unwrap() {
        let e = e.unwrap();
        assert!(
            !e.delta.contains("<tool_call>") && !e.delta.contains("<think>"),
            "{e:?}"
        );
        collected.push(&e).unwrap();
    }
    let r = collected.finish().remove(0);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        r.reasoning_content.as_deref(),
        Some("The user wants the weather.")
    );
    let call = &r.tool_calls.unwrap()[0];
    assert_eq!(call.id, "chatcmpl-tool-5f1e");
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, "{\"city\": \"Paris\"}");
}

#[test]
fn error_shapes_map_to_kinds_with_the_server_message() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let nested = r#"{"error":{"message":"'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).","type":"BadRequestError","param":null,"code":400}}"#;
    let flat_404 = r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    server.models("my-model").route(
        "POST",
        "/v1/chat/completions",
        vec![
            json(400, nested),
            json(404, flat_404),
            json(401, r#"{"error":"Unauthorized"}"#),
            json(429, r#"{"object":"error","message":"Too many requests","type":"RateLimitError","param":null,"code":429}"#),
            json(503, r#"{"object":"error","message":"The request queue is full.","code":503}"#),
            json(500, r#"{"error":{"message":"EngineDeadError","type":"InternalServerError","param":null,"code":500}}"#),
            sse(&[
                VLLM_STREAM[1],
                r#"{"error":{"message":"engine failed mid-generation","type":"InternalServerError","param":null,"code":500}}"#,
            ]),
        ],
    );
    let model = attach(dir.path(), "vllm", &server, "");
    let cases = [
        (ErrorKind::INVALID_REQUEST, "maximum context length"),
        (ErrorKind::INVALID_REQUEST, "does not exist"),
        (ErrorKind::INVALID_REQUEST, "api_key"),
        (ErrorKind::OVERLOADED, "Too many requests"),
        (ErrorKind::OVERLOADED, "queue is full"),
        (ErrorKind::BACKEND, "EngineDeadError"),
    ];
    for (kind, text) in cases {
        let err = model.chat(ask("x")).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(text), "{err}");
    }
    let mut stream = model.stream_chat(ask("x")).unwrap();
    assert_eq!(stream.next().unwrap().unwrap().delta, "Hi");
    let err = stream.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BACKEND, "{err}");
    assert!(
        err.to_string().contains("engine failed mid-generation"),
        "{err}"
    );
    assert!(stream.next().is_none());
}

#[test]
fn vllm_scores_via_classify_and_pooling() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("rm")
        .route(
            "POST",
            "/classify",
            vec![json(
                200,
                r#"{"id":"classify-7c87","object":"list","created":1745383065,"model":"rm","data":[{"index":0,"label":"Default","probs":[0.565970778465271],"num_classes":1},{"index":1,"label":"Spoiled","probs":[0.26448777318000793],"num_classes":1}],"usage":{"prompt_tokens":20,"total_tokens":20,"completion_tokens":0,"prompt_tokens_details":null}}"#,
            )],
        )
        .route(
            "POST",
            "/pooling",
            vec![json(
                200,
                r#"{"id":"pool-1","object":"list","created":1,"model":"rm","data":[{"index":0,"object":"pooling","data":[0.75]}],"usage":{}}"#,
            )],
        );
    let model = attach(dir.path(), "vllm", &server, "");
    assert!(model.info().capabilities.scores);
    let scores = model
        .get_scores(&ScoreRequest {
            inputs: vec![ScoreInput::Text("a".into()), ScoreInput::Text("b".into())],
            max_length: Some(512),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(scores, vec![0.565_970_8, 0.264_487_78]);
    let b = server.last_body("/classify");
    assert_eq!(
        b,
        j!({"model":"rm","input":["a","b"],"truncate_prompt_tokens":512})
    );

    let conv = vec![Message::user("q"), Message::assistant("a")];
    let scores = model
        .get_scores(&ScoreRequest {
            inputs: vec![ScoreInput::Conversation(conv)],
            max_length: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(scores, vec![0.75]);
    assert_eq!(
        server.last_body("/pooling"),
        j!({"model":"rm","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"task":"classify"})
    );
}

#[test]
fn sglang_separate_finish_chunk_matched_stop_and_usage_on_request() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/chat/completions", vec![sse(SGLANG_STREAM)])
        .route(
            "POST",
            "/classify",
            vec![json(
                200,
                r#"[{"embedding":[-3.41],"meta_info":{"id":"a","prompt_tokens":61}},{"embedding":[9.27],"meta_info":{"id":"b","prompt_tokens":61}}]"#,
            )],
        );
    let model = attach(dir.path(), "sglang", &server, "");
    let mut request = ask("Say hi");
    request.generation.top_k = Some(0);
    request.generation.stop_token_ids = Some(vec![151645]);
    let (text, finish) = deltas_and_finish(&model, request);
    assert_eq!(text, "Hi!");
    assert_eq!((finish.prompt_length, finish.response_length), (21, 2));
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(
        b["stream_options"]["include_usage"], true,
        "SGLang sends usage only when asked"
    );
    assert_eq!(b["top_k"], -1, "SGLang's `off` is -1");
    assert_eq!(b["stop_token_ids"], j!([151645]));

    let scores = model
        .get_scores(&ScoreRequest {
            inputs: vec![ScoreInput::Text("x".into()), ScoreInput::Text("y".into())],
            max_length: None,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(scores, vec![-3.41, 9.27]);
    assert_eq!(
        server.last_body("/classify"),
        j!({"model":"my-model","text":["x","y"]})
    );
    let err = model
        .get_scores(&ScoreRequest {
            inputs: vec![ScoreInput::Conversation(vec![Message::user("q")])],
            max_length: None,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UNSUPPORTED, "{err}");
}

#[test]
fn sglang_flat_errors_and_health_while_warming_up() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route(
            "POST",
            "/v1/chat/completions",
            vec![json(
                400,
                r#"{"object":"error","message":"The input (61709 tokens) is longer than the model's context length (40960 tokens).","type":"BadRequestError","param":null,"code":400}"#,
            )],
        )
        .route("GET", "/health", vec![json(503, ""), json(200, "")]);
    let model = attach(dir.path(), "sglang", &server, "");
    let Err(err) = model.stream_chat(ask("x")) else {
        panic!("a 400 before the stream is an error from stream_chat")
    };
    assert_eq!(err.kind(), ErrorKind::INVALID_REQUEST, "{err}");
    assert!(
        err.to_string()
            .contains("longer than the model's context length"),
        "{err}"
    );
    let err = model.health().unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::UNAVAILABLE,
        "503 while warming up: {err}"
    );
    model.health().unwrap();
}

#[test]
fn media_goes_as_content_parts_with_data_urls() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("vl")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    for backend in ["vllm", "sglang"] {
        let model = attach(dir.path(), backend, &server, "");
        let mut request = ask("What is this?");
        request.images.push(MediaInput::Bytes {
            data_base64: "iVBORw0KGgo=".into(),
            mime_type: Some("image/png".into()),
        });
        request.audios.push(MediaInput::Url {
            url: "data:audio/wav;base64,UklGRg==".into(),
        });
        model.chat(request).unwrap();
        let b = server.last_body("/v1/chat/completions");
        assert_eq!(
            b["messages"][0]["content"],
            // No placeholders: in front of the first user message, images put in front first
            // and audio in front of them (LLaMA-Factory's rule).
            j!([
                {"type":"audio_url","audio_url":{"url":"data:audio/wav;base64,UklGRg=="}},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
                {"type":"text","text":"What is this?"}
            ]),
            "{backend}"
        );
    }
}

#[test]
fn ktransformers_legacy_quirks() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .route(
            "GET",
            "/v1/models",
            vec![json(
                200,
                r#"{"data":[{"id":"DeepSeek-V3","name":"DeepSeek-V3"}],"object":"list"}"#,
            )],
        )
        .route(
            "POST",
            "/v1/chat/completions",
            vec![
                sse(KT_LEGACY_STREAM),
                json(
                    422,
                    r#"{"detail":[{"type":"string_type","loc":["body","messages",0,"content"],"msg":"Input should be a valid string","input":[]}]}"#,
                ),
                json(500, "Internal Server Error"),
            ],
        );
    let model = attach(dir.path(), "ktransformers", &server, "server = \"legacy\"");
    assert_eq!(model.info().model, "DeepSeek-V3");
    assert!(!model.info().capabilities.images && !model.info().capabilities.scores);
    model.health().unwrap();
    assert!(
        !server.requests("/v1/models").is_empty() && server.requests("/health").is_empty(),
        "the legacy server has no /health; readiness is /v1/models"
    );

    let mut request = ask("Hi");
    request.generation = GenerationParams {
        temperature: Some(0.6),
        top_k: Some(40),
        seed: Some(1),
        stop: Some(vec!["x".into()]),
        max_new_tokens: Some(64),
        ..Default::default()
    };
    let (text, finish) = deltas_and_finish(&model, request);
    assert_eq!(text, "Hi there", "the repeated finish chunk adds nothing");
    assert_eq!(finish.reason, FinishReason::Stop);
    assert_eq!((finish.prompt_length, finish.response_length), (12, 9));
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(b["model"], "DeepSeek-V3", "model is required");
    assert_eq!(
        b["messages"],
        j!([{"role":"user","content":"Hi"}]),
        "string content"
    );
    assert_eq!(b["max_tokens"], 64);
    for absent in ["top_k", "seed", "stop", "n", "chat_template_kwargs"] {
        assert!(b.get(absent).is_none(), "{absent} not sent: {b}");
    }

    let err = model.chat(ask("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::INVALID_REQUEST, "{err}");
    assert!(
        err.to_string()
            .contains("body.messages.0.content: Input should be a valid string"),
        "{err}"
    );
    let err = model.chat(ask("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BACKEND, "{err}");
    assert!(err.to_string().contains("api_key"), "{err}");

    // What the legacy server cannot do is refused by name before anything is sent.
    let sent = server.requests("/v1/chat/completions").len();
    let mut r = ask("x");
    r.logprobs = true;
    let err = model.chat(r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UNSUPPORTED, "{err}");
    assert_eq!(err.field(), Some("logprobs"), "{err}");
    let mut r = ask("x");
    r.constraint = Some(switchyard::Constraint::JsonObject);
    assert_eq!(model.chat(r).unwrap_err().field(), Some("constraint"));
    assert_eq!(server.requests("/v1/chat/completions").len(), sent);
}

/// A broken upstream that names a choice far beyond `n` gets an error, not a 4 GiB allocation.
#[test]
fn a_wild_choice_index_from_upstream_is_an_error_not_an_allocation() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let wild = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":4000000000,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}]}"#;
    let chunk =
        r#"{"choices":[{"index":4000000000,"delta":{"content":"x"},"finish_reason":"stop"}]}"#;
    server.models("m").route(
        "POST",
        "/v1/chat/completions",
        vec![sse(&[chunk]), json(200, wild)],
    );
    let model = attach(dir.path(), "vllm", &server, "");
    let e = model
        .stream_chat(ask("x"))
        .unwrap()
        .find_map(Result::err)
        .expect("the wild index is refused in the stream");
    assert!(e.to_string().contains("choice index 4000000000"), "{e}");
    let e = model.chat(ask("x")).expect_err("and in the whole reply");
    assert!(e.to_string().contains("choice index 4000000000"), "{e}");
}

/// Logprobs, forced tool use and constraints reach vLLM and SGLang in their own dialects, and
/// the servers' logprobs come back typed, whole and streamed.
#[test]
fn logprobs_tool_choice_and_constraints_in_each_servers_dialect() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let lp = r#"{"content":[{"token":"Hi","logprob":-0.25,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.25,"bytes":[72,105]},{"token":"Hello","logprob":-1.5,"bytes":[72,101,108,108,111]}]}]}"#;
    let whole = format!(
        r#"{{"id":"c","object":"chat.completion","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hi"}},"logprobs":{lp},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
    );
    let chunk = format!(
        r#"{{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":"Hi"}},"logprobs":{lp},"finish_reason":"stop"}}]}}"#
    );
    server.models("m").route(
        "POST",
        "/v1/chat/completions",
        vec![
            json(200, &whole),
            sse(&[chunk.as_str()]),
            json(200, &whole),
            json(200, &whole),
        ],
    );
    let model = attach(dir.path(), "vllm", &server, "");
    let caps = &model.info().capabilities;
    assert!(caps.logprobs && caps.constraints && caps.tool_choice);
    let mut r = ask("x");
    r.logprobs = true;
    r.top_logprobs = 2;
    let out = model.chat(r.clone()).unwrap().remove(0);
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(
        (b["logprobs"].clone(), b["top_logprobs"].clone()),
        (j!(true), j!(2))
    );
    let lps = out.logprobs.unwrap();
    assert_eq!((lps[0].token.as_str(), lps[0].logprob), ("Hi", -0.25));
    assert_eq!(lps[0].top_logprobs[1].bytes, b"Hello");
    let streamed: Vec<_> = model
        .stream_chat(r)
        .unwrap()
        .map(Result::unwrap)
        .flat_map(|e| e.logprobs)
        .collect();
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].top_logprobs.len(), 2);

    let mut r = ask("x");
    r.tools = Some(vec![j!({"type": "function", "function": {"name": "f"}})]);
    r.tool_choice = Some(switchyard::ToolChoice::Function { name: "f".into() });
    r.constraint = None;
    model.chat(r).unwrap();
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(
        b["tool_choice"],
        j!({"type": "function", "function": {"name": "f"}})
    );

    let mut r = ask("x");
    r.constraint = Some(switchyard::Constraint::Regex {
        pattern: "[0-9]+".into(),
    });
    model.chat(r).unwrap();
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(b["structured_outputs"], j!({"regex": "[0-9]+"}));
    assert!(
        b.get("guided_regex").is_none(),
        "vLLM >= 0.12 ignores guided_*: {b}"
    );

    // SGLang: JSON schemas through response_format, a choice as an escaped regex.
    let server = FakeServer::start();
    server.models("m").route(
        "POST",
        "/v1/chat/completions",
        vec![json(200, &whole), json(200, &whole)],
    );
    let model = attach(dir.path(), "sglang", &server, "");
    let mut r = ask("x");
    r.constraint = Some(switchyard::Constraint::JsonSchema {
        schema: j!({"type": "object"}),
    });
    model.chat(r).unwrap();
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(
        b["response_format"]["json_schema"]["schema"],
        j!({"type": "object"})
    );
    let mut r = ask("x");
    r.constraint = Some(switchyard::Constraint::Choice {
        choices: vec!["yes".into(), "a.b".into()],
    });
    model.chat(r).unwrap();
    let b = server.last_body("/v1/chat/completions");
    assert_eq!(b["regex"], "(yes|a\\.b)");
}

#[test]
fn ktransformers_default_is_sglang_protocol_and_sse_without_space_decodes() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let mut chunks: Vec<String> = SGLANG_STREAM
        .iter()
        .map(|c| format!("data:{c}\r\n\r\n"))
        .collect();
    chunks.insert(0, ": keep-alive\n\n".into());
    chunks.push("event: done\ndata: [DONE]\n\n".into());
    server
        .models("Qwen3")
        .route("POST", "/v1/chat/completions", vec![raw_sse(chunks)]);
    let model = attach(dir.path(), "ktransformers", &server, "");
    assert_eq!(
        model.info().details["server"],
        "ktransformers (sglang + kt-kernel)"
    );
    let mut request = ask("x");
    request.generation.top_k = Some(20);
    let (text, finish) = deltas_and_finish(&model, request);
    assert_eq!(text, "Hi!");
    assert_eq!(finish.response_length, 2);
    assert_eq!(server.last_body("/v1/chat/completions")["top_k"], 20);
}

#[test]
fn dropping_a_stream_closes_the_connection() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    let mut long = raw_sse(
        (0..400)
            .map(|_| format!("data: {}\n\n", VLLM_STREAM[1]))
            .collect(),
    );
    long.delay = Duration::from_millis(20);
    server
        .models("m")
        .route("POST", "/v1/chat/completions", vec![long]);
    let model = attach(dir.path(), "vllm", &server, "");
    let mut stream = model.stream_chat(ask("x")).unwrap();
    stream.next().unwrap().unwrap();
    let canceller = stream.canceller();
    canceller.cancel();
    let err = stream.next().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CANCELLED, "{err}");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.disconnects() == 0 {
        assert!(
            Instant::now() < deadline,
            "the server never saw the client leave"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attaching_to_a_server_that_is_not_up_is_unavailable_with_a_hint() {
    let dir = plugin_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for backend in ["vllm", "sglang", "ktransformers"] {
        let started = Instant::now();
        let err = load(
            dir.path(),
            backend,
            "",
            &format!("base_url = \"http://127.0.0.1:{port}\"\nconnect_retries = 1"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UNAVAILABLE, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("Is the server running?"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    }
}

#[test]
fn bad_options_are_config_errors() {
    let dir = plugin_dir();
    let err = load(
        dir.path(),
        "vllm",
        "",
        "base_url = \"http://x\"\ntensor_paralel_size = 2",
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CONFIG, "{err}");
    assert!(err.to_string().contains("tensor_parallel_size"), "{err}");
    let err = load(dir.path(), "ktransformers", "", "server = \"old\"").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CONFIG, "{err}");
    // Adapters a server cannot take are refused, not dropped: see `lora.rs`.
    let err = load(dir.path(), "sglang", "", "").unwrap_err();
    assert!(
        err.to_string().contains("[model]"),
        "launch mode needs a model: {err}"
    );
    let err = load(
        dir.path(),
        "vllm",
        "[model]\npath = \"some/model\"",
        "command = [\"/nonexistent/vllm-xyz\"]",
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UNAVAILABLE, "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn a_launched_server_that_exits_early_reports_its_log() {
    let dir = plugin_dir();
    let err = load(
        dir.path(),
        "sglang",
        "[model]\npath = \"m\"",
        "command = [\"sh\", \"-c\", \"echo loading {model} on port {port}; echo CUDA out of memory >&2; exit 3\"]",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exited before it was ready"), "{msg}");
    assert!(msg.contains("CUDA out of memory"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Against a real peer: llama.cpp's llama-server.
// ---------------------------------------------------------------------------------------------

const BACKENDS: [&str; 3] = ["vllm", "sglang", "ktransformers"];

fn greedy(text: &str, max_new_tokens: u32) -> ChatRequest {
    let mut r = ask(text);
    r.generation.temperature = Some(0.0);
    r.generation.max_new_tokens = Some(max_new_tokens);
    r
}

#[test]
fn peer_chat_stream_stop_max_tokens_seed_and_usage_through_each_bridge() {
    let Some((bin, gguf)) = peer::require() else {
        return;
    };
    let server = peer::Peer::start(&bin, &gguf);
    let dir = plugin_dir();
    let prompt = "Tell me a story.";
    for backend in BACKENDS {
        let model = attach_url(dir.path(), backend, &server.url, "");
        assert_eq!(
            model.info().model,
            "smollm2",
            "{backend}: the first listed model"
        );

        // Chat, max tokens, usage.
        let r = &model.chat(greedy(prompt, 8)).unwrap()[0];
        assert_eq!(r.finish_reason, FinishReason::Length, "{backend}: {r:?}");
        assert_eq!(r.response_length, 8, "{backend}: {r:?}");
        assert!(r.prompt_length > 5, "{backend}: {r:?}");

        // Stream: same greedy text, one finish with the same counts.
        let (text, finish) = deltas_and_finish(&model, greedy(prompt, 8));
        assert_eq!(text, r.text, "{backend}: stream equals chat");
        assert_eq!(finish.reason, FinishReason::Length);
        assert_eq!(
            (finish.prompt_length, finish.response_length),
            (r.prompt_length, 8),
            "{backend}"
        );

        // Stop: cut at a word after the first one.
        let word = r
            .text
            .split_whitespace()
            .skip(1)
            .find(|w| w.len() >= 2)
            .unwrap_or_else(|| panic!("a word to stop at in {:?}", r.text))
            .to_owned();
        let cut = r.text[1..].find(&word).unwrap() + 1;
        let mut stop = greedy(prompt, 8);
        stop.generation.stop = Some(vec![word.clone()]);
        let s = &model.chat(stop).unwrap()[0];
        assert_eq!(s.text, r.text[..cut], "{backend}: stop at {word:?}");
        assert_eq!(s.finish_reason, FinishReason::Stop, "{backend}");

        // Seed: sampling with one seed repeats.
        let sampled = |seed: u64| {
            let mut q = ask(prompt);
            q.generation.temperature = Some(1.0);
            q.generation.seed = Some(seed);
            q.generation.max_new_tokens = Some(6);
            model.chat(q).unwrap()[0].text.clone()
        };
        assert_eq!(sampled(42), sampled(42), "{backend}: same seed, same text");
        model.health().unwrap();
    }
}

#[test]
fn peer_cancelling_mid_stream_closes_the_connection_and_frees_the_slot() {
    let Some((bin, gguf)) = peer::require() else {
        return;
    };
    let server = peer::Peer::start(&bin, &gguf);
    let dir = plugin_dir();
    let busy = |server: &peer::Peer| {
        server
            .get("/slots")
            .is_some_and(|(_, body)| body.contains("\"is_processing\":true"))
    };
    for (i, backend) in BACKENDS.into_iter().enumerate() {
        let model = attach_url(dir.path(), backend, &server.url, "");
        let mut stream = model.stream_chat(greedy("Tell me a story.", 1500)).unwrap();
        stream.next().unwrap().unwrap();
        stream.next().unwrap().unwrap();
        assert!(busy(&server), "{backend}: the server is generating");
        if i % 2 == 0 {
            drop(stream);
        } else {
            stream.canceller().cancel();
            let err = stream.next().unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::CANCELLED, "{err}");
        }
        // llama-server logs `cancel task` when it sees the client go away.
        let deadline = Instant::now() + Duration::from_secs(15);
        while server.log().matches("cancel task").count() <= i || busy(&server) {
            assert!(
                Instant::now() < deadline,
                "{backend}: the server did not notice the cancelled stream; log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn peer_killed_mid_stream_is_a_clear_error_and_the_host_survives() {
    let Some((bin, gguf)) = peer::require() else {
        return;
    };
    let dir = plugin_dir();
    for backend in BACKENDS {
        let mut server = peer::Peer::start(&bin, &gguf);
        let model = attach_url(dir.path(), backend, &server.url, "connect_retries = 0");
        let mut stream = model.stream_chat(greedy("Tell me a story.", 1500)).unwrap();
        stream.next().unwrap().unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match stream.next() {
                Some(Ok(_)) => assert!(Instant::now() < deadline, "{backend}: no error"),
                Some(Err(e)) => break e,
                None => panic!("{backend}: the stream ended cleanly after the server died"),
            }
        };
        assert_eq!(err.kind(), ErrorKind::UNAVAILABLE, "{backend}: {err}");
        assert!(err.to_string().contains(&server.url), "{backend}: {err}");
        drop(stream);
        let err = model.health().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UNAVAILABLE, "{backend}: {err}");
        let err = model.chat(ask("still there?")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UNAVAILABLE, "{backend}: {err}");
        assert!(err.to_string().contains("Is the server running?"), "{err}");
    }
}

#[test]
fn peer_launch_mode_starts_probes_and_stops_the_server() {
    let Some((bin, gguf)) = peer::require() else {
        return;
    };
    let dir = plugin_dir();
    for backend in BACKENDS {
        let mut command: Vec<String> = vec![bin.display().to_string()];
        command.extend(peer::server_args("{model}", "{port}", "{host}"));
        let table = format!(
            "command = {}\nready_timeout_s = 120\nstop_timeout_s = 5",
            serde_json::to_string(&command).unwrap()
        );
        let model = load(
            dir.path(),
            backend,
            &format!("[model]\npath = \"{}\"", gguf.display()),
            &table,
        )
        .unwrap();
        let info = model.info().clone();
        assert_eq!(info.details["mode"], "launch", "{backend}");
        let pid = u32::try_from(info.details["pid"].as_u64().unwrap()).unwrap();
        assert!(peer::process_alive(pid), "{backend}: server running");
        model.health().unwrap();
        let r = &model.chat(greedy("Hello!", 2)).unwrap()[0];
        assert_eq!(r.response_length, 2, "{backend}");
        assert_eq!(peer::watchdogs_of(pid).len(), 1, "{backend}: one watchdog");
        drop(model);
        assert!(
            !peer::process_alive(pid),
            "{backend}: the launched server (pid {pid}) is gone once the engine is dropped"
        );
        assert!(
            peer::watchdogs_of(pid).is_empty(),
            "{backend}: watchdog gone"
        );
    }
}

#[test]
fn peer_a_launched_server_does_not_outlive_a_killed_host() {
    let Some((bin, gguf)) = peer::require() else {
        return;
    };
    let dir = plugin_dir();
    let port = peer::free_port();
    let mut command: Vec<String> = vec![bin.display().to_string()];
    command.extend(peer::server_args("{model}", "{port}", "{host}"));
    let config = write_file(
        dir.path(),
        "launch.toml",
        &format!(
            "sample_backend = \"sglang\"\n[model]\npath = \"{}\"\n[backends.sglang]\ncommand = {}\nport = {port}\n",
            gguf.display(),
            serde_json::to_string(&command).unwrap()
        ),
    );
    // `switchyard chat` with piped stdin loads the model, then waits for lines.
    let mut host = std::process::Command::new(switchyard_bin())
        .arg("--plugin-dir")
        .arg(dir.path())
        .args(["chat", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while peer::http_get(port, "/health").map(|(s, _)| s) != Some(200) {
        assert!(host.try_wait().unwrap().is_none(), "the host exited early");
        assert!(
            Instant::now() < deadline,
            "the launched server never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let servers = peer::server_on_port(port);
    assert_eq!(servers.len(), 1, "one launched server: {servers:?}");
    let server = servers[0];
    assert_eq!(peer::watchdogs_of(server).len(), 1);

    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while peer::process_alive(server) || !peer::watchdogs_of(server).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the launched server (pid {server}) outlived its killed host"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Switchyard's own `switchyard api` (hf-candle behind it) as the upstream: greedy text through
/// each bridge equals greedy text from hf-candle directly.
#[test]
fn switchyard_api_as_upstream_gives_each_bridge_the_direct_greedy_text() {
    let gguf = peer::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "{} is missing; run scripts/fetch-model.sh",
        gguf.display()
    );
    let dir = plugin_dir();
    let lib = plugin_library("hf-candle");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    let top = format!(
        "[model]\npath = \"{}\"\n[generation]\ntemperature = 0\nrepetition_penalty = 1.0\nmax_new_tokens = 16",
        gguf.display()
    );
    let question = "What is the chemical symbol for gold?";
    let direct = load(dir.path(), "hf-candle", &top, "threads = 2").unwrap();
    let expected = direct.chat(greedy(question, 16)).unwrap().remove(0).text;
    drop(direct);
    assert!(expected.contains("Au"), "{expected}");

    // Another test of this binary may take the free port before the server binds it: a
    // server that exits is started again on a new port.
    let mut attempt = 0;
    let (port, upstream) = loop {
        attempt += 1;
        let port = peer::free_port();
        let log = dir.path().join(format!("api-{attempt}.log"));
        let mut child = KillOnDrop(
            std::process::Command::new(switchyard_bin())
                .args(["--plugin-dir"])
                .arg(dir.path())
                .args(["api", "--config"])
                .arg(dir.path().join("hf-candle.toml"))
                .args(["--port", &port.to_string()])
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let started = Instant::now();
        let up = loop {
            if peer::http_get(port, "/health").is_some_and(|(status, _)| status == 200) {
                break true;
            }
            if child.0.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "switchyard api did not come up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        if up {
            break (port, child);
        }
        assert!(
            attempt < 3,
            "switchyard api exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    for backend in BACKENDS {
        let model = load(
            dir.path(),
            backend,
            "",
            &format!("base_url = \"http://127.0.0.1:{port}\""),
        )
        .unwrap();
        assert_eq!(
            model.info().model,
            "SmolLM2-135M-Instruct.Q4_1",
            "{backend}"
        );
        let got = model.chat(greedy(question, 16)).unwrap().remove(0);
        assert_eq!(
            got.text, expected,
            "{backend}: bridge text differs from direct"
        );
        if backend == "vllm" {
            let (streamed, finish) = deltas_and_finish(&model, greedy(question, 16));
            assert_eq!(streamed, expected, "{backend}: streamed through the bridge");
            assert_eq!(finish.response_length, got.response_length, "{backend}");
        }
    }
    drop(upstream);
}

/// Embeddings pass through to vLLM's `/v1/embeddings` (an answer in vLLM's shape, `data` out of
/// order) and come back through the host's `ChatModel::embed`, one vector per input.
#[test]
fn vllm_embeddings_pass_through_and_come_back_in_input_order() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server.models("e5").route(
        "POST",
        "/v1/embeddings",
        vec![json(
            200,
            r#"{"id":"embd-1","object":"list","created":1,"model":"e5","data":[{"index":1,"object":"embedding","embedding":[0.5,-0.25,1.0]},{"index":0,"object":"embedding","embedding":[1.0,0.0,-1.0]}],"usage":{"prompt_tokens":6,"total_tokens":6}}"#,
        )],
    );
    let model = attach(dir.path(), "vllm", &server, "");
    assert!(model.info().capabilities.embeddings);
    let vectors = model
        .embed(vec![
            ScoreInput::Text("a".into()),
            ScoreInput::Text("b".into()),
        ])
        .unwrap();
    assert_eq!(vectors, vec![vec![1.0, 0.0, -1.0], vec![0.5, -0.25, 1.0]]);
    assert_eq!(
        server.last_body("/v1/embeddings"),
        j!({"model":"e5","input":["a","b"],"encoding_format":"float"})
    );
}
