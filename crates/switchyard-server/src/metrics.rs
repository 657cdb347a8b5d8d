//! Counters for `GET /metrics`, in Prometheus' text format.

use std::fmt::Write as _;
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

    /// Adds a finished request's token counts.
    pub fn count_tokens(&self, prompt: u32, completion: u32) {
        self.tokens_in
            .fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.tokens_out
            .fetch_add(u64::from(completion), Ordering::Relaxed);
    }

    /// The Prometheus text exposition; `in_flight` and `waiting` come from the model's
    /// admission limit.
    pub fn render(&self, in_flight: usize, waiting: usize) -> String {
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
        s
    }
}
