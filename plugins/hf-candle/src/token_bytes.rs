//! The exact bytes each token stands for, for logprobs (OpenAI's `bytes`: a token may be part
//! of a UTF-8 character, which its decoded text cannot show).
//!
//! Two vocabularies cover the models hf-candle loads: byte-level BPE (GPT-2, Llama 3, Qwen,
//! SmolLM2), whose token strings spell bytes with GPT-2's printable stand-ins, and
//! SentencePiece-style ones (Llama 2, Gemma, Mistral), which write a space as `▁` and fall
//! back to `<0xNN>` tokens for single bytes. Added tokens (specials) are their own text. The
//! `tokenizers` crate keeps its byte table private, so the 256-entry inverse is built here.

use std::collections::{HashMap, HashSet};

use tokenizers::{DecoderWrapper, Tokenizer};

/// Every token's bytes, indexed by id.
pub(crate) fn table(tok: &Tokenizer) -> Vec<Vec<u8>> {
    let byte_level = match tok.get_decoder() {
        Some(DecoderWrapper::ByteLevel(_)) => true,
        Some(DecoderWrapper::Sequence(s)) => s
            .get_decoders()
            .iter()
            .any(|d| matches!(d, DecoderWrapper::ByteLevel(_))),
        _ => false,
    };
    let added: HashSet<u32> = tok.get_added_tokens_decoder().into_keys().collect();
    let stand_ins = byte_stand_ins();
    let n = tok.get_vocab_size(true) as u32;
    (0..n)
        .map(|id| {
            let Some(piece) = tok.id_to_token(id) else {
                return Vec::new();
            };
            if added.contains(&id) {
                piece.into_bytes()
            } else if byte_level {
                piece
                    .chars()
                    .map(|c| stand_ins.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| piece.into_bytes())
            } else if let Some(b) = byte_token(&piece) {
                vec![b]
            } else {
                piece.replace('\u{2581}', " ").into_bytes()
            }
        })
        .collect()
}

/// `<0xNN>`: a SentencePiece byte-fallback token.
fn byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// GPT-2's printable stand-in for each byte, inverted: printable Latin-1 bytes stand for
/// themselves, the other 68 are shifted to U+0100 and up, in byte order.
fn byte_stand_ins() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).expect("U+0100..U+0143 are chars")
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_stand_ins_and_byte_tokens() {
        let m = byte_stand_ins();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
        assert_eq!(byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_token("<0xZZ>"), None);
        assert_eq!(byte_token("<0x0A0>"), None);
    }
}
