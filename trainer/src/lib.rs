//! instill-trainer: supervised fine-tuning and DPO (full or LoRA) of Llama-family models on
//! curated instruction pairs and preference pairs, with candle on the CPU (or CUDA).
//!
//! - [`model`]: the trainable decoder whose linear layers can carry adapters (we own this file:
//!   candle-transformers' models cannot take adapters).
//! - [`lora`]: adapters, PEFT's tensor names, merging; [`peft`]: `adapter_config.json`, checked.
//! - The base model's configuration and weights come from `instill-models`
//!   (`Weights::open(..)?.into_dense()`: f32 under Hugging Face names, q/k in Hugging Face's
//!   layout), as for the inference decoder.
//! - [`data`]: examples (prompt/response token ids), preference pairs (a prompt, a chosen and a
//!   rejected response), length-bucketed padded batches.
//! - [`optim`]: AdamW, warmup + cosine, clipping. [`train`]: the loop and loss log, resume, one
//!   loop for every [`Objective`] (supervised fine-tuning's masked NLL, or [`dpo`]'s loss).
//! - [`dpo`]: DPO's sigmoid loss and IPO, sequence log-probabilities of pairs, reward metrics,
//!   the reference model (the base with adapters off under LoRA, a frozen copy in full).
//!
//! DPO, for the binary: tokenize each pair into [`PairExample::new`]; build the model as for
//! supervised fine-tuning; take [`Reference::of`] it before training; then
//! [`fit`]`(&model, &Objective::Dpo { train, val, config: DpoConfig { beta, loss }, reference:
//! &reference }, &cfg, ..)`. Each [`StepReport`] (and the [`TrainSummary`]) carries
//! [`DpoMetrics`]; `loss.csv` gets their columns; checkpoints record β and the loss, so a resume
//! with others is refused ([`train::check_fit_resume`] checks it before anything is written).
//! - [`checkpoint`]: crash-safe checkpoints that record the run's settings; a resume must match.
//! - [`score`]: per-sample answer losses for perplexity and IFD, batched, without gradients, on
//!   a [`Model::frozen`] model with the training loss; `frozen` is that model's fast pass (fused
//!   projections and kernels, the LM head only where a loss is counted).
//!
//! - Training on the CPU in f32 runs `fused_pass` (the same decoder through `ops`' fused
//!   kernels, each with a hand-written backward, the LM head only where a loss is counted):
//!   [`Model::nll`] and [`Model::row_logps`]; elsewhere the composed [`Model::forward`].
//!
//! No database, no network, no terminal: the binary reads records, tokenizes and prints.

pub mod checkpoint;
pub mod data;
pub mod dpo;
mod frozen;
mod fused_pass;
mod interrupt;
pub mod lora;
pub mod model;
mod objective;
mod ops;
pub mod optim;
pub mod peft;
pub mod score;
pub mod train;

use std::path::Path;

pub use data::{Example, PairExample};
pub use dpo::{DpoConfig, DpoLoss, DpoMetrics, Reference};
pub use interrupt::Interrupt;
pub use lora::{LoraConfig, merge};
pub use model::{Model, masked_nll, masked_nll_rows, sequence_logps};
pub use objective::Objective;
pub use optim::AdamWConfig;
pub use peft::{load_adapter, save_adapter};
pub use score::{Losses, Sample, SampleError, ScoreConfig, score};
pub use train::{StepReport, TrainConfig, TrainSummary, evaluate, fit, total_steps, train};

/// Why training or merging failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A configuration, checkpoint or adapter file is wrong.
    #[error("{0}")]
    Config(String),
    /// Full fine-tuning asked for in a low-precision dtype (its updates would vanish).
    #[error(
        "full fine-tuning keeps f32 weights (the optimizer's updates vanish in bf16): train LoRA adapters over a bf16 base, or use f32"
    )]
    FullInLowPrecision,
    /// LoRA asked to train the LM head in full, but the model's head is its embedding.
    #[error(
        "this model's lm_head is its embedding matrix (tied): train embed_tokens in full, not lm_head"
    )]
    TiedLmHead,
    /// Tensor shapes do not fit together (names both).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The training data cannot be used.
    #[error("{0}")]
    Data(String),
    /// A model file holds a value instill cannot use (the file and the field are named).
    #[error(transparent)]
    ModelFile(#[from] instill_models::ModelFileError),
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    /// An IO error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
