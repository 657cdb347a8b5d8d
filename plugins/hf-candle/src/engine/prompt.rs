//! The prompt a chat request runs on: the chat template (or a LLaMA-Factory named template)
//! rendered over the messages, a vision-language model's media substituted at their
//! placeholders, tokenized, and bounded before any tokenizing of an oversized input.

use serde_json::{Map, Value};
use switchyard_plugin::{ChatRequest, Message, Prompt, Role};

use super::HfCandle;
use crate::error::{Error, Result};
use crate::template::RenderInput;
use crate::vision::Prepared;
use crate::vision::request::MediaQueue;

impl HfCandle {
    /// Renders a conversation with the chat template (with `system` / the default system
    /// prompt applied as a leading system message).
    pub fn render(
        &self,
        messages: &[Message],
        system: Option<&str>,
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
        kwargs: &Map<String, Value>,
    ) -> Result<String> {
        self.render_with(messages, system, tools, add_generation_prompt, kwargs, None)
    }

    /// [`HfCandle::render`]; with `media` (a vision-language model's request), each placeholder
    /// becomes a marker for its media (the text around it escaped as usual), expanded after
    /// rendering by `VisionSpec::expand`.
    fn render_with(
        &self,
        messages: &[Message],
        system: Option<&str>,
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
        kwargs: &Map<String, Value>,
        mut media: Option<&mut MediaQueue>,
    ) -> Result<String> {
        let s = &self.shared;
        let mut msgs: Vec<Value> = Vec::with_capacity(messages.len() + 1);
        let has_system = messages.first().is_some_and(|m| m.role == Role::System);
        let rest = if system.is_some() && has_system {
            &messages[1..]
        } else {
            messages
        };
        // Text from the client never becomes control tokens (unless the config opts out).
        let text = |t: &str| {
            if s.escape_specials {
                s.tok.escape_specials(t)
            } else {
                t.to_owned()
            }
        };
        if let Some(sys) = system.or(if has_system {
            None
        } else {
            s.default_system.as_deref()
        }) {
            msgs.push(serde_json::to_value(Message::system(text(sys))).unwrap_or(Value::Null));
        }
        for m in rest {
            let mut m = m.clone();
            m.content = match (s.vision.as_ref(), media.as_deref_mut()) {
                (Some(v), Some(queue)) => v.substitute(&m, text, queue)?,
                _ => text(&m.content),
            };
            msgs.push(serde_json::to_value(m).map_err(|e| Error::InvalidRequest(e.to_string()))?);
        }
        s.template.render(&RenderInput {
            messages: &msgs,
            tools,
            add_generation_prompt,
            bos_token: s.tok.bos_token.as_deref(),
            eos_token: s.tok.eos_token.as_deref(),
            kwargs,
        })
    }

    /// The prompt text and ids a chat request runs on.
    pub fn prompt(&self, request: &ChatRequest) -> Result<(String, Vec<u32>)> {
        self.prompt_with_media(request)
            .map(|(text, ids, _)| (text, ids))
    }

    /// The prompt text and ids a chat request runs on, and (on a vision-language model) its
    /// media prepared, in prompt order: every media token is written out in the ids.
    pub fn prompt_with_media(
        &self,
        request: &ChatRequest,
    ) -> Result<(String, Vec<u32>, Vec<Prepared>)> {
        let s = &self.shared;
        let with_media = request.images.len() + request.videos.len() + request.audios.len() > 0;
        if let (Some(v), None, true) = (&s.vision, &request.prompt, with_media) {
            let (messages, mut queue) = v.prepare(request)?;
            let (text, ids) = self.conversation_ids(
                &messages,
                request.system.as_deref(),
                request.tools.as_deref(),
                true,
                &request.chat_template_kwargs,
                Some(&mut queue),
            )?;
            return Ok((text, ids, queue.into_ordered()));
        }
        let (text, ids) = self.prompt_text(request)?;
        Ok((text, ids, Vec::new()))
    }

    fn prompt_text(&self, request: &ChatRequest) -> Result<(String, Vec<u32>)> {
        let s = &self.shared;
        match &request.prompt {
            // A text completion: the prompt as is, tokenized as Transformers' `tokenizer(text)`
            // does (with the tokenizer's own BOS), no template.
            Some(Prompt::Text(text)) => {
                self.bound(text)?;
                Ok((text.clone(), s.tok.encode(text, true)?))
            }
            Some(Prompt::Tokens(ids)) => {
                let vocab = s.tok.inner.get_vocab_size(true);
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidRequest(format!(
                        "prompt token id {bad} is outside the vocabulary of {vocab} tokens"
                    )));
                }
                Ok((s.tok.decode(ids, false)?, ids.clone()))
            }
            None => self.conversation_ids(
                &request.messages,
                request.system.as_deref(),
                request.tools.as_deref(),
                true,
                &request.chat_template_kwargs,
                None,
            ),
        }
    }

    /// A conversation's text and ids: the named template's pieces tokenized one by one, or
    /// the chat template's text tokenized whole.
    pub(super) fn conversation_ids(
        &self,
        messages: &[Message],
        system: Option<&str>,
        tools: Option<&[Value]>,
        add_generation_prompt: bool,
        kwargs: &Map<String, Value>,
        mut media: Option<&mut MediaQueue>,
    ) -> Result<(String, Vec<u32>)> {
        let s = &self.shared;
        let Some(named) = &s.named else {
            let mut text = self.render_with(
                messages,
                system,
                tools,
                add_generation_prompt,
                kwargs,
                media.as_deref_mut(),
            )?;
            if let (Some(v), Some(queue)) = (&s.vision, media) {
                text = v.expand(&text, queue)?;
            }
            self.bound(&text)?;
            return Ok((text.clone(), s.tok.encode(&text, false)?));
        };
        if media.is_some() {
            return Err(Error::Unsupported(
                "images with `[model] template` (LLaMA-Factory's named templates) are not supported yet; leave it unset to use the model's chat template".into(),
            ));
        }
        self.bound_bytes(messages.iter().map(|m| m.content.len()).sum())?;
        let has_system = messages.first().is_some_and(|m| m.role == Role::System);
        let system = system.or(if has_system {
            None
        } else {
            s.default_system.as_deref()
        });
        named.encode(
            &s.tok,
            messages,
            system,
            tools,
            add_generation_prompt,
            kwargs,
        )
    }

    /// Bounds the work by the context before tokenizing: a prompt of n bytes has at least
    /// n / (longest token) tokens, so a huge message is refused in microseconds.
    fn bound(&self, text: &str) -> Result<()> {
        self.bound_bytes(text.len())
    }

    /// [`Self::bound`] for a prompt of `bytes` bytes.
    fn bound_bytes(&self, bytes: usize) -> Result<()> {
        let s = &self.shared;
        let min_tokens = bytes / s.tok.longest_token_bytes();
        if min_tokens >= s.context_length {
            return Err(Error::InvalidRequest(format!(
                "the prompt is {bytes} bytes, so at least {min_tokens} tokens, but the context window is {} tokens; shorten the conversation",
                s.context_length
            )));
        }
        Ok(())
    }
}
