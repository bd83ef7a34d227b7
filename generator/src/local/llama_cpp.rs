//! The llama.cpp engine (`--backend llama-cpp`, the `llama-cpp` feature): llama.cpp's context as
//! the forward pass only. Sequences are `seq_id`s in one context whose KV cache holds
//! `batch × context` cells; those joining together are prefilled in one `decode` call, and every
//! active sequence is decoded in one call per step. Tokenizing, the chat template, sampling and
//! stop rules are instill's own ([`Codec`], [`super::engine`]), as with candle.
//!
//! A finished sequence's cells are kept with the tokens they hold: a later prompt takes the free
//! slot whose tokens share the longest prefix with it and is prefilled from where they differ
//! (llama-server's prompt cache). Self-instruct prompts share their header; `n` choices of one
//! prompt share all of it.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use super::{Codec, Forward, LocalError};

/// Positions per sequence at most: the KV cache (`batch ×` this cells) is allocated up front,
/// and a model's trained context (8k for SmolLM2, 32k and more for others) would make it
/// gigabytes at batch 8.
pub const MAX_SEQ_CONTEXT: usize = 4096;
/// Tokens per `decode` call: longer prefills are split.
const N_BATCH: usize = 2048;
/// Tokens per compute pass inside a `decode` call (llama.cpp's default is 512). Self-instruct
/// prompts run 450–650 tokens: at 512 each prefill ended in a pass of a few dozen tokens, and
/// 1024 made the 16-request `generate` job 12% faster (40.6 against 36.0 tokens/s).
const N_UBATCH: usize = 1024;
/// Sequences one llama.cpp context can hold (llama.cpp's `LLAMA_MAX_SEQ`).
const MAX_SEQS: usize = 256;

fn llama_err(e: impl std::fmt::Display) -> LocalError {
    LocalError::LlamaCpp(e.to_string())
}

/// llama.cpp's process-wide backend, initialised once; its logging goes to `tracing`, and only
/// when debug logging is on (it reports every tensor it loads).
fn backend() -> Result<&'static LlamaBackend, LocalError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let on = tracing::enabled!(tracing::Level::DEBUG);
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(on),
            );
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LocalError::LlamaCpp(e.clone()))
}

/// Refuses anything but a GGUF file, saying which engine takes it.
fn gguf_only(path: &Path) -> Result<(), LocalError> {
    let unsupported = |what: &str| LocalError::Unsupported {
        path: path.to_path_buf(),
        message: format!(
            "{what}; the llama-cpp backend runs GGUF files only (use --backend candle for a Hugging Face safetensors directory)"
        ),
    };
    if path.is_dir() {
        return Err(unsupported("a directory"));
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => unsupported("not a GGUF file"),
            _ => instill_models::ModelFileError::io(path, e).into(),
        })?;
    if &magic != b"GGUF" {
        return Err(unsupported("not a GGUF file"));
    }
    Ok(())
}

/// A GGUF model loaded into llama.cpp, with instill's codec for it.
#[derive(Debug)]
pub struct LlamaCppModel {
    model: LlamaModel,
    /// The tokenizer and chat template read from the GGUF file (or the given tokenizer).
    pub codec: Codec,
    path: PathBuf,
}

impl LlamaCppModel {
    /// Loads `path` (a GGUF file); `tokenizer` replaces the file's own tokenizer.
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<LlamaCppModel, LocalError> {
        gguf_only(path)?;
        let content = instill_models::gguf::read(path)?;
        let codec = Codec::from_gguf(path, &content, tokenizer)?;
        let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
            .map_err(|e| LocalError::Unsupported {
                path: path.to_path_buf(),
                message: format!("llama.cpp cannot load it: {e}"),
            })?;
        Ok(LlamaCppModel {
            model,
            codec,
            path: path.to_path_buf(),
        })
    }

