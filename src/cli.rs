//! The command line: every command, flag and default, with the help text users read.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// instill: seed tasks in, curated instruction pairs out.
///
/// Import or generate instruction data (Chinese and English first-class), deduplicate and filter
/// it, export JSONL shards, fine-tune on the result. Everything lives in one database: a SQLite
/// file by default, or Postgres for many workers.
#[derive(Debug, Parser)]
#[command(name = "instill", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Database URL: sqlite://PATH (a file, created and migrated on first use; a bare path works
    /// too) or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        global = true,
        env = "INSTILL_DB",
        hide_env_values = true,
        default_value = "sqlite://instill.db"
    )]
    pub db: String,

    /// Print the command's summary as JSON on stdout (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// Never show progress (a bar when stderr is a terminal, otherwise a line every 10 s:
    /// INSTILL_PROGRESS_INTERVAL=SECONDS changes that).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage seed tasks, the examples generation shows the model.
    #[command(subcommand)]
    Seeds(SeedsCommand),

    /// Load existing datasets (Alpaca, BELLE, ShareGPT, messages, JSONL or JSON) as records.
    ///
    /// Records get status `pending`. Streaming: files larger than memory work. Importing a file
    /// whose bytes were imported before adds nothing.
    Import(ImportArgs),

    /// Write records as training shards (JSONL, optionally zstd) with a manifest.
    ///
    /// Atomic: the directory appears complete or not at all. --overwrite replaces only an
    /// earlier export.
    Export(ExportArgs),

    /// Evolve instructions round after round (Evol-Instruct), with the paper's elimination.
    ///
    /// Each round rewrites every task of the pool (the seed tasks, or accepted records with
    /// --from records, frozen when the run starts) by an operation drawn by --seed: in depth
    /// (add constraints, deepen, concretize, increase reasoning, complicate the input) or in
    /// breadth (a new, rarer task in the same domain). Each rewrite is answered, then
    /// eliminated when the judge (--judge-model) finds it equal to its original, its answer is a
    /// short apology or only punctuation and stop words, or it copies the prompt's words; the
    /// survivors go through the quality rules and exact and ROUGE-L dedup, and an accepted one
    /// replaces its task in the next round's pool. Every record carries what it rewrites, its
    /// round and operation. Interrupted or killed, the same command resumes.
    Evolve(Box<EvolveArgs>),

    /// Generate instruction pairs from the seed tasks with a model (resumable).
    ///
    /// Runs until `--target` pairs are accepted: each request shows the model a few seeds
    /// (drawn by --seed and the request's index), parses the tasks it writes, runs the quality rules and exact and ROUGE-L dedup against the
    /// seeds and everything accepted so far, and stores accepted and rejected tasks with their
    /// reasons. Interrupt it (Ctrl-C) or let it crash: the same command resumes, reusing every
    /// stored reply, and ends with the records an uninterrupted run would have written.
    ///
    /// --mode chat generates multi-turn conversations instead (see --mode and --turns).
    Generate(Box<GenerateArgs>),

    /// Mark near-duplicates: exact, MinHash-LSH and ROUGE-L, Chinese-aware.
    ///
    /// Works on the stored records that are not rejected: exact (normalised text), MinHash-LSH
    /// (Jaccard of shingles) and ROUGE-L (the self-instruct rule on instructions), in that
    /// order. The first occurrence (lowest id) wins; each rejected record
    /// gets the reason (exact, minhash, rouge_l), the record it duplicates (dup_of) and the score.
    /// Naming a method's flag runs only the named methods; naming none runs all three with their
    /// defaults. Running it again changes nothing.
    Dedup(DedupArgs),

    /// Reject records that fail the quality rules, naming the rule.
    ///
    /// Applies the quality rules (instruction length, Alpaca's and BELLE's blacklists on the
    /// fields their sources read, Alpaca's English rules, a model talking about itself, empty
    /// output, language mismatch, output repeating the instruction) to the records that are not
    /// rejected; failures are rejected with the rule's name as reason.
    Filter(FilterArgs),

    /// Counts by status, rejection reason, source, run, language; length percentiles; tokens.
    Stats,

    /// Write one self-contained HTML page with charts about the database.
    ///
    /// Inline CSS and SVG charts, no scripts, no network. It shows counts by status, reason,
    /// source, run and language; runs with tokens and cost; length histograms (characters for Chinese, words for English); leading verbs and
    /// their objects (English) and leading words (Chinese); nearest-neighbour ROUGE-L scores and
    /// MinHash cluster sizes; accepted/s and accept rate over time per run.
    Report(ReportArgs),

    /// Fine-tune a model on curated records, fully or with LoRA adapters.
    ///
    /// Supervised: loss on response tokens only, on the CPU (or CUDA). Reads the database's
    /// accepted records, or JSONL files (exported shards, .zst too) with --data. Writes DIR/model.safetensors with the
    /// model's config and tokenizer (full), or a PEFT adapter (adapter_config.json,
    /// adapter_model.safetensors) with --lora; DIR/loss.csv logs every step; DIR/checkpoint is
    /// what --resume continues from. Ctrl-C or SIGTERM stops after the step under way with a
    /// checkpoint (exit 130 or 143; a second one stops at once), and --resume goes on from it.
    Train(Box<TrainArgs>),

    /// Score records with an LLM judge (a rubric) or a local metric (ppl, ifd).
    ///
    /// A judge reads each record with the rubric and replies with a short rationale and a
    /// score on the rubric's scale (the built-in rubrics, Chinese and English, rate 1-10: the
    /// instruction's quality and the answer's helpfulness, correctness and harmlessness).
    /// Every reply is stored before its score is read, under the scorer's name: run the same
    /// command again after Ctrl-C or a crash and it sends only what was not answered. A
    /// second scorer (another judge or rubric, another --name) lives beside the first; `instill
    /// select --scorer NAME` turns scores into decisions.
    ///
    /// --metric ppl|ifd --model LOCAL_MODEL scores without a judge: the answer's perplexity
    /// given the instruction, or IFD (the answer's loss given the instruction over its loss
    /// alone), with a candle model.
    Score(Box<ScoreArgs>),

    /// Make preference pairs (chosen/rejected) for DPO from K answers per instruction.
    ///
    /// Samples K answers to each instruction (seeds of their own), grades every answer with a
    /// judge and a rubric, and keeps the best and the worst when their grades differ by at least
    /// --min-margin (otherwise the reason is stored). Resumable; `instill export --format dpo`
    /// writes the pairs, `instill train --dpo` learns from them.
    Pairs(Box<PairsArgs>),

    /// Turn a scorer's scores into decisions: keep the records that pass, reject the rest.
    ///
    /// Records below --min-score (above --max-score), or outside the best --top-k /
    /// --top-fraction, are rejected as `low_score` with their score; records the scorer has no
    /// score for as `unscored` (unless --keep-unscored). With --diverse-threshold the best
    /// record comes first and each later one is dropped as `not_diverse` when its similarity to
    /// a kept record is above the threshold (Deita's score-first, diversity-aware selection).
    /// Running it again with other settings re-decides only what select decided before.
    Select(SelectArgs),

    /// Evaluate a model on an eval set with an LLM judge (BELLE's protocol).
    ///
    /// The candidate model (--model, on --backend/--base-url) answers every question; the
    /// judge (--judge-model, on --judge-base-url) grades each answer against the reference
    /// answer with its class's prompt (0-1, `得分:`). Prints per-class means and the overall
    /// mean, stored under --name: `instill report` draws evaluations side by side (the base
    /// model against its fine-tune). Answers and grades are stored before they are used: the
    /// same command again sends nothing. `--compare A B` asks the judge which of two stored
    /// evaluations answered better, in both orders, and reports agreement and position bias.
    Eval(Box<EvalArgs>),

    /// Merge a LoRA adapter into its base model and write a full model directory.
    ///
    /// W' = W + alpha/r · B·A (alpha/√r with use_rslora; rank_pattern and alpha_pattern
    /// applied), written as a model directory the candle backend (and transformers) can load.
    /// Shapes and vocabulary sizes are checked first: a mismatch names both sizes and writes
    /// nothing.
    MergeLora(MergeLoraArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The base model: a Hugging Face directory (llama, mistral, qwen2) or a GGUF file
    /// (dequantized to f32 for training), or a Hugging Face id (ORG/NAME, ORG/NAME:FILE.gguf)
    /// taken from the Hugging Face cache and downloaded into it when missing.
    #[arg(long)]
    pub model: PathBuf,

    /// With a Hugging Face id as --model: the branch, tag or commit to use (default main).
    #[arg(long)]
    pub revision: Option<String>,

    /// Output directory: missing or empty, or an earlier instill output with --resume or
    /// --overwrite. Never inside --model.
    #[arg(long)]
    pub out: PathBuf,

    /// Train on these JSONL files (alpaca, belle, sharegpt or messages layout; with --dpo, a
    /// pair layout: dpo, dpo-messages, lf-ranking, UltraFeedback; .zst allowed) instead of the
    /// database's records.
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,

    /// Which database records to train on: accepted, kept (not rejected) or all; with --dpo,
    /// which prompts' pairs [default: accepted; with --dpo, kept].
    #[arg(long, value_parser = ["accepted", "kept", "all"])]
    pub status: Option<String>,

    /// Direct preference optimisation on preference pairs (`instill pairs`, or imported ones)
    /// instead of supervised fine-tuning: the policy learns to prefer each chosen answer over
    /// its rejected one, against a reference (the base with the adapters off under --lora, a
    /// frozen copy in full fine-tuning).
    #[arg(long)]
    pub dpo: bool,

    /// --dpo: the pair sets to train on, by name (repeat, or `all`) [default: the database's
    /// only set].
    #[arg(long, requires = "dpo")]
    pub pairs: Vec<String>,

    /// --dpo: β, how far the policy may move from the reference (DPO's KL weight; IPO's τ).
    #[arg(long, default_value_t = 0.1, value_parser = parse_positive, requires = "dpo")]
    pub beta: f64,

    /// --dpo: the preference loss: `sigmoid` (DPO's) or `ipo` (IPO's squared loss on
    /// per-token log-ratios).
    #[arg(long, value_enum, default_value = "sigmoid", requires = "dpo")]
    pub loss: DpoLossArg,

    /// Prompt format: `chat` (the model's chat template), `alpaca` or `belle`.
    #[arg(long, default_value = "chat", value_parser = ["chat", "alpaca", "belle"])]
    pub template: String,

    /// Train LoRA adapters instead of every weight.
    #[arg(long)]
    pub lora: bool,

    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_parser = parse_count)]
    pub lora_r: usize,

    /// LoRA alpha (the update is scaled by alpha/r).
    #[arg(long, default_value_t = 16.0, value_parser = parse_positive)]
    pub lora_alpha: f64,

    /// Dropout on the adapters' input.
    #[arg(long, default_value_t = 0.05, value_parser = parse_fraction)]
    pub lora_dropout: f64,

    /// Modules that get adapters.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub target_modules: Vec<String>,

    /// Modules trained in full beside the adapters and saved in the adapter file (PEFT's
    /// modules_to_save): embed_tokens, lm_head (e.g. after adding tokens).
    #[arg(long, value_delimiter = ',')]
    pub modules_to_save: Vec<String>,

    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4, value_parser = parse_positive)]
    pub lr: f64,

    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative)]
    pub weight_decay: f64,

    /// Passes over the data.
    #[arg(long, default_value_t = 1, value_parser = parse_count)]
    pub epochs: usize,

    /// Optimiser steps in all (overrides --epochs).
    #[arg(long, value_parser = parse_count)]
    pub max_steps: Option<usize>,

    /// Examples per micro-batch (grouped by length, right-padded).
    #[arg(long, default_value_t = 4, value_parser = parse_count)]
    pub batch_size: usize,

    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 4, value_parser = parse_count)]
    pub grad_accum: usize,

    /// Linear warmup steps before the cosine decay.
    #[arg(long, default_value_t = 10)]
    pub warmup_steps: usize,

    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0, value_parser = parse_non_negative)]
    pub max_grad_norm: f64,

    /// Tokens per example at most (the response is cut; examples whose prompt alone is longer
    /// are skipped and counted).
    #[arg(long, default_value_t = 1024, value_parser = parse_count)]
    pub max_len: usize,

    /// Share of the records held out for validation loss, chosen as `export --val-fraction`
    /// chooses them (a hash of each record's normalised content and --seed): with the same
    /// fraction and seed, the records export puts in val.
    #[arg(long, default_value_t = 0.05, value_parser = parse_fraction)]
    pub val_fraction: f64,

    /// Seed of the validation split (as export's --seed, whose default it shares), the data
    /// order, adapter initialisation and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,

    /// Continue from OUT/checkpoint; ends with the weights an uninterrupted run would have. The
    /// settings must be the run's own: one that differs is named and refused.
    #[arg(long)]
    pub resume: bool,

    /// Replace OUT when it is an earlier instill output (its manifest.json lists every file in
    /// it); any other non-empty OUT is refused, with or without this flag.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,

    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// Type of the frozen base weights and activations with --lora: f32, or bf16 (half the
    /// memory; adapters, norms, softmax and the loss stay f32). Full fine-tuning is f32.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub dtype: String,
}

