//! `instill generate`: wiring the generator to the command line: backend, template, seeds,
//! rules, progress bar, Ctrl-C, summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use instill_core::{Lang, Record};
use instill_dedup::Rules;
use instill_generator::{
    Backend, BackendError, ChatConfig, Ending, GenerateError, MagpieConfig, MagpieTemplate,
    Progress, RequestParams, RunConfig, RunReport,
};
use instill_prompts::{ChatPrompts, Shape, Template};
use instill_storage::Db;
use serde::Serialize;

use crate::cli::{ApiArg, GenerateArgs, GlobalArgs, ModeArg};
use crate::cmd::filter::load_rules;
use crate::cmd::sent::Sent;
use crate::cmd::{backend, magpie, stage};
use crate::signals::Seen;
use crate::{Outcome, progress};

#[derive(Debug, Serialize)]
struct Summary<'a> {
    run: &'a str,
    mode: &'static str,
    /// --mode chat: exchanges per conversation.
    turns: Option<u32>,
    /// --mode chat: conversations judged (accepted and rejected).
    conversations: Option<u64>,
    ending: &'static str,
    accepted: u64,
    target: u64,
    rejected: u64,
    rejected_by_reason: &'a BTreeMap<String, u64>,
    #[serde(flatten)]
    sent: Sent<'a>,
    parse_issues: u64,
    truncated_replies: u64,
    /// Replies that held reasoning and no answer (cut off while thinking: raise --max-tokens).
    replies_without_answer: u64,
    accepted_per_1k_tokens: f64,
    seconds: f64,
}

/// What a run generates, with its prompts.
enum Job {
    /// Self-instruct with this template.
    Instruct(Template),
    /// Self-chat with these prompts and exchanges per conversation.
    Chat(ChatPrompts, u32),
    /// Magpie with the prompts derived from the model's chat template.
    Magpie(MagpieTemplate),
}

pub async fn run(global: &GlobalArgs, args: &GenerateArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    check_mode(args)?;
    let model =
        backend::resolve_model(global, &args.server, args.model.as_deref(), "--model").await?;
    let lang = Lang::from(args.lang);
    let job = match args.mode {
        ModeArg::Instruct => {
            let mut template = load_template(&args.template, lang, args.server.api.into())?;
            if let Some(n) = args.tasks_per_prompt {
                template.tasks = n.max(args.seeds_per_prompt + args.generated_per_prompt + 1);
            }
            Some(Job::Instruct(template))
        }
        ModeArg::Chat => Some(Job::Chat(ChatPrompts::builtin(lang)?, turns(args))),
        // Magpie's prompts come from the model's chat template, known once it is opened.
        ModeArg::Magpie => None,
    };
    let rules = load_rules(&args.accept.rules)?;
    let api_key = backend::access(&args.server)?;
    let run_name = run_name(args, job.as_ref(), lang);
    if !global.quiet {
        eprintln!("{}", start_line(global, args, &run_name, &model));
    }
    let mut server = args.server.clone();
    if args.mode == ModeArg::Magpie {
        // Both of magpie's steps are text rendered here, continued as it is.
        server.api = ApiArg::Completion;
    }
    let backend = backend::open(&server, &args.send, model.clone(), api_key, args.seed).await?;
    let job = match job {
        Some(job) => job,
        None => Job::Magpie(magpie::template(global, args, &model, &backend).await?),
    };
    let db = Db::open(&global.db).await?;
    let seeds: Vec<_> = match job {
        Job::Magpie(_) => Vec::new(),
        _ => db
            .list_seeds(Some(lang))
            .await?
            .into_iter()
            .map(|s| s.seed.record)
            .collect(),
    };
    let config = run_config(args, run_name.clone(), job, seeds, rules);
    let seen = Seen::default();
    let result = generate(global, args, &db, &backend, config, started, &seen).await?;
    db.close().await;
    let report = result
        .map_err(|e| anyhow::anyhow!(message(&e, args.mode)))
        .context(format!("run {run_name}"))?;
    let summary = Summary::new(&run_name, &report, args, started.elapsed());
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(match report.ending {
        Ending::Target => Outcome::Done,
        Ending::MaxRequests => Outcome::Partial,
        Ending::Interrupted => seen.outcome(),
    })
}

