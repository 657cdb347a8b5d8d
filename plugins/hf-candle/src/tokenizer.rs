//! Tokenizers: `tokenizer.json` for Hugging Face folders, or one built from GGUF metadata, plus
//! an incremental decoder that yields whole UTF-8 characters while streaming.

use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::error::{Error, Result};

/// A tokenizer plus the special tokens the engine needs to know about.
#[derive(Clone)]
pub struct Tok {
    /// The tokenizer.
    pub inner: Tokenizer,
    /// BOS text, for chat templates.
    pub bos_token: Option<String>,
    /// EOS text, for chat templates.
    pub eos_token: Option<String>,
    /// Ids that end generation (EOS and friends).
    pub eos_ids: Vec<u32>,
    /// What is computed from the vocabulary once, on first use.
    pub derived: Derived,
}

/// Facts about the vocabulary, computed once.
#[derive(Clone, Debug, Default)]
pub struct Derived {
    longest: std::sync::OnceLock<usize>,
    specials: std::sync::OnceLock<Vec<String>>,
    bytes: std::sync::OnceLock<Vec<Vec<u8>>>,
}

/// Inserted after the first character of special-token text found in a message, so the
/// tokenizer reads it as text (a zero-width space: the model sees nearly the same characters).
const ESCAPE: char = '\u{200B}';

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tok {
    /// Loads `tokenizer.json` from a model folder.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        if !path.is_file() {
            return Err(Error::file(
                path,
                "is missing; a Hugging Face model folder needs tokenizer.json (save it with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`)",
            ));
        }
        Tokenizer::from_file(path).map_err(|e| {
            Error::file(
                path,
                format!("is not a valid tokenizer ({e}); re-export it with transformers"),
            )
        })
    }

    /// Encodes `text`. `add_special_tokens` applies the tokenizer's post-processor (BOS...).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// The longest token's text in bytes: a text of `n` bytes has at least `n / longest`
    /// tokens (every token stands for at most as many bytes as its text has), which bounds a
    /// prompt before it is tokenized.
    pub fn longest_token_bytes(&self) -> usize {
        *self.derived.longest.get_or_init(|| {
            self.inner
                .get_vocab(true)
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(1)
                .max(1)
        })
    }

    /// The special tokens' texts (`<|im_start|>`, `<|eot_id|>`...), longest first.
    pub fn special_texts(&self) -> &[String] {
        self.derived.specials.get_or_init(|| {
            let mut v: Vec<String> = self
                .inner
                .get_added_tokens_decoder()
                .into_values()
                .filter(|t| t.special && !t.content.is_empty())
                .map(|t| t.content)
                .collect();
            v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            v.dedup();
            v
        })
    }

    /// `text` with every special token's text broken by a zero-width space after its first
    /// character, so a user cannot forge control tokens (a system turn) by typing them.
    pub fn escape_specials(&self, text: &str) -> String {
        let specials = self.special_texts();
        if !specials.iter().any(|s| text.contains(s.as_str())) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut rest = text;
        'scan: while !rest.is_empty() {
            for s in specials {
                if let Some(tail) = rest.strip_prefix(s.as_str()) {
                    let mut chars = s.chars();
                    if let Some(first) = chars.next() {
                        out.push(first);
                        out.push(ESCAPE);
                        out.push_str(chars.as_str());
                    }
                    rest = tail;
                    continue 'scan;
                }
            }
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Decodes `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tk_err)
    }

    /// The bytes token `id` stands for (empty for an id outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.derived
            .bytes
            .get_or_init(|| crate::token_bytes::table(&self.inner))
            .get(id as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// The id of a token text, if it is one token.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
}

/// Builds a tokenizer from GGUF `tokenizer.ggml.*` metadata.
pub fn from_gguf(md: &HashMap<String, Value>, source: &Path) -> Result<Tok> {
    // Borrowed from the metadata: a vocabulary's strings are copied once, into the maps.
    let strings = |key: &str| -> Result<Vec<&str>> {
        let v = md.get(key).ok_or_else(|| {
            Error::file(
                source,
                format!("has no `{key}` metadata; it needs an embedded tokenizer"),
            )
        })?;
        let arr = v
            .to_vec()
            .map_err(|e| Error::file(source, format!("`{key}`: {e}")))?;
        arr.iter()
            .map(|x| {
                x.to_string()
                    .map(String::as_str)
                    .map_err(|e| Error::file(source, format!("`{key}`: {e}")))
            })
            .collect()
    };
    let model = crate::gguf::md_str(md, "tokenizer.ggml.model")
        .unwrap_or("(none)")
        .to_owned();
    let tokens = strings("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(Error::file(
            source,
            "tokenizer.ggml.tokens is empty: the file has no vocabulary (a damaged or truncated conversion)",
        ));
    }
    let types: Vec<i32> = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|a| a.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    let id_of = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
    let mut tk = match model.as_str() {
        "gpt2" => {
            let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
                .into_iter()
                .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
                .collect();
            let vocab: Vocab = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| ((*t).to_owned(), i as u32))
                .collect();
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .build()
                .map_err(|e| Error::file(source, format!("bad BPE vocabulary: {e}")))?;
            let mut t = Tokenizer::new(bpe);
            let pre = crate::gguf::md_str(md, "tokenizer.ggml.pre").unwrap_or("default");
            t.with_pre_tokenizer(Some(byte_level_pre(pre)?));
            t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
                false, true, true,
            ))));
            t
        }
        "llama" => sentencepiece_bpe(md, &tokens, &types, source)?,
        other => {
            return Err(Error::file(
                source,
                format!(
                    "uses tokenizer model `{other}`; supported: gpt2 (byte-level BPE), llama (SentencePiece BPE)"
                ),
            ));
        }
    };
    // Control (3) and user-defined (4) tokens are matched whole, before the model sees the text.
    let mut special = Vec::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match types.get(i) {
            Some(3) => special.push(AddedToken::from(*t, true)),
            Some(4) => added.push(AddedToken::from(*t, false).normalized(false)),
            _ => {}
        }
    }
    tk.add_special_tokens(special).map_err(tk_err)?;
    tk.add_tokens(added).map_err(tk_err)?;
    let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).map(|t| (*t).to_owned()));
    let bos = id_of("tokenizer.ggml.bos_token_id");
    let eos = id_of("tokenizer.ggml.eos_token_id");
    let mut eos_ids: Vec<u32> = eos.into_iter().collect();
    // llama.cpp also stops at end-of-turn and end-of-text tokens.
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(id) = id_of(key).filter(|id| !eos_ids.contains(id)) {
            eos_ids.push(id);
        }
    }
    Ok(Tok {
        inner: tk,
        bos_token: name(bos),
        eos_token: name(eos),
        eos_ids,
        derived: Derived::default(),
    })
}

const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value.
fn byte_level_pre(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(
                SplitPattern::Regex(re.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk_err)?,
        ))
    };
    let bl = |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    Ok(match pre {
        "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![split(LLAMA3_RE)?, bl(false)]))
        }
        "qwen2" | "deepseek-r1-qwen" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![split(QWEN2_RE)?, bl(false)]))
        }
        "smollm" | "starcoder" | "refact" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            bl(true),
        ])),
        "gpt2" | "gpt-2" | "default" => bl(true),
        other => {
            tracing::warn!(
                pre = other,
                "unknown GGUF pre-tokenizer; using GPT-2's split rules"
            );
            bl(true)
        }
    })
}

/// A SentencePiece BPE vocabulary (`tokenizer.ggml.model = llama`, e.g. Gemma 3) as a
/// `tokenizers` BPE with byte fallback; merges are derived from the piece scores, as
/// transformers' GGUF converter does.
fn sentencepiece_bpe(
    md: &HashMap<String, Value>,
    tokens: &[&str],
    types: &[i32],
    source: &Path,
) -> Result<Tokenizer> {
    let scores: Vec<f32> = md
        .get("tokenizer.ggml.scores")
        .and_then(|v| v.to_vec().ok())
        .map(|a| a.iter().map(|x| x.to_f32().unwrap_or(0.0)).collect())
        .unwrap_or_else(|| vec![0.0; tokens.len()]);
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), i as u32))
        .collect();
    // SentencePiece merges as Hugging Face's converter derives them: every split of a normal
    // piece into two pieces of the vocabulary, ranked by the whole piece's score (then by the
    // parts' ids). Looked up with a fast hash over borrowed strings, in parallel: Gemma's
    // 262k-piece vocabulary gives half a million merges.
    let index: rustc_hash::FxHashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i as u32))
        .collect();
    let mut found: Vec<(f32, u32, u32)> = tokens
        .par_iter()
        .enumerate()
        .filter(|(id, _)| types.get(*id).is_none_or(|&t| t == 1))
        .flat_map_iter(|(id, piece)| {
            let score = scores.get(id).copied().unwrap_or(0.0);
            let index = &index;
            piece.char_indices().skip(1).filter_map(move |(split, _)| {
                let (l, r) = piece.split_at(split);
                Some((score, *index.get(l)?, *index.get(r)?))
            })
        })
        .collect();
    found.par_sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = found
        .into_iter()
        .map(|(_, l, r)| (tokens[l as usize].to_owned(), tokens[r as usize].to_owned()))
        .collect();
    let unk = types
        .iter()
        .position(|&t| t == 2)
        .and_then(|i| tokens.get(i).map(|t| (*t).to_owned()));
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u).fuse_unk(true);
    }
    let bpe = builder
        .build()
        .map_err(|e| Error::file(source, format!("bad SentencePiece vocabulary: {e}")))?;
    let mut t = Tokenizer::new(bpe);
    let add_prefix = md
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let replace = NormalizerWrapper::Replace(Replace::new(" ", "▁").map_err(tk_err)?);
    let normalizer = if add_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new("▁".to_owned())),
            replace,
        ]))
    } else {
        replace
    };
    t.with_normalizer(Some(normalizer)).map_err(tk_err)?;
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(tk_err)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    t.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(t)
}

/// Turns generated ids into text deltas that never split a UTF-8 character and that
/// concatenate to the decoding of the whole sequence (the prefix-window method TGI uses).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tok, id: u32, skip_special: bool) -> Result<String> {
        self.ids.push(id);
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], skip_special)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = full[prefix.len()..].to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Text still held back (an incomplete character at the very end), decoded as is.
    pub fn flush(&mut self, tok: &Tok, skip_special: bool) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], skip_special)?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_owned())
    }
}

/// Special-token ids of a tokenizer (to keep them out of stop-string matching, etc.).
pub fn special_ids(tok: &Tokenizer) -> HashSet<u32> {
    tok.get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect()
}
