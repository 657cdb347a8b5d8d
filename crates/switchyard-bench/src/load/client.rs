//! The clients: a fixed, seeded mix of requests, and closed-loop streaming clients that send
//! them through `POST /v1/chat/completions` (`stream: true`) and time every text chunk.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stats::Record;

/// One request of the mix.
#[derive(Clone, Debug)]
pub struct Job {
    /// The user message.
    pub prompt: String,
    /// `max_tokens`.
    pub max_tokens: u32,
}

/// The words prompts are drawn from (common English words, about one token each in the
/// SmolLM2 and Qwen2.5 vocabularies).
const WORDS: [&str; 48] = [
    "river", "stone", "light", "house", "garden", "winter", "market", "silver", "window", "forest",
    "letter", "bridge", "summer", "island", "engine", "mirror", "candle", "harbor", "valley",
    "thunder", "castle", "orange", "pocket", "ladder", "morning", "signal", "basket", "feather",
    "desert", "lantern", "violin", "anchor", "meadow", "rocket", "blanket", "compass", "shadow",
    "cotton", "pepper", "marble", "tunnel", "copper", "spider", "button", "planet", "rabbit",
    "kettle", "ribbon",
];

/// splitmix64: a small seeded generator, the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// `n` requests for one run. Each request's prompt length (words, from `prompt_words`) and
/// `max_tokens` (from `max_tokens`) are drawn uniformly and independently from `seed` and
/// its index alone, so every run at every client count replays the same lengths; the words
/// themselves also depend on `run`, and each prompt opens with its run and index, so no
/// request shares more than the chat template with an earlier one (no prefix-cache hits
/// across runs on either server).
pub fn mix(seed: u64, run: u64, n: usize, prompt_words: &[usize], max_tokens: &[u32]) -> Vec<Job> {
    let mut lengths = Rng::new(seed);
    let mut words = Rng::new(seed ^ run.wrapping_mul(0xa076_1d64_78bd_642f).wrapping_add(1));
    (0..n)
        .map(|i| {
            let (count, max_tokens) = (lengths.pick(prompt_words), lengths.pick(max_tokens));
            let text: Vec<&str> = (0..count).map(|_| words.pick(&WORDS)).collect();
            Job {
                prompt: format!(
                    "Request {run}.{i}. Write a long story that uses these words: {}",
                    text.join(" ")
                ),
                max_tokens,
            }
        })
        .collect()
}

/// The request body: greedy, `max_tokens` fixed, usage in the stream, `ignore_eos` (which
/// llama-server honours and Switchyard, lacking it, ignores) and no repetition penalty under
/// either server's name for it.
pub fn body(job: &Job, model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": job.prompt}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": job.max_tokens,
        "temperature": 0.0,
        "ignore_eos": true,
        "repeat_penalty": 1.0,
        "repetition_penalty": 1.0,
    })
}

/// Runs `jobs` with `clients` concurrent clients, each sending its next job as soon as its
/// last one ended (a closed loop), every response streamed; one record per job, in job order.
pub async fn run(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    jobs: &[Job],
    clients: usize,
    timeout: Duration,
) -> Vec<Record> {
    let jobs: Arc<Vec<Job>> = Arc::new(jobs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (http, url, model) = (http.clone(), url.to_owned(), model.to_owned());
        let (jobs, next) = (jobs.clone(), next.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                done.push((
                    i,
                    one(&http, &url, &body(job, &model), start, timeout).await,
                ));
            }
            done
        });
    }
    let mut records = vec![Record::default(); jobs.len()];
    while let Some(done) = set.join_next().await {
        for (i, r) in done.expect("client task") {
            records[i] = r;
        }
    }
    records
}