/// Exchanges per conversation (--mode chat).
const DEFAULT_TURNS: u32 = 3;

fn turns(args: &GenerateArgs) -> u32 {
    args.turns.unwrap_or(DEFAULT_TURNS)
}

/// Refuses flags that mean nothing in the mode asked for (before anything is opened).
fn check_mode(args: &GenerateArgs) -> anyhow::Result<()> {
    match args.mode {
        ModeArg::Instruct => {
            if args.turns.is_some() {
                anyhow::bail!("--turns is for --mode chat (conversations of K exchanges)");
            }
            if args.system.is_some() {
                anyhow::bail!(
                    "--system is for --mode magpie (the system prompt before the model writes a user's turn)"
                );
            }
        }
        ModeArg::Magpie => magpie::check(args)?,
        ModeArg::Chat => {
            let refused = [
                (args.template != "self_instruct", "--template"),
                (args.tasks_per_prompt.is_some(), "--tasks-per-prompt"),
                (args.generated_per_prompt > 0, "--generated-per-prompt"),
                (args.n != 1, "--n"),
                (args.server.api == ApiArg::Completion, "--api completion"),
                (args.system.is_some(), "--system"),
            ];
            if let Some((_, flag)) = refused.iter().find(|(bad, _)| *bad) {
                anyhow::bail!(
                    "{flag} does not apply to --mode chat: a conversation is one reply per turn from the built-in user and assistant prompts of --lang, each sent as a chat message"
                );
            }
        }
    }
    Ok(())
}

/// The run's name: `--run`, else `LANG-TEMPLATE-sSEED` (chat: `LANG-chat-tK-sSEED`).
/// Magpie: `magpie-sSEED`.
fn run_name(args: &GenerateArgs, job: Option<&Job>, lang: Lang) -> String {
    args.run.clone().unwrap_or_else(|| {
        let t = match job {
            Some(Job::Instruct(template)) => template
                .name()
                .split('.')
                .next()
                .unwrap_or("custom")
                .replace('/', "-"),
            Some(Job::Chat(_, k)) => format!("chat-t{k}"),
            Some(Job::Magpie(_)) | None => return format!("magpie-s{}", args.seed),
        };
        format!("{}-{t}-s{}", lang.as_str(), args.seed)
    })
}

/// A run's settings, any mode.
enum Config {
    Instruct(RunConfig),
    Chat(ChatConfig),
    Magpie(MagpieConfig),
}

/// The library's settings from the flags.
fn run_config(
    args: &GenerateArgs,
    name: String,
    job: Job,
    seeds: Vec<Record>,
    rules: Rules,
) -> Config {
    let request = RequestParams {
        max_tokens: args.sampling.max_tokens,
        temperature: args.sampling.temperature,
        top_p: args.sampling.top_p,
        stop: args.sampling.stop.clone(),
        n: args.n,
    };
    let send = stage::sending(&args.send, request);
    let rouge = args.accept.rouge();
    match job {
        Job::Magpie(template) => Config::Magpie(MagpieConfig {
            name,
            target: args.target,
            template,
            seed: args.seed,
            send: send.clone(),
            max_requests: args.max_requests,
            rules,
            rouge,
            lease: Duration::from_secs_f64(args.lease_seconds.max(1.0)),
        }),
        Job::Instruct(template) => Config::Instruct(RunConfig {
            name,
            target: args.target,
            template,
            seeds,
            seeds_per_prompt: args.seeds_per_prompt,
            generated_per_prompt: args.generated_per_prompt,
            seed: args.seed,
            send: send.clone(),
            max_requests: args.max_requests,
            rules,
            rouge,
        }),
        Job::Chat(prompts, turns) => Config::Chat(ChatConfig {
            name,
            target: args.target,
            turns,
            prompts,
            seeds,
            seeds_per_prompt: args.seeds_per_prompt,
            seed: args.seed,
            send: send.clone(),
            max_requests: args.max_requests,
            rules,
            rouge,
            lease: Duration::from_secs_f64(args.lease_seconds.max(1.0)),
        }),
    }
}

