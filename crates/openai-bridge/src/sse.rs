//! An incremental Server-Sent Events decoder, lenient in the ways the servers differ.
//!
//! Every server sends `data: <json>` lines separated by blank lines and ends with
//! `data: [DONE]`. KTransformers' legacy server writes `data:` without the space and its old docs
//! show an `event: done` line; some proxies use CRLF. The decoder yields the payload of each
//! event; `event:`, `id:`, `retry:` and comment lines are ignored, as are events without data.

/// The longest line (and the longest event) accepted: a server that sends more without a line
/// break is broken or hostile, and holding it would grow without bound.
pub const MAX_LINE: usize = 16 << 20;

/// A line or an event over [`MAX_LINE`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an SSE line or event of more than {} bytes ({} so far); the limit is {MAX_LINE}",
            MAX_LINE, self.0
        )
    }
}

/// Splits a byte stream into SSE `data` payloads, in time linear in the input: each byte is
/// scanned for a line break once, and completed lines are cut off the buffer together.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no line break.
    scanned: usize,
    data: Vec<String>,
    data_len: usize,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the payloads of the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, TooLong> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(off) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + off;
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.line(line.trim_end_matches('\r'), &mut out)?;
            start = end + 1;
            self.scanned = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE {
            return Err(TooLong(self.buf.len()));
        }
        Ok(out)
    }

    /// Ends the input; returns the payload of a last event that had no blank line after it.
    pub fn finish(&mut self) -> Result<Vec<String>, TooLong> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.scanned = 0;
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), &mut out)?;
        }
        self.dispatch(&mut out);
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) -> Result<(), TooLong> {
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(rest) = line.strip_prefix("data:") {
            // A `data:` line with a JSON document or `[DONE]` is complete on its own: servers
            // that omit the blank line between events still decode. Only a first line that
            // starts a JSON object is tried, so a many-line event is not re-parsed per line.
            let payload = rest.strip_prefix(' ').unwrap_or(rest);
            self.data_len += payload.len() + 1;
            if self.data_len > MAX_LINE {
                return Err(TooLong(self.data_len));
            }
            self.data.push(payload.to_owned());
            let complete = payload == "[DONE]"
                || (self.data.len() == 1
                    && payload.starts_with('{')
                    && serde_json::from_str::<serde::de::IgnoredAny>(payload).is_ok());
            if complete {
                self.dispatch(out);
            }
        }
        // `event:`, `id:`, `retry:` and `:comment` lines carry nothing we use.
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<String>) {
        if !self.data.is_empty() {
            out.push(self.data.join("\n"));
            self.data.clear();
            self.data_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunk_boundaries() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(d.push(b":1}\n\ndata: [DO").unwrap(), vec!["{\"a\":1}"]);
        assert_eq!(d.push(b"NE]\n\n").unwrap(), vec!["[DONE]"]);
        assert!(d.finish().unwrap().is_empty());
    }

    #[test]
    fn accepts_no_space_crlf_comments_and_event_lines() {
        let mut d = SseDecoder::new();
        let out = d
            .push(b": ping\r\ndata:{\"x\":1}\r\n\r\nevent: done\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(out, vec!["{\"x\":1}", "[DONE]"]);
    }

    #[test]
    fn a_last_event_without_blank_line_is_kept() {
        let mut d = SseDecoder::new();
        assert_eq!(
            d.push(b"data: {\"x\":1}\ndata: {\"y\":2}").unwrap(),
            vec!["{\"x\":1}"]
        );
        assert_eq!(d.finish().unwrap(), vec!["{\"y\":2}"]);
    }

    #[test]
    fn a_huge_line_in_small_pieces_is_linear_and_capped() {
        let mut d = SseDecoder::new();
        let piece = vec![b'x'; 64 << 10];
        let started = std::time::Instant::now();
        let mut err = None;
        for _ in 0..(MAX_LINE / piece.len() + 2) {
            if let Err(e) = d.push(&piece) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some(), "an endless line must be refused");
        // Quadratic rescanning of 16 MiB in 64 KiB pieces takes minutes; linear, milliseconds.
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        let mut d = SseDecoder::new();
        let many: String = (0..20_000)
            .map(|i| format!("data: {{\"i\":{i}}}\n\n"))
            .collect();
        assert_eq!(d.push(many.as_bytes()).unwrap().len(), 20_000);
    }
}
