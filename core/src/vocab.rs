//! The closed vocabularies instill stores as text: why a record was rejected ([`Reason`]), where
//! a record stands ([`Status`]), where a generation run stands ([`RunStatus`]) and where one of
//! its requests stands ([`RequestStatus`]). Each value has one stored code ([`as_str`] writes it,
//! [`FromStr`] reads it back, refusing unknown codes with [`UnknownCode`]); serde and `Display`
//! use the same code, so databases written before these enums existed read back unchanged.
//!
//! [`as_str`]: Reason::as_str

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A stored code that is not one of its vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {code:?}")]
pub struct UnknownCode {
    /// The vocabulary (`rejection reason`, `record status`, …).
    pub kind: &'static str,
    /// The text that did not parse.
    pub code: String,
}

/// Declares a vocabulary enum: its variants with their stored codes, `ALL`, `as_str`, `FromStr`,
/// `Display`, `Serialize` and `Deserialize`, all from the one table.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $code:literal,)+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The code stored in the database and printed in summaries.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownCode;

            fn from_str(code: &str) -> Result<Self, UnknownCode> {
                match code {
                    $($code => Ok($name::$variant),)+
                    _ => Err(UnknownCode { kind: $kind, code: code.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let code = Cow::<'de, str>::deserialize(d)?;
                code.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// Why a record was rejected: the dedup method or the quality rule, stored in
    /// `records.reason`. The codes are stable: they are in every database instill wrote.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    Reason("rejection reason") {
        /// Its normalised content equals an earlier record's (or a seed's).
        Exact => "exact",
        /// Its MinHash signature puts it in an earlier record's near-duplicate cluster.
        Minhash => "minhash",
        /// Its instruction's ROUGE-L F1 with an earlier record's (or a seed's) is too high.
        RougeL => "rouge_l",
        /// Its text holds what no database stores (NUL, unpaired surrogates); the record kept is
        /// a cleaned copy.
        Unstorable => "unstorable",
        /// Rule: the output is empty or only whitespace.
        EmptyOutput => "empty_output",
        /// Rule: the instruction has too few words (English) or characters (Chinese).
        InstructionTooShort => "instruction_too_short",
        /// Rule: the instruction has too many words (English) or characters (Chinese).
        InstructionTooLong => "instruction_too_long",
        /// Rule: a field the blacklist reads holds one of its words (Alpaca's list on English
        /// instructions, BELLE's on Chinese records).
        Blacklist => "blacklist",
        /// Rule (Alpaca): an English instruction starting with "Write a program".
        WriteAProgram => "write_a_program",
        /// Rule (Alpaca): the instruction starts with ASCII punctuation.
        LeadingPunctuation => "leading_punctuation",
        /// Rule (Alpaca): an English instruction starting with a non-ASCII character.
        LeadingNonAscii => "leading_non_ascii",
        /// Rule: the model talks about itself ("As an AI language model").
        SelfReference => "self_reference",
        /// Rule: instruction and output are in different languages.
        LanguageMismatch => "language_mismatch",
        /// Rule: the output merely repeats the instruction.
        RepeatsInstruction => "repeats_instruction",
        /// Rule (off by default): a link or a model's name (`http`, `www`, `url`, `gpt-4`, …).
        LinksAndModels => "links_and_models",
        /// `instill select`: its score (from a judge or a metric) is below the selection's
        /// threshold, or outside its top-k / top fraction.
        LowScore => "low_score",
        /// `instill select --diverse-threshold`: too similar to a better-scored record kept.
        NotDiverse => "not_diverse",
        /// `instill select`: the scorer has no score for it (not scored yet, or the judge's
        /// reply held none).
        Unscored => "unscored",
        /// A generated conversation has a turn (the user's or the assistant's) that is empty
        /// or only whitespace.
        EmptyTurn => "empty_turn",
        /// `instill evolve`: the judge found the evolved instruction equal to its original (no
        /// information gain).
        EvolNoGain => "evol_no_gain",
        /// `instill evolve`: the answer to the evolved instruction is an apology and short.
        EvolApology => "evol_apology",
        /// `instill evolve`: the answer is only punctuation and stop words.
        EvolStopWords => "evol_stop_words",
        /// `instill evolve`: the evolved instruction copies words of the evolution prompt
        /// (`#Rewritten Prompt#`, `改写后的指令`).
        EvolCopiedPrompt => "evol_copied_prompt",
        /// `instill evolve`: the rewrite came back empty.
        EvolEmpty => "evol_empty",
        /// `instill evolve`: the judge's reply said neither equal nor not equal.
        EvolUnjudged => "evol_unjudged",
        /// A generated turn was cut off at the token limit (magpie's instruction or answer, a
        /// self-chat's turn).
        CutOff => "cut_off",
    }
}

impl Reason {
    /// Whether this is one of `instill evolve`'s eliminations (an evolution that failed, kept
    /// as a rejected record so that it is counted), rather than a filter's or dedup's verdict.
    pub const fn is_elimination(self) -> bool {
        matches!(
            self,
            Reason::EvolNoGain
                | Reason::EvolApology
                | Reason::EvolStopWords
                | Reason::EvolCopiedPrompt
                | Reason::EvolEmpty
                | Reason::EvolUnjudged
        )
    }
}

vocabulary! {
    /// How `instill evolve` rewrote an instruction (Evol-Instruct's operations), stored in
    /// `records.evolve_op`. The first five deepen it, `breadth` writes a new one in its domain.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    EvolveOp("evolve operation") {
        /// In depth: one more constraint or requirement.
        AddConstraints => "add_constraints",
        /// In depth: the inquiry asked more deeply and broadly.
        Deepen => "deepen",
        /// In depth: general concepts replaced by specific ones.
        Concretize => "concretize",
        /// In depth: an explicit request for several reasoning steps.
        IncreaseReasoning => "increase_reasoning",
        /// In depth: concrete input data (a table, code, a passage) added to work on.
        ComplicateInput => "complicate_input",
        /// In breadth: a new, rarer instruction in the same domain.
        Breadth => "breadth",
    }
}

impl EvolveOp {
    /// The in-depth operations.
    pub const DEPTH: &'static [EvolveOp] = &[
        EvolveOp::AddConstraints,
        EvolveOp::Deepen,
        EvolveOp::Concretize,
        EvolveOp::IncreaseReasoning,
        EvolveOp::ComplicateInput,
    ];

    /// Whether it rewrites the instruction in depth (else: in breadth).
    pub const fn is_depth(self) -> bool {
        !matches!(self, EvolveOp::Breadth)
    }
}

