//! A judge's reply to a score: [`parse_score`] reads any reasonable reply, not only the one our
//! rubrics ask for, and says why when it finds none ([`NoScore`]).
//!
//! What counts, strongest first:
//!
//! 1. A labelled score: `Score: 7`, `score 7/10`, `**Score:** 8`, `Rating: [[7]]`, `"score": 7`
//!    (JSON, fenced or not), `Final score = 8.5`, `得分: 0.8`, `得分：0.8分`, `评分：8分`,
//!    `评分为八分`, `总分（1-10）：7`, `<score>7</score>`, `| Score | 8 |`. A label qualified as
//!    final (`Overall score`, `Final rating`, `Overall:`, `Verdict:`, `总分`, `最终得分`,
//!    `综合评分`…) beats the others; among equals the **last** wins, so
//!    a rationale that quotes numbers, or a list of sub-scores before the final one, does not
//!    decide. A range after a label (`Score: 7-8`) is no score.
//!    A label whose number starts a list on the next line (`Score:\n1. Clarity…`) is a heading.
//! 2. With no label: MT-Bench's bare `[[7]]`, the last one.
//! 3. With no label: a verdict in words, the last one: `I would give it a 7`, `I rate this
//!    answer 8/10`, `打8分`, `给予0.8分`.
//! 4. With none of those: a fraction whose denominator is the scale's maximum or 1 (`7/10`,
//!    `7 out of 10`, `0.8/1`), the last one.
//! 5. With none of those: a last line that is only a number (`8`, `**8**`, `8分`, `8/10`).
//!
//! A fraction `N/D` (and `N%`, read as `N/100`) is rescaled to the rubric's scale as the same
//! share of its maximum: `N / D × max` (`8/10` is 0.8 on a 0–1 scale, `0.8/1` is 8 on a 1–10
//! scale, `7/10` stays 7). A plain number is taken as it is, never rescaled: a value outside
//! the scale is [`NoScore::OutOfScale`], not a guess. Full-width digits and punctuation
//! (`８`, `：`, `／`) read as their ASCII forms.

use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::Serialize;
use serde_json::Value;

/// A rubric's score range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scale {
    /// The lowest score.
    pub min: f64,
    /// The highest score.
    pub max: f64,
}

impl Scale {
    /// 1 to 10: the built-in rubrics' scale, and a rubric file's default.
    pub const ONE_TO_TEN: Scale = Scale {
        min: 1.0,
        max: 10.0,
    };
    /// 0 to 1: BELLE's evaluation protocol.
    pub const UNIT: Scale = Scale { min: 0.0, max: 1.0 };

    /// Whether `value` lies on the scale.
    pub fn contains(self, value: f64) -> bool {
        value >= self.min && value <= self.max
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.min, self.max)
    }
}

/// A score read from a reply, on the rubric's scale, with the judge's reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The score, within the scale.
    pub score: f64,
    /// The reply without the score: the judge's rationale (a JSON reply's `rationale`,
    /// `reason`, `explanation`… field when it has one).
    pub rationale: String,
}

/// Why a reply gave no score: a short reason to store with the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoScore {
    /// The reply is empty or only whitespace.
    #[error("empty reply")]
    Empty,
    /// Nothing in the reply reads as a score.
    #[error("no score in the reply")]
    NotFound,
    /// The score found is off the scale.
    #[error("score {value} is outside the scale {scale}")]
    OutOfScale {
        /// The score as read (after rescaling a fraction).
        value: f64,
        /// The rubric's scale.
        scale: Scale,
    },
    /// The label is followed by a range or a fraction over zero, not one score.
    #[error("`{text}` is not one score")]
    Ambiguous {
        /// The text after the label.
        text: String,
    },
}

/// The score in a judge's `reply` on `scale`, and its rationale (see the module's rules).
pub fn parse_score(reply: &str, scale: Scale) -> Result<Verdict, NoScore> {
    if reply.trim().is_empty() {
        return Err(NoScore::Empty);
    }
    let folded = Folded::new(reply);
    let found = labelled(&folded.text)
        .or_else(|| bracketed(&folded.text))
        .or_else(|| verbal(&folded.text))
        .or_else(|| bare_fraction(&folded.text, scale))
        .or_else(|| last_line(&folded.text))
        .ok_or(NoScore::NotFound)?;
    let value = found.value(scale)?;
    if !scale.contains(value) {
        return Err(NoScore::OutOfScale { value, scale });
    }
    let rationale = json_rationale(&folded.text, found.span.start)
        .unwrap_or_else(|| folded.without(reply, found.span.clone()));
    Ok(Verdict {
        score: value,
        rationale,
    })
}

/// The reply with full-width forms folded to ASCII (`８` → `8`, `：` → `:`, U+3000 → space),
/// and where each byte of the folded text came from in the original.
struct Folded {
    text: String,
    /// `origin[i]`: the original byte offset of the folded text's byte `i` (one past the end
    /// included).
    origin: Vec<usize>,
}

