//! The local backend: a model on its own thread behind a command channel (the
//! text-embeddings-inference pattern), serving the same requests as the HTTP backend with
//! continuous batching. Two engines run the forward pass ([`Engine`]): candle, and llama.cpp
//! (the `llama-cpp` feature); tokenizing, sampling and the serve loop are shared.

mod engine;
mod forward;
#[cfg(feature = "llama-cpp")]
pub mod llama_cpp;
mod load;
mod model;
mod sampler;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;

use instill_models::{CodecError, DeviceError};
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub use engine::{Admission, Batch, Finished, SeqParams, generate_all};
pub use forward::Forward;
/// The tokenizer and chat template (from `instill-models`).
pub use instill_models::Codec;
pub use load::{LoadOptions, Loaded, load};
pub use model::{KvCache, Layer, Linear, Model, argmax};

use crate::completion::{Api, BackendError, Choice, Completion, CompletionRequest};

/// Why a local model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file is not a kind of model instill runs.
    #[error("{}: unsupported model: {message}", path.display())]
    Unsupported {
        /// The file or directory.
        path: PathBuf,
        /// What was found and what is supported.
        message: String,
    },
    /// A model file holds a value instill cannot use (the file and the field are named).
    #[error(transparent)]
    ModelFile(#[from] instill_models::ModelFileError),
    /// Tokenizing, detokenizing or rendering the chat template failed.
    #[error(transparent)]
    Codec(CodecError),
    /// A chat prompt for a model that ships no chat template.
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// Prompt plus reply exceed the model's context.
    #[error("context length exceeded: {needed} tokens needed, the model takes {limit}")]
    ContextLength {
        /// Tokens the sequence would need.
        needed: usize,
        /// The model's context length.
        limit: usize,
    },
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The device or dtype cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// llama.cpp failed to load the model or to run it.
    #[error("llama.cpp: {0}")]
    LlamaCpp(String),
    /// The engine was left out of this build.
    #[error(
        "this instill was built without the {feature} feature; rebuild with it (cargo install --features {feature}, needs cmake, a C++ compiler and libclang) or use --backend candle"
    )]
    EngineMissing {
        /// The Cargo feature that adds it.
        feature: &'static str,
    },
    /// A broken invariant of this module.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CodecError> for LocalError {
    fn from(e: CodecError) -> LocalError {
        match e {
            CodecError::NoChatTemplate => LocalError::NoChatTemplate,
            CodecError::File(file) => LocalError::ModelFile(file),
            other => LocalError::Codec(other),
        }
    }
}

impl From<LocalError> for BackendError {
    fn from(e: LocalError) -> BackendError {
        match e {
            LocalError::ContextLength { needed, limit } => BackendError::ContextLength(format!(
                "{needed} tokens needed, the model takes {limit}"
            )),
            other => BackendError::Fatal {
                status: 0,
                message: format!("local model: {other}"),
            },
        }
    }
}

/// The in-process engine that runs a local model's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// candle: safetensors directories and GGUF files, CPU or CUDA; the engine training uses.
    #[default]
    Candle,
    /// llama.cpp (the `llama-cpp` feature): GGUF files on the CPU, with its quantized kernels.
    LlamaCpp,
}

/// How the local backend runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// The engine.
    pub engine: Engine,
    /// A Hugging Face model directory or a GGUF file (llama.cpp: a GGUF file).
    pub model: PathBuf,
    /// A `tokenizer.json` to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// `cpu` or `cuda` (`cuda:N` for another GPU); candle only.
    pub device: String,
    /// Dense weights' type: `f32`, `bf16` or `f16`; candle only.
    pub dtype: String,
    /// Sequences decoded together.
    pub batch_size: usize,
    /// Expand quantized GGUF weights to f32 (see [`LoadOptions::dequantize`]).
    pub dequantize: bool,
    /// `chat`: prompts go through the model's chat template; `completion`: sent as they are.
    pub api: Api,
    /// Seed of every sequence's sampler (mixed with the prompt, the request's own seed when it
    /// has one, and the choice index).
    pub seed: u64,
}

/// Opens the configured device and loads the model onto it.
fn load_on_device(config: &LocalConfig) -> Result<Loaded, LocalError> {
    let device = instill_models::device(&config.device)?;
    let options = LoadOptions {
        dtype: instill_models::device::dtype_on(&config.dtype, &device)?,
        tokenizer: config.tokenizer.as_deref(),
        dequantize: config.dequantize,
    };
    let loaded = load(&config.model, &device, &options)?;
    chat_ready(config, &loaded.codec)?;
    Ok(loaded)
}

