//! Evol-Instruct (`instill evolve`), text side: the rewrite prompts (five in-depth operations
//! and the in-breadth one), the equality judge that decides whether a rewrite gained anything,
//! the chain-of-thought answering prompt, built in for Chinese and English
//! (`templates/{zh,en}/evolve_*.j2`, worded by the team); [`clean_rewrite`] a reply as the new
//! instruction, [`parse_equality`] the judge's verdict, and [`PROMPT_MARKERS`], the template
//! words a rewrite must not copy (see `eliminate.rs`).

use instill_core::{EvolveOp, Lang};
use minijinja::{Environment, context};
use xxhash_rust::xxh3::xxh3_128;

use crate::chat::clean_turn;
use crate::template::TemplateError;

/// The templates, by name, per language.
const TEMPLATES: [(&str, &str, &str); 8] = [
    (
        "zh/evolve_depth",
        "depth",
        include_str!("../templates/zh/evolve_depth.j2"),
    ),
    (
        "zh/evolve_breadth",
        "breadth",
        include_str!("../templates/zh/evolve_breadth.j2"),
    ),
    (
        "zh/evolve_judge",
        "judge",
        include_str!("../templates/zh/evolve_judge.j2"),
    ),
    (
        "zh/evolve_answer_cot",
        "answer_cot",
        include_str!("../templates/zh/evolve_answer_cot.j2"),
    ),
    (
        "en/evolve_depth",
        "depth",
        include_str!("../templates/en/evolve_depth.j2"),
    ),
    (
        "en/evolve_breadth",
        "breadth",
        include_str!("../templates/en/evolve_breadth.j2"),
    ),
    (
        "en/evolve_judge",
        "judge",
        include_str!("../templates/en/evolve_judge.j2"),
    ),
    (
        "en/evolve_answer_cot",
        "answer_cot",
        include_str!("../templates/en/evolve_answer_cot.j2"),
    ),
];

/// The words of the rewrite templates that name their parts: a rewrite holding one (in any
/// case) copied the prompt rather than rewriting the instruction (Evol-Instruct's fourth
/// elimination rule). The labels a reply starts with are [`OUTPUT_LABELS`].
pub const PROMPT_MARKERS: [&str; 12] = [
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "#给定的指令#",
    "#改写后的指令#",
    "#创作的指令#",
    "给定的指令",
    "改写后的指令",
    "创作的指令",
];

/// The labels the rewrite templates end with: a reply that starts by repeating one has it
/// removed (the rest is the rewrite); anywhere else it is a copied marker.
const OUTPUT_LABELS: [&str; 4] = [
    "#Rewritten Prompt#",
    "#Created Prompt#",
    "#改写后的指令#",
    "#创作的指令#",
];

/// The prompts of an evolve run, compiled.
#[derive(Debug, Clone)]
pub struct EvolvePrompts {
    env: Environment<'static>,
    hash: String,
}

impl EvolvePrompts {
    /// The built-in prompts, Chinese and English.
    pub fn builtin() -> Result<EvolvePrompts, TemplateError> {
        let mut env = Environment::new();
        let mut all = String::new();
        for (name, _, text) in TEMPLATES {
            env.add_template(name, text)
                .map_err(|e| TemplateError::Render {
                    source_name: name.to_string(),
                    message: e.to_string(),
                })?;
            all.push_str(text);
            all.push('\u{1f}');
        }
        Ok(EvolvePrompts {
            env,
            hash: format!("{:032x}", xxh3_128(all.as_bytes())),
        })
    }

    /// A hash of every template's text (a run's fingerprint holds it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The prompt rewriting `given` (an instruction, its input after it) by `op`, in `lang`'s
    /// template (Chinese for `zh`, English otherwise).
    pub fn rewrite(&self, op: EvolveOp, lang: Lang, given: &str) -> Result<String, TemplateError> {
        let part = if op.is_depth() { "depth" } else { "breadth" };
        self.render(lang, part, context! { op => op.as_str(), given })
    }

    /// The judge's prompt: is `second` (a rewrite) equal to `first` (its original)?
    pub fn judge(&self, lang: Lang, first: &str, second: &str) -> Result<String, TemplateError> {
        self.render(lang, "judge", context! { first, second })
    }

    /// The answering prompt of `instruction`: itself, or with `cot` a request for step-by-step
    /// reasoning in a `<think>` block before the answer.
    pub fn answer(
        &self,
        lang: Lang,
        instruction: &str,
        cot: bool,
    ) -> Result<String, TemplateError> {
        if !cot {
            return Ok(instruction.to_string());
        }
        self.render(lang, "answer_cot", context! { instruction })
    }

    fn render(
        &self,
        lang: Lang,
        part: &str,
        ctx: minijinja::Value,
    ) -> Result<String, TemplateError> {
        let code = if lang == Lang::Zh { "zh" } else { "en" };
        let name = format!("{code}/evolve_{part}");
        let err = |e: minijinja::Error| TemplateError::Render {
            source_name: name.clone(),
            message: e.to_string(),
        };
        self.env
            .get_template(&name)
            .map_err(err)?
            .render(ctx)
            .map_err(err)
    }
}

