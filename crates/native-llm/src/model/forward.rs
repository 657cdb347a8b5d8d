//! The forward pass: one batched step over tokens of any number of sequences, each with its
//! own KV cache; matrix products run once over all the step's tokens (`matmul.rs`),
//! attention per token against its own sequence's cache.

use rayon::prelude::*;

use super::adapters::Proj;
use super::matmul::{QuantBufs, matmul, prepare};
use super::ops::{add_bias, add_rows, each_row, rms_norm, rms_norm_in_place, rope_tables};
use super::transformer::{Activation, SeqStep, Transformer};
use crate::kernels;
use crate::kv::KvCache;

impl Transformer {
    /// Runs one step over every sequence's tokens; returns each sequence's logits at its last
    /// token. Call inside the compute thread pool.
    pub fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Vec<Vec<f32>> {
        self.forward_inner(seqs, false)
    }

    /// Logits at every position of `tokens`, from an empty cache (`[len][vocab]`), with an
    /// attached `adapter` or none.
    pub fn all_logits(&self, tokens: &[u32], adapter: Option<usize>) -> Vec<Vec<f32>> {
        let mut kv = self.new_cache();
        self.forward_inner(
            &mut [SeqStep {
                kv: &mut kv,
                tokens,
                adapter,
            }],
            true,
        )
    }

