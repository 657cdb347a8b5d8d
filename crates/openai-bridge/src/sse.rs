//! An incremental Server-Sent Events decoder, lenient in the ways the servers differ.
//!
//! Every server sends `data: <json>` lines separated by blank lines and ends with
//! `data: [DONE]`. KTransformers' legacy server writes `data:` without the space and its old docs
//! show an `event: done` line; some proxies use CRLF. The decoder yields the payload of each
//! event; `event:`, `id:`, `retry:` and comment lines are ignored, as are events without data.

/// Splits a byte stream into SSE `data` payloads.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the payloads of the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            self.line(line, &mut out);
        }
        out
    }

    /// Ends the input; returns the payload of a last event that had no blank line after it.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), &mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(rest) = line.strip_prefix("data:") {
            // A `data:` line with a JSON document or `[DONE]` is complete on its own: servers
            // that omit the blank line between events still decode.
            let payload = rest.strip_prefix(' ').unwrap_or(rest);
            self.data.push(payload.to_owned());
            let complete = payload == "[DONE]"
                || (payload.starts_with('{')
                    && serde_json::from_str::<serde::de::IgnoredAny>(&self.data.join("\n"))
                        .is_ok());
            if complete {
                self.dispatch(out);
            }
        }
        // `event:`, `id:`, `retry:` and `:comment` lines carry nothing we use.
    }

    fn dispatch(&mut self, out: &mut Vec<String>) {
        if !self.data.is_empty() {
            out.push(self.data.join("\n"));
            self.data.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunk_boundaries() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert_eq!(d.push(b":1}\n\ndata: [DO"), vec!["{\"a\":1}"]);
        assert_eq!(d.push(b"NE]\n\n"), vec!["[DONE]"]);
        assert!(d.finish().is_empty());
    }

    #[test]
    fn accepts_no_space_crlf_comments_and_event_lines() {
        let mut d = SseDecoder::new();
        let out = d.push(b": ping\r\ndata:{\"x\":1}\r\n\r\nevent: done\ndata: [DONE]\n\n");
        assert_eq!(out, vec!["{\"x\":1}", "[DONE]"]);
    }

    #[test]
    fn a_last_event_without_blank_line_is_kept() {
        let mut d = SseDecoder::new();
        assert_eq!(
            d.push(b"data: {\"x\":1}\ndata: {\"y\":2}"),
            vec!["{\"x\":1}"]
        );
        assert_eq!(d.finish(), vec!["{\"y\":2}"]);
    }
}
