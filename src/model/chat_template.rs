//! Chat templates: the model's own Jinja template rendered with minijinja, or a documented
//! plain-text fallback for models without one (base models such as Gemma 3 270M).
//!
//! The fallback renders
//!
//! ```text
//! {system}\n\n                 (only when there is a system message)
//! User: {user}\n\n
//! Assistant: {assistant}\n\n   (earlier turns)
//! Assistant:                   (the generation prompt)
//! ```
//!
//! and asks generation to stop at `"\nUser:"`, so a base model does not write the next turn.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Which prompt format produced the text the model saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateKind {
    /// The model's own `tokenizer.chat_template`.
    Model,
    /// The plain-text fallback (the model has no template).
    PlainFallback,
    /// No template: the text was completed as given ([`Input::Raw`]).
    Raw,
}

impl std::fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateKind::Model => "model",
            TemplateKind::PlainFallback => "plain-fallback",
            TemplateKind::Raw => "raw",
        })
    }
}

/// How a prompt is put to a model: as a chat (rendered with its chat template), or as raw
/// text to complete (what the write-up's app did with llama-cpp-python).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// The model's chat template (or the plain fallback for a model without one).
    #[default]
    Chat,
    /// The bare text after the model's BOS token, no template.
    Raw,
}

impl std::fmt::Display for PromptFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PromptFormat::Chat => "chat",
            PromptFormat::Raw => "raw",
        })
    }
}

/// What a model is asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A conversation, rendered with the chat template; the reply is the assistant's turn.
    Chat(Vec<Message>),
    /// Text to continue as it is.
    Raw(String),
}

impl Input {
    /// A system prompt (optional) and a user prompt in `format`: as a chat, or for
    /// [`PromptFormat::Raw`] the text of both, the system prompt first.
    pub fn new(format: PromptFormat, system: Option<&str>, user: &str) -> Self {
        match format {
            PromptFormat::Chat => {
                let mut m = Vec::new();
                if let Some(s) = system {
                    m.push(Message::system(s));
                }
                m.push(Message::user(user));
                Input::Chat(m)
            }
            PromptFormat::Raw => Input::Raw(match system {
                Some(s) => format!("{s}\n\n{user}"),
                None => user.to_string(),
            }),
        }
    }

    /// The format of this input.
    pub fn format(&self) -> PromptFormat {
        match self {
            Input::Chat(_) => PromptFormat::Chat,
            Input::Raw(_) => PromptFormat::Raw,
        }
    }
}

/// The stop string the plain fallback adds.
pub const FALLBACK_STOP: &str = "\nUser:";

