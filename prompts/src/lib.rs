//! instill-prompts: the prompt templates generation and judging send (minijinja, shipped in the
//! crate, worded by the instill team) and the parsers of the replies they ask for. No IO: every
//! file comes in as `&str`.
//!
//! - [`Template`]: `en/self_instruct` (the Alpaca recipe: 20 tasks, `<noinput>`) and
//!   `zh/self_instruct` (the BELLE recipe: 10 tasks, `指令/输入/输出`, `<无输入>`), their
//!   chain-of-thought variants `en/cot`, `zh/cot` (each output's reasoning in a `<think>` block
//!   before the answer), each in chat and completion [`Shape`]s, or a user's own file whose
//!   first line declares its reply format.
//! - [`ChatPrompts`]: multi-turn self-chat (`generate --mode chat`): a user simulator (an
//!   opening inspired by seed tasks, then follow-ups) and an assistant, Chinese and English;
//!   [`clean_turn`] a reply as the message it plays.
//! - [`EvolvePrompts`]: Evol-Instruct (`instill evolve`): five in-depth rewrites and an
//!   in-breadth one, the equality judge ([`parse_equality`]) and a chain-of-thought answering
//!   prompt, Chinese and English; [`clean_rewrite`] a reply as the new instruction;
//!   [`text_elimination`] the paper's elimination rules on the text (a copied prompt, a short
//!   apology, only stop words).
//! - [`parse_reply`]: a reply back into [`instill_core::Record`]s, with counted issues.
//! - [`Rubric`]: what an LLM judge reads to score a stored record (built-in English and Chinese,
//!   1–10, or a user's file with its [`Scale`] in a header), with a content hash.
//! - [`parse_score`]: any reasonable judge reply to a [`Verdict`] on a scale, or [`NoScore`]
//!   with the reason.
//! - [`parse_eval_set`], [`JudgePrompts`]: BELLE's evaluation files (questions with reference
//!   answers and classes; a judge prompt per class, ours built in), [`normalize_class`] to
//!   pair them, [`JudgePrompts::request`] the judge's request for one answer.
//! - [`pairwise_request`], [`parse_preference`]: a judge comparing two answers (`[[A]]`,
//!   `[[B]]`, `[[C]]`).
//!
//! ```
//! use instill_prompts::{Example, Shape, Template, parse_reply};
//! let t = Template::builtin("zh/self_instruct", Shape::Chat)?;
//! let prompt = t.render(&[Example { instruction: "写一首诗".into(), input: "".into(), output: "……".into() }])?;
//! assert!(prompt.contains("1. 指令: 写一首诗"));
//! let reply = "2. 指令：介绍长城\n2. 输入：\n<无输入>\n2. 输出：\n长城是……";
//! let parsed = parse_reply(reply, t.format, &t.reply_prefix(1), false);
//! assert_eq!(parsed.items[0].instruction, "介绍长城");
//! # Ok::<(), instill_prompts::TemplateError>(())
//! ```
//!
//! ```
//! use instill_core::Lang;
//! use instill_prompts::{JudgePrompts, Rubric, parse_eval_set, parse_score};
//! let rubric = Rubric::builtin(Lang::En)?;
//! let prompt = rubric.render("Name a prime number.", "", "7", &[])?;
//! assert!(prompt.ends_with("Score: N"));
//! let verdict = parse_score("Correct and concise.\n**Score:** 9", rubric.scale()).unwrap();
//! assert_eq!((verdict.score, verdict.rationale.as_str()), (9.0, "Correct and concise."));
//!
//! let items = parse_eval_set(r#"{"question": "1+1=?", "std_answer": "2", "class": "math"}"#)?;
//! let prompts = JudgePrompts::builtin()?;
//! let request = prompts.request(&items[0], "2")?;
//! assert!(request.trim_end().ends_with("得分: X"));
//! assert_eq!(parse_score("结果正确。\n得分: 1", prompts.scale()).unwrap().score, 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chat;
mod eliminate;
mod eval_prompts;
mod eval_set;
#[cfg(test)]
mod eval_tests;
mod evolve;
mod judge;
#[cfg(test)]
mod judge_tests;
mod pairwise;
mod parse;
mod score;
#[cfg(test)]
mod score_tests;
mod template;