vocabulary! {
    /// Where a record stands in curation, stored in `records.status`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    Status("record status") {
        /// Imported or generated, not yet judged.
        Pending => "pending",
        /// Passed the filters and dedup of a generation run.
        Accepted => "accepted",
        /// Rejected by a filter or dedup; `reason` says which.
        Rejected => "rejected",
    }
}

vocabulary! {
    /// Where a generation run stands, stored in `runs.status`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    RunStatus("run status") {
        /// Started or resumed and not ended yet (or ended by a crash).
        Running => "running",
        /// Reached its target.
        Done => "done",
        /// Ended before its target (request limit, signal, fatal error).
        Stopped => "stopped",
    }
}

vocabulary! {
    /// What a run does, stored in `runs.kind`: every kind stores its requests the same way.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    RunKind("run kind") {
        /// `instill generate`: self-instruct prompts, replies parsed into records.
        Generate => "generate",
        /// `instill score`: a judge's prompt over stored records, replies parsed into scores.
        Score => "score",
        /// `instill eval`: a candidate model's answers to an eval set.
        EvalAnswer => "eval_answer",
        /// `instill eval`: a judge's grades of those answers.
        EvalJudge => "eval_judge",
        /// `instill evolve`: instructions rewritten round after round, each rewrite answered.
        Evolve => "evolve",
        /// `instill evolve`: the judge's comparisons of each rewrite with its original.
        EvolveJudge => "evolve_judge",
        /// `instill pairs`: K sampled answers to each instruction.
        PairsSample => "pairs_sample",
        /// `instill pairs`: the judge's grade of each sampled answer.
        PairsJudge => "pairs_judge",
    }
}