#[derive(Debug, Args)]
pub struct MergeLoraArgs {
    /// The base model the adapter was trained on (Hugging Face directory or GGUF file, or a
    /// Hugging Face id: ORG/NAME, ORG/NAME:FILE.gguf).
    #[arg(long)]
    pub model: PathBuf,

    /// With a Hugging Face id as --model: the branch, tag or commit to use (default main).
    #[arg(long)]
    pub revision: Option<String>,

    /// The adapter directory (adapter_config.json, adapter_model.safetensors), or a Hugging
    /// Face id (ORG/NAME).
    #[arg(long)]
    pub adapter: PathBuf,

    /// With a Hugging Face id as --adapter: the branch, tag or commit to use (default main).
    #[arg(long)]
    pub adapter_revision: Option<String>,

    /// Output directory for the merged model: missing or empty, or an earlier instill output
    /// with --overwrite. Never inside --model or --adapter.
    #[arg(long)]
    pub out: PathBuf,

    /// Replace OUT when it is an earlier instill output (its manifest.json lists every file in
    /// it); the old one stays until the new one is whole.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The HTML file to write (replaced atomically).
    #[arg(long)]
    pub out: PathBuf,

    /// Limit the text charts (lengths, diversity, ROUGE-L) and the timeline to this generation
    /// run; the counts always cover the whole database, as `instill stats` does.
    #[arg(long)]
    pub run: Option<String>,

    /// Price of 1M prompt tokens, for the cost per run.
    #[arg(long, value_parser = parse_non_negative)]
    pub price_in: Option<f64>,

