//! LoRA adapters through the bridges, against the scripted server: the adapter a request picks
//! reaches vLLM as `model` and SGLang as `lora_path`; attach mode refuses a server that does not
//! list an adapter; the always-on adapter is found by its folder.

use super::fake::{FakeServer, json, sse};
use super::{VLLM_CHAT, VLLM_STREAM, ask, load, plugin_dir};
use switchyard::{ErrorKind, ScoreInput, ScoreRequest};

/// vLLM's `/classify` answer for one text (as in `vllm_scores_via_classify_and_pooling`).
const VLLM_CLASSIFY: &str = r#"{"id":"classify-7c87","object":"list","created":1745383065,"model":"sql-lora","data":[{"index":0,"label":"Default","probs":[0.565970778465271],"num_classes":1}],"usage":{"prompt_tokens":20,"total_tokens":20,"completion_tokens":0,"prompt_tokens_details":null}}"#;

fn score_one() -> ScoreRequest {
    ScoreRequest {
        inputs: vec![ScoreInput::Text("a".into())],
        ..Default::default()
    }
}

/// `/v1/models` of `vllm serve Qwen/Qwen2.5-7B-Instruct --served-model-name my-model
/// --enable-lora --lora-modules sql-lora=/srv/loras/sql`, as vLLM answers it (the adapter card
/// has `root` = its folder and `parent` = the base, no `max_model_len`).
const VLLM_MODELS_WITH_LORA: &str = r#"{"object":"list","data":[{"id":"my-model","object":"model","created":1735689600,"owned_by":"vllm","root":"Qwen/Qwen2.5-7B-Instruct","parent":null,"max_model_len":8192,"permission":[{"id":"modelperm-1","object":"model_permission","created":1735689600,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]},{"id":"sql-lora","object":"model","created":1735689600,"owned_by":"vllm","root":"/srv/loras/sql","parent":"my-model","max_model_len":null,"permission":[{"id":"modelperm-2","object":"model_permission","created":1735689600,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}]}"#;

fn vllm_with_lora() -> FakeServer {
    let server = FakeServer::start();
    server
        .route("GET", "/v1/models", vec![json(200, VLLM_MODELS_WITH_LORA)])
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    server
}

#[test]
fn a_named_adapter_reaches_vllm_as_the_model() {
    let dir = plugin_dir();
    let server = vllm_with_lora();
    let model = load(
        dir.path(),
        "vllm",
        "[model.lora_modules]\nsql-lora = \"/srv/loras/sql\"",
        &format!("base_url = \"{}/v1\"", server.url),
    )
    .unwrap();
    assert_eq!(model.info().model, "my-model", "the base, not the adapter");
    assert_eq!(model.info().context_length, Some(8192));
    assert_eq!(model.info().details["lora_adapters"][0], "sql-lora");

    let mut request = ask("Say hi");
    request.adapter = Some("sql-lora".into());
    model.chat(request).unwrap();
    let body = server.last_body("/v1/chat/completions");
    assert_eq!(body["model"], "sql-lora");
    assert!(body.get("lora_path").is_none(), "{body}");

    // The base model when the request names no adapter; a streamed request carries it too.
    model.chat(ask("Say hi")).unwrap();
    assert_eq!(
        server.last_body("/v1/chat/completions")["model"],
        "my-model"
    );
    server.route("POST", "/v1/chat/completions", vec![sse(VLLM_STREAM)]);
    let mut request = ask("Say hi");
    request.adapter = Some("sql-lora".into());
    let events: Vec<_> = model.stream_chat(request).unwrap().collect();
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    let body = server.last_body("/v1/chat/completions");
    assert_eq!(
        (&body["model"], &body["stream"]),
        (&"sql-lora".into(), &true.into())
    );

    // A handle bound to the adapter (what the router hands out for `"model": "sql-lora"`).
    let bound = model.with_adapter(Some("sql-lora".into()));
    server.route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    bound.chat(ask("Say hi")).unwrap();
    assert_eq!(
        server.last_body("/v1/chat/completions")["model"],
        "sql-lora"
    );
}

