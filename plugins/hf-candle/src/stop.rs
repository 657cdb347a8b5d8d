//! Stop strings: text is held back while it could still be the start of a stop string, so the
//! stop text is never emitted, even when it spans several tokens.

/// Buffers generated text and releases what cannot be part of a stop string.
#[derive(Debug, Default)]
pub struct StopBuffer {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopBuffer::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Safe text to emit now (may be empty).
    Emit(String),
    /// A stop string was completed: emit this text (what came before it) and finish.
    Stop(String),
}

impl StopBuffer {
    /// A buffer for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds decoded text.
    pub fn push(&mut self, text: &str) -> Scan {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return Scan::Emit(std::mem::take(&mut self.pending));
        }
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..pos].to_owned();
            self.pending.clear();
            return Scan::Stop(out);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let hold_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let rest = self.pending.split_off(hold_from);
        Scan::Emit(std::mem::replace(&mut self.pending, rest))
    }

    /// Releases what is still held (generation ended without completing a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanning_stop_is_cut_and_never_emitted() {
        let mut b = StopBuffer::new(&["###".into()]);
        assert_eq!(b.push("Hello #"), Scan::Emit("Hello ".into()));
        assert_eq!(b.push("#"), Scan::Emit(String::new()));
        assert_eq!(b.push("# tail"), Scan::Stop(String::new()));
    }

    #[test]
    fn false_prefix_is_released() {
        let mut b = StopBuffer::new(&["###".into(), "END".into()]);
        assert_eq!(b.push("a#"), Scan::Emit("a".into()));
        assert_eq!(b.push("#b"), Scan::Emit("##b".into()));
        assert_eq!(b.push("xEN"), Scan::Emit("x".into()));
        assert_eq!(b.finish(), "EN");
        let mut b = StopBuffer::new(&["é!".into()]);
        assert_eq!(b.push("café"), Scan::Emit("caf".into()));
        assert_eq!(b.push("!"), Scan::Stop(String::new()));
    }
}