    fn forward_inner(&self, seqs: &mut [SeqStep<'_>], every: bool) -> Vec<Vec<f32>> {
        let hp = &self.hp;
        let (h, hd) = (hp.hidden, hp.head_dim);
        // Token index → (sequence, position).
        let mut where_: Vec<(usize, usize)> = Vec::new();
        for (s, step) in seqs.iter().enumerate() {
            let start = step.kv.len();
            where_.extend((0..step.tokens.len()).map(|i| (s, start + i)));
        }
        let t = where_.len();
        // Each token's adapter; `None` when the step needs no low-rank work at all.
        let per_token: Vec<Option<usize>> = seqs
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.adapter, s.tokens.len()))
            .collect();
        let lora = self.any_adapter(&per_token).then_some(&per_token[..]);
        let mut x = vec![0f32; t * h];
        let ids = seqs.iter().flat_map(|s| s.tokens.iter().copied());
        for (row, id) in x.chunks_mut(h).zip(ids) {
            let id = (id as usize).min(self.embed.rows - 1);
            self.embed.dequantize_row(id, row);
            if hp.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= hp.embed_scale);
            }
        }
        let ropes: Vec<(Vec<f32>, Vec<f32>)> = self
            .inv_freqs
            .iter()
            .map(|f| rope_tables(f, &where_))
            .collect();
        let mut xn = vec![0f32; t * h];
        let q_dim = hp.n_heads * hd;
        let kv_dim = self.kv_dim();
        let mut q = vec![0f32; t * q_dim];
        let mut k = vec![0f32; t * kv_dim];
        let mut v = vec![0f32; t * kv_dim];
        let mut attn = vec![0f32; t * q_dim];
        let ffn = self.layers.first().map_or(0, |l| l.w_gate.rows);
        let mut gate = vec![0f32; t * ffn];
        let mut up = vec![0f32; t * ffn];
        let mut tmp = vec![0f32; t * h];
        let mut qbuf = QuantBufs::default();
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, hp.eps, &mut xn);
            {
                let input = prepare(&[&l.wq, &l.wk, &l.wv], &xn, h, &mut qbuf);
                matmul(&l.wq, &input, t, &mut q);
                matmul(&l.wk, &input, t, &mut k);
                matmul(&l.wv, &input, t, &mut v);
            }
            if let Some(pt) = lora {
                self.apply_adapters(li, Proj::Q, pt, &xn, &mut q);
                self.apply_adapters(li, Proj::K, pt, &xn, &mut k);
                self.apply_adapters(li, Proj::V, pt, &xn, &mut v);
            }
            add_bias(&mut q, l.bq.as_deref());
            add_bias(&mut k, l.bk.as_deref());
            add_bias(&mut v, l.bv.as_deref());
            if let Some(w) = &l.q_norm {
                rms_norm_in_place(&mut q, w, hp.eps);
            }
            if let Some(w) = &l.k_norm {
                rms_norm_in_place(&mut k, w, hp.eps);
            }
            let (cos, sin) = &ropes[l.rope];
            self.rope(&mut q, cos, sin);
            self.rope(&mut k, cos, sin);
            // Append this step's keys and values to each sequence's cache.
            let mut off = 0;
            for s in seqs.iter_mut() {
                let n = s.tokens.len();
                let span = off * kv_dim..(off + n) * kv_dim;
                s.kv.append(li, &k[span.clone()], &v[span]);
                off += n;
            }
            {
                let caches: Vec<&KvCache> = seqs.iter().map(|s| &*s.kv).collect();
                self.attention(li, &caches, &where_, &q, &mut attn);
            }
            let input = prepare(&[&l.wo], &attn, q_dim, &mut qbuf);
            matmul(&l.wo, &input, t, &mut tmp);
            if let Some(pt) = lora {
                self.apply_adapters(li, Proj::O, pt, &attn, &mut tmp);
            }
            if let Some(w) = &l.post_attn_norm {
                rms_norm_in_place(&mut tmp, w, hp.eps);
            }
            add_rows(&mut x, &tmp, h);
            rms_norm(&x, &l.ffn_norm, hp.eps, &mut xn);
            {
                let input = prepare(&[&l.w_gate, &l.w_up], &xn, h, &mut qbuf);
                matmul(&l.w_gate, &input, t, &mut gate);
                matmul(&l.w_up, &input, t, &mut up);
            }
            if let Some(pt) = lora {
                self.apply_adapters(li, Proj::Gate, pt, &xn, &mut gate);
                self.apply_adapters(li, Proj::Up, pt, &xn, &mut up);
            }
            let gelu = hp.activation == Activation::GeluTanh;
            gate.par_chunks_mut(4096)
                .zip(up.par_chunks(4096))
                .for_each(|(g, u)| kernels::gated_activation(gelu, g, u));
            let input = prepare(&[&l.w_down], &gate, ffn, &mut qbuf);
            matmul(&l.w_down, &input, t, &mut tmp);
            if let Some(pt) = lora {
                self.apply_adapters(li, Proj::Down, pt, &gate, &mut tmp);
            }
            if let Some(w) = &l.post_ffn_norm {
                rms_norm_in_place(&mut tmp, w, hp.eps);
            }
            add_rows(&mut x, &tmp, h);
        }
        for s in seqs.iter_mut() {
            s.kv.advance(s.tokens.len());
        }
        // Logits for each sequence's last token (or every token).
        let mut last = if every {
            x
        } else {
            let mut last = Vec::with_capacity(seqs.len() * h);
            let mut end = 0;
            for s in seqs.iter() {
                end += s.tokens.len();
                last.extend_from_slice(&x[(end - 1) * h..end * h]);
            }
            last
        };
        let n = last.len() / h;
        rms_norm_in_place(&mut last, &self.norm, hp.eps);
        let input = prepare(&[&self.output], &last, h, &mut qbuf);
        let mut logits = vec![0f32; n * hp.vocab];
        matmul(&self.output, &input, n, &mut logits);
        if let Some(c) = hp.logit_softcap {
            logits
                .par_iter_mut()
                .with_min_len(4096)
                .for_each(|v| *v = (*v / c).tanh() * c);
        }
        logits.chunks(hp.vocab).map(<[f32]>::to_vec).collect()
    }

    /// Rotates every head of every token in `x` (`[t][heads * head_dim]`), tokens in parallel
    /// in prefill.
    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let hd = self.hp.head_dim;
        let half = hd / 2;
        let per_tok = x.len() / (cos.len() / half).max(1);
        let neox = self.hp.rope_neox;
        each_row(x, per_tok, |ti, row| {
            let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
            for head in row.chunks_mut(hd) {
                for i in 0..half {
                    let (a, b) = if neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[i] - x1 * s[i];
                    head[b] = x0 * s[i] + x1 * c[i];
                }
            }
        });
    }

    /// Causal attention of every (token, head) against its own sequence's cache.
    fn attention(
        &self,
        layer: usize,
        caches: &[&KvCache],
        where_: &[(usize, usize)],
        q: &[f32],
        out: &mut [f32],
    ) {
        let hp = &self.hp;
        let hd = hp.head_dim;
        let group = hp.n_heads / hp.n_kv_heads;
        let scale = hp.attn_scale;
        let window = self.layers[layer].window;
        // Work units: a run of up to `ATTN_TOKENS` consecutive tokens of one sequence × one KV
        // head, i.e. its `group` query heads: all those queries read the same keys and
        // values (one contiguous run per KV head), which the kernel then loads once per block
        // for all of them. With fewer such units than threads (a decode step of a model with
        // one KV head), each query head is a unit of its own; a query's result is the same
        // either way.
        let threads = rayon::current_num_threads().max(1);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut s = 0;
        while s < where_.len() {
            let mut e = s + 1;
            while e < where_.len() && e - s < ATTN_TOKENS && where_[e].0 == where_[s].0 {
                e += 1;
            }
            runs.push((s, e));
            s = e;
        }
        let heads = if runs.len() * hp.n_kv_heads >= threads {
            group
        } else {
            1
        };
        let units: Vec<(usize, usize, usize)> = runs
            .iter()
            .flat_map(|&(s, e)| (0..hp.n_heads).step_by(heads).map(move |h0| (s, e, h0)))
            .collect();
        let results: Vec<Vec<f32>> = units
            .par_iter()
            .map_init(Vec::new, |scratch: &mut Vec<f32>, &(s, e, h0)| {
                let cache = caches[where_[s].0];
                let (keys, values) = cache.head(layer, h0 / group);
                let mut qs: Vec<&[f32]> = Vec::with_capacity((e - s) * heads);
                let mut spans = Vec::with_capacity((e - s) * heads);
                for (tok, &(_, pos)) in where_.iter().enumerate().take(e).skip(s) {
                    // Positions `first..=pos` are visible (all of them without a window).
                    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    for h in h0..h0 + heads {
                        let at = (tok * hp.n_heads + h) * hd;
                        qs.push(&q[at..at + hd]);
                        spans.push((first, pos + 1 - first));
                    }
                }
                let tile = kernels::Tile {
                    qs: &qs,
                    spans: &spans,
                    keys,
                    values,
                    kind: cache.kind(),
                    stride: hd,
                    offset: 0,
                    scale,
                };
                let mut o = vec![0f32; qs.len() * hd];
                kernels::attend_many(&tile, scratch, &mut o);
                o
            })
            .collect();
        for (&(s, e, h0), o) in units.iter().zip(&results) {
            for (k, tok) in (s..e).enumerate() {
                let at = (tok * hp.n_heads + h0) * hd;
                out[at..at + heads * hd].copy_from_slice(&o[k * heads * hd..(k + 1) * heads * hd]);
            }
        }
    }
}

/// Tokens of one sequence per attention work unit (see `Transformer::attention`).
const ATTN_TOKENS: usize = 4;
