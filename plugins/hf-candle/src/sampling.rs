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
}

impl Sampler {
    /// A sampler seeded with `seed`, or from OS entropy.
    pub fn new(params: SamplingParams, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
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
            let mut done = std::collections::HashSet::new();
            for &t in seen {
                if done.insert(t)
                    && let Some(l) = logits.get_mut(t as usize)
                {
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
        let t = p.temperature.max(1e-6);
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.truncate(p.top_k);
        }
        let max = logits[idx[0] as usize] / t;
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| (logits[i as usize] / t - max).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, &x) in probs.iter().enumerate() {
                cum += x;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
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
}