/// The text a rewrite prompt shows as the given instruction: the instruction, then its input
/// (Evol-Instruct rewrites them as one prompt).
pub fn given_text(instruction: &str, input: &str) -> String {
    if input.trim().is_empty() {
        instruction.trim().to_string()
    } else {
        format!("{}\n\n{}", instruction.trim(), input.trim())
    }
}

/// A rewrite reply as the new instruction: trimmed, a leading output label (`#Rewritten
/// Prompt#:`, `#改写后的指令#：`) removed, quotes wrapped around the whole removed.
pub fn clean_rewrite(reply: &str) -> String {
    let mut t = reply.trim();
    for label in OUTPUT_LABELS {
        if t.len() >= label.len()
            && t.is_char_boundary(label.len())
            && t[..label.len()].eq_ignore_ascii_case(label)
        {
            t = t[label.len()..].trim_start();
            t = t
                .strip_prefix(':')
                .or_else(|| t.strip_prefix('：'))
                .unwrap_or(t);
            break;
        }
    }
    clean_turn(t)
}

/// The judge's verdict: `Some(true)` equal (the rewrite gained nothing), `Some(false)` not
/// equal, `None` when the reply is neither (strictly: the whole reply, give or take quotes,
/// emphasis and a final full stop, is one of `Equal`, `Not Equal`, `相同`, `不同`, in either
/// language and any case).
pub fn parse_equality(reply: &str) -> Option<bool> {
    let wrappers: &[char] = &[
        '*', '"', '\'', '“', '”', '「', '」', '[', ']', '【', '】', '`', '.', '。', '!', '！',
    ];
    let t = reply.trim().trim_matches(wrappers).trim().to_lowercase();
    match t.as_str() {
        "equal" | "相同" | "一样" | "相等" => Some(true),
        "not equal" | "not-equal" | "unequal" | "不同" | "不相同" | "不一样" | "不相等" => {
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_renders_in_both_languages_with_its_own_method() {
        let p = EvolvePrompts::builtin().unwrap();
        let mut seen = std::collections::HashSet::new();
        for lang in [Lang::Zh, Lang::En] {
            for &op in EvolveOp::ALL {
                let prompt = p.rewrite(op, lang, "写一首关于秋天的诗").unwrap();
                assert!(prompt.contains("写一首关于秋天的诗"), "{prompt}");
                assert!(
                    seen.insert(prompt.clone()),
                    "{op} {lang:?}: same prompt twice"
                );
                let marker = match (lang, op.is_depth()) {
                    (Lang::Zh, true) => "#改写后的指令#：",
                    (Lang::Zh, false) => "#创作的指令#：",
                    (_, true) => "#Rewritten Prompt#:",
                    (_, false) => "#Created Prompt#:",
                };
                assert!(prompt.trim_end().ends_with(marker), "{prompt}");
            }
            let judge = p.judge(lang, "A?", "B?").unwrap();
            assert!(judge.contains("A?") && judge.contains("B?"));
            assert_eq!(p.answer(lang, "Q", false).unwrap(), "Q");
            assert!(p.answer(lang, "Q", true).unwrap().contains("</think>"));
        }
        assert!(
            p.rewrite(EvolveOp::Deepen, Lang::Zh, "x")
                .unwrap()
                .contains("改写")
        );
        assert_eq!(p.hash().len(), 32);
    }

    #[test]
    fn every_marker_the_templates_print_is_a_copied_prompt_marker() {
        for (name, _, text) in TEMPLATES {
            for label in OUTPUT_LABELS {
                if text.contains(label) {
                    let lower = label.to_lowercase();
                    assert!(PROMPT_MARKERS.contains(&lower.as_str()), "{name}: {label}");
                }
            }
        }
    }

    #[test]
    fn a_rewrite_reply_loses_its_leading_label_and_quotes() {
        for (reply, want) in [
            ("#Rewritten Prompt#: Write a poem.", "Write a poem."),
            ("  #rewritten prompt#:\n\"Write a poem.\"", "Write a poem."),
            ("#改写后的指令#：写一首诗。", "写一首诗。"),
            ("#Created Prompt#:\nName a river.", "Name a river."),
            (
                "Write a poem. #Rewritten Prompt#",
                "Write a poem. #Rewritten Prompt#",
            ),
            ("", ""),
        ] {
            assert_eq!(clean_rewrite(reply), want);
        }
    }

    #[test]
    fn equality_verdicts_are_read_strictly() {
        for (reply, want) in [
            ("Equal", Some(true)),
            (" **Not Equal.** ", Some(false)),
            ("not equal", Some(false)),
            ("相同", Some(true)),
            ("“不同”。", Some(false)),
            ("They are equal.", None),
            ("Equal, because both ask the same.", None),
            ("", None),
        ] {
            assert_eq!(parse_equality(reply), want, "{reply:?}");
        }
    }
}