    /// Price of 1M completion tokens, for the cost per run.
    #[arg(long, value_parser = parse_non_negative)]
    pub price_out: Option<f64>,

    /// Output directories of `instill train` (repeatable): their loss.csv is drawn as loss
    /// curves (training loss per step, validation loss where measured).
    #[arg(long, value_name = "DIR")]
    pub training: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Stop when this many tasks (--mode chat: conversations; magpie: instruction-answer
    /// pairs) are accepted in the run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub target: u64,

    /// What to generate. `instruct`: self-instruct, each reply a list of new tasks, each task a
    /// record. `chat`: multi-turn self-chat: a user simulator (shown --seeds-per-prompt seed
    /// tasks drawn by --seed and the conversation's index) opens a conversation and follows up
    /// on each answer, an assistant answers, for --turns exchanges; each conversation is one
    /// record, its earlier exchanges the history and the last one the instruction and output.
    /// The quality rules judge a conversation's opening exchange and ROUGE-L dedup its first
    /// user turn; the turns of a conversation are sent one after another, conversations
    /// concurrently, and a run killed mid-conversation resumes from the stored turns; a
    /// conversation with a turn cut off at --max-tokens ends there and is rejected as cut_off.
    /// `magpie`: no seeds: the model continues the text its chat template writes before a
    /// user's turn (derived from the template, with --system), writing an instruction, then
    /// answers it; needs raw continuation (--backend candle, or --api completion). On Postgres,
    /// chat and magpie runs (like instruct ones) take any number of processes.
    #[arg(long, value_enum, default_value = "instruct")]
    pub mode: ModeArg,

    /// --mode magpie: the system prompt before the user's turn (it steers the language and the
    /// domain of the instructions; it replaces a template's default one), stored with each
    /// record [default: none: the template's own default, if it has one].
    #[arg(long)]
    pub system: Option<String>,

    /// --mode magpie: where the chat template comes from: a Hugging Face id, a model directory,
    /// a tokenizer_config.json or a .gguf file [default: --model, when it is one of these].
    #[arg(long, value_name = "ID|DIR|FILE")]
    pub chat_template_from: Option<String>,

    /// --mode chat: exchanges (a user turn and its answer) per conversation, 2 × K requests
    /// [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub turns: Option<u32>,

    /// The model: the name the server serves (openai), or a Hugging Face model directory
    /// (config.json, *.safetensors, tokenizer.json; llama, mistral, qwen2) or a GGUF file
    /// (llama, qwen2) for candle, or a Hugging Face id for candle (ORG/NAME,
    /// ORG/NAME:FILE.gguf) taken from the Hugging Face cache (HF_HUB_CACHE, HF_HOME) and
    /// downloaded into it when missing (HF_ENDPOINT, HF_TOKEN; never with HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub model: Option<String>,

    /// `self_instruct` (the built-in template of --lang: the BELLE recipe for zh, the Alpaca
    /// recipe for en), `zh/self_instruct`, `en/self_instruct`; `cot` (`zh/cot`, `en/cot`): the
    /// same with chain-of-thought answers, each output's step-by-step reasoning in a <think>
    /// block (stored as the record's reasoning) before the final answer (Alpaca-CoT-style
    /// data); or a path to your own .j2 file
    /// whose first line declares its reply format ({#- instill: format=en shape=chat tasks=20 -#}).
    #[arg(long, default_value = "self_instruct")]
    pub template: String,

    /// Language of the seeds drawn and of the built-in template.
    #[arg(long, value_enum, default_value = "en")]
    pub lang: GenLangArg,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Replies per request.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub n: u32,

    /// Seed tasks shown as examples in each prompt.
    #[arg(long, default_value_t = 3)]
    pub seeds_per_prompt: usize,

    /// Tasks the run already accepted, also shown as examples. Above 0 the prompts depend on
    /// which replies arrived first, so runs stay free of loss and duplicates but are no longer
    /// byte-for-byte reproducible across concurrency levels.
    #[arg(long, default_value_t = 0)]
    pub generated_per_prompt: usize,

    /// Tasks in each prompt's list, examples included [default: the template's: 20 for en, 10
    /// for zh].
    #[arg(long)]
    pub tasks_per_prompt: Option<usize>,

    #[command(flatten)]
    pub accept: AcceptArgs,

    /// The run's random seed: request i always shows the same examples.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// The run's name; running the same name again resumes it [default: LANG-TEMPLATE-sSEED].
    #[arg(long)]
    pub run: Option<String>,

    /// Stop after this many requests in the run (stored ones included) when the target is not
    /// reached; exits with 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,

    /// Postgres runs: how long a worker's claim on a request lives without a heartbeat (a
    /// killed worker's requests go to the others after this).
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    pub lease_seconds: f64,

    #[command(flatten)]
    pub server: ModelArgs,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Args)]
pub struct EvolveArgs {
    /// The model that rewrites and answers: the name the server serves (openai), or a local
    /// model for candle (a Hugging Face directory, a .gguf file or a Hugging Face id).
    #[arg(long)]
    pub model: Option<String>,

    /// Rounds of rewriting; the same run given more rounds later goes on from where it stopped.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// The operations drawn from, comma-separated: `depth` (all five in-depth ones), `breadth`,
    /// or single ones: add_constraints, deepen, concretize, increase_reasoning,
    /// complicate_input.
    #[arg(long, value_delimiter = ',', default_value = "depth,breadth")]
    pub ops: Vec<String>,

    /// What round 0's pool is: the seed tasks, or the accepted single-turn records (not this
    /// run's own), in id order.
    #[arg(long, value_enum, default_value = "seeds")]
    pub from: EvolveFromArg,

    /// --from records: at most this many records (the first in id order).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// The pool's language: `auto` takes every task (each rewritten with the prompts of its
    /// own language: Chinese for Chinese tasks, English for the rest), `zh` or `en` only those.
    #[arg(long, value_enum, default_value = "auto")]
    pub lang: EvolveLangArg,

    /// The answering prompt: `plain` (the rewritten instruction itself) or `cot` (step-by-step
    /// reasoning in a <think> block first, stored as the record's reasoning).
    #[arg(long, default_value = "plain", value_parser = ["plain", "cot"])]
    pub template: String,

    /// The judge of "no information gain" (the same server; temperature 0) [default: --model].
    #[arg(long)]
    pub judge_model: Option<String>,

    /// The run's name; running the same name again resumes it [default: evolve-FROM-sSEED].
    #[arg(long)]
    pub name: Option<String>,

    /// The run's random seed: task i of round r is always rewritten by the same operation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub accept: AcceptArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub server: ModelArgs,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvolveFromArg {
    /// The seed tasks.
    Seeds,
    /// Accepted records.
    Records,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvolveLangArg {
    /// Every task.
    Auto,
    /// Chinese tasks only.
    Zh,
    /// English tasks only.
    En,
}

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// The judge: the model the server serves (--backend openai), or a local model for
    /// --backend candle (a Hugging Face directory, a .gguf file or a Hugging Face id).
    #[arg(long, required_unless_present = "metric", conflicts_with = "metric")]
    pub judge_model: Option<String>,

    /// Score with a local metric instead of a judge: `ppl` (the answer's perplexity given the
    /// instruction; lower is better) or `ifd` (instruction-following difficulty). Needs
    /// --model.
    #[arg(long, value_enum, requires = "model")]
    pub metric: Option<MetricArg>,

