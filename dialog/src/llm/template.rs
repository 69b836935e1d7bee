//! Chat prompt rendering, chosen from the model's own metadata.
//!
//! GGUF files carry their Jinja chat template under `tokenizer.chat_template`. Rather than embed a
//! Jinja engine we recognise the template family from the markers it emits and render that family
//! natively: ChatML (`<|im_start|>role … <|im_end|>`, Qwen) and Gemma turns
//! (`<start_of_turn>user … <end_of_turn>`, the assistant's role is `model`, a system prompt is
//! folded into the first user turn). A template with neither marker is refused by name, so a new
//! model never silently gets a wrong prompt. A base model without a template (Gemma-3-270M) gets
//! the family whose control tokens its vocabulary defines, with a warning.

use super::{ChatMessage, Role};
use crate::DialogError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateFamily {
    /// `default_system` is what the template inserts when the conversation has no system message.
    ChatMl {
        default_system: Option<String>,
    },
    Gemma,
}

/// How the rendered prompt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptEnd<'a> {
    /// Ready for the assistant to answer; the answer is forced to begin with the given text.
    Assistant { prefix: &'a str },
    /// The last message is a user turn still being spoken: left open (no end-of-turn marker) so
    /// that the final transcript extends it and a speculative prefill stays a prefix.
    OpenUserTurn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    pub family: TemplateFamily,
    /// Where the template came from, for logs.
    pub source: &'static str,
}

const CHATML_START: &str = "<|im_start|>";
const CHATML_END: &str = "<|im_end|>";
const GEMMA_START: &str = "<start_of_turn>";
const GEMMA_END: &str = "<end_of_turn>";

impl ChatTemplate {
    /// `template`: the metadata string if present; `has_token`: whether the vocabulary defines a
    /// control token (consulted only when there is no template).
    pub fn detect(
        template: Option<&str>,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<Self, DialogError> {
        match template {
            Some(t) if t.contains(CHATML_START) => Ok(Self {
                family: TemplateFamily::ChatMl {
                    default_system: chatml_default_system(t),
                },
                source: "tokenizer.chat_template",
            }),
            Some(t) if t.contains(GEMMA_START) => Ok(Self {
                family: TemplateFamily::Gemma,
                source: "tokenizer.chat_template",
            }),
            Some(t) => Err(DialogError::UnknownChatTemplate {
                excerpt: t.chars().take(120).collect(),
            }),
            None if has_token(GEMMA_START) => {
                tracing::warn!("GGUF has no tokenizer.chat_template; using Gemma turns (the vocabulary defines <start_of_turn>); a base model may not follow them");
                Ok(Self {
                    family: TemplateFamily::Gemma,
                    source: "vocabulary (no template)",
                })
            }
            None if has_token(CHATML_START) => {
                tracing::warn!("GGUF has no tokenizer.chat_template; using ChatML (the vocabulary defines <|im_start|>)");
                Ok(Self {
                    family: TemplateFamily::ChatMl {
                        default_system: None,
                    },
                    source: "vocabulary (no template)",
                })
            }
            None => Err(DialogError::NoChatTemplate),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.family {
            TemplateFamily::ChatMl { .. } => "ChatML",
            TemplateFamily::Gemma => "Gemma turns",
        }
    }

    /// Tokens that end the assistant's turn (ids are looked up by the engine; absent ones skipped).
    pub fn stop_tokens(&self) -> &'static [&'static str] {
        match self.family {
            TemplateFamily::ChatMl { .. } => &[CHATML_END, "<|endoftext|>"],
            TemplateFamily::Gemma => &[GEMMA_END, "<eos>"],
        }
    }

    /// The prompt text, control tokens included as text (the tokenizer maps them to their ids).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        end: PromptEnd<'_>,
    ) -> Result<String, DialogError> {
        if matches!(end, PromptEnd::OpenUserTurn)
            && messages.last().map(|m| m.role) != Some(Role::User)
        {
            return Err(DialogError::BadRequest {
                reason: "an open user turn needs a user message last".into(),
            });
        }
        let open_last = matches!(end, PromptEnd::OpenUserTurn);
        let mut out = String::new();
        match &self.family {
            TemplateFamily::ChatMl { default_system } => {
                if messages.first().map(|m| m.role) != Some(Role::System) {
                    if let Some(s) = default_system {
                        out.push_str(&format!("{CHATML_START}system\n{s}{CHATML_END}\n"));
                    }
                }
                for (i, m) in messages.iter().enumerate() {
                    out.push_str(CHATML_START);
                    out.push_str(m.role.as_str());
                    out.push('\n');
                    out.push_str(&m.content);
                    if !(open_last && i + 1 == messages.len()) {
                        out.push_str(CHATML_END);
                        out.push('\n');
                    }
                }
                if let PromptEnd::Assistant { prefix } = end {
                    out.push_str(&format!("{CHATML_START}assistant\n{prefix}"));
                }
            }
            TemplateFamily::Gemma => {
                out.push_str("<bos>");
                let mut pending_system: Option<&str> = None;
                let mut rest = messages;
                if let Some((first, tail)) = messages.split_first() {
                    if first.role == Role::System {
                        pending_system = Some(&first.content);
                        rest = tail;
                    }
                }
                for (i, m) in rest.iter().enumerate() {
                    let role = match m.role {
                        Role::Assistant => "model",
                        Role::User | Role::System => "user",
                    };
                    out.push_str(GEMMA_START);
                    out.push_str(role);
                    out.push('\n');
                    if let Some(s) = pending_system.take() {
                        out.push_str(s);
                        out.push_str("\n\n");
                    }
                    out.push_str(m.content.trim());
                    if !(open_last && i + 1 == rest.len()) {
                        out.push_str(GEMMA_END);
                        out.push('\n');
                    }
                }
                if let PromptEnd::Assistant { prefix } = end {
                    if let Some(s) = pending_system.take() {
                        // Only a system prompt: it still has to reach the model.
                        out.push_str(&format!("{GEMMA_START}user\n{s}{GEMMA_END}\n"));
                    }
                    out.push_str(&format!("{GEMMA_START}model\n{prefix}"));
                }
            }
        }
        Ok(out)
    }
}

