//! The worker side: load one plugin file, create its engine, answer calls from stdin on stdout.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use switchyard_abi::{EngineBox, EngineError, TokenStreamBox, wire::Event};

use super::protocol::{Call, Reply};
use crate::registry::open_module;

type Out = Arc<Mutex<std::io::Stdout>>;
type Streams = Arc<Mutex<HashMap<u64, Arc<TokenStreamBox>>>>;

fn send(out: &Out, reply: &Reply) {
    let line = serde_json::to_string(reply).expect("replies encode");
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    // The host is gone when this fails; the read loop then ends on EOF.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn error(id: u64, e: &EngineError) -> Reply {
    Reply::Error {
        id,
        kind: e.kind.0,
        message: e.message.to_string(),
    }
}

/// Serves the plugin library at `plugin` on stdin/stdout until stdin closes (the host went
/// away). Nothing else may write to stdout in this process.
pub fn serve_stdio(plugin: &Path) -> std::io::Result<()> {
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(first) = lines.next().transpose()? else {
        return Ok(());
    };
    let engine = match create(plugin, &first) {
        Ok(engine) => Arc::new(engine),
        Err(e) => {
            send(&out, &error(0, &e));
            return Ok(());
        }
    };
    send(
        &out,
        &Reply::Created {
            info: engine.info().into_string(),
        },
    );
    let streams: Streams = Arc::default();
    for line in lines {
        let line = line?;
        let call: Call = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("worker: bad call line ({e}); ignored");
                continue;
            }
        };
        if let Call::Cancel { id } = call {
            if let Some(s) = streams.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                s.cancel();
            }
            continue;
        }
        let (engine, out, streams) = (engine.clone(), out.clone(), streams.clone());
        std::thread::spawn(move || run(&engine, call, &out, &streams));
    }
    // The host closed our stdin: cancel what runs and leave.
    for s in streams.lock().unwrap_or_else(|p| p.into_inner()).values() {
        s.cancel();
    }
    Ok(())
}

fn create(plugin: &Path, first: &str) -> Result<EngineBox, EngineError> {
    let Ok(Call::Create { config }) = serde_json::from_str::<Call>(first) else {
        return Err(EngineError::config(
            "the first call to a worker must be `create`",
        ));
    };
    let module = open_module(plugin).map_err(EngineError::config)?;
    let json = serde_json::to_string(&config)
        .map_err(|e| EngineError::config(format!("cannot encode engine config: {e}")))?;
    (module.create())(json.as_str().into()).into_result()
}

fn run(engine: &EngineBox, call: Call, out: &Out, streams: &Streams) {
    let reply = match call {
        Call::Create { .. } => Reply::Error {
            id: 0,
            kind: switchyard_abi::ErrorKind::INVALID_REQUEST.0,
            message: "the engine exists already".into(),
        },
        Call::Cancel { .. } => return,
        Call::Health { id } => match engine.health().into_result() {
            Ok(()) => Reply::Ok { id },
            Err(e) => error(id, &e),
        },
        Call::Chat { id, request } => match engine.chat(request.as_str().into()).into_result() {
            Ok(json) => Reply::Responses {
                id,
                json: json.into_string(),
            },
            Err(e) => error(id, &e),
        },
        Call::Scores { id, request } => {
            match engine.get_scores(request.as_str().into()).into_result() {
                Ok(scores) => Reply::Scores {
                    id,
                    scores: scores.into_vec(),
                },
                Err(e) => error(id, &e),
            }
        }
        Call::Stream { id, request } => {
            let stream = match engine.stream_chat(request.as_str().into()).into_result() {
                Ok(s) => Arc::new(s),
                Err(e) => return send(out, &error(id, &e)),
            };
            streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, stream.clone());
            send(out, &Reply::Started { id });
            let end = loop {
                match stream.next_event().into_result() {
                    Ok(e) => match e.into_option() {
                        Some(e) => send(
                            out,
                            &Reply::Event {
                                id,
                                event: Event::from(e),
                            },
                        ),
                        None => break Reply::End { id },
                    },
                    Err(e) => break error(id, &e),
                }
            };
            streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            end
        }
    };
    send(out, &reply);
}
