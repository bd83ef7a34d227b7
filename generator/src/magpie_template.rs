//! Magpie's prompts, derived from the model's own chat template (never written per model: a
//! hard-coded template is what breaks when a model's differs, magpie issue #28).
//!
//! The conversation `[system?, user = SENTINEL]` is rendered without the assistant's opening:
//! what precedes the sentinel is the **pre-query** text (ChatML with a default system prompt:
//! `<|im_start|>system\n…<|im_end|>\n<|im_start|>user\n`), which the model continues by writing a
//! user's turn; what follows it, trimmed, is the end-of-user-turn marker (`<|im_end|>`,
//! `<|eot_id|>`, `[/INST]`, `<end_of_turn>`), a stop string of the instruction step. The same
//! cut after an assistant turn gives the end-of-assistant-turn marker (`</s>` for Mistral). The
//! rendering of an empty user turn must be the pre-query text and the user turn's end: a
//! template that rewrites the user's content (or never writes it) is refused. Without a system
//! prompt the template's default (Qwen's, SmolLM2's) is what the pre-query text holds; with one,
//! it replaces the default.

use instill_models::ChatTemplate;

/// Stands for the user's content while the template is cut; no template writes it.
const SENTINEL: &str = "\u{1}MAGPIE-USER-TURN\u{1}";

/// Stands for an assistant's content.
const ANSWER_SENTINEL: &str = "\u{1}MAGPIE-ASSISTANT-TURN\u{1}";

/// Why the pre-query text could not be derived from a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagpieTemplateError {
    /// The template failed to render the conversation (it may refuse a system prompt).
    #[error("{origin}: the chat template cannot render {what}: {message}")]
    Render {
        /// The model file or template the text came from.
        origin: String,
        /// Which conversation.
        what: &'static str,
        /// The template's error.
        message: String,
    },
    /// The user's content is not written once, as it is, in the rendering.
    #[error(
        "{origin}: the chat template does not write the user's message once and as it is ({found}), so the text before a user's turn cannot be told"
    )]
    NoUserTurn {
        /// The model file or template the text came from.
        origin: String,
        /// What was found.
        found: String,
    },
}

/// The prompts of a magpie run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagpieTemplate {
    /// The chat template the prompts are rendered with.
    pub template: ChatTemplate,
    /// The system prompt given (`None`: the template's default, if any).
    pub system: Option<String>,
    /// The text before a user's turn: the instruction step's whole prompt.
    pub pre_query: String,
    /// Stop strings: the end-of-user-turn marker, then the end-of-assistant-turn one when it
    /// differs (either may be absent from a template).
    pub stops: Vec<String>,
}

impl MagpieTemplate {
    /// Derives the prompts from `template` (`origin` names its file in errors).
    pub fn derive(
        template: ChatTemplate,
        system: Option<&str>,
        origin: &str,
    ) -> Result<MagpieTemplate, MagpieTemplateError> {
        let render = |what: &'static str, turns: &[(&str, &str)]| {
            template
                .render(&with_system(system, turns), false)
                .map_err(|e| MagpieTemplateError::Render {
                    origin: origin.to_string(),
                    what,
                    message: e.to_string(),
                })
        };
        let rendered = render("a user's turn", &[("user", SENTINEL)])?;
        let (pre_query, after) = cut_once(&rendered, SENTINEL, origin)?;
        // The same text around an empty turn: the template writes the content as it is.
        if let Ok(empty) = render("an empty user turn", &[("user", "")])
            && empty != format!("{pre_query}{after}")
        {
            return Err(MagpieTemplateError::NoUserTurn {
                origin: origin.to_string(),
                found: "an empty message changes the text around it".into(),
            });
        }
        let mut stops = vec![after.trim().to_string()];
        if let Ok(answered) = render(
            "an assistant's turn",
            &[("user", "hi"), ("assistant", ANSWER_SENTINEL)],
        ) && let Some((_, end)) = answered.split_once(ANSWER_SENTINEL)
        {
            stops.push(end.trim().to_string());
        }
        stops.retain(|s| !s.is_empty());
        stops.dedup();
        Ok(MagpieTemplate {
            system: system.map(str::to_string),
            pre_query: pre_query.to_string(),
            stops,
            template,
        })
    }

    /// The answer step's prompt: `instruction` as the user's turn (after the same system
    /// prompt), rendered by the chat template up to the assistant's opening.
    pub fn answer_prompt(&self, instruction: &str) -> Result<String, MagpieTemplateError> {
        self.template
            .render(
                &with_system(self.system.as_deref(), &[("user", instruction)]),
                true,
            )
            .map_err(|e| MagpieTemplateError::Render {
                origin: "the chat template".into(),
                what: "the answer's prompt",
                message: e.to_string(),
            })
    }
}

/// `turns` after a system turn when there is a system prompt.
fn with_system<'a>(
    system: Option<&'a str>,
    turns: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    system
        .map(|s| ("system", s))
        .into_iter()
        .chain(turns.iter().copied())
        .collect()
}

/// The text before and after the one occurrence of `sentinel` in `rendered`.
fn cut_once<'r>(
    rendered: &'r str,
    sentinel: &str,
    origin: &str,
) -> Result<(&'r str, &'r str), MagpieTemplateError> {
    let count = rendered.matches(sentinel).count();
    match rendered.split_once(sentinel) {
        Some((before, after)) if count == 1 => Ok((before, after)),
        _ => Err(MagpieTemplateError::NoUserTurn {
            origin: origin.to_string(),
            found: format!("the message appears {count} times"),
        }),
    }
}

#[cfg(test)]
#[path = "magpie_template_tests.rs"]
mod tests;