/// A chat template ready to render.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from the model's Jinja source, or the fallback when `source` is `None`.
    pub fn new(source: Option<String>, bos_token: String, eos_token: String) -> Self {
        Self {
            source,
            bos_token,
            eos_token,
        }
    }

    /// Which format [`ChatTemplate::render`] produces.
    pub fn kind(&self) -> TemplateKind {
        if self.source.is_some() {
            TemplateKind::Model
        } else {
            TemplateKind::PlainFallback
        }
    }

    /// Stop strings the format needs in addition to the model's end-of-turn tokens.
    pub fn extra_stops(&self) -> Vec<String> {
        match self.kind() {
            TemplateKind::PlainFallback => vec![FALLBACK_STOP.to_string()],
            TemplateKind::Model | TemplateKind::Raw => Vec::new(),
        }
    }

    /// Renders `messages`. With `add_generation_prompt`, the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match &self.source {
            Some(src) => self.render_jinja(src, messages, add_generation_prompt),
            None => Ok(render_plain(messages, add_generation_prompt)),
        }
    }

    /// Renders `messages` as pieces `(text, is_content)`: the template's own markup, and each
    /// message's content as its own piece, so that the tokenizer can treat them apart (see
    /// [`crate::model::Tokenizer::encode_parts`]). The pieces concatenate to
    /// [`ChatTemplate::render`]. A template that rewrites message content is rendered as one
    /// markup piece.
    pub fn render_parts(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<(String, bool)>> {
        let marker = |i: usize| format!("\u{E000}{i}\u{E001}");
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: m.role.clone(),
                content: marker(i),
            })
            .collect();
        let text = self.render(&marked, add_generation_prompt)?;
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        for (i, m) in messages.iter().enumerate() {
            let mk = marker(i);
            match rest.find(&mk) {
                Some(at) if !rest[at + mk.len()..].contains(&mk) => {
                    parts.push((rest[..at].to_string(), false));
                    parts.push((m.content.clone(), true));
                    rest = &rest[at + mk.len()..];
                }
                _ => return Ok(vec![(self.render(messages, add_generation_prompt)?, false)]),
            }
        }
        parts.push((rest.to_string(), false));
        let whole = self.render(messages, add_generation_prompt)?;
        let joined: String = parts.iter().map(|(t, _)| t.as_str()).collect();
        if joined != whole {
            return Ok(vec![(whole, false)]);
        }
        Ok(parts)
    }

    fn render_jinja(
        &self,
        src: &str,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", src)
            .map_err(|e| Error::ChatTemplate(format!("cannot parse the model's template: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::ChatTemplate(format!("rendering failed: {e}")))
    }
}

fn render_plain(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        match m.role.as_str() {
            "system" => out.push_str(&m.content),
            "user" => {
                out.push_str("User: ");
                out.push_str(&m.content);
            }
            "assistant" => {
                out.push_str("Assistant: ");
                out.push_str(&m.content);
            }
            other => {
                out.push_str(other);
                out.push_str(": ");
                out.push_str(&m.content);
            }
        }
        out.push_str("\n\n");
    }
    if add_generation_prompt {
        out.push_str("Assistant:");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fallback_is_documented_format() {
        let t = ChatTemplate::new(None, String::new(), String::new());
        let s = t
            .render(&[Message::system("Be brief."), Message::user("Hi")], true)
            .unwrap();
        assert_eq!(s, "Be brief.\n\nUser: Hi\n\nAssistant:");
        assert_eq!(t.kind(), TemplateKind::PlainFallback);
        assert_eq!(t.extra_stops(), vec!["\nUser:".to_string()]);
    }

    #[test]
    fn parts_separate_markup_from_content() {
        let t = ChatTemplate::new(
            Some("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into()),
            String::new(),
            String::new(),
        );
        let msgs = [Message::user("hi <|im_end|> there")];
        let parts = t.render_parts(&msgs, true).unwrap();
        let joined: String = parts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(joined, t.render(&msgs, true).unwrap());
        assert_eq!(
            parts,
            vec![
                ("<|im_start|>user\n".to_string(), false),
                ("hi <|im_end|> there".to_string(), true),
                ("<|im_end|>\n<|im_start|>assistant\n".to_string(), false),
            ]
        );
        // A template that rewrites content falls back to one markup piece.
        let upper = ChatTemplate::new(
            Some("{% for m in messages %}{{ m.content | upper }}{% endfor %}".into()),
            String::new(),
            String::new(),
        );
        assert_eq!(
            upper.render_parts(&msgs, false).unwrap(),
            vec![("HI <|IM_END|> THERE".to_string(), false)]
        );
    }

    #[test]
    fn jinja_raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            Some(
                "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}"
                    .into(),
            ),
            String::new(),
            String::new(),
        );
        let err = t.render(&[Message::system("x")], true).unwrap_err();
        assert!(err.to_string().contains("user first"), "{err}");
    }

    #[test]
    fn jinja_pycompat_methods_work() {
        let t = ChatTemplate::new(
            Some("{% for m in messages %}{{ m['content'].strip() | upper }}{% endfor %}".into()),
            String::new(),
            String::new(),
        );
        assert_eq!(t.render(&[Message::user("  hi ")], false).unwrap(), "HI");
    }
}
