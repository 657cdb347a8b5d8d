//! Per-sequence KV caches and the prefix cache that lets a conversation's next turn skip the
//! prefill of everything it shares with an earlier request.

use std::collections::VecDeque;

use crate::kernels::{self, WeightKind};

/// Keys and values of one sequence, every layer, one contiguous `[position][head_dim]` run
/// per KV head, so attention streams each head's keys and values sequentially (a
/// `[position][kv_heads * head_dim]` layout makes every head a strided read, which the
/// hardware prefetchers follow poorly once the weights have pushed the cache out of L3).
/// Stored as `F32`, `F16` or `BF16` little-endian values, or as `Q8_0` blocks (32 values,
/// an f16 scale: 34 bytes, as llama.cpp's `-ctk q8_0 -ctv q8_0`; `head_dim` a multiple of 32)
/// ([`KvCache::kind`]).
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `(keys, values)` bytes per layer and KV head.
    heads: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    head_dim: usize,
    kind: WeightKind,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of `kv_heads` heads of `head_dim` values stored as
    /// `kind` (`F32`, `F16`, `BF16`, or `Q8_0` when `head_dim` is a multiple of 32).
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, kind: WeightKind) -> Self {
        debug_assert!(match kind {
            WeightKind::F32 | WeightKind::F16 | WeightKind::BF16 => true,
            WeightKind::Q8_0 => head_dim.is_multiple_of(kernels::QK),
            _ => false,
        });
        Self {
            heads: vec![vec![(Vec::new(), Vec::new()); kv_heads]; layers],
            head_dim,
            kind,
            len: 0,
        }
    }

    /// The number format of the stored keys and values.
    pub fn kind(&self) -> WeightKind {
        self.kind
    }

    /// Bytes of one position of one head (keys or values).
    fn run_bytes(&self) -> usize {
        self.kind.row_bytes(self.head_dim)
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends positions to `layer`: `keys` and `values` are `[position][kv_heads * head_dim]`.
    /// Once every layer has them, [`KvCache::advance`] records them.
    pub(crate) fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let hd = self.head_dim;
        let n = self.heads[layer].len();
        for (h, (kc, vc)) in self.heads[layer].iter_mut().enumerate() {
            for (k, v) in keys.chunks_exact(n * hd).zip(values.chunks_exact(n * hd)) {
                kernels::push_floats(self.kind, &k[h * hd..(h + 1) * hd], kc);
                kernels::push_floats(self.kind, &v[h * hd..(h + 1) * hd], vc);
            }
        }
    }

    /// Keys and values (`[position][head_dim]`, stored as [`KvCache::kind`]) of KV head
    /// `h` in `layer`.
    pub(crate) fn head(&self, layer: usize, h: usize) -> (&[u8], &[u8]) {
        let (k, v) = &self.heads[layer][h];
        (k, v)
    }

    /// Keeps the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len);
        let at = n * self.run_bytes();
        for (k, v) in self.heads.iter_mut().flatten() {
            k.truncate(at);
            v.truncate(at);
        }
        self.len = n;
    }

    /// A copy of the first `n` positions.
    fn prefix(&self, n: usize) -> KvCache {
        let n = n.min(self.len);
        let at = n * self.run_bytes();
        KvCache {
            heads: self
                .heads
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| (k[..at].to_vec(), v[..at].to_vec()))
                        .collect()
                })
                .collect(),
            head_dim: self.head_dim,
            kind: self.kind,
            len: n,
        }
    }

    /// Records that `n` more positions were appended to every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(
            self.heads
                .iter()
                .flatten()
                .all(|(k, v)| k.len() == self.len * self.run_bytes() && v.len() == k.len())
        );
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let heads: usize = self.heads.iter().map(Vec::len).sum();
        heads * 2 * self.len * self.run_bytes()
    }

    /// Releases spare capacity (for caches parked in the prefix cache).
    pub fn shrink(&mut self) {
        for (k, v) in self.heads.iter_mut().flatten() {
            k.shrink_to_fit();
            v.shrink_to_fit();
        }
    }
}

/// Finished sequences' caches, keyed by the tokens they hold, least recently used first out,
/// bounded in bytes.
#[derive(Debug)]
pub struct PrefixCache {
    /// `(adapter, tokens, cache)`: a cache computed with one LoRA adapter is reused only by
    /// requests for the same adapter (its keys and values differ from the base model's).
    entries: VecDeque<(Option<usize>, Vec<u32>, KvCache)>,
    bytes: usize,
    budget: usize,
    /// Shortest shared prefix worth reusing.
    min_tokens: usize,
}

