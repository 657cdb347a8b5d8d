//! Where a request's images, videos and audio go in the conversation: LLaMA-Factory's
//! placeholder rules, shared by the host (which applies them to every request) and the backends
//! (which turn placeholders into their own media tokens or content parts).
//!
//! - A message's text may carry `<image>`, `<video>` and `<audio>` at the positions where the
//!   request's media of that kind go, in order (the first `<image>` is `images[0]`, and so on).
//!   The strings can be changed with the environment variables `IMAGE_PLACEHOLDER`,
//!   `VIDEO_PLACEHOLDER` and `AUDIO_PLACEHOLDER`, as in LLaMA-Factory (an empty value keeps the
//!   default).
//! - When no message holds a kind's placeholder, that kind's media go in front of the first user
//!   message: images, then videos, then audio are each put in front in turn, so the text starts
//!   `<audio><video><image>` (LLaMA-Factory's Hugging Face engine).
//! - After that, the number of placeholders of each kind must equal the number of media of that
//!   kind, or the request is refused ([`PlaceholderError::Mismatch`]).
//!
//! A request that carries no media at all is left alone: its text is plain text, and a literal
//! `<image>` in it means nothing. System messages are never searched or changed (LLaMA-Factory
//! keeps the system prompt apart from the messages).

use crate::wire::{ChatRequest, Message, Role};

/// The three kinds of media, in the order their default placeholders are put in front.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `images`.
    Image,
    /// `videos`.
    Video,
    /// `audios`.
    Audio,
}

impl MediaKind {
    /// All kinds, in insertion order.
    pub const ALL: [MediaKind; 3] = [MediaKind::Image, MediaKind::Video, MediaKind::Audio];

    /// The request field holding this kind (`images`, `videos`, `audios`).
    pub fn field(self) -> &'static str {
        match self {
            MediaKind::Image => "images",
            MediaKind::Video => "videos",
            MediaKind::Audio => "audios",
        }
    }

    fn index(self) -> usize {
        match self {
            MediaKind::Image => 0,
            MediaKind::Video => 1,
            MediaKind::Audio => 2,
        }
    }
}

/// The placeholder strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholders {
    /// For images (`<image>`).
    pub image: String,
    /// For videos (`<video>`).
    pub video: String,
    /// For audio clips (`<audio>`).
    pub audio: String,
}

impl Default for Placeholders {
    fn default() -> Self {
        Self {
            image: "<image>".into(),
            video: "<video>".into(),
            audio: "<audio>".into(),
        }
    }
}

impl Placeholders {
    /// The defaults, each replaced by `IMAGE_PLACEHOLDER`, `VIDEO_PLACEHOLDER` or
    /// `AUDIO_PLACEHOLDER` when that variable is set and not empty.
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |name: &str, default: String| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(default)
        };
        Self {
            image: var("IMAGE_PLACEHOLDER", d.image),
            video: var("VIDEO_PLACEHOLDER", d.video),
            audio: var("AUDIO_PLACEHOLDER", d.audio),
        }
    }

    /// The placeholder for `kind`.
    pub fn of(&self, kind: MediaKind) -> &str {
        match kind {
            MediaKind::Image => &self.image,
            MediaKind::Video => &self.video,
            MediaKind::Audio => &self.audio,
        }
    }
}

/// A request whose placeholders do not fit its media.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// The count of a kind's placeholders differs from the count of its media.
    #[error(
        "the number of {field} ({media}) does not match the number of {placeholder} placeholders in the messages ({placeholders}); put one {placeholder} where each of the {field} goes, or none at all to have them go in front of the first user message"
    )]
    Mismatch {
        /// `images`, `videos` or `audios`.
        field: &'static str,
        /// How many media of that kind the request has.
        media: usize,
        /// How many placeholders its messages hold.
        placeholders: usize,
        /// The placeholder string.
        placeholder: String,
    },
    /// Media with no placeholders and no user message to put them in front of.
    #[error(
        "the request has {media} {field} but no user message to put them in; add a user message (with {placeholder} where each goes)"
    )]
    NoUserMessage {
        /// `images`, `videos` or `audios`.
        field: &'static str,
        /// How many media of that kind the request has.
        media: usize,
        /// The placeholder string.
        placeholder: String,
    },
}

/// How many media of each kind a request has (images, videos, audios).
pub fn media_counts(request: &ChatRequest) -> [usize; 3] {
    [
        request.images.len(),
        request.videos.len(),
        request.audios.len(),
    ]
}