    /// A context for `sequences` sequences decoded together, each up to the model's trained
    /// context capped at [`MAX_SEQ_CONTEXT`]; as many threads as the machine has cores.
    pub fn engine(&self, sequences: usize) -> Result<LlamaEngine<'_>, LocalError> {
        if sequences == 0 || sequences > MAX_SEQS {
            return Err(LocalError::Unsupported {
                path: self.path.clone(),
                message: format!(
                    "llama.cpp decodes 1 to {MAX_SEQS} sequences together, not {sequences}"
                ),
            });
        }
        let per_seq = (self.model.n_ctx_train() as usize).clamp(1, MAX_SEQ_CONTEXT);
        let cells = u32::try_from(per_seq * sequences)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| LocalError::Internal("KV cache size out of range".into()))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = i32::try_from(threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(cells))
            .with_n_batch(N_BATCH as u32)
            .with_n_ubatch(N_UBATCH as u32)
            .with_n_seq_max(sequences as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);

        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(llama_err)?;
        // Each sequence gets an equal share of the (possibly padded) cache.
        let context = (ctx.n_ctx() as usize / sequences).min(per_seq);
        let vocab = usize::try_from(self.model.n_vocab()).map_err(llama_err)?;
        Ok(LlamaEngine {
            ctx,
            batch: LlamaBatch::new(N_BATCH, 1),
            free: (0..sequences as i32).rev().collect(),
            cached: vec![Vec::new(); sequences],
            sequences,
            context,
            vocab,
            reused: 0,
        })
    }
}

/// A llama.cpp context serving up to `sequences` sequences at once.
#[derive(Debug)]
pub struct LlamaEngine<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Sequence ids not in use.
    free: Vec<i32>,
    /// Per sequence id, the tokens whose keys and values its cells hold (positions 0..), kept
    /// after the sequence ends for the next prompt that shares a prefix with them.
    cached: Vec<Vec<u32>>,
    sequences: usize,
    context: usize,
    vocab: usize,
    /// Prompt tokens taken from the cache instead of being prefilled, since the engine started.
    reused: usize,
}

/// A sequence's id in the shared context and the positions it holds.
#[derive(Debug)]
pub struct LlamaSeq {
    id: i32,
    len: usize,
}

impl LlamaEngine<'_> {
    /// Prompt tokens taken from earlier sequences' cells instead of being prefilled.
    pub fn reused_tokens(&self) -> usize {
        self.reused
    }

    /// Takes the free sequence id whose cached tokens share the longest prefix with `prompt`,
    /// drops its cells past that prefix, and returns it with the positions kept (at most all
    /// but the prompt's last token, whose logits the caller needs).
    fn take_slot(&mut self, prompt: &[u32]) -> Result<(i32, usize), LocalError> {
        let common = |id: i32| {
            let cached = &self.cached[id as usize];
            cached
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        // Ties go to the lowest id, so the ids in use stay packed (see `decode`).
        let best = (0..self.free.len())
            .max_by_key(|&i| (common(self.free[i]), std::cmp::Reverse(self.free[i])))
            .ok_or_else(|| LocalError::Internal("no free sequence".into()))?;
        let id = self.free.swap_remove(best);
        let mut keep = common(id).min(prompt.len().saturating_sub(1));
        // Removing a tail can fail (models whose memory is not per position): start afresh.
        let trimmed = u32::try_from(keep).ok().is_some_and(|p0| {
            matches!(
                self.ctx.clear_kv_cache_seq(Some(id as u32), Some(p0), None),
                Ok(true)
            )
        });
        if !trimmed {
            keep = 0;
            let _ = self.ctx.clear_kv_cache_seq(Some(id as u32), None, None);
        }
        let cached = &mut self.cached[id as usize];
        cached.truncate(keep);
        cached.extend_from_slice(&prompt[keep..]);
        self.reused += keep;
        Ok((id, keep))
    }

    /// Adds one token to the pending `decode` batch, flushing it first when full.
    fn push(
        &mut self,
        token: u32,
        pos: usize,
        seq: i32,
        logits: Option<usize>,
        rows: &mut Vec<(i32, usize)>,
        out: &mut [f32],
    ) -> Result<(), LocalError> {
        if self.batch.n_tokens() as usize >= N_BATCH {
            self.flush(rows, out)?;
        }
        let token = i32::try_from(token).map_err(llama_err)?;
        let pos = i32::try_from(pos).map_err(llama_err)?;
        if let Some(row) = logits {
            rows.push((self.batch.n_tokens(), row));
        }
        self.batch
            .add(LlamaToken::new(token), pos, &[seq], logits.is_some())
            .map_err(llama_err)
    }

    /// Runs the pending batch and copies the logits asked for into `out` (row-major, `vocab`
    /// wide): `rows` pairs a batch index with its row.
    fn flush(&mut self, rows: &mut Vec<(i32, usize)>, out: &mut [f32]) -> Result<(), LocalError> {
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        self.ctx.decode(&mut self.batch).map_err(llama_err)?;
        for (i, row) in rows.drain(..) {
            let logits = self.ctx.get_logits_ith(i);
            let dst = out
                .get_mut(row * self.vocab..(row + 1) * self.vocab)
                .ok_or_else(|| LocalError::Internal("logits row out of range".into()))?;
            dst.copy_from_slice(logits.get(..self.vocab).unwrap_or(logits));
        }
        self.batch.clear();
        Ok(())
    }

    fn logits(&self, values: Vec<f32>, rows: usize) -> Result<Tensor, LocalError> {
        Ok(Tensor::from_vec(values, (rows, self.vocab), &Device::Cpu)?)
    }
}