#[derive(Debug)]
struct Job {
    request: CompletionRequest,
    reply: tokio::sync::oneshot::Sender<Result<Completion, BackendError>>,
}

/// A handle on the model thread; clones share it. The thread ends when the last handle drops.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    jobs: mpsc::Sender<Job>,
    name: String,
    template: Option<instill_models::ChatTemplate>,
}

impl LocalBackend {
    /// Loads the model on a new thread and returns once it is ready (or failed to load).
    pub fn start(config: LocalConfig) -> Result<LocalBackend, LocalError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) =
            mpsc::channel::<Result<Option<instill_models::ChatTemplate>, LocalError>>();
        let name = config.model.display().to_string();
        std::thread::Builder::new()
            .name("instill-local".into())
            .spawn(move || match config.engine {
                Engine::Candle => match load_on_device(&config) {
                    Ok(loaded) => {
                        let _ = ready_tx.send(Ok(loaded.codec.template()));
                        serve(&loaded.model, &loaded.codec, &config, &inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
                Engine::LlamaCpp => serve_llama_cpp(&config, &ready_tx, &inbox),
            })
            .map_err(|e| LocalError::Internal(format!("cannot start the model thread: {e}")))?;
        let template = ready_rx
            .recv()
            .map_err(|_| LocalError::Internal("the model thread died while loading".into()))??;
        Ok(LocalBackend {
            jobs,
            name,
            template,
        })
    }

    /// Completes one request on the model thread.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || BackendError::Fatal {
            status: 0,
            message: "the local model thread stopped".into(),
        };
        self.jobs
            .send(Job {
                request: request.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The model path, as recorded with each request.
    pub fn model(&self) -> &str {
        &self.name
    }

    /// The model's chat template, when it ships one.
    pub fn chat_template(&self) -> Option<&instill_models::ChatTemplate> {
        self.template.as_ref()
    }
}

#[derive(Debug)]
struct Pending {
    reply: tokio::sync::oneshot::Sender<Result<Completion, BackendError>>,
    choices: Vec<Option<Choice>>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The llama.cpp engine's thread: load, report ready, serve.
#[cfg(feature = "llama-cpp")]
fn serve_llama_cpp(config: &LocalConfig, ready: &Ready, inbox: &mpsc::Receiver<Job>) {
    let loaded = llama_cpp::LlamaCppModel::load(&config.model, config.tokenizer.as_deref())
        .and_then(|m| chat_ready(config, &m.codec).map(|()| m));
    let model = match loaded {
        Ok(model) => model,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    match model.engine(config.batch_size.max(1)) {
        Ok(engine) => {
            let _ = ready.send(Ok(model.codec.template()));
            serve(engine, &model.codec, config, inbox);
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

#[cfg(not(feature = "llama-cpp"))]
fn serve_llama_cpp(_: &LocalConfig, ready: &Ready, _: &mpsc::Receiver<Job>) {
    let _ = ready.send(Err(LocalError::EngineMissing {
        feature: "llama-cpp",
    }));
}

/// A chat prompt needs the model's template: refused before the run starts, not per request.
fn chat_ready(config: &LocalConfig, codec: &Codec) -> Result<(), LocalError> {
    if config.api == Api::Chat && codec.chat_template.is_none() {
        return Err(LocalError::NoChatTemplate);
    }
    Ok(())
}

type Ready = mpsc::Sender<Result<Option<instill_models::ChatTemplate>, LocalError>>;
type Waiting = VecDeque<(u64, std::sync::Arc<Vec<u32>>, SeqParams)>;

/// The model thread: takes jobs whenever the batch has room, decodes, answers finished jobs.
fn serve<F: Forward>(
    mut model: F,
    codec: &Codec,
    config: &LocalConfig,
    inbox: &mpsc::Receiver<Job>,
) {
    let mut batch = Batch::default();
    let mut waiting: Waiting = VecDeque::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_job = 0u64;
    let mut open = true;
    loop {
        // Block for work only when nothing is in flight.
        if batch.is_empty() && waiting.is_empty() {
            match inbox.recv() {
                Ok(job) => enqueue(
                    job,
                    &mut next_job,
                    codec,
                    config,
                    &mut waiting,
                    &mut pending,
                ),
                Err(_) => return,
            }
        }
        while open {
            match inbox.try_recv() {
                Ok(job) => enqueue(
                    job,
                    &mut next_job,
                    codec,
                    config,
                    &mut waiting,
                    &mut pending,
                ),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        let stepped = admit(
            &mut batch,
            &mut model,
            codec,
            config,
            &mut waiting,
            &mut pending,
        )
        .and_then(|()| batch.step(&mut model, codec));
        match stepped {
            Ok(done) => done.into_iter().for_each(|f| finish(f, &mut pending)),
            Err(e) => {
                // A failed forward pass leaves the batch unusable: fail its jobs, start afresh.
                let message = e.to_string();
                let jobs: Vec<u64> = pending.keys().copied().collect();
                for job in jobs {
                    fail(job, LocalError::Internal(message.clone()), &mut pending);
                }
                batch.clear(&mut model);
                waiting.clear();
            }
        }
        if !open && batch.is_empty() && waiting.is_empty() {
            return;
        }
    }
}

/// Moves waiting sequences into the free slots (again when some joined and finished at once),
/// those joining together prefilled in one forward call.
fn admit<F: Forward>(
    batch: &mut Batch<F::Seq>,
    model: &mut F,
    codec: &Codec,
    config: &LocalConfig,
    waiting: &mut Waiting,
    pending: &mut HashMap<u64, Pending>,
) -> Result<(), LocalError> {
    loop {
        let room = config.batch_size.max(1).saturating_sub(batch.len());
        let joining: Vec<_> = waiting.drain(..room.min(waiting.len())).collect();
        if joining.is_empty() {
            return Ok(());
        }
        let admissions: Vec<Admission> = joining
            .iter()
            .map(|(tag, prompt, params)| (*tag, prompt.as_slice(), params.clone()))
            .collect();
        let results = batch.admit_all(model, codec, admissions)?;
        for ((tag, _, _), result) in joining.iter().zip(results) {
            match result {
                Ok(Some(done)) => finish(done, pending),
                Ok(None) => {}
                Err(e) => fail(tag >> 16, e, pending),
            }
        }
    }
}

fn enqueue(
    job: Job,
    next_job: &mut u64,
    codec: &Codec,
    config: &LocalConfig,
    waiting: &mut Waiting,
    pending: &mut HashMap<u64, Pending>,
) {
    let id = *next_job;
    *next_job += 1;
    let r = &job.request;
    let prompt = match codec.encode_prompt(&r.prompt, config.api == Api::Chat) {
        Ok(ids) => std::sync::Arc::new(ids),
        Err(e) => {
            let _ = job.reply.send(Err(LocalError::from(e).into()));
            return;
        }
    };
    let n = r.n.clamp(1, u16::MAX as u32) as u64;
    let mut base = xxh3_64_with_seed(r.prompt.as_bytes(), config.seed);
    if let Some(seed) = r.seed {
        base = xxh3_64_with_seed(&seed.to_le_bytes(), base);
    }
    for choice in 0..n {
        let params = SeqParams {
            max_new_tokens: r.max_tokens as usize,
            temperature: f64::from(r.temperature),
            top_p: f64::from(r.top_p),
            seed: base.wrapping_add(choice),
            stop: r.stop.clone(),
            stop_ids: codec.special_token_ids(&r.stop),
        };
        waiting.push_back(((id << 16) | choice, prompt.clone(), params));
    }
    pending.insert(
        id,
        Pending {
            reply: job.reply,
            choices: vec![None; n as usize],
            prompt_tokens: prompt.len() as u64,
            completion_tokens: 0,
        },
    );
}

fn finish(done: Finished, pending: &mut HashMap<u64, Pending>) {
    let (job, choice) = (done.tag >> 16, (done.tag & 0xffff) as usize);
    let Some(p) = pending.get_mut(&job) else {
        return;
    };
    p.completion_tokens += done.ids.len() as u64;
    if let Some(slot) = p.choices.get_mut(choice) {
        *slot = Some(Choice::new(&done.text, "", done.finish_reason.to_string()));
    }
    if p.choices.iter().all(Option::is_some)
        && let Some(p) = pending.remove(&job)
    {
        let completion = Completion {
            choices: p.choices.into_iter().flatten().collect(),
            prompt_tokens: Some(p.prompt_tokens),
            completion_tokens: Some(p.completion_tokens),
        };
        let _ = p.reply.send(Ok(completion));
    }
}

fn fail(job: u64, error: LocalError, pending: &mut HashMap<u64, Pending>) {
    if let Some(p) = pending.remove(&job) {
        let _ = p.reply.send(Err(error.into()));
    }
}
