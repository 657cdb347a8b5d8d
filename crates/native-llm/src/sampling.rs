//! Choosing the next token: penalties, temperature, top-k, top-p, and a per-request RNG.
//!
//! The order follows transformers' `generate`: repetition penalty first (it applies to greedy
//! decoding too), then OpenAI's presence/frequency penalties, then temperature, top-k and top-p,
//! then a draw from the softmax.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resolved sampling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Pick the most likely token.
    pub greedy: bool,
    /// Softmax temperature (> 0 when sampling).
    pub temperature: f32,
    /// Nucleus mass (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// transformers' multiplicative repetition penalty over prompt and output (1 = off).
    pub repetition_penalty: f32,
    /// Subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// Subtracted per occurrence of every token already generated.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            greedy: true,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// A sampler with its own RNG (one per request, so equal seeds give equal text regardless of
/// what other requests run at the same time).
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// One bit per vocabulary entry: which tokens the repetition penalty has already scaled
    /// in this call (reused, so a long prompt costs a pass over it, not a hash set per token).
    penalized: Vec<u64>,
}

impl Sampler {
    /// A sampler seeded with `seed`, or from OS entropy.
    pub fn new(params: SamplingParams, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            penalized: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `seen` is prompt + output (repetition penalty), `counts` the
    /// output's token counts (presence/frequency penalties).
    pub fn sample(&mut self, logits: &mut [f32], seen: &[u32], counts: &HashMap<u32, u32>) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            // Each distinct token once, however often it was seen.
            let done = &mut self.penalized;
            done.clear();
            done.resize(logits.len().div_ceil(64), 0);
            for &t in seen {
                let t = t as usize;
                if let Some(l) = logits.get_mut(t)
                    && done[t / 64] & (1 << (t % 64)) == 0
                {
                    done[t / 64] |= 1 << (t % 64);
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &c) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
        if p.greedy {
            return argmax(logits);
        }
        let (idx, probs) = candidates(p, logits);
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &x) in probs.iter().enumerate() {
            r -= x;
            if r <= 0.0 {
                return idx[i];
            }
        }
        idx[probs.len() - 1]
    }
}