    /// --metric: the local model (a Hugging Face directory, a .gguf file or a Hugging Face id).
    #[arg(long, requires = "metric")]
    pub model: Option<String>,

    /// The rubric: `builtin` (Chinese for Chinese records, English for the rest; 1-10) or a
    /// file: a template with {{ instruction }}, {{ input }}, {{ output }}, whose first line may
    /// declare its scale ({#- instill: scale=0-1 -#}; 1-10 otherwise).
    #[arg(long, default_value = "builtin")]
    pub rubric: String,

    /// The scorer's name: its scores are stored under it, `instill select --scorer NAME` reads
    /// them, and running the same name again resumes it [default: judge, or the metric's name].
    #[arg(long)]
    pub name: Option<String>,

    /// Which records: kept (every record not rejected), accepted, pending or all.
    #[arg(long, value_enum, default_value = "kept")]
    pub status: StatusArg,

    /// Score at most this many records (the first in id order without a score).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// The judge's sampling temperature (0: its most likely reply, for repeatable scores).
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature)]
    pub temperature: f32,

    /// Most tokens a judge's reply may have.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,

    /// The candle judge's sampling seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// --metric: padded tokens per forward pass at most (sequences × the longest; the logits,
    /// tokens × vocabulary, dominate memory).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..))]
    pub batch_tokens: u64,

    /// --metric: how a record becomes the model's prompt, as `train --template` renders it:
    /// the model's chat template, or Alpaca's or BELLE's prompt.
    #[arg(long, default_value = "chat", value_parser = ["chat", "alpaca", "belle"])]
    pub template: String,

    /// --metric: tokens kept per sequence (longer ones are cut, keeping the instruction's
    /// start and the answer's start).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..))]
    pub max_len: u64,

    #[command(flatten)]
    pub server: ModelArgs,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PairsArgs {
    /// The model that answers: the name the server serves (openai), or a local model for
    /// candle (a Hugging Face directory, a .gguf file or a Hugging Face id), sampled on policy.
    #[arg(long)]
    pub model: Option<String>,

    /// Answers sampled per instruction, each with its own seed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub k: u32,

    /// The judge that grades every answer: on the same server (or a second local model), or
    /// where --judge-backend, --judge-base-url and --judge-api-key-env say.
    #[arg(long)]
    pub judge_model: String,

    #[command(flatten)]
    pub judge_server: JudgeServerArgs,

    /// The smallest best-minus-worst grade that makes a pair, in the rubric's scale
    /// [default: a ninth of the scale's range: 1 on the built-in 1-10]. Equal grades never do.
    #[arg(long)]
    pub min_margin: Option<f64>,

    /// The judge's rubric: `builtin` (Chinese for Chinese records, English for the rest; 1-10)
    /// or a file, as for `instill score`.
    #[arg(long, default_value = "builtin")]
    pub rubric: String,

    /// The pair set's name (its runs are NAME and NAME/judge): exports and training select
    /// it by name, and running the same name again resumes it.
    #[arg(long, default_value = "pairs")]
    pub name: String,

    /// Which records are the instructions: kept (not rejected), accepted, pending or all.
    #[arg(long, value_enum, default_value = "kept")]
    pub status: StatusArg,

    /// At most this many instructions (the first in id order without a row in the set).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// The answers' sampling temperature.
    #[arg(long, default_value_t = 0.8, value_parser = parse_temperature)]
    pub temperature: f32,

    /// The answers' nucleus sampling mass, in (0, 1].
    #[arg(long, default_value_t = 0.95, value_parser = parse_top_p)]
    pub top_p: f32,

    /// Most tokens an answer may have.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,

    /// Most tokens a judge's reply may have (the judge samples at temperature 0).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_max_tokens: u32,

    /// The run's seed: sample k of an instruction is drawn with a seed of its own from it.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub server: ModelArgs,

    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DpoLossArg {
    /// DPO: −log σ(β · (chosen log-ratio − rejected log-ratio)).
    Sigmoid,
    /// IPO: (per-token chosen log-ratio − rejected − 1/(2β))².
    Ipo,
}

impl From<DpoLossArg> for instill_trainer::DpoLoss {
    fn from(l: DpoLossArg) -> Self {
        match l {
            DpoLossArg::Sigmoid => Self::Sigmoid,
            DpoLossArg::Ipo => Self::Ipo,
        }
    }
}

impl TrainArgs {
    /// `--status`, or its default: accepted records; with --dpo, the kept prompts' pairs.
    pub fn status(&self) -> &str {
        match &self.status {
            Some(s) => s,
            None if self.dpo => "kept",
            None => "accepted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// The answer's perplexity given the instruction.
    Ppl,
    /// Instruction-following difficulty: loss(answer | instruction) / loss(answer).
    Ifd,
}

impl From<MetricArg> for instill_core::ScoreMethod {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Ppl => Self::Ppl,
            MetricArg::Ifd => Self::Ifd,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("rule").multiple(true).required(true).args(["min_score", "max_score", "top_k", "top_fraction", "diverse_threshold"]))]
pub struct SelectArgs {
    /// The scorer whose scores decide (`instill score --name`; `instill stats` lists them).
    #[arg(long)]
    pub scorer: String,

    /// Keep records scored at least this, in the scorer's own scale (a judge's rubric: 1-10 for
    /// the built-in ones).
    #[arg(long)]
    pub min_score: Option<f64>,

    /// Keep records scored at most this (perplexity: lower is better; IFD above 1 means the
    /// instruction does not help at all).
    #[arg(long)]
    pub max_score: Option<f64>,

    /// Keep the best N (after the thresholds; best first: highest, or lowest for ppl; ties by
    /// record id).
    #[arg(long, conflicts_with = "top_fraction", value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,

    /// Keep the best fraction (0-1) of the scored records.
    #[arg(long, value_parser = parse_fraction)]
    pub top_fraction: Option<f64>,

    /// Drop a record whose similarity to a better-scored kept record is above this (0-1).
    #[arg(long, value_parser = parse_unit)]
    pub diverse_threshold: Option<f64>,

    /// How --diverse-threshold measures similarity: `rouge-l` of the instructions, or
    /// `minhash` (estimated Jaccard of word 3-gram shingles of the whole record).
    #[arg(long, value_enum, default_value = "rouge-l")]
    pub diverse_method: DiverseArg,

    /// Leave records without a score of this scorer alone (default: rejected as `unscored`, so
    /// that only what the scorer rated passes).
    #[arg(long)]
    pub keep_unscored: bool,

    /// Report what would be decided; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiverseArg {
    /// ROUGE-L F1 of the instructions.
    RougeL,
    /// MinHash Jaccard of the whole record.
    Minhash,
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The eval set: JSONL (or a JSON array) of {"question", "std_answer", "class"}, BELLE's
    /// eval_set.json format.
    #[arg(long, value_name = "FILE", required_unless_present = "compare")]
    pub eval_set: Option<PathBuf>,

    /// The candidate model: the name the server serves, or a local model for --backend candle.
    #[arg(long, required_unless_present = "compare")]
    pub model: Option<String>,

    /// The judge model (the name its server serves, or a local model with --judge-backend
    /// candle).
    #[arg(long)]
    pub judge_model: String,

    #[command(flatten)]
    pub judge_server: JudgeServerArgs,

    /// The judge's prompts, one per class: `builtin` (instill's own, Chinese, for BELLE's
    /// classes) or a file in BELLE's eval_prompt.json format (JSONL of {"class", "prompt"}).
    #[arg(long, default_value = "builtin")]
    pub judge_prompts: String,

    /// The evaluation's name: its grades are stored under it, `--compare` and `report` use it,
    /// and running the same name again resumes it [default: the model's name].
    #[arg(long)]
    pub name: Option<String>,

    /// Evaluate only the first N questions.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Grade each answer K times (at --judge-temperature) and report how often the judge
    /// agrees with itself; the grade is the mean.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub judge_repeat: u32,

    /// Compare two stored evaluations (their --name) on the questions both answered: the judge
    /// sees both answers, in both orders.
    #[arg(long, num_args = 2, value_names = ["LABEL_A", "LABEL_B"])]
    pub compare: Option<Vec<String>>,

    /// Evaluate the classes that have a judge prompt and skip the others (default: refuse,
    /// naming the classes without one).
    #[arg(long)]
    pub skip_missing_classes: bool,

    /// The candidate's sampling temperature.
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature)]
    pub temperature: f32,

    /// Most tokens of a candidate's answer.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,

    /// The judge's sampling temperature (raise it with --judge-repeat).
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature)]
    pub judge_temperature: f32,

    /// Most tokens of a judge's reply.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_max_tokens: u32,

    /// The candle models' sampling seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    #[command(flatten)]
    pub server: ModelArgs,

    #[command(flatten)]
    pub send: SendArgs,
}