/// Applies the rules to `messages` for `counts` media (images, videos, audios): the default
/// placement where a kind has no placeholder, then the count check. Does nothing when all
/// counts are zero. Applying it twice changes nothing the second time.
pub fn place(
    messages: &mut [Message],
    counts: [usize; 3],
    p: &Placeholders,
) -> Result<(), PlaceholderError> {
    if counts == [0; 3] {
        return Ok(());
    }
    let have = count(messages, p);
    // The prefix for the first user message: each kind in turn is put in front of what is
    // there, so the last kind ends up first (`<audio><video><image>...`, as LLaMA-Factory).
    let mut prefix = String::new();
    for kind in MediaKind::ALL {
        let n = counts[kind.index()];
        if n > 0 && have[kind.index()] == 0 {
            prefix.insert_str(0, &p.of(kind).repeat(n));
        }
    }
    if !prefix.is_empty() {
        let Some(first) = messages.iter_mut().find(|m| m.role == Role::User) else {
            let kind = MediaKind::ALL
                .into_iter()
                .find(|k| counts[k.index()] > 0)
                .unwrap_or(MediaKind::Image);
            return Err(PlaceholderError::NoUserMessage {
                field: kind.field(),
                media: counts[kind.index()],
                placeholder: p.of(kind).to_owned(),
            });
        };
        first.content.insert_str(0, &prefix);
    }
    let found = count(messages, p);
    for kind in MediaKind::ALL {
        let i = kind.index();
        if found[i] != counts[i] {
            return Err(PlaceholderError::Mismatch {
                field: kind.field(),
                media: counts[i],
                placeholders: found[i],
                placeholder: p.of(kind).to_owned(),
            });
        }
    }
    Ok(())
}

/// How many placeholders of each kind (images, videos, audios) the non-system messages hold,
/// cut as [`segments`] cuts them.
pub fn count(messages: &[Message], p: &Placeholders) -> [usize; 3] {
    let mut n = [0; 3];
    for m in messages.iter().filter(|m| m.role != Role::System) {
        for s in segments(&m.content, p) {
            if let Segment::Media(kind) = s {
                n[kind.index()] += 1;
            }
        }
    }
    n
}

/// [`place`] on a request's own messages and media.
pub fn place_request(request: &mut ChatRequest, p: &Placeholders) -> Result<(), PlaceholderError> {
    let counts = media_counts(request);
    place(&mut request.messages, counts, p)
}

/// A piece of a message's text: plain text, or the position of the next medium of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Text between placeholders (never empty).
    Text(&'a str),
    /// A placeholder: the next medium of this kind goes here.
    Media(MediaKind),
}

