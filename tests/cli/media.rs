//! Media inputs of the CLI on the `echo` plugin with `media = true` (it answers with the counts
//! of images and videos it got, then the last user message reversed word by word with each
//! `<image>`/`<video>` placeholder shown as `(image)`/`(video)`, so where the host put it shows): `/image` and `/video` in `chat`, and
//! `images`/`videos` lists in `batch` rows. The placement is LLaMA-Factory's: the media go where
//! the text has placeholders, or in front of the first user message.

use serde_json::{Value, json};
use switchyard_tests::write_file;

use super::{echo_dir, switchyard};

/// The records of a batch run over `rows`, with the input file in a subfolder `rows/`.
fn batch(extra_config: &str, rows: &[Value], env: &[(&str, &str)]) -> Vec<Value> {
    let (dir, config) = echo_dir(extra_config);
    let sub = dir.path().join("rows");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cat.png"), b"\x89PNG\r\n").unwrap();
    std::fs::write(sub.join("clip.mp4"), b"\0\0\0 ftyp").unwrap();
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let input = write_file(&sub, "in.jsonl", &text);
    let output = dir.path().join("out.jsonl");
    let out = switchyard(dir.path(), &["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[test]
fn batch_rows_take_image_and_video_paths_and_data_urls() {
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let rows = [
        // No placeholders: in front of the first user message (videos, then images, as
        // LLaMA-Factory puts images in front and then videos in front of those).
        json!({"messages": user("What is this?"), "images": ["cat.png", png], "videos": ["clip.mp4"]}),
        // Placed by the text.
        json!({"messages": user("Compare <image> and <image>"), "images": [png, "cat.png"]}),
        // Two placeholders, one image.
        json!({"messages": user("<image> <image>"), "images": ["cat.png"]}),
        json!({"messages": user("hi"), "images": ["missing.png"]}),
        json!({"messages": user("hi"), "images": "cat.png"}),
        json!({"messages": user("hi"), "images": [png, png, png, png, png]}),
    ];
    let r = batch("[backends.echo]\nmedia = true\n", &rows, &[]);
    assert_eq!(r.len(), 6);
    assert_eq!(
        r[0]["text"],
        "[2 images, 1 videos] this? is (video)(image)(image)What"
    );
    assert_eq!(
        r[1]["text"],
        "[2 images, 0 videos] (image) and (image) Compare"
    );
    let error = |i: usize| r[i]["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        error(2).contains("number of images (1)") && error(2).contains("(2)"),
        "{}",
        error(2)
    );
    assert_eq!(r[2]["error"]["kind"], "invalid_request");
    assert!(
        error(3).contains("missing.png") && error(3).contains("rows"),
        "{}",
        error(3)
    );
    assert!(error(4).contains("`images` must be a list"), "{}", error(4));
    assert!(error(5).contains("the limit is 4"), "{}", error(5));

    // A backend without image input refuses, naming the field.
    let r = batch("", &rows[..1], &[]);
    assert!(
        r[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("images"),
        "{}",
        r[0]
    );
}

#[test]
fn placeholder_strings_follow_llamafactorys_environment_variables() {
    let rows = [json!({"messages": user("See [IMG] and <image>"), "images": ["cat.png"]})];
    let r = batch(
        "[backends.echo]\nmedia = true\n",
        &rows,
        &[("IMAGE_PLACEHOLDER", "[IMG]")],
    );
    assert_eq!(r[0]["text"], "[1 images, 0 videos] <image> and (image) See");
}

#[test]
fn chat_attaches_images_and_videos_to_the_next_message() {
    let (dir, config) = echo_dir("[backends.echo]\nmedia = true\n");
    std::fs::write(dir.path().join("cat.png"), b"\x89PNG\r\n").unwrap();
    std::fs::write(dir.path().join("clip.mp4"), b"\0\0\0 ftyp").unwrap();
    let input = "/image cat.png\nWhat is this?\nand now\n/video clip.mp4\nWhere <video> goes\n/image nope.png\n";
    let out = switchyard(dir.path(), &["chat", "--config"])
        .arg(&config)
        .stdin(std::fs::File::open(write_file(dir.path(), "in.txt", input)).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "Attached image cat.png (1 for the next message).",
            "[1 images, 0 videos] this? is (image)What",
            // The conversation's image stays with it (its placeholder is in the history).
            "[1 images, 0 videos] now and",
            "Attached video clip.mp4 (1 for the next message).",
            "[1 images, 1 videos] goes (video) Where",
        ],
        "{stdout}"
    );
    assert!(
        lines[5].starts_with("error: ") && lines[5].contains("nope.png"),
        "{stdout}"
    );

    // A backend that takes no images says so when one is attached.
    let (dir, config) = echo_dir("");
    std::fs::write(dir.path().join("cat.png"), b"\x89PNG\r\n").unwrap();
    let out = switchyard(dir.path(), &["chat", "--config"])
        .arg(&config)
        .stdin(
            std::fs::File::open(write_file(
                dir.path(),
                "in.txt",
                "/image cat.png\nhi there\n",
            ))
            .unwrap(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("error: backend `echo`") && stdout.contains("does not take images"),
        "{stdout}"
    );
    assert!(stdout.contains("there hi"), "{stdout}");
}

/// hf-candle on the tiny Qwen2-VL fixture: `batch` rows with image paths (an `<image>` where
/// each of the fixture's images goes) give Transformers' greedy ids (tests/fixtures/hf/qwen2-vl/
/// expected.json, recorded by scripts/fixtures/gen_tiny_qwen2vl.py), and `chat`'s `/image`
/// (the image in front of the next message, as in the fixture's one-image case) gives the same
/// reply as that batch row.
#[test]
fn a_vision_model_answers_batch_images_and_chat_attachments_as_transformers() {
    let fixture = switchyard_tests::workspace_root().join("tests/fixtures/hf/qwen2-vl");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lib = switchyard_tests::plugin_library("hf-candle");
    std::fs::copy(&lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    let config = write_file(
        dir.path(),
        "vlm.toml",
        &format!(
            "sample_backend = \"hf-candle\"\n[model]\npath = \"{}\"\n",
            fixture.display()
        ),
    );
    let image = |name: &str| fixture.join(format!("images/{name}.png"));
    let cases = expected["cases"].as_object().unwrap();
    let mut rows = String::new();
    for case in cases.values() {
        let messages: Vec<Value> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let text: String = m["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["text"].as_str().unwrap_or("<image>").to_owned())
                    .collect();
                json!({"role": m["role"], "content": text})
            })
            .collect();
        let images: Vec<String> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| image(n.as_str().unwrap()).display().to_string())
            .collect();
        let n = case["greedy_ids"].as_array().unwrap().len();
        rows.push_str(&format!(
            "{}\n",
            json!({"messages": messages, "images": images, "max_new_tokens": n, "do_sample": false})
        ));
    }
    let input = write_file(dir.path(), "in.jsonl", &rows);
    let output = dir.path().join("out.jsonl");
    let out = switchyard(dir.path(), &["batch", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((name, case), r) in cases.iter().zip(&records) {
        assert_eq!(r["token_ids"], case["greedy_ids"], "{name}: {r}");
    }

    let one = &cases["one_image"];
    let question = one["messages"][0]["content"][1]["text"].as_str().unwrap();
    let n = one["greedy_ids"].as_array().unwrap().len();
    let input = format!("/image {}\n{question}\n", image("square").display());
    let out = switchyard(dir.path(), &["chat", "--config"])
        .arg(&config)
        .args(["--set", "generation.do_sample=false"])
        .args(["--set", &format!("generation.max_new_tokens={n}")])
        .stdin(std::fs::File::open(write_file(dir.path(), "chat.txt", &input)).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch_reply = records[cases.keys().position(|k| k == "one_image").unwrap()]["text"]
        .as_str()
        .unwrap();
    assert_eq!(
        stdout.lines().nth(1).map(str::trim_end),
        Some(batch_reply.trim_end()),
        "{stdout}"
    );
}
