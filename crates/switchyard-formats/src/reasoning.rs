//! Reasoning (`<think>…</think>`) split out of a model's output, whole or streamed.

use crate::partial_tag;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Splits `<think>…</think>` out of a whole text: (content, reasoning).
pub fn split_reasoning(text: &str) -> (String, Option<String>) {
    let mut splitter = ReasoningSplitter::default();
    let (mut content, mut reasoning) = splitter.push(text);
    let (c, r) = splitter.finish();
    content.push_str(&c);
    reasoning.push_str(&r);
    let had_reasoning = splitter.saw_tag;
    (
        content.trim_start().to_owned(),
        had_reasoning.then(|| reasoning.trim().to_owned()),
    )
}

/// Streams text, routing `<think>` spans to reasoning. Partial tags are held back until the
/// next delta shows whether they complete.
#[derive(Default, Debug)]
pub struct ReasoningSplitter {
    pending: String,
    in_think: bool,
    started: bool,
    saw_tag: bool,
}

impl ReasoningSplitter {
    /// A splitter for output that starts inside the reasoning: the chat template already wrote
    /// the opening `<think>` into the prompt (Qwen3, DeepSeek-R1 style).
    pub fn opened() -> Self {
        Self {
            pending: String::new(),
            in_think: true,
            started: true,
            saw_tag: true,
        }
    }

    /// Feeds a delta; returns (content delta, reasoning delta).
    pub fn push(&mut self, delta: &str) -> (String, String) {
        self.pending.push_str(delta);
        let (mut content, mut reasoning) = (String::new(), String::new());
        loop {
            let tag = if self.in_think {
                THINK_CLOSE
            } else {
                THINK_OPEN
            };
            if !self.in_think && self.started && !self.pending.contains(THINK_CLOSE) {
                // `<think>` only opens at the start of the output.
                content.push_str(&std::mem::take(&mut self.pending));
                break;
            }
            // A model may emit `</think>` without the opening tag (the template opened it).
            if !self.in_think && !self.started {
                let trimmed = self.pending.trim_start();
                if trimmed.is_empty() {
                    break;
                }
                if let Some(close) = self.pending.find(THINK_CLOSE)
                    && !self.pending[..close].contains(THINK_OPEN)
                {
                    reasoning.push_str(&self.pending[..close]);
                    self.pending.drain(..close + THINK_CLOSE.len());
                    self.started = true;
                    self.saw_tag = true;
                    continue;
                }
                if trimmed.starts_with(THINK_OPEN) {
                    let at = self.pending.find(THINK_OPEN).expect("present");
                    self.pending.drain(..at + THINK_OPEN.len());
                    self.in_think = true;
                    self.started = true;
                    self.saw_tag = true;
                    continue;
                }
                if THINK_OPEN.starts_with(trimmed) {
                    break; // maybe the start of `<think>`
                }
                self.started = true;
                continue;
            }
            match self.pending.find(tag) {
                Some(at) => {
                    let before: String = self.pending.drain(..at).collect();
                    self.pending.drain(..tag.len());
                    if self.in_think {
                        reasoning.push_str(&before);
                    } else {
                        content.push_str(&before);
                    }
                    self.in_think = !self.in_think;
                }
                None => {
                    let keep = partial_tag(&self.pending, tag);
                    let out: String = self.pending.drain(..self.pending.len() - keep).collect();
                    if self.in_think {
                        reasoning.push_str(&out);
                    } else {
                        content.push_str(&out);
                    }
                    break;
                }
            }
        }
        (content, reasoning)
    }

    /// Flushes what is held back at the end of the stream.
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.pending);
        if self.in_think {
            (String::new(), rest)
        } else {
            (rest, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_is_split_whole_and_streamed_across_tag_boundaries() {
        assert_eq!(
            split_reasoning("<think>hmm</think>\n\nAnswer"),
            ("Answer".into(), Some("hmm".into()))
        );
        assert_eq!(split_reasoning("plain"), ("plain".into(), None));
        assert_eq!(
            split_reasoning("thought</think>ok"),
            ("ok".into(), Some("thought".into()))
        );
        let mut s = ReasoningSplitter::default();
        let mut content = String::new();
        let mut reasoning = String::new();
        for d in ["<th", "ink>a", "b</th", "ink>", "c<thi", "nk> d"] {
            let (c, r) = s.push(d);
            content.push_str(&c);
            reasoning.push_str(&r);
        }
        let (c, r) = s.finish();
        content.push_str(&c);
        reasoning.push_str(&r);
        assert_eq!(reasoning, "ab");
        assert_eq!(content, "c<think> d");

        let mut s = ReasoningSplitter::opened();
        let (c1, r1) = s.push("weigh it</th");
        let (c2, r2) = s.push("ink>\n\nYes");
        assert_eq!((c1 + &c2, r1 + &r2), ("\n\nYes".into(), "weigh it".into()));
    }
}