/// The tokens a draw chooses from, most likely first, and their probabilities (softmax at
/// `p.temperature`, normalised over the top `p.top_k` when set, else over the whole
/// vocabulary), cut after the nucleus when `p.top_p < 1`. Only the candidates are sorted: the
/// top k are selected first (`select_nth_unstable`, linear time), and a nucleus without top-k
/// is looked for among the top 64, 256, ... tokens until their mass reaches `top_p`. A full
/// sort of a 49 152-token vocabulary took ~2-3 ms per token on the batching thread while the
/// compute threads waited.
fn candidates(p: &SamplingParams, logits: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let n = logits.len();
    let t = p.temperature.max(1e-6);
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    let mut idx: Vec<u32> = (0..n as u32).collect();
    // Every token's softmax numerator e^(l/t - max), vectorised, and their sum.
    let mut w: Vec<f32> = logits.iter().map(|l| l / t).collect();
    let max = w.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let total = crate::kernels::exp_shifted_sum(&mut w, max);
    // How many of the most likely tokens to keep, and what the probabilities are relative to.
    let (keep, norm) = if p.top_k > 0 && p.top_k < n {
        idx.select_nth_unstable_by(p.top_k - 1, by_logit);
        let norm: f32 = idx[..p.top_k].iter().map(|&i| w[i as usize]).sum();
        (p.top_k, norm)
    } else {
        let mut keep = n;
        if p.top_p < 1.0 {
            let mut c = 64;
            while c < n {
                idx.select_nth_unstable_by(c - 1, by_logit);
                let mass: f32 = idx[..c].iter().map(|&i| w[i as usize]).sum();
                if mass >= p.top_p * total {
                    keep = c;
                    break;
                }
                c *= 4;
            }
        }
        (keep, total)
    };
    idx.truncate(keep);
    idx.sort_unstable_by(by_logit);
    let mut probs: Vec<f32> = idx.iter().map(|&i| w[i as usize] / norm).collect();
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut cut = probs.len();
        for (i, &x) in probs.iter().enumerate() {
            cum += x;
            if cum >= p.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        idx.truncate(cut);
    }
    (idx, probs)
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalties() {
        let mut s = Sampler::new(SamplingParams::default(), Some(1));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[], &HashMap::new()), 1);
        let mut s = Sampler::new(
            SamplingParams {
                repetition_penalty: 2.0,
                ..Default::default()
            },
            None,
        );
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[1], &HashMap::new()), 2);
        // A token seen several times (and one past the vocabulary) is scaled once, and the
        // next call starts afresh.
        let mut logits = [0.1, 3.0, -2.0, 1.0];
        s.sample(&mut logits, &[1, 2, 1, 9, 2, 1], &HashMap::new());
        assert_eq!(logits, [0.1, 1.5, -4.0, 1.0]);
        let mut logits = [0.1, 3.0, -2.0, 1.0];
        s.sample(&mut logits, &[2], &HashMap::new());
        assert_eq!(logits, [0.1, 3.0, -4.0, 1.0]);
        let mut s = Sampler::new(
            SamplingParams {
                presence_penalty: 1.5,
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            s.sample(&mut [0.1, 3.0, 2.0], &[], &HashMap::from([(1, 1)])),
            2
        );
    }

    #[test]
    fn seeded_sampling_repeats_and_top_k_restricts() {
        let params = SamplingParams {
            greedy: false,
            top_k: 2,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(params.clone(), Some(seed));
            (0..50)
                .map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05], &[], &HashMap::new()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).iter().all(|&t| t == 1 || t == 3));
    }

    /// The textbook procedure: sort the whole vocabulary, softmax, top-k, then top-p.
    fn full_sort(p: &SamplingParams, logits: &[f32]) -> (Vec<u32>, Vec<f64>) {
        let t = p.temperature as f64;
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if p.top_k > 0 {
            idx.truncate(p.top_k);
        }
        let max = logits[idx[0] as usize] as f64 / t;
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| (logits[i as usize] as f64 / t - max).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        let mut probs: Vec<f64> = w.iter().map(|x| x / sum).collect();
        let mut cum = 0.0;
        for (i, x) in probs.iter().enumerate() {
            cum += x;
            if cum >= p.top_p as f64 {
                idx.truncate(i + 1);
                break;
            }
        }
        probs.truncate(idx.len());
        (idx, probs)
    }

    #[test]
    fn candidates_equal_a_full_sort() {
        let mut seed = 5u64;
        // Distinct logits (ties may come out in either order): a shuffled ramp.
        let n = 49_152;
        let mut rank: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rank.swap(i, (seed >> 33) as usize % (i + 1));
        }
        // A peaked vocabulary (a few likely tokens) and a flat one (the nucleus spans thousands).
        for spread in [12.0f32, 0.5] {
            let logits: Vec<f32> = rank.iter().map(|&r| r as f32 / n as f32 * spread).collect();
            for (top_k, top_p) in [
                (0, 1.0),
                (50, 1.0),
                (50, 0.9),
                (0, 0.9),
                (0, 0.5),
                (5000, 0.95),
            ] {
                let p = SamplingParams {
                    greedy: false,
                    temperature: 0.7,
                    top_k,
                    top_p,
                    ..Default::default()
                };
                let (idx, probs) = candidates(&p, &logits);
                let (want_idx, want_probs) = full_sort(&p, &logits);
                let what = format!("spread {spread}, top_k {top_k}, top_p {top_p}");
                // The cut may fall one token apart where the running sum meets top_p within
                // rounding; everything before it agrees.
                assert!(
                    idx.len().abs_diff(want_idx.len()) <= 1,
                    "{what}: {} vs {}",
                    idx.len(),
                    want_idx.len()
                );
                let m = idx.len().min(want_idx.len());
                let first_diff = (0..m).find(|&i| idx[i] != want_idx[i]);
                assert_eq!(first_diff, None, "{what}: order differs");
                // f32 sums over up to 49 152 terms against f64 ones.
                for (a, b) in probs.iter().zip(&want_probs) {
                    assert!((*a as f64 - b).abs() <= 2e-4 * b, "{what}: {a} vs {b}");
                }
            }
        }
    }
}