#[test]
fn attach_refuses_a_vllm_server_that_does_not_serve_the_adapter() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server.models("my-model");
    let err = load(
        dir.path(),
        "vllm",
        "[model.lora_modules]\nsql-lora = \"/srv/loras/sql\"",
        &format!("base_url = \"{}/v1\"", server.url),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CONFIG, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`sql-lora` of [model.lora_modules]")
            && msg.contains("--enable-lora --lora-modules sql-lora=/srv/loras/sql")
            && msg.contains("--max-lora-rank"),
        "{msg}"
    );
    assert!(
        server.requests("/v1/chat/completions").is_empty(),
        "refused at load"
    );
}

#[test]
fn the_always_on_adapter_goes_with_every_vllm_request() {
    let dir = plugin_dir();
    let server = vllm_with_lora();
    let model = load(
        dir.path(),
        "vllm",
        "[model]\nadapter_name_or_path = \"/srv/loras/sql\"",
        &format!("base_url = \"{}/v1\"", server.url),
    )
    .unwrap();
    assert_eq!(model.info().details["always_on_adapter"], "sql-lora");
    model.chat(ask("Say hi")).unwrap();
    assert_eq!(
        server.last_body("/v1/chat/completions")["model"],
        "sql-lora"
    );
    // Scores too: the adapter applies to every request.
    server.route("POST", "/classify", vec![json(200, VLLM_CLASSIFY)]);
    model.get_scores(&score_one()).unwrap();
    assert_eq!(server.last_body("/classify")["model"], "sql-lora");
}

#[test]
fn sglang_sends_the_always_on_adapter_as_lora0_and_refuses_scores_without_it() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    let model = load(
        dir.path(),
        "sglang",
        "[model]\nadapter_name_or_path = \"/srv/loras/sql\"",
        &format!("base_url = \"{}/v1\"", server.url),
    )
    .unwrap();
    model.chat(ask("Say hi")).unwrap();
    let body = server.last_body("/v1/chat/completions");
    // LLaMA-Factory's SGLang engine: `--lora-paths lora0=DIR`, every request on `lora0`.
    assert_eq!(
        (&body["model"], &body["lora_path"]),
        (&"my-model".into(), &"lora0".into())
    );
    let err = model.get_scores(&score_one()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UNSUPPORTED, "{err}");
    assert!(err.to_string().contains("adapter_name_or_path"), "{err}");
    assert!(server.requests("/classify").is_empty());
}

#[test]
fn a_named_adapter_reaches_sglang_as_lora_path() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server
        .models("my-model")
        .route("POST", "/v1/chat/completions", vec![json(200, VLLM_CHAT)]);
    for backend in ["sglang", "ktransformers"] {
        let model = load(
            dir.path(),
            backend,
            "[model.lora_modules]\nlora1 = \"/srv/loras/kimi\"",
            &format!("base_url = \"{}/v1\"", server.url),
        )
        .unwrap();
        let mut request = ask("Say hi");
        request.adapter = Some("lora1".into());
        model.chat(request).unwrap();
        let body = server.last_body("/v1/chat/completions");
        assert_eq!(
            (&body["model"], &body["lora_path"]),
            (&"my-model".into(), &"lora1".into()),
            "{backend}"
        );
    }
}

#[test]
fn adapters_the_server_cannot_take_are_refused_by_key() {
    let dir = plugin_dir();
    let server = FakeServer::start();
    server.models("my-model");
    let err = load(
        dir.path(),
        "ktransformers",
        "[model]\nadapter_name_or_path = \"saves/lora\"",
        &format!("server = \"legacy\"\nbase_url = \"{}\"", server.url),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CONFIG, "{err}");
    assert!(err.to_string().contains("adapter_name_or_path"), "{err}");
    // LLaMA-Factory: "vLLM only accepts a single adapter. Merge them first."
    let err = load(
        dir.path(),
        "vllm",
        "[model]\nadapter_name_or_path = [\"a\", \"b\"]",
        &format!("base_url = \"{}\"", server.url),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CONFIG, "{err}");
    assert!(
        err.to_string().contains("adapter_name_or_path lists 2"),
        "{err}"
    );
}
