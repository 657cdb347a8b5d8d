//! Property tests (bounded fuzzing) of the request mapping: any JSON body — valid chat
//! requests with wild values, and arbitrary documents — maps to a request or to a 4xx that
//! names the problem, never a panic. Failing cases are kept in `proptest-regressions/`.

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_server::fuzzing::map_chat_request;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<f64>().prop_map(|v| json!(v)),
        "\\PC{0,16}".prop_map(Value::String),
        Just(json!("data:image/png;base64,AAAA")),
        Just(json!("http://[::ffff:127.0.0.1]/x.png")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("type".to_owned()),
                    Just("text".to_owned()),
                    Just("image_url".to_owned()),
                    Just("url".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("function".to_owned()),
                    Just("name".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "n",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "guided_json",
    "guided_choice",
    "structured_outputs",
    "stream",
    "stream_options",
    "chat_template_kwargs",
    "messages",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_json_body_maps_or_is_a_4xx(body in json_value()) {
        if let Err(e) = map_chat_request(&body) {
            prop_assert!(e.status.is_client_error(), "{e:?}");
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn a_chat_request_with_wild_fields_maps_or_is_a_4xx(
        fields in proptest::collection::vec((0..FIELDS.len(), json_value()), 0..6),
        text in "\\PC{0,40}",
    ) {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        for (i, v) in fields {
            body[FIELDS[i]] = v;
        }
        if let Err(e) = map_chat_request(&body) {
            prop_assert!(e.status.is_client_error(), "{e:?}");
        }
    }
}