pub use chat::{ChatPrompts, clean_turn};
pub use eliminate::{
    answer_elimination, copies_prompt, is_short_apology, only_stop_words, rewrite_elimination,
    text_elimination,
};
pub use eval_prompts::{ClassPrompt, JudgePrompts, JudgeRequestError, judge_request};
pub use eval_set::{EvalFileError, EvalItem, class_counts, normalize_class, parse_eval_set};
pub use evolve::{EvolvePrompts, PROMPT_MARKERS, clean_rewrite, given_text, parse_equality};
pub use judge::{Rubric, RubricError};
pub use pairwise::{Preference, pairwise_request, parse_preference};
pub use parse::{Parsed, ReplyFormat, parse_reply};
pub use score::{NoScore, Scale, Verdict, parse_score};
pub use template::{Example, Shape, Template, TemplateError};

#[cfg(test)]
mod tests {
    use super::*;
    use instill_core::Record;

    fn examples() -> Vec<Example> {
        vec![
            Example {
                instruction: "Give three tips for sleeping well.".into(),
                input: "".into(),
                output: "Keep a schedule.".into(),
            },
            Example {
                instruction: "Sort the numbers.".into(),
                input: "3, 1, 2".into(),
                output: "1, 2, 3".into(),
            },
        ]
    }

    /// Render → a reply in the template's own format → parse gives the tasks back, for every
    /// built-in template.
    #[test]
    fn every_builtin_template_round_trips() {
        let tasks = [
            Record::new("Name a prime number.", "", "7"),
            Record::new("把句子翻译成英文。", "你好", "Hello"),
            Record::new("Summarize: \"a: b\" ### not a split?", "x", "y"),
        ];
        // The chain-of-thought templates ask for a <think> block before each answer, which
        // the reply keeps in the output (generation moves it into the record's reasoning).
        let cot: Vec<Record> = tasks
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.output = instill_core::inline_think("1. step one\n2. step two", &r.output);
                r
            })
            .collect();
        for lang in ["en/self_instruct", "zh/self_instruct", "en/cot", "zh/cot"] {
            let tasks = if lang.ends_with("cot") {
                &cot
            } else {
                &tasks[..]
            };
            for shape in [Shape::Chat, Shape::Completion] {
                let t = Template::builtin(lang, shape).unwrap();
                let prompt = t.render(&examples()).unwrap();
                assert_eq!(prompt.contains("</think>"), lang.ends_with("cot"), "{lang}");
                assert!(prompt.contains("Give three tips for sleeping well."));
                let (li, ..) = t.format.labels();
                assert!(prompt.contains(&format!("2. {li}: Sort the numbers.")));
                let mut reply = t.format.write(3, &tasks[..2]);
                if shape == Shape::Completion {
                    assert!(prompt.ends_with(&format!("3. {li}:")), "{prompt:?}");
                    reply = reply.replacen(&format!("3. {li}:"), "", 1);
                }
                let parsed = parse_reply(&reply, t.format, &t.reply_prefix(2), false);
                assert_eq!(parsed.items, tasks[..2].to_vec(), "{lang} {shape:?}");
                assert_eq!(parsed.issues, 0);
            }
        }
    }

    #[test]
    fn user_templates_declare_their_format() {
        let t = Template::from_source("mine.j2", "{#- instill: format=zh shape=completion tasks=8 -#}\n{% for e in examples %}{{ e.instruction }}\n{% endfor %}{{ next }}. 指令:").unwrap();
        assert_eq!(
            (t.format, t.shape, t.tasks),
            (ReplyFormat::Zh, Shape::Completion, 8)
        );
        assert_eq!(t.reply_prefix(2), "3. 指令:");
        let err = Template::from_source("bad.j2", "no header\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bad.j2: the first line must declare the reply format"),
            "{err}"
        );
        let err = Template::from_source("bad.j2", "{# instill: format=fr #}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown format `fr`"), "{err}");
        let err = Template::from_source("bad.j2", "{# instill: format=en #}\n{% for %}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.j2: "), "{err}");
        assert!(Template::builtin("fr/self_instruct", Shape::Chat).is_err());
    }
}
