//! Log-probabilities of the model's own distribution: the log-softmax of the raw logits of a
//! position, before any sampling transform (penalties, temperature, top-k/top-p, constraint
//! masks). This is what OpenAI's `logprobs` and vLLM's default (`logprobs_mode =
//! raw_logprobs`) report, and what Transformers' `log_softmax(logits)` gives.

/// The log-probability of one token and the most likely tokens at the same position.
#[derive(Clone, Debug, PartialEq)]
pub struct Logprobs {
    /// The token's natural-log probability.
    pub logprob: f32,
    /// The `k` most likely tokens and theirs, best first (ties by lower id).
    pub top: Vec<(u32, f32)>,
}

/// The log-sum-exp of `logits` (the log-softmax's normaliser), summed in f64 so a 150k-entry
/// vocabulary loses nothing to rounding.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `id`'s log-probability under `logits` and the `k` most likely tokens'.
pub fn of(logits: &[f32], id: u32, k: usize) -> Logprobs {
    let lse = log_sum_exp(logits);
    let lp = |i: u32| {
        (logits
            .get(i as usize)
            .map_or(f64::NEG_INFINITY, |&l| l as f64)
            - lse) as f32
    };
    Logprobs {
        logprob: lp(id),
        top: top_k(logits, k).into_iter().map(|i| (i, lp(i))).collect(),
    }
}

/// Ids of the `k` largest logits, best first; ties go to the lower id (as `torch.topk` on CPU
/// does for distinct values; equal values are rare in practice).
pub fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let order = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_a_small_vector() {
        let logits = [1.0f32, 2.0, 3.0, 0.5];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let lp = of(&logits, 0, 2);
        assert!((lp.logprob as f64 - (1.0 - z.ln())).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1]);
        assert!((lp.top[0].1 as f64 - (3.0 - z.ln())).abs() < 1e-6);
        let probs: f64 = (0..4)
            .map(|i| (of(&logits, i, 0).logprob as f64).exp())
            .sum();
        assert!((probs - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_is_ordered_and_bounded() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let top = top_k(&logits, 5);
        assert_eq!(top.len(), 5);
        assert!(
            top.windows(2)
                .all(|w| logits[w[0] as usize] > logits[w[1] as usize])
        );
        assert_eq!(logits[top[0] as usize], 999.0);
        assert_eq!(top_k(&logits, 5000).len(), 1000);
        assert!(top_k(&logits, 0).is_empty());
    }
}
