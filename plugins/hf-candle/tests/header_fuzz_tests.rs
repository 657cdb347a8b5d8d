//! Bounded fuzzing of the two file-header parsers a user's file reaches first: GGUF (header,
//! metadata and tensor directory) and safetensors (the length prefix and the JSON header).
//! Real fixture files are mutated (bytes overwritten in the header region, the length prefix
//! replaced, the file cut short) and loaded; every load must end in a model or a named error,
//! never a panic or an allocation abort (which would kill this test process). Failing cases
//! are kept in `proptest-regressions/` and replayed first.

mod common;

use proptest::prelude::*;
use serde_json::json;

/// Where the header lives: the mutations aim there (the data after it is plain numbers).
fn header_len_gguf(bytes: &[u8]) -> usize {
    bytes.len().min(16 * 1024)
}

fn header_len_safetensors(bytes: &[u8]) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (8 + n).min(bytes.len())
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite bytes at (offset within the header region, value).
    Bytes(Vec<(usize, u8)>),
    /// Replace a little-endian u64 at an offset (a count or a length) with a value.
    Word(usize, u64),
    /// Cut the file at this fraction (per mille) of its length.
    Cut(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16).prop_map(Mutation::Bytes),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(u32::MAX as u64),
                Just(u64::MAX),
                Just(1 << 40),
                any::<u64>()
            ]
        )
            .prop_map(|(o, v)| Mutation::Word(o, v)),
        (0u16..1000).prop_map(Mutation::Cut),
    ]
}

fn apply(mut bytes: Vec<u8>, header: usize, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Bytes(edits) => {
            for &(o, v) in edits {
                let i = o % header;
                bytes[i] = v;
            }
        }
        Mutation::Word(o, v) => {
            let i = o % header.saturating_sub(8).max(1);
            bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        Mutation::Cut(per_mille) => bytes.truncate(bytes.len() * *per_mille as usize / 1000),
    }
    bytes
}

/// Loads `dir_or_file`; a panic fails the case (an abort fails the whole test).
fn load(path: &std::path::Path) {
    let _ = common::engine_with(path, json!({"threads": 1}), json!({}));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_gguf_loads_or_is_a_named_error(m in mutation(), which in 0usize..2) {
        let name = ["tiny-llama-q8_0.gguf", "tiny-qwen2-q8_0.gguf"][which];
        let bytes = std::fs::read(common::fixtures().join("gguf").join(name)).unwrap();
        let header = header_len_gguf(&bytes);
        let file = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
        std::fs::write(file.path(), apply(bytes, header, &m)).unwrap();
        load(file.path());
    }

    #[test]
    fn a_mutated_safetensors_header_loads_or_is_a_named_error(m in mutation()) {
        let src = common::fixtures().join("hf/llama");
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let weights = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        let header = header_len_safetensors(&bytes);
        std::fs::write(&weights, apply(bytes, header, &m)).unwrap();
        load(dir.path());
    }
}

/// The unmutated fixtures load (so the cases above reach the parsers, not an early error).
#[test]
fn the_unmutated_fixtures_load() {
    for name in ["tiny-llama-q8_0.gguf", "tiny-qwen2-q8_0.gguf"] {
        let path = common::fixtures().join("gguf").join(name);
        common::engine_with(&path, json!({"threads": 1}), json!({}))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    common::engine_with(
        &common::fixtures().join("hf/llama"),
        json!({"threads": 1}),
        json!({}),
    )
    .unwrap();
}