/// Runs generation with a progress bar until the target, the budget or SIGINT/SIGTERM (after
/// which the run stops once its work is saved, and the process exits 130 or 143): as one worker of a
/// shared run on Postgres, or as the only writer of a SQLite file.
async fn generate(
    global: &GlobalArgs,
    args: &GenerateArgs,
    db: &Db,
    backend: &Backend,
    config: Config,
    started: Instant,
    seen: &Seen,
) -> anyhow::Result<Result<RunReport, GenerateError>> {
    let bar = progress::accepted(
        progress::enabled(global.no_progress),
        args.target,
        progress_line(&Progress::default(), Duration::ZERO, &BTreeMap::new()),
    );
    let tick = |p: &Progress| {
        bar.set_position(p.accepted.min(args.target));
        bar.set_message(progress_line(
            p,
            started.elapsed(),
            &backend.failed_attempts(),
        ));
    };
    let shutdown = crate::signals::Signals::listen()?.shutdown(seen);
    // SQLite: one writer. A second `generate` on the same file is refused, not interleaved.
    let _guard = stage::sqlite_lock(&global.db, "generate", "generating process")?;
    let result = match (config, db.backend()) {
        // Chat and magpie runs: on Postgres this process is one worker of the run, as for any.
        (Config::Chat(config), _) => {
            instill_generator::run_chat(db, backend, config, shutdown, tick).await
        }
        (Config::Magpie(config), _) => {
            instill_generator::run_magpie(db, backend, config, shutdown, tick).await
        }
        // Postgres: this process is one worker of the run; start more on any machine.
        (Config::Instruct(config), instill_storage::Backend::Postgres) => {
            let lease = Duration::from_secs_f64(args.lease_seconds.max(1.0));
            instill_generator::run_worker(db, backend, config, lease, shutdown, tick).await
        }
        (Config::Instruct(config), instill_storage::Backend::Sqlite) => {
            instill_generator::run(db, backend, config, shutdown, tick).await
        }
    };
    bar.finish_and_clear();
    Ok(result)
}

/// The library's error as the command line says it: naming the flags that change the outcome.
fn message(e: &GenerateError, mode: ModeArg) -> String {
    match e {
        GenerateError::Fatal(BackendError::Fatal { status: 404 | 405, .. })
            if mode == ModeArg::Magpie =>
        {
            format!(
                "{e} (--mode magpie sends raw text to the server's /completions endpoint: a chat-only API, without one, cannot continue the text before a user's turn; use a server that serves /completions, or --backend candle)"
            )
        }
        GenerateError::NoSeeds => {
            format!("{e}: import some with `instill seeds import` (or --builtin)")
        }
        GenerateError::GeneratedExamplesShared => "--generated-per-prompt needs the acceptor's pool in every prompt: on Postgres (shared runs) keep it at 0".into(),
        GenerateError::SettingsChanged { run, differences } => format!(
            "run `{run}` was started with other settings ({}); resume it with the same ones, or start a new run with --run NAME",
            differences.join("; ")
        ),
        GenerateError::Fatal(BackendError::Unreachable { url, cause, grace }) => format!(
            "cannot connect to {url}: {cause}; no request has reached it in {:.0} s of trying (is the server running, and is --base-url or OPENAI_BASE_URL right?)",
            grace.as_secs_f64()
        ),
        e => e.to_string(),
    }
}

impl<'a> Summary<'a> {
    /// The summary of a run's report.
    fn new(run: &'a str, report: &'a RunReport, args: &GenerateArgs, elapsed: Duration) -> Self {
        let p = &report.progress;
        let sent = Sent::new(p, &args.send);
        let tokens = sent.tokens();
        let chat = args.mode == ModeArg::Chat;
        Summary {
            run,
            mode: match args.mode {
                ModeArg::Instruct => "instruct",
                ModeArg::Chat => "chat",
                ModeArg::Magpie => "magpie",
            },
            turns: chat.then(|| turns(args)),
            conversations: chat.then(|| p.accepted + p.rejected.values().sum::<u64>()),
            ending: match report.ending {
                Ending::Target => "target",
                Ending::MaxRequests => "max_requests",
                Ending::Interrupted => "interrupted",
            },
            accepted: p.accepted,
            target: p.target,
            rejected: p.rejected.values().sum(),
            rejected_by_reason: &p.rejected,
            sent,
            parse_issues: p.parse_issues,
            truncated_replies: p.truncated,
            replies_without_answer: p.no_answer,
            accepted_per_1k_tokens: if tokens > 0 {
                p.accepted as f64 * 1000.0 / tokens as f64
            } else {
                0.0
            },
            seconds: elapsed.as_secs_f64(),
        }
    }
}

