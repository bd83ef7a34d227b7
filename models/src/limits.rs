//! The bounds every number read from a model file is checked against, before anything is
//! sized from it.

/// Vocabulary entries at most (the largest released vocabularies have about 256k).
pub const MAX_VOCAB: usize = 1 << 24;
/// Hidden size at most.
pub const MAX_HIDDEN: usize = 1 << 16;
/// Decoder layers at most.
pub const MAX_LAYERS: usize = 1 << 10;
/// Attention heads (and key/value heads) at most.
pub const MAX_HEADS: usize = 1 << 10;
/// Size of one attention head at most.
pub const MAX_HEAD_DIM: usize = 1 << 10;
/// MLP width at most.
pub const MAX_INTERMEDIATE: usize = 1 << 20;
/// Context length at most (4M positions; million-token models fit).
pub const MAX_CONTEXT: usize = 1 << 22;
