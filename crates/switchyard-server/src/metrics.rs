//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters. All updates are relaxed atomics: cheap on the request path.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Chat and score requests received.
    pub requests: AtomicU64,
    /// Requests answered with an error status.
    pub errors: AtomicU64,
    /// Requests refused with 429.
    pub rejected: AtomicU64,
    /// Prompt tokens processed.
    pub tokens_in: AtomicU64,
    /// Tokens generated.
    pub tokens_out: AtomicU64,
    /// Sum of time-to-first-token, microseconds, over `ttft_count` streams.
    pub ttft_us_sum: AtomicU64,
    /// Streams that produced a first token.
    pub ttft_count: AtomicU64,
    /// Sum of request latency, microseconds, over `latency_count` requests.
    pub latency_us_sum: AtomicU64,
    /// Finished requests.
    pub latency_count: AtomicU64,
    /// Per model: requests, prompt tokens, generated tokens.
    pub by_model: Mutex<BTreeMap<String, [u64; 3]>>,
}

/// One model's live numbers for the labelled series.
pub struct ModelGauges {
    /// The model's name.
    pub name: String,
    /// Requests holding its slots.
    pub running: usize,
    /// Requests waiting for them.
    pub waiting: usize,
    /// Loaded (1) or not (0).
    pub loaded: bool,
}

impl Metrics {
    /// Adds one observation of time to first token.
    pub fn observe_ttft(&self, d: std::time::Duration) {
        self.ttft_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.ttft_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one observation of request latency.
    pub fn observe_latency(&self, d: std::time::Duration) {
        self.latency_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a finished request's token counts (for `model`).
    pub fn count_tokens(&self, model: &str, prompt: u32, completion: u32) {
        self.tokens_in
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.tokens_out
            .fetch_add(u64::from(completion), Ordering::Relaxed);
        let mut by = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        let c = by.entry(model.to_owned()).or_default();
        c[1] += u64::from(prompt);
        c[2] += u64::from(completion);
    }

    /// Counts a request for `model`.
    pub fn count_request(&self, model: &str) {
        let mut by = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        by.entry(model.to_owned()).or_default()[0] += 1;
    }

    /// The Prometheus text exposition: server totals (running and waiting summed over the
    /// models), then the same series labelled by model.
    pub fn render(&self, models: &[ModelGauges]) -> String {
        let in_flight: usize = models.iter().map(|m| m.running).sum();
        let waiting: usize = models.iter().map(|m| m.waiting).sum();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "switchyard_requests_total",
            "counter",
            "Chat and score requests received.",
            g(&self.requests).to_string(),
        );
        metric(
            "switchyard_errors_total",
            "counter",
            "Requests answered with an error.",
            g(&self.errors).to_string(),
        );
        metric(
            "switchyard_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            g(&self.rejected).to_string(),
        );
        metric(
            "switchyard_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            g(&self.tokens_in).to_string(),
        );
        metric(
            "switchyard_generated_tokens_total",
            "counter",
            "Tokens generated.",
            g(&self.tokens_out).to_string(),
        );
        metric(
            "switchyard_queue_depth",
            "gauge",
            "Requests admitted and not finished (running or waiting for a slot).",
            (in_flight + waiting).to_string(),
        );
        metric(
            "switchyard_running",
            "gauge",
            "Requests holding an engine slot.",
            in_flight.to_string(),
        );
        for (name, help, sum, count) in [
            (
                "switchyard_time_to_first_token_seconds",
                "Time from request to first streamed token.",
                &self.ttft_us_sum,
                &self.ttft_count,
            ),
            (
                "switchyard_request_duration_seconds",
                "Time from request to last byte.",
                &self.latency_us_sum,
                &self.latency_count,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
                g(sum) as f64 / 1e6,
                g(count)
            );
        }
        let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"");
        let by = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, kind, help, value) in [
            (
                "switchyard_model_loaded",
                "gauge",
                "Whether the model is loaded.",
                0usize,
            ),
            (
                "switchyard_model_running",
                "gauge",
                "Requests holding the model's slots.",
                1,
            ),
            (
                "switchyard_model_waiting",
                "gauge",
                "Requests waiting for the model's slots.",
                2,
            ),
            (
                "switchyard_model_requests_total",
                "counter",
                "Chat and score requests for the model.",
                3,
            ),
            (
                "switchyard_model_prompt_tokens_total",
                "counter",
                "Prompt tokens of the model.",
                4,
            ),
            (
                "switchyard_model_generated_tokens_total",
                "counter",
                "Tokens the model generated.",
                5,
            ),
        ] {
            let _ = writeln!(s, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            for m in models {
                let counts = by.get(&m.name).copied().unwrap_or_default();
                let v = match value {
                    0 => u64::from(m.loaded),
                    1 => m.running as u64,
                    2 => m.waiting as u64,
                    i => counts[i - 3],
                };
                let _ = writeln!(s, "{metric}{{model=\"{}\"}} {v}", label(&m.name));
            }
        }
        s
    }
}