/// Which model server answers and how it is reached: shared by every command that sends
/// prompts (generate, score, eval).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model backend: `openai`, any OpenAI-compatible HTTP API; `candle` or `llama-cpp`, a
    /// local model run in-process (--model is then a path or a Hugging Face id). `llama-cpp`
    /// runs .gguf files on the CPU with llama.cpp's quantized kernels (pick it to generate
    /// from a quantized model on the CPU); `candle` also runs Hugging Face safetensors
    /// directories and CUDA GPUs (--device), and is the engine `train` and `score --metric` use.
    #[arg(long, value_enum, default_value = "openai")]
    pub backend: BackendArg,

    /// Base URL of the API, including the version path (OpenAI: https://api.openai.com/v1;
    /// DeepSeek: https://api.deepseek.com/v1; vLLM: http://HOST:8000/v1; Ollama:
    /// http://localhost:11434/v1; llama.cpp's server: http://localhost:8080/v1).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        hide_env_values = true,
        default_value = "https://api.openai.com/v1"
    )]
    pub base_url: String,

    /// candle, llama-cpp, with a Hugging Face id as --model: the branch, tag or commit to use (default
    /// main).
    #[arg(long)]
    pub revision: Option<String>,

    /// candle, llama-cpp: a tokenizer.json to use instead of the model's own (for a GGUF file, the
    /// tokenizer is otherwise rebuilt from its metadata).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// candle: where the model runs: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// candle: the type of dense (safetensors) weights and activations: f32, bf16, or f16
    /// (GPU only). GGUF models compute in f32 over their quantized weights; with --metric, in
    /// this type over their dequantized ones (norms, softmax and the loss stay f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub dtype: String,

    /// candle, llama-cpp: sequences decoded together (continuous batching: a finished sequence's slot
    /// goes to the next waiting request). Keep --concurrency at least this high.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,

    /// candle: expand a GGUF model's quantized weights to f32 at load. Costs several times the
    /// memory (fine for models up to a few hundred million parameters) and makes batched decode
    /// on the CPU several times faster: candle's quantized kernels cost the same per sequence.
    #[arg(long)]
    pub dequantize: bool,

    /// `chat` (/chat/completions, the prompt as one user message) or `completion`
    /// (/completions, a text the model continues).
    #[arg(long, value_enum, default_value = "chat")]
    pub api: ApiArg,

    /// The environment variable holding the API key (sent as a bearer token, never printed or
    /// stored). Unset is fine only for a server on this machine (localhost, 127.x.x.x, [::1]).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,

    /// Seconds to wait for one reply.
    #[arg(long, default_value_t = 120.0, value_parser = parse_seconds)]
    pub timeout: f64,

    /// The largest reply body read (suffixes K, M, G): a longer one fails the attempt as
    /// `too_large` (retried, then stored as failed) without being read further.
    #[arg(long, default_value_t = instill_generator::DEFAULT_MAX_BODY_BYTES, value_parser = parse_size)]
    pub max_reply_bytes: u64,
}

/// How a generated task is accepted: the quality rules, then ROUGE-L dedup against the seed
/// tasks (evolve: the pool) and the tasks accepted before it (generate, evolve).
#[derive(Debug, Clone, Args)]
pub struct AcceptArgs {
    /// Reject a task whose instruction has a ROUGE-L F1 greater than this with a seed task
    /// (evolve: a pool task) or an accepted one.
    #[arg(long, default_value_t = 0.7, value_parser = parse_unit)]
    pub rouge_threshold: f64,

    /// ROUGE tokenizer (see `instill dedup --help`).
    #[arg(long, value_enum, default_value = "auto")]
    pub rouge_tokenizer: TokenizerArg,

    /// Quality rules: `default` or a TOML file (see `instill filter --print-rules`).
    #[arg(long, default_value = "default")]
    pub rules: String,
}

impl AcceptArgs {
    /// The acceptor's ROUGE-L rule (no nearest neighbour stored below a match).
    pub fn rouge(&self) -> instill_dedup::RougeConfig {
        instill_dedup::RougeConfig {
            threshold: self.rouge_threshold,
            tokenizer: self.rouge_tokenizer.into(),
            floor: 1.0,
        }
    }
}

/// How a generating model samples its replies (generate, evolve).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0, value_parser = parse_temperature)]
    pub temperature: f32,

    /// Nucleus sampling mass, in (0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = parse_top_p)]
    pub top_p: f32,

    /// Most tokens a reply may have (halved and retried when the server says the context is
    /// exceeded).
    #[arg(long, default_value_t = 3072, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,

    /// A stop string (repeat for several).
    #[arg(long)]
    pub stop: Vec<String>,
}

/// Where a judge runs when it is not the answering model's server: its backend, URL and key.
#[derive(Debug, Clone, Args)]
pub struct JudgeServerArgs {
    /// The judge's backend [default: openai for eval, --backend's for pairs].
    #[arg(long, value_enum)]
    pub judge_backend: Option<BackendArg>,

    /// The judge's base URL [default: --base-url's].
    #[arg(long)]
    pub judge_base_url: Option<String>,

    /// The environment variable holding the judge's API key [default: --api-key-env's].
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
}

impl JudgeServerArgs {
    /// The judge's server flags: the answering model's, with what these flags change (the
    /// backend `default` when not given).
    pub fn over(&self, server: &ModelArgs, default: BackendArg) -> ModelArgs {
        let backend = self.judge_backend.unwrap_or(default);
        ModelArgs {
            backend,
            base_url: self
                .judge_base_url
                .clone()
                .unwrap_or_else(|| server.base_url.clone()),
            // A revision names the answering model's Hub snapshot, not the judge's.
            revision: if backend == server.backend && self.judge_base_url.is_none() {
                server.revision.clone()
            } else {
                None
            },
            api_key_env: self
                .judge_api_key_env
                .clone()
                .unwrap_or_else(|| server.api_key_env.clone()),
            ..server.clone()
        }
    }
}