impl PrefixCache {
    /// A cache holding at most `budget` bytes of KV.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            budget,
            min_tokens: 4,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parks a finished sequence's cache (`tokens` are exactly the positions it holds).
    pub fn put(&mut self, tokens: Vec<u32>, kv: KvCache) {
        self.put_for(None, tokens, kv);
    }

    /// [`PrefixCache::put`] for a sequence that ran with LoRA adapter `adapter`.
    pub fn put_for(&mut self, adapter: Option<usize>, tokens: Vec<u32>, mut kv: KvCache) {
        debug_assert_eq!(tokens.len(), kv.len());
        if self.budget == 0 || kv.len() < self.min_tokens || kv.bytes() > self.budget {
            return;
        }
        kv.shrink();
        // An entry that is a prefix of the new one is redundant.
        self.entries.retain(|(a, t, c)| {
            let redundant = *a == adapter && t.len() <= tokens.len() && tokens[..t.len()] == t[..];
            if redundant {
                self.bytes -= c.bytes();
            }
            !redundant
        });
        self.bytes += kv.bytes();
        self.entries.push_back((adapter, tokens, kv));
        while self.bytes > self.budget {
            let Some((_, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes();
        }
    }

    /// The cache sharing the longest prefix with `prompt`, truncated to that prefix (at most
    /// `prompt.len() - 1` positions, so the last prompt token is always run and yields logits).
    /// The entry stays cached when it holds more than the shared part (another request may
    /// branch from it), in which case the caller gets a copy.
    pub fn take(&mut self, prompt: &[u32]) -> Option<KvCache> {
        self.take_for(None, prompt)
    }

    /// [`PrefixCache::take`] for a request that runs with LoRA adapter `adapter`: only caches
    /// computed with the same adapter qualify.
    pub fn take_for(&mut self, adapter: Option<usize>, prompt: &[u32]) -> Option<KvCache> {
        let limit = prompt.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (a, _, _))| *a == adapter)
            .map(|(i, (_, t, _))| {
                let n = t.iter().zip(prompt).take_while(|(a, b)| a == b).count();
                (i, n.min(limit))
            })
            .max_by_key(|&(_, n)| n)?;
        if shared < self.min_tokens {
            return None;
        }
        let whole = self.entries[best].1.len() == shared;
        let mut kv = if whole {
            let (_, _, kv) = self.entries.remove(best).expect("index from enumerate");
            self.bytes -= kv.bytes();
            kv
        } else {
            // Move it to the back (most recently used) and copy the shared part.
            let entry = self.entries.remove(best).expect("index from enumerate");
            let copy = entry.2.prefix(shared);
            self.entries.push_back(entry);
            copy
        };
        kv.truncate(shared);
        Some(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers of 2 heads × 3 dims; position `p` holds `(token, head)` in every slot.
    fn filled(tokens: &[u32]) -> KvCache {
        filled_as(tokens, WeightKind::F32)
    }

    fn filled_as(tokens: &[u32], kind: WeightKind) -> KvCache {
        let mut kv = KvCache::new(2, 2, 3, kind);
        let k: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| [t as f32; 3].into_iter().chain([t as f32 + 0.5; 3]))
            .collect();
        let v: Vec<f32> = k.iter().map(|x| -x).collect();
        for l in 0..2 {
            kv.append(l, &k, &v);
        }
        kv.advance(tokens.len());
        kv
    }

    /// Stored bytes read back as f32.
    fn floats(kind: WeightKind, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / kind.block_bytes() * kind.block_elems()];
        crate::kernels::dequantize_row(kind, bytes, &mut out);
        out
    }

    #[test]
    fn heads_are_contiguous_runs_of_positions() {
        for kind in [WeightKind::F32, WeightKind::F16, WeightKind::BF16] {
            let kv = filled_as(&[7, 8], kind);
            let (k, v) = kv.head(1, 0);
            assert_eq!(floats(kind, k), [7.0, 7.0, 7.0, 8.0, 8.0, 8.0]);
            assert_eq!(floats(kind, v), [-7.0, -7.0, -7.0, -8.0, -8.0, -8.0]);
            assert_eq!(
                floats(kind, kv.head(0, 1).0),
                [7.5, 7.5, 7.5, 8.5, 8.5, 8.5]
            );
            assert_eq!(kv.bytes(), 2 * 2 * 2 * 2 * 3 * kind.row_bytes(1));
        }
    }

