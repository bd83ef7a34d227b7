//! A record as a model sees it, in training and in scoring: the prompt its format renders (the
//! model's chat template, Alpaca's or BELLE's), the answer's ids ending with EOS, and for IFD the
//! context the answer is scored after alone. `train` and `score --metric` both call this, so a
//! record is scored exactly as it is trained.

use anyhow::Context;
use instill_core::Record;
use instill_models::{Codec, CodecError};
use instill_trainer::Sample;

/// How a record becomes a prompt (`--template`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// The model's chat template: system, history, then the instruction (and input) as the user.
    Chat,
    /// Stanford Alpaca's prompt, with or without its input section.
    Alpaca,
    /// BELLE's `Human: … Assistant: `.
    Belle,
}

impl PromptFormat {
    /// The format a `--template` value names (clap admits only `chat`, `alpaca`, `belle`).
    pub fn from_flag(value: &str) -> PromptFormat {
        match value {
            "alpaca" => PromptFormat::Alpaca,
            "belle" => PromptFormat::Belle,
            _ => PromptFormat::Chat,
        }
    }
}

/// What the user says in the last turn: the instruction, then the input after a blank line.
fn user_text(r: &Record) -> String {
    if r.input.trim().is_empty() {
        r.instruction.clone()
    } else {
        format!("{}\n\n{}", r.instruction, r.input)
    }
}

/// The chat messages before the answer: system, history, the user's last turn.
fn messages<'a>(r: &'a Record, user: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut messages: Vec<(&str, &str)> = Vec::new();
    if !r.system.is_empty() {
        messages.push(("system", &r.system));
    }
    for turn in &r.history {
        messages.push(("user", turn.user()));
        messages.push(("assistant", turn.assistant()));
    }
    messages.push(("user", user));
    messages
}

fn template_error(e: CodecError) -> anyhow::Error {
    match e {
        CodecError::NoChatTemplate => {
            anyhow::anyhow!("{e}; pass --template alpaca or --template belle")
        }
        other => other.into(),
    }
}

/// The prompt text of a record (everything before its output) in `format`.
pub fn prompt(codec: &Codec, r: &Record, format: PromptFormat) -> anyhow::Result<String> {
    let user = user_text(r);
    Ok(match format {
        PromptFormat::Alpaca if r.input.trim().is_empty() => format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n{ALPACA_MARKER}",
            r.instruction
        ),
        PromptFormat::Alpaca => format!(
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n{ALPACA_MARKER}",
            r.instruction, r.input
        ),
        PromptFormat::Belle => format!("Human: {user}\n\n{BELLE_MARKER}"),
        PromptFormat::Chat => codec
            .render_chat(&messages(r, &user))
            .map_err(template_error)?,
    })
}

const ALPACA_MARKER: &str = "### Response:\n";
const BELLE_MARKER: &str = "Assistant: ";

/// The text that opens the answer in `format`, the last thing its prompt writes: Alpaca's
/// `### Response:\n`, BELLE's `Assistant: `, the chat template's generation prompt (e.g.
/// `<|im_start|>assistant\n`; empty for a template that writes none).
pub fn response_marker(codec: &Codec, r: &Record, format: PromptFormat) -> anyhow::Result<String> {
    Ok(match format {
        PromptFormat::Alpaca => ALPACA_MARKER.to_string(),
        PromptFormat::Belle => BELLE_MARKER.to_string(),
        PromptFormat::Chat => codec
            .generation_prompt(&messages(r, &user_text(r)))
            .map_err(template_error)?,
    })
}

/// The id that ends an answer: the model's first EOS.
pub fn eos(codec: &Codec) -> anyhow::Result<u32> {
    codec
        .eos_ids
        .first()
        .copied()
        .context("the model declares no EOS token")
}

/// A record's prompt ids and answer ids (its output's tokens, then `eos`), as trained.
pub fn pair(
    codec: &Codec,
    r: &Record,
    format: PromptFormat,
    eos: u32,
) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let prompt = codec.encode(&prompt(codec, r, format)?)?;
    let mut answer = codec.encode(&r.output)?;
    answer.push(eos);
    Ok((prompt, answer))
}

/// A preference pair's prompt ids and its two answers' ids (each answer's tokens, then `eos`),
/// rendered and tokenized as [`pair`] does a record.
pub fn preference(
    codec: &Codec,
    p: &instill_core::Pair,
    format: PromptFormat,
    eos: u32,
) -> anyhow::Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    let prompt = codec.encode(&prompt(codec, &p.prompt, format)?)?;
    let answer = |text: &str| -> anyhow::Result<Vec<u32>> {
        let mut ids = codec.encode(text)?;
        ids.push(eos);
        Ok(ids)
    };
    Ok((prompt, answer(&p.chosen.text)?, answer(&p.rejected.text)?))
}