/// Qwen's template inserts a fixed system prompt when the conversation has none; it is the
/// `<|im_start|>system\n…<|im_end|>` literal whose body is plain text rather than an expression.
fn chatml_default_system(template: &str) -> Option<String> {
    let marker = "<|im_start|>system\\n";
    let mut rest = template;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        if let Some(end) = after.find(CHATML_END) {
            let body = &after[..end];
            if !body.is_empty()
                && !body.contains('\'')
                && !body.contains('"')
                && !body.contains("{{")
            {
                return Some(body.to_string());
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_SNIPPET: &str = r#"{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}"#;

    fn convo() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("Capital of France?"),
        ]
    }

    #[test]
    fn chatml_renders_like_the_qwen_template() {
        let t = ChatTemplate::detect(Some(QWEN_SNIPPET), |_| false).unwrap();
        assert_eq!(
            t.family,
            TemplateFamily::ChatMl {
                default_system: Some(
                    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into()
                )
            }
        );
        let p = t
            .render(&convo(), PromptEnd::Assistant { prefix: "" })
            .unwrap();
        assert_eq!(
            p,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let p = t
            .render(&convo()[1..2], PromptEnd::Assistant { prefix: "Well," })
            .unwrap();
        assert_eq!(
            p,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nWell,"
        );
        // The open user turn is a prefix of the finished prompt with the same text.
        let open = t.render(&convo(), PromptEnd::OpenUserTurn).unwrap();
        let full = t
            .render(&convo(), PromptEnd::Assistant { prefix: "" })
            .unwrap();
        assert!(full.starts_with(&open) && open.ends_with("Capital of France?"));
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn() {
        let t = ChatTemplate::detect(Some("{{ '<start_of_turn>' + role }}"), |_| false).unwrap();
        assert_eq!(t.family, TemplateFamily::Gemma);
        let p = t
            .render(&convo(), PromptEnd::Assistant { prefix: "" })
            .unwrap();
        assert_eq!(
            p,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn unknown_or_missing_templates_fail_clearly() {
        let e = ChatTemplate::detect(Some("[INST] {{ content }} [/INST]"), |_| false).unwrap_err();
        assert!(e.to_string().contains("[INST]"), "{e}");
        let e = ChatTemplate::detect(None, |_| false).unwrap_err();
        assert!(matches!(e, DialogError::NoChatTemplate), "{e}");
        // No template, but a vocabulary with Gemma's control tokens (the base 270M model).
        let t = ChatTemplate::detect(None, |tok| tok == "<start_of_turn>").unwrap();
        assert_eq!(t.family, TemplateFamily::Gemma);
        let e = t
            .render(&convo()[..3], PromptEnd::OpenUserTurn)
            .unwrap_err();
        assert!(matches!(e, DialogError::BadRequest { .. }));
    }
}