impl RunKind {
    /// Whether the run writes records (generate, evolve), rather than scores, grades or
    /// verdicts about them.
    pub const fn makes_records(self) -> bool {
        matches!(self, RunKind::Generate | RunKind::Evolve)
    }
}

vocabulary! {
    /// How a scorer scores records, stored in `scorers.method`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    ScoreMethod("score method") {
        /// An LLM judge with a rubric: higher is better, in the rubric's scale.
        Judge => "judge",
        /// The answer's perplexity given the instruction under a local model: lower is better.
        Ppl => "ppl",
        /// Instruction-following difficulty (the answer's loss given the instruction over its
        /// loss alone): higher means the instruction helps less, the pair teaches more.
        Ifd => "ifd",
    }
}

impl ScoreMethod {
    /// Whether a higher score is the better record (selection keeps the best first).
    pub const fn higher_is_better(self) -> bool {
        !matches!(self, ScoreMethod::Ppl)
    }
}

vocabulary! {
    /// Why an instruction of `instill pairs` has no preference pair, stored in
    /// `preferences.no_pair` (NULL: a pair).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    NoPair("no-pair reason") {
        /// The best and the worst graded answer are closer than the minimum margin.
        SmallMargin => "small_margin",
        /// Fewer than two answers have a grade (empty or failed samples, replies without a
        /// score).
        TooFewGraded => "too_few_graded",
    }
}

vocabulary! {
    /// Where one request of a run stands, stored in `requests.status`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    RequestStatus("request status") {
        /// A worker holds a lease on it and is sending it; not a result.
        Claimed => "claimed",
        /// Its reply is stored: it is never sent again.
        Done => "done",
        /// It failed for good this time; a later claim or invocation sends it again. The
        /// default: a row without a reply.
        #[default]
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownCode>,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        for &v in all {
            let code = as_str(v);
            assert_eq!(code.parse::<T>(), Ok(v));
            assert_eq!(v.to_string(), code);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
        let err = "bogus".parse::<T>().unwrap_err();
        assert_eq!(err.code, "bogus");
        assert!(serde_json::from_str::<T>("\"bogus\"").is_err());
    }

    #[test]
    fn every_code_round_trips_and_unknown_codes_are_refused() {
        round_trips(Reason::ALL, Reason::as_str);
        round_trips(Status::ALL, Status::as_str);
        round_trips(RunStatus::ALL, RunStatus::as_str);
        round_trips(RequestStatus::ALL, RequestStatus::as_str);
        round_trips(RunKind::ALL, RunKind::as_str);
        round_trips(ScoreMethod::ALL, ScoreMethod::as_str);
        round_trips(EvolveOp::ALL, EvolveOp::as_str);
        round_trips(NoPair::ALL, NoPair::as_str);
        assert_eq!(
            "Exact".parse::<Reason>().unwrap_err().to_string(),
            "unknown rejection reason \"Exact\""
        );
    }

    #[test]
    fn the_stored_codes_are_the_ones_databases_hold() {
        // Byte for byte what instill stored before these enums existed: no migration.
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            codes,
            [
                "exact",
                "minhash",
                "rouge_l",
                "unstorable",
                "empty_output",
                "instruction_too_short",
                "instruction_too_long",
                "blacklist",
                "write_a_program",
                "leading_punctuation",
                "leading_non_ascii",
                "self_reference",
                "language_mismatch",
                "repeats_instruction",
                "links_and_models",
                "low_score",
                "not_diverse",
                "unscored",
                "empty_turn",
                "evol_no_gain",
                "evol_apology",
                "evol_stop_words",
                "evol_copied_prompt",
                "evol_empty",
                "evol_unjudged",
                "cut_off",
            ]
        );
        let statuses = |all: &[&str]| all.join(",");
        assert_eq!(
            statuses(&Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "pending,accepted,rejected"
        );
        assert_eq!(
            statuses(
                &RunStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "running,done,stopped"
        );
        assert_eq!(
            statuses(
                &RequestStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "claimed,done,failed"
        );
    }
}