/// A record as a sample to score: its prompt and answer ids as [`pair`] makes them, and the
/// answer-alone context, which follows Cherry_LLM's IFD code (`'### Response:' + output`,
/// tokenized with the tokenizer's BOS): BOS when the prompt opens with it (and the marker does
/// not), then the response marker of `format` ([`response_marker`]). An output with no tokens
/// gives an empty answer, which the scorer reports rather than scoring EOS alone.
pub fn sample(codec: &Codec, r: &Record, format: PromptFormat, eos: u32) -> anyhow::Result<Sample> {
    let (prompt, mut answer) = pair(codec, r, format, eos)?;
    if answer.len() == 1 {
        answer.clear();
    }
    let marker = codec.encode(&response_marker(codec, r, format)?)?;
    let bos = codec
        .bos
        .as_deref()
        .and_then(|b| codec.tokenizer.token_to_id(b));
    let mut alone = Vec::with_capacity(marker.len() + 1);
    if let Some(b) = bos
        && prompt.first() == Some(&b)
        && marker.first() != Some(&b)
    {
        alone.push(b);
    }
    alone.extend(marker);
    Ok(Sample {
        prompt,
        alone,
        answer,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use candle_core::Device;
    use instill_models::Weights;
    use serde_json::Value;

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The SmolLM2 GGUF `.ci/run` unpacks (or `INSTILL_SMOLLM2_GGUF`), as `tests/local.rs` finds it.
    fn smollm2() -> PathBuf {
        let path = std::env::var_os("INSTILL_SMOLLM2_GGUF")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| {
                    PathBuf::from(h)
                        .join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
                })
            })
            .unwrap_or_default();
        assert!(
            path.is_file(),
            "{} not found: run .ci/run or set INSTILL_SMOLLM2_GGUF",
            path.display()
        );
        path
    }

    fn ids(v: &Value) -> Vec<u32> {
        serde_json::from_value(v.clone()).expect("ids")
    }

    /// The ids `scripts/ifd_reference.py` rendered with transformers' chat template and tokenizer
    /// are the ids instill trains and scores on, so the fixture's losses check the model alone.
    fn check_against_the_reference(name: &str, model: &Path) {
        let fixture: Value = serde_json::from_slice(
            &std::fs::read(root().join("tests/fixtures/local/ifd.json")).expect("fixture"),
        )
        .expect("json");
        let records: Vec<Record> =
            serde_json::from_value(fixture["records"].clone()).expect("records");
        let codec = Weights::open(model, &Device::Cpu)
            .expect("model")
            .codec(None)
            .expect("codec");
        let eos = eos(&codec).expect("eos");
        let expected = fixture["models"][name]["samples"]
            .as_array()
            .expect("samples");
        assert_eq!(expected.len(), records.len());
        for (r, want) in records.iter().zip(expected) {
            let got = sample(&codec, r, PromptFormat::Chat, eos).expect("sample");
            assert_eq!(
                got.prompt,
                ids(&want["prompt"]),
                "{name}: {}",
                r.instruction
            );
            assert_eq!(got.alone, ids(&want["alone"]), "{name}: {}", r.instruction);
            assert_eq!(
                got.answer,
                ids(&want["answer"]),
                "{name}: {}",
                r.instruction
            );
            // The training pair is the same prompt and answer.
            let (p, a) = pair(&codec, r, PromptFormat::Chat, eos).expect("pair");
            assert_eq!((p, a), (got.prompt, got.answer));
        }
    }

    #[test]
    fn records_render_to_the_reference_ids_for_the_tiny_llama_and_smollm2() {
        check_against_the_reference(
            "tiny-llama",
            &root().join("tests/fixtures/local/tiny-llama"),
        );
        check_against_the_reference("smollm2", &smollm2());
    }

    #[test]
    fn the_answer_alone_follows_the_response_marker_of_each_format() {
        let dir = root().join("tests/fixtures/local/tiny-llama");
        let codec = Weights::open(&dir, &Device::Cpu)
            .expect("model")
            .codec(None)
            .expect("codec");
        let eos = eos(&codec).expect("eos");
        let r = Record::new("Name a colour.", "", "Blue.");
        let enc = |t: &str| codec.encode(t).expect("encode");
        for (format, marker) in [
            (PromptFormat::Alpaca, "### Response:\n"),
            (PromptFormat::Belle, "Assistant: "),
            (PromptFormat::Chat, "<|im_start|>assistant\n"),
        ] {
            let s = sample(&codec, &r, format, eos).expect("sample");
            // The prompt ends with the marker the answer alone is scored after: no BOS here
            // (the alpaca and belle prompts have none; chat's BOS is the marker's own first token).
            assert_eq!(s.alone, enc(marker), "{format:?}");
            assert!(
                prompt(&codec, &r, format)
                    .expect("prompt")
                    .ends_with(marker)
            );
            let mut answer = enc("Blue.");
            answer.push(eos);
            assert_eq!(s.answer, answer);
        }
        // An output with no tokens leaves the answer empty: the scorer reports it.
        let empty = sample(
            &codec,
            &Record::new("Say nothing.", "", ""),
            PromptFormat::Chat,
            eos,
        )
        .expect("sample");
        assert!(empty.answer.is_empty());
    }
}
