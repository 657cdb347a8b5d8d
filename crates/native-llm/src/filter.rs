//! A per-sequence rule on which tokens may come next, supplied by the caller (structured
//! outputs: a JSON schema, a grammar, a forced tool call). The engine knows nothing of
//! grammars; it calls the filter around each sampling step: [`TokenFilter::mask`] before the
//! sampler sees the logits, [`TokenFilter::accept`] with the token it chose.

/// Which tokens a sequence may produce next.
pub trait TokenFilter: Send {
    /// Sets the logits of the tokens that may not come next to `-inf` (at least one end id
    /// must stay allowed once the rule is satisfied). An error fails the request.
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String>;
    /// Takes the sampled token (one the mask allowed). An error fails the request.
    fn accept(&mut self, id: u32) -> Result<(), String>;
    /// A copy at the same state, for another sequence of the same request (`n > 1`).
    fn fork(&self) -> Box<dyn TokenFilter>;
}
