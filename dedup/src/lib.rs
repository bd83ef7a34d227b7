//! instill-dedup: curation. Exact, ROUGE-L and MinHash-LSH near-duplicate removal and the
//! quality filters, as plain synchronous functions over texts; rayon for the parallel parts.
//! No IO, no tokio, no SQL: the caller loads records and stores verdicts.
//!
//! - [`rouge_filter`]: the self-instruct / Alpaca ROUGE-L rule, exact and sub-quadratic
//!   ([`rouge_filter_exhaustive`] is the brute-force reference), with tokenizers that keep
//!   Chinese ([`Tokenizer`]).
//! - [`LcsQuery`]: bit-parallel LCS over token ids.
//! - [`exact_dups`]: equal normalised-content hashes, first occurrence wins.
//! - [`MinHasher`], [`lsh_clusters`]: MinHash-LSH with bands × rows from the
//!   threshold ([`optimal_bands`] when every bucket collision counts, [`verified_bands`] when
//!   pairs are confirmed), verified pairs, union-find clusters; every text's band keys are
//!   kept, a full signature only for texts that share a bucket ([`Texts`] builds each text
//!   when it is hashed, so a large set's joined texts are never all held); the signature loop is
//!   vectorised (AVX-512 or AVX2 chosen at run time through `pulp`, no `unsafe` here); word
//!   shingles of ASCII text are read in one pass, without a normalised copy.
//! - [`Rules`]: the quality filters, from defaults or TOML; [`WordRule`] the word lists (Alpaca's,
//!   BELLE's, links and models), each on the [`RuleField`]s its source reads.
//! - [`curate`]: the batch pipeline `instill dedup` runs (exact → MinHash → ROUGE-L, each stage
//!   over what the earlier ones kept), configured by a [`CurateConfig`].
//!
//! ```
//! use instill_dedup::{rouge_filter, RougeConfig, Tokenizer};
//! let texts = ["写一首关于春天的诗", "写一首关于春天的短诗", "介绍一下长城"];
//! let config = RougeConfig { tokenizer: Tokenizer::Auto, ..RougeConfig::default() };
//! let verdicts = rouge_filter(&texts, 1, &config);
//! assert!(!verdicts[0].kept && verdicts[1].kept);
//! ```

mod batch;
mod exact;
mod fast_words;
mod filters;
#[cfg(test)]
mod filters_tests;
mod lcs;
mod lsh;
mod minhash;
mod rouge;
mod rouge_index;
mod rouge_pool;
mod rouge_rule;
#[cfg(test)]
mod rouge_tests;
mod select;
mod tokenize;
mod vocab;
mod word_rules;

pub use batch::{
    CurateConfig, CurateError, Curation, Field, Item, MinHashStage, Progress, Rejection,
    RougeNearest, RougeStage, RulesOutcome, StageSummary, Step, apply_rules, curate,
};
pub use exact::{ExactIndex, exact_dups};
pub use filters::{LengthRule, MismatchRule, PhraseRule, RepeatRule, Rules, RulesError, Toggle};
pub use lcs::{LcsQuery, lcs_naive};
pub use lsh::{
    ClusterVerdict, LshConfig, Texts, Verify, lsh_clusters, optimal_bands, verified_bands,
};
pub use minhash::{MinHasher, Scratch, Shingling, estimate_jaccard, jaccard};
pub use rouge::{
    RougeVerdict, rouge_filter, rouge_filter_exhaustive, rouge_filter_exhaustive_with_progress,
    rouge_filter_with_progress,
};
pub use rouge_pool::{PoolVerdict, RougePool};
pub use rouge_rule::{Nearest, RougeConfig, rouge_l_f1};
pub use select::{Budget, Candidate, SelectConfig, Similarity, select};
pub use tokenize::Tokenizer;
pub use vocab::Sequences;
pub use word_rules::{Matching, RuleField, WordRule};
