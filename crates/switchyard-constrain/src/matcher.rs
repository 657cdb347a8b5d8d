//! One sequence's constraint state: the mask for the next token, and consuming the sampled one.

use std::sync::Arc;

use llguidance::toktrie::SimpleVob;

use crate::{Error, Result, Spec, Vocabulary};

/// The set of token ids allowed at one step.
#[derive(Clone, Debug)]
pub struct TokenMask {
    bits: SimpleVob,
    len: usize,
}

impl TokenMask {
    /// Whether token `id` is allowed (ids outside the vocabulary never are).
    pub fn is_allowed(&self, id: u32) -> bool {
        let index = id as usize;
        index < self.len && index < self.bits.len() && self.bits.is_allowed(id)
    }

    /// The mask as bit words: token `id` is allowed when bit `id % 32` of word `id / 32` is set.
    /// There are at least `len().div_ceil(32)` words; bits at or past [`len`](Self::len) are 0.
    pub fn words(&self) -> &[u32] {
        self.bits.as_slice()
    }

    /// The vocabulary size the mask covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers no ids (never true for a mask from a [`Matcher`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids are allowed.
    pub fn count(&self) -> usize {
        self.bits.num_set()
    }

    /// The allowed ids, ascending.
    pub fn allowed_ids(&self) -> Vec<u32> {
        let mut ids = self.bits.to_list();
        ids.retain(|&id| (id as usize) < self.len);
        ids
    }