impl Folded {
    fn new(reply: &str) -> Folded {
        let mut text = String::with_capacity(reply.len());
        let mut origin = Vec::with_capacity(reply.len() + 1);
        for (at, c) in reply.char_indices() {
            let folded = match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            };
            text.push(folded);
            origin.resize(text.len(), at);
        }
        origin.push(reply.len());
        Folded { text, origin }
    }

    /// `reply` without the folded text's `span`; a line left with nothing but markup goes too.
    fn without(&self, reply: &str, span: std::ops::Range<usize>) -> String {
        let (start, end) = (self.origin[span.start], self.origin[span.end]);
        let line_start = reply[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = reply[end..].find('\n').map_or(reply.len(), |i| end + i);
        let rest = format!("{}{}", &reply[line_start..start], &reply[end..line_end]);
        let markup_only = rest
            .chars()
            .all(|c| c.is_whitespace() || "*_#`>|-:：.。[]()（）【】\"'".contains(c));
        let (cut_start, cut_end) = if markup_only {
            (line_start, line_end)
        } else {
            (start, end)
        };
        format!("{}{}", &reply[..cut_start], &reply[cut_end..])
            .trim()
            .to_string()
    }
}

/// A score found in the folded reply.
struct Found {
    /// Where the label (or the number) starts and the score's text ends.
    span: std::ops::Range<usize>,
    /// The text from the number on, for messages.
    text: String,
    number: f64,
    /// The denominator of a fraction (100 for a percentage).
    over: Option<f64>,
    /// The number starts a range (`7-8`).
    range: bool,
}

impl Found {
    fn value(&self, scale: Scale) -> Result<f64, NoScore> {
        let ambiguous = || NoScore::Ambiguous {
            text: self.text.clone(),
        };
        if self.range {
            return Err(ambiguous());
        }
        match self.over {
            None => Ok(self.number),
            Some(d) if d == scale.max => Ok(self.number),
            Some(d) if d > 0.0 => Ok(self.number / d * scale.max),
            Some(_) => Err(ambiguous()),
        }
    }
}

/// Separators between a label and its number: markdown, quotes, brackets, table bars, colons,
/// ` - `, `is`, `为`, `是`, an optional parenthetical (`(1-10)`, `（满分10分）`).
const SEP: &str = r#"[\s*_#"'`>|]*(?:[(\[][^)\]\n]{0,24}[)\]])?(?:[\s*_#"'`>|]*(?:[:=]|[ \t][-–—][ \t]|(?i-u:is|of)\s|为|是))*[\s*_#"'`\[(【]*"#;
/// A number: ASCII digits with an optional decimal part, or one Chinese numeral.
const NUM: &str = r"(?P<num>-?[0-9]+(?:\.[0-9]+)?|[零〇一二两三四五六七八九十])";
/// What may follow a number: a denominator, a percent sign, a range's other end.
const TAIL: &str = r"(?:[ \t*]*\(?[ \t]*(?:/|(?i-u:out[ \t]+of))[ \t]*(?P<over>[0-9]+(?:\.[0-9]+)?)\)?|[ \t]*(?P<pct>%)|[ \t]*(?P<range>-|–|—|~|(?i-u:to)[ \t]|至|到)[ \t]*[0-9零〇一二两三四五六七八九十])?[ \t]*(?:分|(?i-u:points?|pts)\b)?(?:\]\]|\]|】|\)|\*\*)*";

static LABELLED: LazyLock<Regex> = LazyLock::new(|| {
    let label = r#"(?P<label>(?P<final>\b(?i-u:(?:overall|final|total)[ _](?:score|rating|grade))\b|"(?i-u:overall|final|total)"|\b(?i-u:overall|verdict)[ \t]*[:=]|最终得分|综合得分|总得分|最终评分|综合评分|总评分|总分)|\b(?i-u:score|rating|grade)\b|得分|评分|分数|打分)"#;
    Regex::new(&format!("{label}{SEP}{NUM}{TAIL}"))
        .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
});

static BRACKETED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[\s*(?P<num>-?[0-9]+(?:\.[0-9]+)?)\s*\]\]")
        .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
});

/// "I would give it a 7", "I rate this answer 8/10", "打8分", "给予0.8分".
static VERBAL: LazyLock<[Regex; 2]> = LazyLock::new(|| {
    let en = format!(
        r"\b(?i-u:rate|give|assign|award)\b[ \t]+(?i-u:it|this|the)(?:[ \t]+(?i-u:answer|response|reply|record|pair|one))?[ \t]+(?i-u:an?[ \t]+)?(?i-u:score[ \t]+of[ \t]+)?{NUM}{TAIL}"
    );
    let zh = r"(?:打了?|给了?|给出|给予|评为?)[ \t]*(?P<num>[0-9]+(?:\.[0-9]+)?|[零〇一二两三四五六七八九十])(?:[ \t]*/[ \t]*(?P<over>[0-9]+(?:\.[0-9]+)?))?[ \t]*分";
    [en.as_str(), zh]
        .map(|p| Regex::new(p).unwrap_or_else(|_| unreachable!("a fixed, valid pattern")))
});

static FRACTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|[^0-9./])(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?:/|(?i-u:out\s+of))\s*(?P<over>[0-9]+(?:\.[0-9]+)?)(?:$|[^0-9/])",
    )
    .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
});

static LONE_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"^[\s*_#`>\[(【]*{NUM}{TAIL}[\s.。!！]*$"))
        .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
});

/// The number of a match, from ASCII digits or a Chinese numeral.
fn number(caps: &Captures<'_>) -> Option<f64> {
    let text = caps.name("num")?.as_str();
    if let Ok(v) = text.parse::<f64>() {
        return Some(v);
    }
    let n = match text {
        "〇" => Some(0),
        "两" => Some(2),
        _ => "零一二三四五六七八九十"
            .chars()
            .position(|c| text.starts_with(c)),
    };
    n.map(|n| n as f64)
}

/// The score of a match whose text runs over `span` of `text`.
fn found(text: &str, caps: &Captures<'_>, span: std::ops::Range<usize>) -> Option<Found> {
    let over = match (caps.name("over"), caps.name("pct")) {
        (Some(d), _) => Some(d.as_str().parse::<f64>().ok()?),
        (None, Some(_)) => Some(100.0),
        (None, None) => None,
    };
    let num = caps.name("num")?;
    Some(Found {
        text: text[num.start()..span.end].trim().to_string(),
        span,
        number: number(caps)?,
        over,
        range: caps.name("range").is_some(),
    })
}

/// The last labelled score, a final-qualified label first; a range is reported as such.
fn labelled(text: &str) -> Option<Found> {
    let mut best: Option<(bool, Captures<'_>)> = None;
    for caps in LABELLED.captures_iter(text) {
        if list_item(text, &caps) {
            continue;
        }
        let is_final = caps.name("final").is_some();
        if best.as_ref().is_none_or(|(f, _)| is_final || !f) {
            best = Some((is_final, caps));
        }
    }
    let (_, caps) = best?;
    found(text, &caps, caps.name("label")?.start()..caps.get(0)?.end())
}

/// Whether a label's number is a list's first item on the next line (`Score:\n1. Clear…`).
fn list_item(text: &str, caps: &Captures<'_>) -> bool {
    let (Some(label), Some(num)) = (caps.name("label"), caps.name("num")) else {
        return false;
    };
    if !text[label.end()..num.start()].contains('\n') {
        return false;
    }
    let mut after = text[num.end()..].chars();
    matches!(after.next(), Some('.' | ')' | '、'))
        && matches!(after.next(), Some(' ' | '\t'))
        && after.next().is_some_and(|c| !c.is_whitespace())
}

/// The last verbal score ("give it a 7", "打8分").
fn verbal(text: &str) -> Option<Found> {
    let caps = VERBAL
        .iter()
        .flat_map(|re| re.captures_iter(text))
        .max_by_key(|c| c.get(0).map_or(0, |m| m.start()))?;
    found(text, &caps, caps.get(0)?.range())
}

fn bracketed(text: &str) -> Option<Found> {
    let caps = BRACKETED.captures_iter(text).last()?;
    found(text, &caps, caps.get(0)?.range())
}

fn bare_fraction(text: &str, scale: Scale) -> Option<Found> {
    let caps = FRACTION
        .captures_iter(text)
        .filter(|c| {
            let over = c.name("over").and_then(|d| d.as_str().parse::<f64>().ok());
            over.is_some_and(|d| d == scale.max || d == 1.0)
        })
        .last()?;
    found(
        text,
        &caps,
        caps.name("num")?.start()..caps.name("over")?.end(),
    )
}

fn last_line(text: &str) -> Option<Found> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let start = line.as_ptr() as usize - text.as_ptr() as usize;
    let caps = LONE_NUMBER.captures(line)?;
    found(line, &caps, 0..line.len()).map(|f| Found {
        span: start..start + line.len(),
        ..f
    })
}

/// The rationale field of the JSON object holding the score at `at`, if the reply is one.
fn json_rationale(text: &str, at: usize) -> Option<String> {
    const KEYS: &[&str] = &[
        "rationale",
        "reason",
        "reasoning",
        "reasons",
        "explanation",
        "justification",
        "comment",
        "comments",
        "feedback",
        "analysis",
        "理由",
        "解释",
        "评语",
        "分析",
    ];
    let opens = text[..at].match_indices('{').map(|(i, _)| i).rev().take(16);
    for open in opens {
        let mut stream = serde_json::Deserializer::from_str(&text[open..]).into_iter::<Value>();
        let Some(Ok(Value::Object(map))) = stream.next() else {
            continue;
        };
        if open + stream.byte_offset() <= at {
            continue;
        }
        return map.iter().find_map(|(k, v)| {
            let key = k.trim().to_lowercase();
            KEYS.contains(&key.as_str())
                .then(|| v.as_str().map(|s| s.trim().to_string()))
                .flatten()
        });
    }
    None
}
