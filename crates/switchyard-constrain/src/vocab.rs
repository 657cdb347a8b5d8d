//! A model's vocabulary as llguidance sees it: a trie of token bytes plus a parser factory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use llguidance::ParserFactory;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use crate::{Error, Result};

/// A model's vocabulary, built once per model and shared by every [`Matcher`](crate::Matcher).
///
/// Cloning is cheap (the trie and factory are shared).
#[derive(Clone)]
pub struct Vocabulary {
    factory: Arc<ParserFactory>,
    eos: Arc<[u32]>,
    len: usize,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("len", &self.len)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic inside llguidance (it asserts on malformed input) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Error::Tokenizer(format!("{what}: {detail}"))
    })
}

impl Vocabulary {
    /// Reads the vocabulary out of a Hugging Face `tokenizer.json` (byte-level BPE or
    /// SentencePiece with byte fallback). `eos_ids` are the ids that end a sequence (for a chat
    /// model, its end-of-turn token, e.g. `<|im_end|>`); at least one is needed.
    pub fn from_tokenizer_json(bytes: &[u8], eos_ids: &[u32]) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not JSON: {e}")))?;
        let tokens = guarded("reading tokenizer.json", || {
            llguidance::token_bytes_from_tokenizer_json(&json)
        })?
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Self::from_token_bytes(tokens, eos_ids)
    }

    /// Builds the vocabulary from the bytes of every token, indexed by id. A special token
    /// (one that text must never produce, like `<|im_end|>`) starts with the byte `0xFF`;
    /// ids without a token may hold an empty vector.
    pub fn from_token_bytes(tokens: Vec<Vec<u8>>, eos_ids: &[u32]) -> Result<Self> {
        let len = tokens.len();
        let vocab_size = u32::try_from(len)
            .map_err(|_| Error::Tokenizer(format!("{len} tokens is too many")))?;
        let Some(&first_eos) = eos_ids.first() else {
            return Err(Error::NoEos);
        };
        if let Some(&id) = eos_ids.iter().find(|&&id| id >= vocab_size) {
            return Err(Error::EosOutOfRange { id, len });
        }
        let trie = guarded("building the token trie", || {
            TokTrie::from(&TokRxInfo::new(vocab_size, first_eos), &tokens).with_eos_tokens(eos_ids)
        })?;
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = guarded("building the parser factory", || {
            ParserFactory::new_simple(&env)
        })?
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // Grammar warnings would go to stderr; errors still come back as `Err`.
        factory.quiet();
        Ok(Vocabulary {
            factory: Arc::new(factory),
            eos: eos_ids.into(),
            len,
        })
    }

    /// The number of token ids in the vocabulary (the tokenizer's, which may be smaller than the
    /// model's embedding table).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vocabulary has no tokens (never true for one that was built).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The end-of-sequence ids.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub(crate) fn factory(&self) -> &ParserFactory {
        &self.factory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Vocabulary>();
    }

    #[test]
    fn eos_must_be_given_and_in_range() {
        let tokens = vec![b"a".to_vec(), b"\xFF<eos>".to_vec()];
        assert!(matches!(
            Vocabulary::from_token_bytes(tokens.clone(), &[]),
            Err(Error::NoEos)
        ));
        assert!(matches!(
            Vocabulary::from_token_bytes(tokens.clone(), &[7]),
            Err(Error::EosOutOfRange { id: 7, len: 2 })
        ));
        let vocab = Vocabulary::from_token_bytes(tokens, &[1]).expect("vocabulary");
        assert_eq!(vocab.len(), 2);
        assert_eq!(vocab.eos_ids(), &[1]);
    }

    #[test]
    fn bad_tokenizer_json_is_an_error() {
        let err = Vocabulary::from_tokenizer_json(b"{", &[0]).expect_err("not JSON");
        assert!(err.to_string().contains("not JSON"), "{err}");
        let err = Vocabulary::from_tokenizer_json(br#"{"decoder": {"type": "WordPiece"}}"#, &[0])
            .expect_err("unsupported decoder");
        assert!(err.to_string().contains("decoder"), "{err}");
    }
}