/// How requests are sent: concurrency, rate limits, retries, prices.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,

    /// Requests per minute at most (unlimited if not given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,

    /// Tokens per minute at most, prompt and completion together (unlimited if not given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm: Option<u64>,

    /// Attempts per request, the first included (429, 5xx, timeouts, unreadable replies are
    /// retried with exponential backoff and full jitter, at least as long as Retry-After).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_retries: u32,

    /// Price of 1M prompt tokens, for the cost in the summary.
    #[arg(long, value_parser = parse_non_negative)]
    pub price_in: Option<f64>,

    /// Price of 1M completion tokens, for the cost in the summary.
    #[arg(long, value_parser = parse_non_negative)]
    pub price_out: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// An OpenAI-compatible HTTP API.
    Openai,
    /// A local model run in-process with candle.
    Candle,
    /// A local GGUF model run in-process with llama.cpp.
    LlamaCpp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiArg {
    /// /chat/completions.
    Chat,
    /// /completions.
    Completion,
}

impl From<ApiArg> for instill_generator::Api {
    fn from(a: ApiArg) -> Self {
        match a {
            ApiArg::Chat => Self::Chat,
            ApiArg::Completion => Self::Completion,
        }
    }
}

impl From<ApiArg> for instill_prompts::Shape {
    fn from(a: ApiArg) -> Self {
        match a {
            ApiArg::Chat => Self::Chat,
            ApiArg::Completion => Self::Completion,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Self-instruct: new tasks from seed examples.
    Instruct,
    /// Multi-turn self-chat: conversations of --turns exchanges.
    Chat,
    /// Magpie: the model writes the user's turn from its chat template's opening, then answers.
    Magpie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenLangArg {
    /// Chinese.
    Zh,
    /// English.
    En,
}

impl From<GenLangArg> for instill_core::Lang {
    fn from(l: GenLangArg) -> Self {
        match l {
            GenLangArg::Zh => Self::Zh,
            GenLangArg::En => Self::En,
        }
    }
}

#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Exact duplicates: equal normalised text (NFKC, lowercase, punctuation and extra spaces
    /// removed).
    #[arg(long)]
    pub exact: bool,

    /// MinHash-LSH near-duplicates: records whose shingle sets have at least this Jaccard
    /// similarity (0-1) are clustered, and all but the first of each cluster rejected
    /// [default when no method is named: 0.8].
    #[arg(long, value_parser = parse_unit)]
    pub minhash_threshold: Option<f64>,

    /// MinHash shingles: `char` n-grams of the normalised text (works for Chinese without a
    /// segmenter) or `word` n-grams (a CJK character counts as a word).
    #[arg(long, value_enum, default_value = "char")]
    pub shingle: ShingleArg,

    /// Shingle length [default: 5 characters, or 3 words].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub ngram: Option<u64>,

    /// MinHash hash functions; bands × rows are chosen from the threshold by minimising
    /// false positives plus false negatives of what is reported (0.8 and 128 give 16 × 8 when
    /// pairs are confirmed, 9 × 13 with `--minhash-verify none`).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..=1024))]
    pub num_perm: u64,

    /// How pairs that share an LSH bucket are confirmed: `estimate` (signature agreement reaches
    /// the threshold), `exact` (true Jaccard of the shingle sets; slower, more memory), `none`
    /// (every bucket collision is a duplicate).
    #[arg(long, value_enum, default_value = "estimate")]
    pub minhash_verify: VerifyArg,

    /// ROUGE-L: reject a record whose instruction has a ROUGE-L F1 greater than this with an
    /// earlier kept instruction (the Alpaca / self-instruct rule) [default when no method is
    /// named: 0.7].
    #[arg(long, value_parser = parse_unit)]
    pub rouge_threshold: Option<f64>,

    /// ROUGE tokenizer: `auto` (per character for text with Chinese, Japanese or Korean, else
    /// rouge_score's), `alpaca` (rouge_score's default, bit for bit; it erases CJK text, so
    /// Chinese is never rejected), `char`.
    #[arg(long, value_enum, default_value = "auto")]
    pub tokenizer: TokenizerArg,

    /// The most similar earlier instruction is stored for every record whose best F1 is at least
    /// this (below it, none is). Lower floors compare more pairs: on 1,000,000 synthetic
    /// instructions the pass took 73 s at 0.7 and 4.3 min at 0.6 on 2 cores.
    #[arg(long, default_value_t = 0.6, value_parser = parse_unit)]
    pub rouge_floor: f64,

    /// Compare every pair (the brute-force reference; quadratic).
    #[arg(long)]
    pub rouge_exhaustive: bool,

    /// Put the stored seed tasks first in the ROUGE-L pool, as generation does: records too close
    /// to a seed are rejected too (their dup_of is empty: seeds are not records).
    #[arg(long)]
    pub with_seeds: bool,

    /// The text exact and MinHash dedup compare: the whole `record` (instruction, input, output,
    /// and any system prompt and earlier turns) or the `instruction` alone.
    #[arg(long, value_enum, default_value = "record")]
    pub field: FieldArg,

    /// Report what would be rejected; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShingleArg {
    /// Character n-grams.
    Char,
    /// Word n-grams.
    Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// Signature agreement.
    Estimate,
    /// True Jaccard.
    Exact,
    /// No check.
    None,
}

impl From<VerifyArg> for instill_dedup::Verify {
    fn from(v: VerifyArg) -> Self {
        match v {
            VerifyArg::Estimate => Self::Estimate,
            VerifyArg::Exact => Self::Exact,
            VerifyArg::None => Self::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenizerArg {
    /// `char` for CJK text, else `alpaca`.
    Auto,
    /// rouge_score's default tokenizer.
    Alpaca,
    /// Each CJK character a token.
    Char,
}

impl From<TokenizerArg> for instill_dedup::Tokenizer {
    fn from(t: TokenizerArg) -> Self {
        match t {
            TokenizerArg::Auto => Self::Auto,
            TokenizerArg::Alpaca => Self::Alpaca,
            TokenizerArg::Char => Self::Char,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FieldArg {
    /// Instruction, input, output (and system prompt and history).
    Record,
    /// The instruction alone.
    Instruction,
}

impl From<FieldArg> for instill_dedup::Field {
    fn from(f: FieldArg) -> Self {
        match f {
            FieldArg::Record => Self::Record,
            FieldArg::Instruction => Self::Instruction,
        }
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// `default` for the built-in rules, or a TOML file that changes them (every table and key
    /// optional; see --print-rules for all of them).
    #[arg(long, default_value = "default")]
    pub rules: String,

    /// Print the built-in rules as TOML (a starting point for --rules FILE) and exit.
    #[arg(long)]
    pub print_rules: bool,

    /// Report what would be rejected; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum SeedsCommand {
    /// Load seed tasks from a file (self-instruct JSONL, or any layout `import` reads) or from
    /// the sets shipped with instill. Idempotent: tasks already stored (same normalised
    /// content) are skipped.
    Import(SeedsImportArgs),
    /// Show the stored seed tasks.
    List(SeedsListArgs),
}

#[derive(Debug, Args)]
pub struct SeedsImportArgs {
    /// The seed file. Self-instruct tasks contribute their first instance.
    #[arg(required_unless_present = "builtin", conflicts_with = "builtin")]
    pub file: Option<PathBuf>,

    /// Import the seed tasks shipped with instill instead of a file.
    #[arg(long, value_enum)]
    pub builtin: Option<BuiltinSeeds>,

    /// Layout of the file; `auto` detects it from the first record's keys.
    #[arg(long, default_value = "auto")]
    pub format: FormatArg,

    /// Language to store for every task; `auto` detects it per task.
    #[arg(long, value_enum, default_value = "auto")]
    pub lang: LangArg,

    /// Source name stored with each task [default: the file name without extension, or
    /// `builtin-zh` / `builtin-en`].
    #[arg(long)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuiltinSeeds {
    /// The Chinese set.
    Zh,
    /// The English set.
    En,
    /// Both.
    All,
}

#[derive(Debug, Args)]
pub struct SeedsListArgs {
    /// Only tasks of this language.
    #[arg(long, value_enum)]
    pub lang: Option<LangFilter>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Dataset files: a JSON array or JSONL (one object per line; pretty-printed objects one
    /// after another work too), UTF-8; or Parquet (a file starting with PAR1, as the Hub serves
    /// datasets), read a row group at a time, each row read as the object of its columns
    /// (nested lists and structs, large strings, nulls as absent fields; other columns ignored).
    /// Errors name the line, or the Parquet row (1-based).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Layout: alpaca (instruction/input/output, plus system/history), belle (alpaca's fields or
    /// input/target), sharegpt (conversations with from/value), messages (OpenAI role/content),
    /// self-instruct (instances[], one record per instance); preference pairs: dpo (trl's
    /// prompt/chosen/rejected as texts or message lists, the prompt explicit or implicit, as
    /// `export --format dpo` and `dpo-messages` write them, and the UltraFeedback-binarized
    /// layout with its score_chosen/score_rejected), lf-ranking (LLaMA-Factory's alpaca-style
    /// instruction/input/chosen/rejected or sharegpt-style conversations + chosen/rejected
    /// objects). Each pair row is stored as a record (its prompt answered by the chosen answer)
    /// and a pair of the set named by --source. `auto` detects the layout per file from the
    /// first record's keys (Parquet: from the column names).
    #[arg(long, default_value = "auto")]
    pub format: FormatArg,

    /// Source name stored with each record [default: the file name without extension].
    #[arg(long)]
    pub source: Option<String>,

    /// Language to store for every record; `auto` detects it per record (zh, en or other).
    #[arg(long, value_enum, default_value = "auto")]
    pub lang: LangArg,

    /// Import the valid records and report the invalid ones (count, and the first few with their
    /// line numbers), exiting with 1. Without it the first invalid record stops the import and
    /// nothing is stored.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output directory: missing or empty, or an earlier export with --overwrite. Never holds
    /// the database. Written in the Hugging Face Hub's layout: data/{train,validation}/ shards,
    /// a README.md dataset card that `datasets.load_dataset(DIR)` reads, LLaMA-Factory's
    /// dataset_info.json, and manifest.json.
    #[arg(long)]
    pub out: PathBuf,

    /// Layout: alpaca ({instruction,input,output}, plus system/history for conversations),
    /// sharegpt ({conversations:[{from,value}]}), messages ({messages:[{role,content}]}). The
    /// chat layouts put `input` after the instruction, separated by a blank line. Preference
    /// pairs (`instill pairs`, or an imported pair file) instead of records: dpo (trl's
    /// {prompt,chosen,rejected} texts; a prompt with a system prompt or earlier turns is
    /// refused, counted, in favour of dpo-messages), dpo-messages (trl's conversational form:
    /// prompt a list of messages, chosen/rejected one assistant message each), lf-ranking
    /// (LLaMA-Factory's {instruction,input,chosen,rejected} (+system/history), `"ranking": true`
    /// in dataset_info.json), lf-ranking-sharegpt (LLaMA-Factory's {conversations, chosen:
    /// {from,value}, rejected: {from,value}}).
    #[arg(long, value_enum, default_value = "alpaca")]
    pub format: OutputFormatArg,

    /// With a pair layout: the pair set to export (an `instill pairs` run's name or an
    /// import's source label); repeat it for several, or `all`. Without it, the database's
    /// one set (an error lists them when there are several).
    #[arg(long = "pairs", value_name = "NAME")]
    pub pairs: Vec<String>,

    /// File format of the shards: jsonl, or parquet (data/train/train-00000-of-00001.parquet):
    /// the same rows as nested columns — alpaca: instruction, input, output, system ("" when
    /// none), history (list<list<string>>, [user, assistant] pairs); sharegpt: conversations
    /// (list<struct<from, value>>); messages: messages (list<struct<role, content>>) — its pages
    /// zstd-compressed at --zstd-level inside the file (so --compress zstd is refused with it),
    /// row groups of at most 100000 rows. Needs a build with the `parquet` feature (the default).
    #[arg(long, value_enum, default_value = "jsonl")]
    pub file_format: FileFormat,

    /// Start a new shard after this many records. With neither --shard-rows nor --shard-bytes,
    /// shards hold 100000 records.
    #[arg(long)]
    pub shard_rows: Option<u64>,

    /// Start a new shard once this many bytes of JSONL (before compression) are written (Parquet:
    /// bytes of the rows' text); accepts suffixes K, M, G (powers of 1024).
    #[arg(long, value_parser = parse_size)]
    pub shard_bytes: Option<u64>,

    /// Compress shards (`zstd` writes data/train/train-00000-of-00001.jsonl.zst; `datasets` reads
    /// them with the zstandard package, LLaMA-Factory cannot). JSONL only: Parquet shards are
    /// always compressed inside.
    #[arg(long, value_enum, default_value = "none")]
    pub compress: Compression,

    /// zstd compression level (1-19), of --compress zstd or of Parquet's pages.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,

    /// Which records: kept (every record not rejected), accepted, pending, rejected or all.
    #[arg(long, value_enum, default_value = "kept")]
    pub status: StatusArg,

    /// What to do with the records' reasoning (a reasoning model's thinking): keep (messages:
    /// `reasoning_content` on the assistant message; alpaca and sharegpt, which have no field
    /// for it: inline), drop (left out), inline (`<think>\nREASONING\n</think>\n\n` before the
    /// answer, in every layout).
    #[arg(long, value_enum, default_value = "keep")]
    pub reasoning: ReasoningArg,

    /// Put this fraction of records (0-1) in a validation split, chosen by a hash of each
    /// record's normalised content and --seed: deterministic, and exact duplicates always land
    /// in the same split. Its shards go to data/validation/, the rest to data/train/.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub val_fraction: f64,

    /// Seed of the validation split (`train --seed` with the same value and --val-fraction
    /// holds out the same records).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Replace OUT when it is an earlier instill output (its manifest.json lists every file in
    /// it; anything else is refused), atomically: the old one stays until the new one is whole.
    #[arg(long)]
    pub overwrite: bool,
}

/// An input layout, or auto-detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatArg(pub Option<instill_core::InputFormat>);

impl std::str::FromStr for FormatArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(FormatArg(None));
        }
        s.parse()
            .map(|f| FormatArg(Some(f)))
            .map_err(|e: String| format!("{e}, or auto"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LangArg {
    /// Detect per record.
    Auto,
    /// Chinese.
    Zh,
    /// English.
    En,
}

/// The language every record is given, or `None` to detect it per record.
impl From<LangArg> for Option<instill_core::Lang> {
    fn from(l: LangArg) -> Self {
        match l {
            LangArg::Auto => None,
            LangArg::Zh => Some(instill_core::Lang::Zh),
            LangArg::En => Some(instill_core::Lang::En),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LangFilter {
    /// Chinese.
    Zh,
    /// English.
    En,
    /// Anything else.
    Other,
}

impl From<LangFilter> for instill_core::Lang {
    fn from(l: LangFilter) -> Self {
        match l {
            LangFilter::Zh => Self::Zh,
            LangFilter::En => Self::En,
            LangFilter::Other => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormatArg {
    /// {"instruction", "input", "output"} (+ "system", "history").
    Alpaca,
    /// {"conversations": [{"from", "value"}]}.
    Sharegpt,
    /// {"messages": [{"role", "content"}]}.
    Messages,
    /// Preference pairs: {"prompt", "chosen", "rejected"}, three texts (trl).
    Dpo,
    /// Preference pairs: prompt a list of messages, chosen/rejected one assistant message (trl).
    DpoMessages,
    /// Preference pairs: LLaMA-Factory's {"instruction", "input", "chosen", "rejected"}.
    LfRanking,
    /// Preference pairs: LLaMA-Factory's {"conversations", "chosen": {from, value}, "rejected"}.
    LfRankingSharegpt,
}

/// What an export writes: records in a record layout, or preference pairs in a pair layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Instruction records.
    Records(instill_core::OutputFormat),
    /// Preference pairs.
    Pairs(instill_core::PairFormat),
}

impl From<OutputFormatArg> for Layout {
    fn from(f: OutputFormatArg) -> Self {
        use instill_core::{OutputFormat, PairFormat};
        match f {
            OutputFormatArg::Alpaca => Layout::Records(OutputFormat::Alpaca),
            OutputFormatArg::Sharegpt => Layout::Records(OutputFormat::ShareGpt),
            OutputFormatArg::Messages => Layout::Records(OutputFormat::Messages),
            OutputFormatArg::Dpo => Layout::Pairs(PairFormat::Dpo),
            OutputFormatArg::DpoMessages => Layout::Pairs(PairFormat::DpoMessages),
            OutputFormatArg::LfRanking => Layout::Pairs(PairFormat::Ranking),
            OutputFormatArg::LfRankingSharegpt => Layout::Pairs(PairFormat::RankingShareGpt),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasoningArg {
    /// In its field where the layout has one (messages), inline elsewhere.
    Keep,
    /// Left out.
    Drop,
    /// `<think>…</think>` before the answer.
    Inline,
}

impl From<ReasoningArg> for instill_core::ReasoningMode {
    fn from(r: ReasoningArg) -> Self {
        match r {
            ReasoningArg::Keep => Self::Keep,
            ReasoningArg::Drop => Self::Drop,
            ReasoningArg::Inline => Self::Inline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// JSON Lines.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// Plain .jsonl.
    None,
    /// .jsonl.zst.
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Every record that is not rejected.
    Kept,
    /// Accepted by a generation run.
    Accepted,
    /// Not judged yet.
    Pending,
    /// Rejected, with reason.
    Rejected,
    /// Everything.
    All,
}

impl From<StatusArg> for instill_storage::StatusFilter {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Kept => Self::Kept,
            StatusArg::Accepted => Self::Accepted,
            StatusArg::Pending => Self::Pending,
            StatusArg::Rejected => Self::Rejected,
            StatusArg::All => Self::All,
        }
    }
}

impl Cli {
    /// The command line, parsed: [`Cli::command`] with every flag that takes a value also
    /// taking a negative number, so that `--timeout -1` meets the flag's own range check ("-1
    /// must be greater than 0") instead of clap's "unexpected argument '-1'".
    pub fn parse_args() -> Cli {
        let mut command = negative_values(Cli::command());
        let matches = command.get_matches_mut();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
    }
}

/// `command` and its subcommands with negative numbers accepted as flag values.
fn negative_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let takes_value = arg.get_action().takes_values();
            arg.allow_negative_numbers(takes_value)
        })
        .mut_subcommands(negative_values)
}

/// A count that must be at least 1 (a batch size, a rank, a number of steps): 0 is refused,
/// never silently raised.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("{s} is too large")),
        Ok(_) => Err(format!("{s} must be at least 1")),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 1000000, 512K, 256M, 1G)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err("a shard must be allowed at least one byte".into());
    }
    Ok(bytes)
}

/// The longest `--timeout` or `--lease-seconds`: a year.
const MAX_SECONDS: f64 = 365.0 * 86400.0;

/// A finite number greater than 0 (or at least 0 when `zero_ok`): NaN, infinities and
/// negative numbers are refused.
fn finite(s: &str, zero_ok: bool) -> Result<f64, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !f.is_finite() {
        return Err(format!("{s} is not a finite number"));
    }
    match (zero_ok, f) {
        (true, f) if f >= 0.0 => Ok(f),
        (false, f) if f > 0.0 => Ok(f),
        (true, _) => Err(format!("{s} is negative: it must be 0 or more")),
        (false, _) => Err(format!("{s} must be greater than 0")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    finite(s, false)
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    finite(s, true)
}

/// Seconds: greater than 0 and at most a year.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let f = finite(s, false)?;
    if f > MAX_SECONDS {
        return Err(format!("{s} seconds is more than a year"));
    }
    Ok(f)
}

fn parse_temperature(s: &str) -> Result<f32, String> {
    let f = finite(s, true)? as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(format!("{s} is too large"))
    }
}

fn parse_top_p(s: &str) -> Result<f32, String> {
    let f = finite(s, false)?;
    if f <= 1.0 {
        Ok(f as f32)
    } else {
        Err(format!("{s} is outside (0, 1]"))
    }
}

fn parse_unit(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{s} is outside [0, 1]"))
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{s} is outside [0, 1)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
        negative_values(Cli::command()).debug_assert();
    }

    #[test]
    fn every_command_is_one_line_in_the_top_level_help() {
        // The list is for scanning: each command's first paragraph (`about`) is one short line;
        // the rest is its `long_about`, shown by `instill CMD --help`.
        for sub in Cli::command().get_subcommands() {
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(!about.is_empty(), "{} has no about", sub.get_name());
            assert!(
                !about.contains('\n') && about.chars().count() <= 90,
                "{}: about is not one short line: {about:?}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn counts_refuse_zero_and_negative_numbers() {
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count(" 64 "), Ok(64));
        for bad in [
            "0",
            "-1",
            "x",
            "",
            "1.5",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_fractions_parse() {
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err() && parse_size("1X").is_err());
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert!(parse_fraction("1").is_err() && parse_fraction("-0.1").is_err());
    }

    #[test]
    fn limits_refuse_nan_infinity_and_nonpositive_values() {
        for bad in [
            "NaN", "nan", "inf", "-inf", "infinity", "0", "-1", "1e400", "x", "",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
            assert!(parse_positive(bad).is_err(), "{bad}");
            assert!(parse_top_p(bad).is_err(), "{bad}");
        }
        for bad in ["NaN", "inf", "-inf", "-0.5", "1e39"] {
            assert!(parse_temperature(bad).is_err(), "{bad}");
        }
        assert!(parse_non_negative("-1").is_err() && parse_non_negative("NaN").is_err());
        assert!(parse_seconds("1e9").is_err());
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert_eq!(parse_temperature("0"), Ok(0.0));
        assert_eq!(parse_top_p("1"), Ok(1.0));
        assert_eq!(parse_non_negative("0"), Ok(0.0));
        assert!(parse_top_p("1.5").is_err());
    }
}
