//! Conversation memory bounded by tokens: the system message always stays, whole exchanges are
//! forgotten oldest first when the budget is exceeded, and the newest user message is never
//! dropped (if it alone overflows the context, the engine reports that clearly).

use crate::llm::{ChatMessage, Role};
use std::collections::VecDeque;

/// Counts tokens the way the model will see them.
pub trait TokenCounter {
    fn count(&self, text: &str) -> usize;
}

impl TokenCounter for tokenizers::Tokenizer {
    fn count(&self, text: &str) -> usize {
        // An unencodable text counts by bytes: over-estimating only forgets sooner.
        self.encode(text, false)
            .map(|e| e.len())
            .unwrap_or(text.len())
    }
}

/// For remote models whose tokenizer is unknown: ~4 bytes per token for English, rounded up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteEstimate;

impl TokenCounter for ByteEstimate {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

/// Template tokens around each message: `<|im_start|>`, role, `\n`, …, `<|im_end|>`, `\n`.
pub const PER_MESSAGE_OVERHEAD: usize = 5;

pub struct ConversationMemory<C: TokenCounter> {
    system: ChatMessage,
    turns: VecDeque<(ChatMessage, usize)>,
    max_tokens: usize,
    counter: C,
    system_tokens: usize,
    turn_tokens: usize,
}

impl<C: TokenCounter> ConversationMemory<C> {
    pub fn new(system: ChatMessage, max_tokens: usize, counter: C) -> Self {
        let system_tokens = counter.count(&system.content) + PER_MESSAGE_OVERHEAD;
        Self {
            system,
            turns: VecDeque::new(),
            max_tokens,
            counter,
            system_tokens,
            turn_tokens: 0,
        }
    }

    pub fn push(&mut self, message: ChatMessage) {
        let n = self.counter.count(&message.content) + PER_MESSAGE_OVERHEAD;
        self.turns.push_back((message, n));
        self.turn_tokens += n;
        self.trim();
    }

    pub fn push_user(&mut self, text: impl Into<String>) {
        self.push(ChatMessage::user(text));
    }

    pub fn push_assistant(&mut self, text: impl Into<String>) {
        self.push(ChatMessage::assistant(text));
    }

    /// Tokens of everything remembered, template overhead included.
    pub fn tokens(&self) -> usize {
        self.system_tokens + self.turn_tokens
    }

    /// The system message then the remembered turns, oldest first: a request's `messages`.
    pub fn messages(&self) -> Vec<ChatMessage> {
        std::iter::once(self.system.clone())
            .chain(self.turns.iter().map(|(m, _)| m.clone()))
            .collect()
    }

    /// `messages()` plus a user message not yet remembered (a partial transcript to prefill).
    pub fn messages_with_user(&self, partial: &str) -> Vec<ChatMessage> {
        let mut m = self.messages();
        m.push(ChatMessage::user(partial));
        m
    }

    fn trim(&mut self) {
        while self.tokens() > self.max_tokens && self.turns.len() > 1 {
            // Drop the oldest exchange whole: its user message and the replies that follow, so
            // the remembered conversation still starts with a user turn.
            let mut dropped_user = false;
            while self.turns.len() > 1 {
                let is_user = self
                    .turns
                    .front()
                    .map(|(m, _)| m.role == Role::User)
                    .unwrap_or(false);
                if is_user && dropped_user {
                    break;
                }
                if let Some((_, n)) = self.turns.pop_front() {
                    self.turn_tokens -= n;
                }
                dropped_user |= is_user;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_exchanges_go_first_and_system_stays() {
        // ByteEstimate: "aaaa…" of 36 bytes = 9 tokens + 5 overhead = 14 per message.
        let msg = |c: char| c.to_string().repeat(36);
        let mut m =
            ConversationMemory::new(ChatMessage::system("s".repeat(36)), 14 * 5, ByteEstimate);
        m.push_user(msg('a'));
        m.push_assistant(msg('b'));
        m.push_user(msg('c'));
        m.push_assistant(msg('d'));
        assert_eq!(m.tokens(), 70);
        assert_eq!(m.messages().len(), 5);
        m.push_user(msg('e')); // 84 > 70: the a/b exchange goes
        let got: Vec<(Role, char)> = m
            .messages()
            .iter()
            .map(|x| (x.role, x.content.chars().next().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Role::System, 's'),
                (Role::User, 'c'),
                (Role::Assistant, 'd'),
                (Role::User, 'e')
            ]
        );
        assert_eq!(m.tokens(), 56);
        // A huge last message is kept alone with the system message.
        m.push_assistant("x".repeat(4000));
        m.push_user("y".repeat(4000));
        let got = m.messages();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].role, Role::System);
        assert_eq!(got[1].content.len(), 4000);
    }
}