impl Forward for LlamaEngine<'_> {
    type Seq = LlamaSeq;

    fn context(&self) -> usize {
        self.context
    }

    fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(Vec<LlamaSeq>, Tensor), LocalError> {
        if prompts.len() > self.free.len() {
            return Err(LocalError::Internal(format!(
                "{} sequences joining, {} free",
                prompts.len(),
                self.free.len()
            )));
        }
        let mut seqs = Vec::with_capacity(prompts.len());
        let mut out = vec![0f32; prompts.len() * self.vocab];
        let mut rows = Vec::with_capacity(prompts.len());
        self.batch.clear();
        let mut slots = Vec::with_capacity(prompts.len());
        for (row, prompt) in prompts.iter().enumerate() {
            let (id, keep) = self.take_slot(prompt)?;
            tracing::debug!(
                seq = id,
                prompt = prompt.len(),
                cached = keep,
                "llama.cpp prefill"
            );
            slots.push((id, keep, row));
            seqs.push(LlamaSeq {
                id,
                len: prompt.len(),
            });
        }
        // In seq id order, as in `decode`.
        slots.sort_unstable();
        for (id, keep, row) in slots {
            let prompt = prompts[row];
            for (pos, &token) in prompt.iter().enumerate().skip(keep) {
                let last = (pos + 1 == prompt.len()).then_some(row);
                self.push(token, pos, id, last, &mut rows, &mut out)?;
            }
        }
        self.flush(&mut rows, &mut out)?;
        Ok((seqs, self.logits(out, prompts.len())?))
    }

    fn decode(&mut self, tokens: &[u32], seqs: &mut [&mut LlamaSeq]) -> Result<Tensor, LocalError> {
        let mut out = vec![0f32; seqs.len() * self.vocab];
        let mut rows = Vec::with_capacity(seqs.len());
        self.batch.clear();
        // In seq id order: llama.cpp splits a batch over several sequences' caches into one
        // compute pass per run of consecutive ids, so 8 sequences out of order cost several
        // passes of a few rows each instead of one pass of 8.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&row| seqs[row].id);
        for row in order {
            let (token, seq) = (tokens[row], &mut seqs[row]);
            self.push(token, seq.len, seq.id, Some(row), &mut rows, &mut out)?;
            if let Some(cached) = self.cached.get_mut(seq.id as usize) {
                cached.push(token);
            }
            seq.len += 1;
        }
        self.flush(&mut rows, &mut out)?;
        self.logits(out, seqs.len())
    }

    fn len(&self, seq: &LlamaSeq) -> usize {
        seq.len
    }

    fn release(&mut self, seq: LlamaSeq) {
        // Its cells stay, with the tokens they hold, for a later prompt to share.
        self.free.push(seq.id);
    }

    fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        self.free = (0..self.sequences as i32).rev().collect();
        self.cached.iter_mut().for_each(Vec::clear);
    }
}
