//! What one run of the load generator adds up to: aggregate output tokens/s, time to first
//! token, inter-token latency and lost requests, from the clients' per-request records.

/// One request as its client saw it; times are seconds from the start of the run.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// When the request was sent.
    pub sent: f64,
    /// When each chunk that carried generated text arrived.
    pub chunks: Vec<f64>,
    /// When the response ended (its `[DONE]`), or when it failed.
    pub done: f64,
    /// Output tokens: the server's `usage.completion_tokens`, else the text chunks counted.
    pub tokens: u64,
    /// Prompt tokens the server reported (`usage.prompt_tokens`; 0 when it sent none).
    pub prompt_tokens: u64,
    /// Why the request was lost (HTTP status, error event, timeout, stream cut), if it was.
    pub error: Option<String>,
}

/// Percentile `p` (0–100) of `samples` by linear interpolation between the closest ranks
/// (numpy's default, `method="linear"`); NaN when there are none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// The median of `samples` (the 50th percentile); NaN when there are none.
pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// One run (one server, one client count) summed up.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed (errors, timeouts, cut streams).
    pub lost: usize,
    /// Output tokens of the requests that completed.
    pub tokens: u64,
    /// Prompt tokens the server reported for them.
    pub prompt_tokens: u64,
    /// From the start of the run to the end of its last response (failed ones included).
    pub wall_s: f64,
    /// Each completed request's time to its first text chunk, seconds.
    pub ttft: Vec<f64>,
    /// The gaps between consecutive text chunks of each completed request, seconds.
    pub itl: Vec<f64>,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl Run {
    /// Sums up one run's records. Lost requests count in the wall time only: their tokens,
    /// first tokens and gaps are left out.
    pub fn from_records(records: &[Record]) -> Run {
        let mut run = Run {
            requests: records.len(),
            wall_s: records.iter().map(|r| r.done).fold(0.0, f64::max),
            ..Run::default()
        };
        for r in records {
            if let Some(e) = &r.error {
                run.lost += 1;
                run.first_error.get_or_insert_with(|| e.clone());
                continue;
            }
            run.tokens += r.tokens;
            run.prompt_tokens += r.prompt_tokens;
            if let Some(&first) = r.chunks.first() {
                run.ttft.push(first - r.sent);
            }
            run.itl.extend(r.chunks.windows(2).map(|w| w[1] - w[0]));
        }
        run
    }

    /// Aggregate output tokens/s: every completed request's tokens over the run's wall time.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.wall_s.max(1e-9)
    }
}

/// The runs of one server at one client count (one per rep), pooled.
#[derive(Clone, Debug, Default)]
pub struct Pooled {
    /// Each run's aggregate output tokens/s.
    pub rates: Vec<f64>,
    /// Requests sent, over all runs.
    pub requests: usize,
    /// Requests lost, over all runs.
    pub lost: usize,
    /// Output tokens, over all runs.
    pub tokens: u64,
    /// Every run's time-to-first-token samples.
    pub ttft: Vec<f64>,
    /// Every run's inter-token gaps.
    pub itl: Vec<f64>,
    /// The first error of any run.
    pub first_error: Option<String>,
}

impl Pooled {
    /// Adds one run.
    pub fn add(&mut self, run: Run) {
        self.rates.push(run.tokens_per_s());
        self.requests += run.requests;
        self.lost += run.lost;
        self.tokens += run.tokens;
        self.ttft.extend(run.ttft);
        self.itl.extend(run.itl);
        if self.first_error.is_none() {
            self.first_error = run.first_error;
        }
    }

    /// The median of the runs' aggregate tokens/s.
    pub fn rate(&self) -> f64 {
        median(&self.rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Against numpy 2.4 (`numpy.percentile`, default `method="linear"`), printed once by
    /// `scripts/bench/load_stats_reference.py` (venv-ref's python) and pasted here.
    #[test]
    fn percentile_matches_numpy() {
        let x: Vec<f64> = (0..50).map(|i| ((i * 37) % 101) as f64 / 7.0).collect();
        let numpy = [
            (0.0, 0.0),
            (50.0, 7.071428571428571),
            (90.0, 12.9),
            (99.0, 14.075714285714286),
            (100.0, 14.285714285714286),
        ];
        for (p, want) in numpy {
            let got = percentile(&x, p);
            assert!(close(got, want), "p{p}: {got} vs numpy {want}");
        }
        assert!(close(percentile(&[3.5], 99.0), 3.5));
        assert!(percentile(&[], 50.0).is_nan());
    }

    /// Three requests, one lost; the expected figures come from numpy on the same records
    /// (`scripts/bench/load_stats_reference.py`, printed once and pasted here).
    #[test]
    fn run_summary_matches_reference() {
        let records = [
            Record {
                sent: 0.0,
                chunks: vec![0.5, 0.6, 0.75, 0.8],
                done: 0.81,
                tokens: 4,
                prompt_tokens: 20,
                error: None,
            },
            Record {
                sent: 0.1,
                chunks: vec![0.9, 1.0, 1.3],
                done: 1.35,
                tokens: 3,
                prompt_tokens: 30,
                error: None,
            },
            Record {
                sent: 0.2,
                chunks: vec![1.1],
                done: 2.0,
                tokens: 1,
                prompt_tokens: 0,
                error: Some("timeout".into()),
            },
        ];
        let run = Run::from_records(&records);
        assert_eq!((run.requests, run.lost, run.tokens), (3, 1, 7));
        assert_eq!(run.prompt_tokens, 50);
        assert_eq!(run.first_error.as_deref(), Some("timeout"));
        // Reference (numpy): tokens/s, TTFT p50/p99, ITL p50/p99.
        let reference = [3.5, 0.65, 0.797, 0.1, 0.294];
        let got = [
            run.tokens_per_s(),
            percentile(&run.ttft, 50.0),
            percentile(&run.ttft, 99.0),
            percentile(&run.itl, 50.0),
            percentile(&run.itl, 99.0),
        ];
        for (g, want) in got.iter().zip(reference) {
            assert!(close(*g, want), "{got:?} vs reference {reference:?}");
        }
        let mut pooled = Pooled::default();
        pooled.add(run.clone());
        pooled.add(Run::from_records(&records[..1]));
        assert_eq!((pooled.requests, pooled.lost, pooled.tokens), (4, 1, 11));
        assert_eq!(pooled.ttft.len(), 3);
        assert_eq!(pooled.itl.len(), 8);
    }
}