    /// Sets the logit of every disallowed token to `-inf`. `logits` may be longer than the
    /// vocabulary (a model's embedding table is often padded): the ids past it are disallowed.
    pub fn apply(&self, logits: &mut [f32]) {
        let words = self.words();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let word = if w * 32 < self.len {
                words.get(w).copied().unwrap_or(0)
            } else {
                0
            };
            if word == u32::MAX {
                continue;
            }
            for (bit, logit) in chunk.iter_mut().enumerate() {
                if word & (1 << bit) == 0 {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// One sequence's constraint: which tokens may come next, given those consumed so far.
///
/// Per step, call [`allowed`](Self::allowed) or [`apply`](Self::apply), sample, then
/// [`consume`](Self::consume) the sampled id. The mask is computed once per step and cached.
#[derive(Clone)]
pub struct Matcher {
    inner: llguidance::Matcher,
    eos: Arc<[u32]>,
    vocab_len: usize,
    mask: Option<TokenMask>,
    consumed: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("consumed", &self.consumed)
            .field("finished", &self.is_finished())
            .field("error", &self.inner.get_error())
            .finish_non_exhaustive()
    }
}

impl Matcher {
    /// Compiles `spec` for `vocab`. A bad schema, regex or grammar is an
    /// [`Error::InvalidSpec`] whose message names the problem.
    pub fn new(vocab: &Vocabulary, spec: &Spec) -> Result<Self> {
        let invalid = |message: String| Error::InvalidSpec {
            kind: spec.name(),
            message,
        };
        let grammar = spec.to_grammar()?;
        let parser = vocab
            .factory()
            .create_parser(grammar)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let inner = llguidance::Matcher::new(Ok(parser));
        if let Some(message) = inner.get_error() {
            return Err(invalid(message));
        }
        Ok(Matcher {
            inner,
            eos: vocab.eos_ids().into(),
            vocab_len: vocab.len(),
            mask: None,
            consumed: 0,
        })
    }

    /// The tokens allowed next. EOS ids are in it exactly when the text so far is a complete
    /// match; once [`is_finished`](Self::is_finished), only the EOS ids are.
    pub fn allowed(&mut self) -> Result<&TokenMask> {
        let mask = match self.mask.take() {
            Some(mask) => mask,
            None => {
                let bits = self
                    .inner
                    .compute_mask_or_eos()
                    .map_err(|e| Error::Matcher(format!("{e:#}")))?;
                TokenMask {
                    bits,
                    len: self.vocab_len,
                }
            }
        };
        Ok(self.mask.insert(mask))
    }

    /// Sets the logit of every token not allowed next to `-inf` (see [`TokenMask::apply`]).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        self.allowed()?.apply(logits);
        Ok(())
    }

    /// Advances past the sampled token. A token the mask does not allow is
    /// [`Error::NotAllowed`], and the matcher stays as it was (the check uses this step's mask,
    /// computing it if [`allowed`](Self::allowed) was not called). Consuming an EOS id ends the
    /// sequence; consuming it again once finished is a no-op.
    pub fn consume(&mut self, id: u32) -> Result<()> {
        if !self.allowed()?.is_allowed(id) {
            return Err(Error::NotAllowed { token: id });
        }
        if self.inner.is_stopped() {
            // Finished: the mask held only EOS, and EOS changes nothing more.
            return Ok(());
        }
        self.mask = None;
        self.inner
            .consume_token(id)
            .map_err(|e| Error::Matcher(format!("{e:#}")))?;
        self.consumed += 1;
        Ok(())
    }

    /// Whether the output is complete: nothing but EOS may follow (either the grammar cannot
    /// be extended, or an EOS was consumed). Stop generating, or sample the EOS.
    pub fn is_finished(&self) -> bool {
        self.inner.is_stopped() && !self.inner.is_error()
    }

    /// Whether `id` is one of the vocabulary's end-of-sequence ids.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// How many tokens have been consumed (EOS included, repeats once finished not).
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level toy vocabulary: ids 0..=255 are single bytes, 256 is EOS.
    fn byte_vocab() -> Vocabulary {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"\xFF<eos>".to_vec());
        Vocabulary::from_token_bytes(tokens, &[256]).expect("vocabulary")
    }

    fn feed(m: &mut Matcher, text: &str) {
        for b in text.bytes() {
            m.consume(u32::from(b)).expect("allowed byte");
        }
    }

    #[test]
    fn eos_is_allowed_exactly_when_the_grammar_can_end() {
        let vocab = byte_vocab();
        let spec = Spec::Regex {
            pattern: "ab+".into(),
        };
        let mut m = Matcher::new(&vocab, &spec).expect("matcher");
        assert!(!m.allowed().expect("mask").is_allowed(256));
        feed(&mut m, "a");
        assert!(!m.allowed().expect("mask").is_allowed(256));
        feed(&mut m, "b");
        let mask = m.allowed().expect("mask");
        assert!(mask.is_allowed(256) && mask.is_allowed(u32::from(b'b')));
        assert!(!m.is_finished());
        m.consume(256).expect("eos");
        assert!(m.is_finished());
        assert_eq!(m.allowed().expect("mask").allowed_ids(), [256]);
        m.consume(256).expect("eos again is a no-op");
        assert!(matches!(
            m.consume(u32::from(b'b')),
            Err(Error::NotAllowed { .. })
        ));
    }

    #[test]
    fn a_choice_finishes_by_itself() {
        let vocab = byte_vocab();
        let spec = Spec::Choice {
            choices: vec!["yes".into(), "no".into()],
        };
        let mut m = Matcher::new(&vocab, &spec).expect("matcher");
        feed(&mut m, "no");
        assert!(m.is_finished());
        assert_eq!(m.allowed().expect("mask").allowed_ids(), [256]);
    }

    #[test]
    fn apply_masks_disallowed_and_padded_ids() {
        let vocab = byte_vocab();
        let spec = Spec::Regex {
            pattern: "[0-9]".into(),
        };
        let mut m = Matcher::new(&vocab, &spec).expect("matcher");
        let mut logits = vec![1.0f32; 320];
        m.apply(&mut logits).expect("apply");
        for (id, &l) in logits.iter().enumerate() {
            let digit = (usize::from(b'0')..=usize::from(b'9')).contains(&id);
            assert_eq!(l.is_finite(), digit, "id {id}");
        }
    }

    #[test]
    fn a_refused_token_leaves_the_matcher_usable() {
        let vocab = byte_vocab();
        let spec = Spec::Regex {
            pattern: "x".into(),
        };
        let mut m = Matcher::new(&vocab, &spec).expect("matcher");
        let err = m.consume(u32::from(b'y')).expect_err("refused");
        assert!(err.to_string().contains("not allowed"), "{err}");
        assert!(matches!(
            m.consume(999),
            Err(Error::NotAllowed { token: 999 })
        ));
        feed(&mut m, "x");
        assert!(m.is_finished());
    }
}