fn load_template(spec: &str, lang: Lang, shape: Shape) -> anyhow::Result<Template> {
    let builtin = match spec {
        "self_instruct" | "cot" => Some(format!("{}/{spec}", lang.as_str())),
        "zh/self_instruct" | "en/self_instruct" | "zh/cot" | "en/cot" => Some(spec.to_string()),
        _ => None,
    };
    match builtin {
        Some(name) => Ok(Template::builtin(&name, shape)?),
        None => {
            let text = std::fs::read_to_string(spec)
                .with_context(|| format!("{spec}: cannot read the template"))?;
            Ok(Template::from_source(spec, &text)?)
        }
    }
}

/// The line a run starts with: what it talks to and where it writes (no key, no password).
fn start_line(global: &GlobalArgs, args: &GenerateArgs, run: &str, model: &str) -> String {
    let backend = backend::describe(&args.server);
    let mode = match args.mode {
        ModeArg::Instruct => String::new(),
        ModeArg::Chat => format!(" (chat, {} exchanges per conversation)", turns(args)),
        ModeArg::Magpie => " (magpie)".to_string(),
    };
    format!(
        "generate {run}{mode}: {backend}, model {model}, target {}, concurrency {}, database {}",
        args.target,
        args.send.concurrency,
        instill_core::redact_url(&global.db)
    )
}

/// The progress bar's message: accept rate, rejection reasons, rates, failed attempts by kind
/// (`failed`: as they happen, retries still going on included).
fn progress_line(p: &Progress, elapsed: Duration, failed: &BTreeMap<&str, u64>) -> String {
    let judged = p.accepted + p.rejected.values().sum::<u64>();
    let rate = if judged > 0 {
        100.0 * p.accepted as f64 / judged as f64
    } else {
        0.0
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let reasons: Vec<String> = p.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let failures: Vec<String> = failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        "accept {rate:.0}% | {} | {:.1} req/s | {:.0} tok/s | {}",
        if reasons.is_empty() {
            "no rejections".to_string()
        } else {
            reasons.join(", ")
        },
        p.sent_now as f64 / secs,
        p.prompt_tokens.saturating_add(p.completion_tokens) as f64 / secs,
        if failures.is_empty() {
            "no failed attempts".to_string()
        } else {
            format!("failed attempts: {}", failures.join(", "))
        },
    )
}

fn print_summary(s: &Summary) {
    let verb = match s.ending {
        "target" => "reached the target",
        "max_requests" => "stopped at --max-requests before the target",
        _ => "was interrupted (run the same command to resume)",
    };
    let what = match s.turns {
        Some(k) => format!(" conversations of {k} exchanges"),
        None => String::new(),
    };
    println!(
        "run {}: {verb}: {} of {}{what} accepted, {} rejected",
        s.run, s.accepted, s.target, s.rejected
    );
    for (r, n) in s.rejected_by_reason {
        println!("  rejected {r:<22} {n:>8}");
    }
    s.sent.print_requests();
    if s.parse_issues > 0 || s.truncated_replies > 0 {
        println!(
            "replies: {} unreadable task blocks, {} cut off at max_tokens",
            s.parse_issues, s.truncated_replies
        );
    }
    if s.replies_without_answer > 0 {
        println!(
            "replies: {} held reasoning but no answer (cut off while thinking? raise --max-tokens)",
            s.replies_without_answer
        );
    }
    s.sent.print_tokens(&format!(
        "; {:.2} accepted per 1k tokens",
        s.accepted_per_1k_tokens
    ));
    println!("{:.1} s", s.seconds);
}