    #[test]
    fn sixteen_bit_caches_round_to_nearest_even() {
        // 1 + 2^-11 is halfway between two f16 values (ties to the even one, 1.0); 1 + 3 *
        // 2^-11 ties up to 1 + 2^-9. bf16 has 8 bits of mantissa: 1 + 2^-8 ties to 1.0.
        let cases = [
            (
                WeightKind::F16,
                [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), -65504.0],
            ),
            (
                WeightKind::BF16,
                [1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), 3.0e38],
            ),
        ];
        for (kind, xs) in cases {
            let mut kv = KvCache::new(1, 1, 3, kind);
            kv.append(0, &xs, &xs);
            kv.advance(1);
            let want: Vec<f32> = match kind {
                WeightKind::F16 => xs
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_f32())
                    .collect(),
                _ => xs
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect(),
            };
            assert_eq!(floats(kind, kv.head(0, 0).0), want);
            assert_eq!(want[0], 1.0, "{kind:?}: ties to even");
            assert!(
                want[1] > 1.0 + 2.0 * f32::EPSILON,
                "{kind:?}: ties up to even"
            );
        }
    }

    #[test]
    fn q8_0_caches_hold_34_bytes_per_32_values_and_cut_at_positions() {
        // 2 layers, 2 heads of 64: each position of a head is 2 blocks (68 bytes).
        let xs: Vec<f32> = (0..4 * 128).map(|i| (i as f32 * 0.37).sin()).collect();
        let build = |n: usize| {
            let mut kv = KvCache::new(2, 2, 64, WeightKind::Q8_0);
            for l in 0..2 {
                kv.append(l, &xs[..n * 128], &xs[..n * 128]);
            }
            kv.advance(n);
            kv
        };
        let kv = build(4);
        assert_eq!(kv.bytes(), 2 * 2 * 2 * 4 * 68);
        let k = floats(WeightKind::Q8_0, kv.head(1, 1).0);
        for p in 0..4 {
            for (got, want) in k[p * 64..(p + 1) * 64].iter().zip(&xs[p * 128 + 64..]) {
                // Half a step of 1/127 of the block's largest magnitude (≤ 1).
                assert!((got - want).abs() <= 0.5 / 127.0 + 1e-3, "{got} vs {want}");
            }
        }
        let mut cut = kv.clone();
        cut.truncate(2);
        assert_eq!(cut.head(1, 1), build(2).head(1, 1));
        assert_eq!(kv.prefix(3).head(0, 1), build(3).head(0, 1));
    }

    #[test]
    fn longest_prefix_wins_and_the_last_prompt_token_is_left_to_run() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.put(vec![1, 2, 3, 4, 5, 6], filled(&[1, 2, 3, 4, 5, 6]));
        pc.put(vec![1, 2, 9, 9, 9], filled(&[1, 2, 9, 9, 9]));
        let kv = pc.take(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(kv.len(), 6);
        assert_eq!(floats(WeightKind::F32, kv.head(1, 0).0)[5 * 3], 6.0);
        // Exactly the cached tokens again: all but the last are reused.
        pc.put(vec![1, 2, 3, 4, 5, 6], kv);
        let kv = pc.take(&[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(kv.len(), 5);
        // Nothing shared beyond 2 tokens: no reuse.
        assert!(pc.take(&[1, 2, 7, 7, 7, 7]).is_none());
    }

    #[test]
    fn a_branch_copies_and_keeps_the_entry() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.put(vec![1, 2, 3, 4, 5, 6], filled(&[1, 2, 3, 4, 5, 6]));
        let kv = pc.take(&[1, 2, 3, 4, 0, 0]).unwrap();
        assert_eq!(kv.len(), 4);
        assert_eq!(kv.head(1, 1).0, filled(&[1, 2, 3, 4]).head(1, 1).0);
        assert_eq!(pc.take(&[1, 2, 3, 4, 5, 6, 7]).unwrap().len(), 6);
    }

    #[test]
    fn the_budget_evicts_least_recently_used() {
        let one = filled(&[1, 2, 3, 4]).bytes();
        let mut pc = PrefixCache::new(one * 2);
        pc.put(vec![1, 1, 1, 1], filled(&[1, 1, 1, 1]));
        pc.put(vec![2, 2, 2, 2], filled(&[2, 2, 2, 2]));
        pc.put(vec![3, 3, 3, 3], filled(&[3, 3, 3, 3]));
        assert!(pc.bytes() <= one * 2);
        assert!(pc.take(&[1, 1, 1, 1, 1]).is_none());
        assert!(pc.take(&[3, 3, 3, 3, 3]).is_some());
    }
}
