//! The lines between the host and a worker: one JSON document per line each way. Requests and
//! responses travel as the same JSON text the plugin boundary uses.

use serde::{Deserialize, Serialize};
use switchyard_abi::wire::{EngineConfig, Event};

/// Host to worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// The first line: create the engine. Answered with [`Reply::Created`] or an error.
    Create {
        /// The engine config, as the plugin's `create` takes it.
        config: Box<EngineConfig>,
    },
    /// `health()`.
    Health {
        /// Request id.
        id: u64,
    },
    /// `chat()` of a JSON chat request.
    Chat {
        /// Request id.
        id: u64,
        /// The request JSON.
        request: String,
    },
    /// `stream_chat()`: answered with [`Reply::Started`] (or an error), events, then the end.
    Stream {
        /// Request id.
        id: u64,
        /// The request JSON.
        request: String,
    },
    /// `get_scores()`.
    Scores {
        /// Request id.
        id: u64,
        /// The request JSON.
        request: String,
    },
    /// Cancel stream `id`.
    Cancel {
        /// Request id.
        id: u64,
    },
}

/// Worker to host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The engine exists; its info JSON.
    Created {
        /// `EngineInfo` JSON.
        info: String,
    },
    /// A call finished without a value (`health`).
    Ok {
        /// Request id.
        id: u64,
    },
    /// `chat()`'s responses JSON.
    Responses {
        /// Request id.
        id: u64,
        /// `Vec<Response>` JSON.
        json: String,
    },
    /// The stream started (errors in starting one are errors of the call, as in process).
    Started {
        /// Request id.
        id: u64,
    },
    /// One stream event.
    Event {
        /// Request id.
        id: u64,
        /// The event.
        event: Event,
    },
    /// The stream ended.
    End {
        /// Request id.
        id: u64,
    },
    /// Reward scores.
    Scores {
        /// Request id.
        id: u64,
        /// One per input.
        scores: Vec<f32>,
    },
    /// A call failed (`id` 0: creating the engine).
    Error {
        /// Request id.
        id: u64,
        /// The `ErrorKind` number.
        kind: u32,
        /// The message.
        message: String,
    },
}

impl Reply {
    /// The request this reply belongs to.
    pub fn id(&self) -> u64 {
        match self {
            Reply::Created { .. } => 0,
            Reply::Ok { id }
            | Reply::Started { id }
            | Reply::Responses { id, .. }
            | Reply::Event { id, .. }
            | Reply::End { id }
            | Reply::Scores { id, .. }
            | Reply::Error { id, .. } => *id,
        }
    }
}
