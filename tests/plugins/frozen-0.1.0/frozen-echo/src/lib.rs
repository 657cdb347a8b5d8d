//! A plugin built against contract 0.1.0 (the frozen `switchyard-plugin` and `switchyard-abi` in
//! `../vendor`), as a third party built one at the time: the backend
//! `frozen-echo` streams the last user message back word by word, the words numbered by the
//! sequence index so that `num_return_sequences` is visible. Every host whose contract is 0.1.x
//! must load it and stream from it.

use switchyard_plugin::{
    Backend, CancelToken, Capabilities, ChatRequest, EngineConfig, EngineError, EngineInfo, Event,
    EventIter, Finish, FinishReason, PluginMetadata, export_backend,
};

struct FrozenEcho;

fn capabilities() -> Capabilities {
    Capabilities {
        chat: true,
        stream: true,
        ..Default::default()
    }
}

impl Backend for FrozenEcho {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            backend: "frozen-echo".into(),
            model: "echo-0.1.0".into(),
            capabilities: capabilities(),
            ..Default::default()
        }
    }

    fn stream_chat(
        &self,
        request: ChatRequest,
        cancel: CancelToken,
    ) -> Result<EventIter, EngineError> {
        let text = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let prompt_length = words.len() as u32;
        let sequences = request.generation.num_return_sequences.unwrap_or(1);
        let mut events = Vec::new();
        for index in 0..sequences {
            for (i, word) in words.iter().enumerate() {
                let last = i + 1 == words.len();
                events.push(Event {
                    index,
                    delta: if i == 0 {
                        word.clone()
                    } else {
                        format!(" {word}")
                    },
                    token_ids: vec![i as u32],
                    finish: last.then_some(Finish {
                        reason: FinishReason::Stop,
                        prompt_length,
                        response_length: words.len() as u32,
                    }),
                });
            }
        }
        Ok(Box::new(events.into_iter().map(move |e| {
            if cancel.is_cancelled() {
                Err(EngineError::cancelled())
            } else {
                Ok(e)
            }
        })))
    }
}

fn metadata() -> PluginMetadata {
    PluginMetadata {
        backends: vec!["frozen-echo".into()],
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Echo built against the frozen contract 0.1.0 (test fixture)".into(),
        capabilities: capabilities(),
    }
}

fn create(_config: EngineConfig) -> Result<FrozenEcho, EngineError> {
    Ok(FrozenEcho)
}

export_backend! {
    metadata: metadata,
    create: create,
}
