//! instill-core: the record types, dataset layouts, text normalisation and language detection
//! that every other instill crate shares. No IO beyond `std::io::Read`, no async, no SQL.
//!
//! - [`Record`], [`Seed`], [`Lang`], [`Origin`]: what instill stores; [`Pair`]: a preference
//!   pair (a prompt, a chosen and a rejected [`Answer`]).
//! - [`Reason`], [`Status`], [`RunStatus`], [`RequestStatus`]: the stored vocabularies, one code
//!   each, read back with `FromStr` ([`UnknownCode`] for anything else).
//! - [`in_val`], [`held_out`]: the validation split `export` and `train` share.
//! - [`RecordSplitter`]: splits a JSON array or JSONL stream into raw records in bounded memory.
//! - [`parse_records`] / [`write_record`]: one raw record in an [`InputFormat`] to [`Record`]s, and
//!   a record to one JSONL line in an [`OutputFormat`]; [`chat_turns`]: the turns every writer of
//!   a chat layout writes.
//! - [`parse_pair`] / [`write_pair`]: the same for preference pairs ([`InputFormat::Dpo`],
//!   [`InputFormat::Ranking`]; [`PairFormat`]).
//! - [`split_think`], [`inline_think`], [`ReasoningMode`]: a record's reasoning, split off its
//!   answer, put back before it, kept, dropped or inlined by an export.
//! - [`normalize`], [`norm_hash`]: the exact-dedup key (NFKC, case, punctuation, whitespace).
//! - [`detect_lang`], [`record_lang`]: zh / en / other.
//! - [`redact_url`], [`redact_urls_in`], [`redact_secrets`]: passwords, keys and credentials out of
//!   URLs and of text a server wrote.
//!
//! ```
//! use instill_core::{Columns, InputFormat, OutputFormat, parse_records, write_record, record_lang, Lang};
//! let mut records = Vec::new();
//! let raw = r#"{"input":"介绍一下长城","target":"长城是……"}"#;
//! parse_records(raw.as_bytes(), InputFormat::Belle, &mut records)?;
//! assert_eq!(record_lang(&records[0]), Lang::Zh);
//! let mut line = Vec::new();
//! write_record(&records[0], OutputFormat::Messages, Columns::default(), &mut line);
//! assert!(line.starts_with(r#"{"messages":[{"role":"user","content":"介绍一下长城"}"#.as_bytes()));
//! # Ok::<(), instill_core::FieldError>(())
//! ```

mod format;
mod lang;
mod normalize;
mod pair;
mod reader;
mod reasoning;
mod record;
mod redact;
mod rng;
mod score_dist;
mod split;
mod vocab;

pub use format::{
    Columns, DetectError, FieldError, InputFormat, OutputFormat, PairFormat, Unfit, chat_turns,
    pair_fits, parse_pair, parse_records, parse_seeds, turn_reasoning, write_pair, write_record,
};
pub use lang::{detect_lang, record_lang};
pub use normalize::{
    has_cjk, is_cjk, is_fast_punctuation, is_han, is_hangul, is_kana, is_punctuation, norm_hash,
    normalize, normalize_into, text_hash,
};
pub use pair::{Answer, Pair, Pick, pick_pair};
pub use reader::{MAX_RECORD_BYTES, RawBatch, ReadError, RecordSplitter, Span};
pub use reasoning::{
    ReasoningMode, append_reasoning, inline_think, split_reply, split_think, take_think,
};
pub use record::{Evolution, EvolvedFrom, Exchange, Lang, Origin, Record, Seed};
pub use redact::{REDACTED, redact_secrets, redact_url, redact_urls_in, url_secrets};
pub use rng::SplitMix;
pub use score_dist::{Bin, ClassMean, ClassMeans, ScoreSummary, class_means, summarize};
pub use split::{held_out, held_out_digest, in_val};
pub use vocab::{
    EvolveOp, NoPair, Reason, RequestStatus, RunKind, RunStatus, ScoreMethod, Status, UnknownCode,
};

/// Milliseconds since the Unix epoch: the timestamp unit of the whole schema.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `ms` (Unix milliseconds) as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_036_000_000), "2026-11-30 10:53 UTC");
        assert_eq!(utc(-60_000), "1969-12-31 23:59 UTC");
    }
}
