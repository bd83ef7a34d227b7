//! Text statistics for the report: lengths (characters for Chinese, words for English) and
//! diversity (English leading verb and its object, Chinese leading words), one record at a time.

use std::collections::HashMap;

use instill_core::is_han;

/// Words skipped when looking for a verb's object: articles, pronouns, quantifiers, prepositions.
const SKIP: &[&str] = &[
    "a", "an", "the", "some", "any", "this", "that", "these", "those", "me", "us", "you", "your",
    "my", "our", "their", "his", "her", "its", "it", "them", "him", "of", "to", "for", "in", "on",
    "with", "about", "at", "by", "from", "and", "or", "one", "two", "three", "four", "five", "ten",
    "few", "several", "many", "more", "most", "all", "each", "every", "other", "another", "new",
    "short", "brief", "good", "list", "is", "are", "be", "what", "how", "which", "who", "why",
];

/// Polite or framing openings of Chinese instructions, skipped before the leading word.
const ZH_OPENINGS: &[&str] = &[
    "请你",
    "请帮我",
    "请",
    "帮我",
    "你能",
    "能否",
    "可以",
    "麻烦",
];

/// Length samples and diversity counts over records.
#[derive(Debug, Default)]
pub struct TextStats {
    /// Lengths per (field, unit): `("instruction", "zh")` holds characters of Chinese
    /// instructions, `("output", "en")` words of English outputs.
    pub lengths: HashMap<(&'static str, &'static str), Vec<u32>>,
    /// English leading verb → count.
    pub verbs: HashMap<String, i64>,
    /// (verb, object) → count.
    pub verb_objects: HashMap<(String, String), i64>,
    /// Chinese leading word (first two Han characters after an opening) → count.
    pub zh_leads: HashMap<String, i64>,
    /// Records seen.
    pub records: i64,
}

impl TextStats {
    /// Adds one record.
    pub fn add(&mut self, instruction: &str, input: &str, output: &str, lang: &str) {
        self.records += 1;
        let unit = if lang == "zh" { "zh" } else { "en" };
        for (field, text) in [
            ("instruction", instruction),
            ("input", input),
            ("output", output),
        ] {
            if field == "input" && text.trim().is_empty() {
                continue;
            }
            let len = if unit == "zh" {
                text.chars().filter(|c| !c.is_whitespace()).count()
            } else {
                text.split_whitespace().count()
            };
            self.lengths
                .entry((field, unit))
                .or_default()
                .push(len.min(u32::MAX as usize) as u32);
        }
        if lang == "zh" {
            if let Some(lead) = zh_lead(instruction) {
                *self.zh_leads.entry(lead).or_default() += 1;
            }
        } else if lang == "en"
            && let Some((verb, object)) = verb_object(instruction)
        {
            *self.verbs.entry(verb.clone()).or_default() += 1;
            if let Some(object) = object {
                *self.verb_objects.entry((verb, object)).or_default() += 1;
            }
        }
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The instruction's first word (the imperative verb in most instructions) and the first word
/// after it that is not an article, pronoun, quantifier or preposition (its object, roughly).
/// A heuristic in place of a parser: Alpaca's chart used benepar's parse trees.
pub fn verb_object(instruction: &str) -> Option<(String, Option<String>)> {
    let mut it = words(instruction);
    let verb = it.next()?;
    if !verb.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let object = it
        .take(4)
        .find(|w| !SKIP.contains(&w.as_str()) && w.chars().all(|c| c.is_alphabetic()));
    Some((verb, object))
}

/// The first two Han characters of a Chinese instruction after a polite opening (请, 帮我 …).
pub fn zh_lead(instruction: &str) -> Option<String> {
    let mut text = instruction.trim();
    for opening in ZH_OPENINGS {
        if let Some(rest) = text.strip_prefix(opening) {
            text = rest.trim_start();
            break;
        }
    }
    let lead: String = text.chars().take_while(|c| is_han(*c)).take(2).collect();
    (lead.chars().count() == 2).then_some(lead)
}

/// Bins for a histogram of `values`: about 24 equal bins up to the 99th percentile, and one
/// `≥ X` bin for the rest.
pub fn bins(values: &[u32]) -> Vec<(String, i64)> {
    if values.is_empty() {
        return Vec::new();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)].max(1);
    let width = p99.div_ceil(24).max(1);
    let n = (p99 / width + 1) as usize;
    let mut counts = vec![0i64; n + 1];
    for &v in &sorted {
        let b = (v / width) as usize;
        counts[b.min(n)] += 1;
    }
    let mut out: Vec<(String, i64)> = (0..n)
        .map(|b| (format!("{}", b as u32 * width), counts[b]))
        .collect();
    if counts[n] > 0 {
        out.push((format!("≥{}", n as u32 * width), counts[n]));
    }
    out
}

/// The `k` largest entries, ties by key.
pub fn top<K: Clone + Ord>(map: &HashMap<K, i64>, k: usize) -> Vec<(K, i64)> {
    let mut v: Vec<(K, i64)> = map.iter().map(|(a, b)| (a.clone(), *b)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_objects_and_chinese_leads() {
        assert_eq!(
            verb_object("Write a short poem about the sea."),
            Some(("write".into(), Some("poem".into())))
        );
        assert_eq!(
            verb_object("Give me three tips for sleeping"),
            Some(("give".into(), Some("tips".into())))
        );
        assert_eq!(verb_object("123 go"), None);
        assert_eq!(zh_lead("请写一首关于春天的诗"), Some("写一".into()));
        assert_eq!(zh_lead("解释什么是机器学习"), Some("解释".into()));
        assert_eq!(zh_lead("GPT 是什么"), None);
    }

    #[test]
    fn lengths_use_characters_for_chinese_and_words_for_english() {
        let mut t = TextStats::default();
        t.add("写一首诗", "", "春 眠 不觉晓", "zh");
        t.add("Write a poem", "about cats", "Cats purr softly.", "en");
        assert_eq!(t.lengths[&("instruction", "zh")], vec![4]);
        assert_eq!(t.lengths[&("output", "zh")], vec![5]);
        assert_eq!(t.lengths[&("instruction", "en")], vec![3]);
        assert_eq!(t.lengths[&("input", "en")], vec![2]);
        assert!(
            !t.lengths.contains_key(&("input", "zh")),
            "empty inputs are not lengths"
        );
    }

    #[test]
    fn bins_cover_every_value() {
        let values: Vec<u32> = (0..1000).collect();
        let b = bins(&values);
        assert_eq!(b.iter().map(|x| x.1).sum::<i64>(), 1000);
        assert!(b.len() <= 27, "{}", b.len());
        assert!(bins(&[]).is_empty());
    }
}
