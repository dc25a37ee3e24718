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

/// Where the prompt format came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateSource {
    /// The model's own `tokenizer.chat_template`.
    Model,
    /// The plain-text fallback (the model has no template).
    PlainFallback,
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateSource::Model => "model",
            TemplateSource::PlainFallback => "plain-fallback",
        })
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
    pub fn kind(&self) -> TemplateSource {
        if self.source.is_some() {
            TemplateSource::Model
        } else {
            TemplateSource::PlainFallback
        }
    }

    /// Stop strings the format needs in addition to the model's end-of-turn tokens.
    pub fn extra_stops(&self) -> Vec<String> {
        match self.kind() {
            TemplateSource::Model => Vec::new(),
            TemplateSource::PlainFallback => vec![FALLBACK_STOP.to_string()],
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
        assert_eq!(t.kind(), TemplateSource::PlainFallback);
        assert_eq!(t.extra_stops(), vec!["\nUser:".to_string()]);
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