/// One streamed request; a failure (status, error event, timeout, cut stream) is a record
/// with `error` set.
async fn one(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    start: Instant,
    timeout: Duration,
) -> Record {
    let mut r = Record {
        sent: start.elapsed().as_secs_f64(),
        ..Record::default()
    };
    let outcome = tokio::time::timeout(timeout, stream(http, url, body, start, &mut r)).await;
    r.done = start.elapsed().as_secs_f64();
    match outcome {
        Err(_) => r.error = Some(format!("timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => r.error = Some(e),
        Ok(Ok(())) => {}
    }
    r
}

async fn stream(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    start: Instant,
    r: &mut Record,
) -> Result<(), String> {
    let mut resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    let mut buf = Vec::new();
    let mut sse = Sse::default();
    while let Some(bytes) = resp
        .chunk()
        .await
        .map_err(|e| format!("stream cut: {}", chain(&e)))?
    {
        let at = start.elapsed().as_secs_f64();
        buf.extend_from_slice(&bytes);
        for data in take_events(&mut buf) {
            if sse.data(&data)? {
                r.chunks.push(at);
            }
        }
    }
    if !sse.done {
        return Err("the stream ended without [DONE]".into());
    }
    r.tokens = sse.completion_tokens.unwrap_or(r.chunks.len() as u64);
    r.prompt_tokens = sse.prompt_tokens;
    Ok(())
}

/// An error and its causes, `: `-separated (reqwest's own message names only the URL).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// Removes the complete server-sent events from the front of `buf` and returns their `data`
/// fields (one string per event, its `data:` lines joined by newlines).
pub fn take_events(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let event: Vec<u8> = buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&event);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

/// What a stream said so far.
#[derive(Debug, Default)]
pub struct Sse {
    /// `[DONE]` came.
    pub done: bool,
    /// The last `usage.completion_tokens`.
    pub completion_tokens: Option<u64>,
    /// The last `usage.prompt_tokens`.
    pub prompt_tokens: u64,
}

impl Sse {
    /// Reads one event's data; `Ok(true)` when it carried generated text (content or
    /// reasoning), an error when it was an error event or not JSON.
    pub fn data(&mut self, data: &str) -> Result<bool, String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(false);
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("a chunk is not JSON ({e}): {data}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!("error event: {e}"));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.completion_tokens = u["completion_tokens"].as_u64().or(self.completion_tokens);
            self.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(self.prompt_tokens);
        }
        let text = |k: &str| {
            v["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["delta"][k].as_str().is_some_and(|s| !s.is_empty()))
        };
        Ok(text("content") || text("reasoning_content"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real streams (`scripts/fixtures/record_load_sse.sh`: llama-server and `switchyard api`,
    /// 12 tokens each), fed in pieces of every size from 1 byte to the whole: the text chunks
    /// found equal each server's own `usage.completion_tokens`, and `[DONE]` is seen.
    #[test]
    fn sse_text_chunks_match_the_servers_usage() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/load_sse");
        for name in ["llama-server", "switchyard"] {
            let bytes = std::fs::read(format!("{dir}/{name}.sse")).expect("fixture");
            for piece in (1..64).chain([bytes.len()]) {
                let (mut buf, mut sse, mut text) = (Vec::new(), Sse::default(), 0u64);
                for part in bytes.chunks(piece) {
                    buf.extend_from_slice(part);
                    for data in take_events(&mut buf) {
                        text += u64::from(sse.data(&data).expect("no error event"));
                    }
                }
                assert!(sse.done && buf.is_empty(), "{name}, pieces of {piece}");
                assert_eq!(sse.completion_tokens, Some(12), "{name}");
                assert_eq!(text, 12, "{name}, pieces of {piece}");
                assert_eq!(sse.prompt_tokens, 39, "{name}");
            }
        }
        let mut sse = Sse::default();
        let err = r#"{"error": {"message": "overloaded", "type": "server_error"}}"#;
        assert!(sse.data(err).unwrap_err().contains("overloaded"));
    }

    #[test]
    fn mix_replays_lengths_and_varies_words() {
        let a = mix(7, 0, 12, &[4, 16], &[8, 32]);
        let b = mix(7, 1, 12, &[4, 16], &[8, 32]);
        let words = |j: &Job| j.prompt.rsplit(": ").next().unwrap().split(' ').count();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.max_tokens, words(x)), (y.max_tokens, words(y)));
            assert_ne!(x.prompt, y.prompt);
        }
        assert!(a.iter().any(|j| j.max_tokens == 8) && a.iter().any(|j| j.max_tokens == 32));
    }
}
