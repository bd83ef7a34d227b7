//! Multi-turn self-chat (`generate --mode chat`): the user simulator's prompt (an opening
//! inspired by seed tasks, then follow-ups to the assistant's answers) and the assistant's
//! prompt (the conversation so far and the user's new message), built in for Chinese and
//! English (`templates/{zh,en}/chat_{user,assistant}.j2`, worded by the team), and
//! [`clean_turn`], which turns a reply into the message it plays.

use instill_core::{Exchange, Lang};
use minijinja::{Environment, context};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use crate::template::{Example, TemplateError};

const USER: &str = "user";
const ASSISTANT: &str = "assistant";

/// The two prompts of a self-chat, compiled.
#[derive(Debug, Clone)]
pub struct ChatPrompts {
    name: String,
    env: Environment<'static>,
    hash: String,
}

/// An exchange as the templates see it (`t.user`, `t.assistant`).
#[derive(Serialize)]
struct Turn<'a> {
    user: &'a str,
    assistant: &'a str,
}

impl ChatPrompts {
    /// The built-in prompts of `lang` (Chinese for `zh`, English otherwise).
    pub fn builtin(lang: Lang) -> Result<ChatPrompts, TemplateError> {
        let (name, user, assistant) = match lang {
            Lang::Zh => (
                "zh/chat",
                include_str!("../templates/zh/chat_user.j2"),
                include_str!("../templates/zh/chat_assistant.j2"),
            ),
            Lang::En | Lang::Other => (
                "en/chat",
                include_str!("../templates/en/chat_user.j2"),
                include_str!("../templates/en/chat_assistant.j2"),
            ),
        };
        let mut env = Environment::new();
        for (part, text) in [(USER, user), (ASSISTANT, assistant)] {
            env.add_template(part, text)
                .map_err(|e| TemplateError::Render {
                    source_name: format!("{name}/{part}"),
                    message: e.to_string(),
                })?;
        }
        Ok(ChatPrompts {
            name: name.to_string(),
            env,
            hash: format!(
                "{:032x}",
                xxh3_128(format!("{user}\u{1f}{assistant}").as_bytes())
            ),
        })
    }

    /// `zh/chat` or `en/chat`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A hash of both templates' text (a run's fingerprint holds it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The user simulator's prompt: with no `turns`, the conversation's opening, inspired by
    /// `examples`; otherwise a follow-up to the last answer.
    pub fn user(&self, examples: &[Example], turns: &[Exchange]) -> Result<String, TemplateError> {
        self.render(
            USER,
            context! {
                examples => minijinja::value::Serde(examples),
                turns => minijinja::value::Serde(as_turns(turns)),
            },
        )
    }

    /// The assistant's prompt: the exchanges so far, then the user's new `question`.
    pub fn assistant(&self, turns: &[Exchange], question: &str) -> Result<String, TemplateError> {
        self.render(
            ASSISTANT,
            context! { turns => minijinja::value::Serde(as_turns(turns)), question },
        )
    }

    fn render(&self, part: &str, ctx: minijinja::Value) -> Result<String, TemplateError> {
        let err = |e: minijinja::Error| TemplateError::Render {
            source_name: format!("{}/{part}", self.name),
            message: e.to_string(),
        };
        self.env
            .get_template(part)
            .map_err(err)?
            .render(ctx)
            .map_err(err)
    }
}

fn as_turns(turns: &[Exchange]) -> Vec<Turn<'_>> {
    turns
        .iter()
        .map(|e| Turn {
            user: e.user(),
            assistant: e.assistant(),
        })
        .collect()
}

/// Role labels a model may put before the message it was asked to write.
const LABELS: [&str; 8] = [
    "用户：",
    "用户:",
    "助手：",
    "助手:",
    "User:",
    "user:",
    "Assistant:",
    "assistant:",
];

/// A reply as the turn it plays: trimmed, without a leading role label (`用户：`, `User:`,
/// `Assistant:`…) and without quotes wrapped around the whole message.
pub fn clean_turn(reply: &str) -> String {
    let mut t = reply.trim();
    for label in LABELS {
        if let Some(rest) = t.strip_prefix(label) {
            t = rest.trim_start();
            break;
        }
    }
    for (open, close) in [('"', '"'), ('“', '”'), ('「', '」')] {
        if let Some(inner) = t.strip_prefix(open).and_then(|s| s.strip_suffix(close))
            && !inner.contains(open)
            && !inner.contains(close)
        {
            t = inner.trim();
            break;
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<Example> {
        vec![Example {
            instruction: "写一首关于秋天的诗".into(),
            input: String::new(),
            output: "……".into(),
        }]
    }

    #[test]
    fn the_user_opens_from_the_seeds_then_follows_up_on_the_answers() {
        for lang in [Lang::Zh, Lang::En] {
            let p = ChatPrompts::builtin(lang).unwrap();
            let opening = p.user(&examples(), &[]).unwrap();
            assert!(opening.contains("- 写一首关于秋天的诗"), "{opening}");
            let turns = [Exchange("问题一".into(), "回答一".into())];
            let follow = p.user(&examples(), &turns).unwrap();
            assert!(follow.contains("问题一") && follow.contains("回答一"));
            assert!(!follow.contains("写一首关于秋天的诗"));
            let answer = p.assistant(&turns, "问题二").unwrap();
            assert!(answer.contains("回答一") && answer.contains("问题二"));
            let first = p.assistant(&[], "问题一").unwrap();
            assert!(first.contains("问题一") && !first.contains("回答一"));
        }
        let zh = ChatPrompts::builtin(Lang::Zh).unwrap();
        assert!(zh.user(&examples(), &[]).unwrap().contains("用户的身份"));
        assert_eq!(zh.name(), "zh/chat");
        assert_ne!(zh.hash(), ChatPrompts::builtin(Lang::En).unwrap().hash());
    }

    #[test]
    fn a_reply_loses_its_role_label_and_wrapping_quotes() {
        for (reply, want) in [
            ("  用户：能再举个例子吗？\n", "能再举个例子吗？"),
            ("User: \"How long does it take?\"", "How long does it take?"),
            ("“为什么？”", "为什么？"),
            ("\"a\" and \"b\"", "\"a\" and \"b\""),
            ("Plain answer.", "Plain answer."),
        ] {
            assert_eq!(clean_turn(reply), want);
        }
    }
}
