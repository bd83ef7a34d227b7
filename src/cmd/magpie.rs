//! `generate --mode magpie`'s flags: where the chat template comes from (`--chat-template-from`,
//! else the candle model's own, else `--model` when it names a local model or a Hugging Face
//! id), and the prompts derived from it with `--system`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use instill_generator::{Backend, MagpieTemplate};
use instill_models::ChatTemplate;
use instill_models::hub::{HubId, Want};

use crate::cli::{ApiArg, BackendArg, GenerateArgs, GlobalArgs};

/// The flags `--mode magpie` refuses, checked before anything is opened.
pub fn check(args: &GenerateArgs) -> anyhow::Result<()> {
    let refused = [
        (args.template != "self_instruct", "--template"),
        (args.tasks_per_prompt.is_some(), "--tasks-per-prompt"),
        (args.generated_per_prompt > 0, "--generated-per-prompt"),
        (args.turns.is_some(), "--turns"),
        (args.n != 1, "--n"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(bad, _)| *bad) {
        anyhow::bail!(
            "{flag} does not apply to --mode magpie: the model writes each instruction itself from its chat template (no seeds, no template of tasks), one reply per request"
        );
    }
    if args.server.backend == BackendArg::Openai && args.server.api == ApiArg::Chat {
        anyhow::bail!(
            "--mode magpie needs raw continuation of the text before a user's turn, which a chat API (/chat/completions) cannot do: use --api completion (the server's /completions: vLLM, llama.cpp, TGI, Ollama serve one) or --backend candle"
        );
    }
    Ok(())
}

/// The prompts of the run: the chat template found, cut with `--system`.
pub async fn template(
    global: &GlobalArgs,
    args: &GenerateArgs,
    model: &str,
    backend: &Backend,
) -> anyhow::Result<MagpieTemplate> {
    let (template, origin) = match (&args.chat_template_from, backend) {
        (Some(spec), _) => {
            let path = locate(global, spec, "--chat-template-from").await?;
            (read(&path)?, path.display().to_string())
        }
        (None, Backend::Local(b)) => (b.chat_template().cloned(), model.to_string()),
        (None, Backend::OpenAi(_)) => {
            let path = Path::new(model);
            if !path.exists() && HubId::parse(model).is_none() {
                anyhow::bail!(
                    "--mode magpie derives its prompts from the model's chat template, and --model {model} is neither a local model nor a Hugging Face id: pass --chat-template-from ORG/NAME, a model directory, a tokenizer_config.json or a .gguf file"
                );
            }
            let path = locate(global, model, "--model").await?;
            (read(&path)?, path.display().to_string())
        }
    };
    let template = template.ok_or_else(|| {
        anyhow::anyhow!(
            "{origin}: no chat template, and --mode magpie derives its prompts from one: pass --chat-template-from ID|DIR|tokenizer_config.json"
        )
    })?;
    Ok(MagpieTemplate::derive(
        template,
        args.system.as_deref(),
        &origin,
    )?)
}

/// A local path, or the cached (downloaded) snapshot of a Hugging Face id.
async fn locate(global: &GlobalArgs, spec: &str, flag: &str) -> anyhow::Result<PathBuf> {
    crate::hub::locate(Path::new(spec), flag, None, Want::Model, global).await
}

/// The chat template of a model directory, a tokenizer_config.json or a GGUF file.
fn read(path: &Path) -> anyhow::Result<Option<ChatTemplate>> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let weights = instill_models::Weights::open(path, &candle_core::Device::Cpu)?;
        return Ok(weights
            .codec(None)
            .with_context(|| format!("{}: reading its chat template", path.display()))?
            .template());
    }
    if !path.exists() {
        anyhow::bail!("{}: no such file or directory", path.display());
    }
    Ok(ChatTemplate::from_path(path)?)
}