/// `text` cut at every placeholder, left to right (where two placeholders could start at the
/// same place, the longer one wins; images before videos before audio on a tie).
pub fn segments<'a>(text: &'a str, p: &Placeholders) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = MediaKind::ALL
            .into_iter()
            .filter_map(|k| rest.find(p.of(k)).map(|at| (at, k)))
            .min_by_key(|&(at, k)| (at, std::cmp::Reverse(p.of(k).len())));
        let Some((at, kind)) = next else { break };
        if at > 0 {
            out.push(Segment::Text(&rest[..at]));
        }
        out.push(Segment::Media(kind));
        rest = &rest[at + p.of(kind).len()..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The expected strings follow LLaMA-Factory's Hugging Face engine
    // (`IMAGE_PLACEHOLDER * len(images) + messages[0]["content"]`, per kind in the order
    // images, videos, audios) and `_validate_messages` (a count per kind over all messages).

    fn msgs(texts: &[(Role, &str)]) -> Vec<Message> {
        texts.iter().map(|(r, t)| Message::new(*r, *t)).collect()
    }

    #[test]
    fn no_placeholders_put_the_media_in_front_of_the_first_user_message() {
        let mut m = msgs(&[
            (Role::System, "sys"),
            (Role::User, "What is this?"),
            (Role::Assistant, "A cat."),
            (Role::User, "And this?"),
        ]);
        place(&mut m, [2, 1, 1], &Placeholders::default()).unwrap();
        assert_eq!(m[1].content, "<audio><video><image><image>What is this?");
        assert_eq!(m[0].content, "sys");
        assert_eq!(m[3].content, "And this?");
        // A second pass is a no-op.
        let before = m.clone();
        place(&mut m, [2, 1, 1], &Placeholders::default()).unwrap();
        assert_eq!(m, before);
    }

    #[test]
    fn placeholders_are_kept_per_kind_and_counted() {
        let p = Placeholders::default();
        // Images placed by the user; the video has none, so it goes in front.
        let mut m = msgs(&[(Role::User, "a <image> b"), (Role::User, "c <image>")]);
        place(&mut m, [2, 1, 0], &p).unwrap();
        assert_eq!(m[0].content, "<video>a <image> b");
        let mut m = msgs(&[(Role::User, "<image> and <image>")]);
        let e = place(&mut m, [1, 0, 0], &p).unwrap_err();
        assert!(
            matches!(
                e,
                PlaceholderError::Mismatch {
                    media: 1,
                    placeholders: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("number of images (1)"), "{e}");
        // Media of one kind make the others' placeholders count too (zero media, one tag).
        let mut m = msgs(&[(Role::User, "<audio>")]);
        assert!(place(&mut m, [1, 0, 0], &p).is_err());
        // No media: text is text.
        let mut m = msgs(&[(Role::User, "<image>")]);
        place(&mut m, [0, 0, 0], &p).unwrap();
        let mut m = msgs(&[(Role::System, "<image>"), (Role::Assistant, "hi")]);
        let e = place(&mut m, [1, 0, 0], &p).unwrap_err();
        assert!(matches!(e, PlaceholderError::NoUserMessage { .. }), "{e}");
    }

    /// Every case LLaMA-Factory 0.9.5's own code ran (its Hugging Face engine's insertion and
    /// `_validate_messages`; scripts/fixtures/record_llamafactory_placeholders.py), with the
    /// default and with overridden placeholder strings: the same text, or the same refusal.
    #[test]
    fn llamafactorys_own_results_are_reproduced() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/llamafactory_placeholders.json"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut checked = 0;
        for run in doc["runs"].as_array().unwrap() {
            let env =
                |key: &str, default: &str| run["env"][key].as_str().unwrap_or(default).to_owned();
            let p = Placeholders {
                image: env("IMAGE_PLACEHOLDER", "<image>"),
                video: env("VIDEO_PLACEHOLDER", "<video>"),
                audio: env("AUDIO_PLACEHOLDER", "<audio>"),
            };
            for case in run["cases"].as_array().unwrap() {
                let name = case["name"].as_str().unwrap();
                let mut messages: Vec<Message> =
                    serde_json::from_value(case["messages"].clone()).unwrap();
                let c: Vec<usize> = serde_json::from_value(case["counts"].clone()).unwrap();
                let got = place(&mut messages, [c[0], c[1], c[2]], &p);
                match case.get("placed") {
                    Some(placed) => {
                        assert!(got.is_ok(), "{name} ({p:?}): {got:?}");
                        let texts: Vec<&str> = messages.iter().map(|m| &*m.content).collect();
                        assert_eq!(json!(texts), *placed, "{name} ({p:?})");
                    }
                    None => {
                        // "The number of images does not match the number of <image> tokens"
                        let want = case["error"].as_str().unwrap();
                        let Err(PlaceholderError::Mismatch {
                            field, placeholder, ..
                        }) = got
                        else {
                            panic!("{name} ({p:?}): LLaMA-Factory refuses ({want}), got {got:?}")
                        };
                        let theirs = format!(
                            "The number of {field} does not match the number of {placeholder}"
                        );
                        assert_eq!(theirs, want, "{name} ({p:?})");
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 16);
    }

    #[test]
    fn segments_cut_at_placeholders_in_order() {
        let p = Placeholders::default();
        assert_eq!(
            segments("<image>Compare<video> with <image>.", &p),
            vec![
                Segment::Media(MediaKind::Image),
                Segment::Text("Compare"),
                Segment::Media(MediaKind::Video),
                Segment::Text(" with "),
                Segment::Media(MediaKind::Image),
                Segment::Text("."),
            ]
        );
        assert_eq!(segments("plain", &p), vec![Segment::Text("plain")]);
        assert!(segments("", &p).is_empty());
        // Overridden strings, one a prefix of another: the longer wins.
        let p = Placeholders {
            image: "[IMG]".into(),
            video: "[IMG][VID]".into(),
            audio: "<|a|>".into(),
        };
        assert_eq!(
            segments("x[IMG][VID][IMG]<|a|>", &p),
            vec![
                Segment::Text("x"),
                Segment::Media(MediaKind::Video),
                Segment::Media(MediaKind::Image),
                Segment::Media(MediaKind::Audio),
            ]
        );
    }
}
