//! Rubrics: the built-in ones render every part of a record and ask for the line
//! `parse_score` reads; users' files declare their scale and are refused, naming the line,
//! when they cannot work.

use instill_core::{Exchange, Lang};
use xxhash_rust::xxh3::xxh3_128;

use crate::judge::{Rubric, RubricError};
use crate::score::{Scale, parse_score};

#[test]
fn builtin_rubrics_show_the_record_and_ask_for_a_score_parse_score_reads() {
    let history = [Exchange(
        "Hi, can you help with maths?".into(),
        "Of course.".into(),
    )];
    for (lang, name, last_line, reply) in [
        (
            Lang::En,
            "builtin/en",
            "Score: N",
            "Correct and clear.\nScore: 8",
        ),
        (Lang::Zh, "builtin/zh", "评分：N", "回答正确清楚。\n评分：8"),
    ] {
        let rubric = Rubric::builtin(lang).unwrap();
        assert_eq!(rubric.name(), name);
        assert_eq!(rubric.scale(), Scale::ONE_TO_TEN);
        assert_eq!(
            rubric.hash(),
            format!("{:032x}", xxh3_128(rubric.text().as_bytes()))
        );
        let prompt = rubric
            .render("Add the numbers.", "2, 3", "5", &history)
            .unwrap();
        for part in [
            "Add the numbers.",
            "\n2, 3\n",
            "\n5\n",
            "Hi, can you help with maths?",
            "Of course.",
        ] {
            assert!(prompt.contains(part), "{lang}: {part:?} in\n{prompt}");
        }
        assert!(prompt.trim_end().ends_with(last_line), "{prompt}");
        assert!(prompt.contains("1") && prompt.contains("10"));
        assert!(!prompt.contains("{{") && !prompt.contains("{#"), "{prompt}");
        let bare = rubric.render("Name a prime.", "", "7", &[]).unwrap();
        assert!(
            !bare.contains("input") && !bare.contains("输入开始"),
            "{bare}"
        );
        assert!(!bare.contains("conversation") && !bare.contains("之前的对话"));
        let verdict = parse_score(reply, rubric.scale()).unwrap();
        assert_eq!(verdict.score, 8.0);
    }
    assert_eq!(
        Rubric::builtin(Lang::Other).unwrap().hash(),
        Rubric::builtin(Lang::En).unwrap().hash()
    );
    assert_ne!(
        Rubric::builtin(Lang::Zh).unwrap().hash(),
        Rubric::builtin(Lang::En).unwrap().hash()
    );
}

#[test]
fn a_users_rubric_declares_its_scale_or_gets_one_to_ten() {
    let text = "{#- instill: min=0 max=5 -#}\nRate {{ instruction }} / {{ output }} from {{ min }} to {{ max }}.";
    let r = Rubric::parse("mine.j2", text).unwrap();
    assert_eq!(r.scale(), Scale { min: 0.0, max: 5.0 });
    assert_eq!(
        r.render("I", "", "O", &[]).unwrap(),
        "Rate I / O from 0 to 5."
    );
    let half = Rubric::parse(
        "half.j2",
        "{# instill: max=2.5 #}\n{{ instruction }}{{ output }}{{ max }}",
    )
    .unwrap();
    assert_eq!(half.scale(), Scale { min: 1.0, max: 2.5 });
    assert_eq!(half.render("a", "", "b", &[]).unwrap(), "\nab2.5");
    let plain = Rubric::parse(
        "plain.j2",
        "{# my rubric #}\n{{ instruction }} {{ output }}",
    )
    .unwrap();
    assert_eq!(plain.scale(), Scale::ONE_TO_TEN);
    // The hash is the text's: the same text under another name hashes the same.
    assert_eq!(Rubric::parse("other.j2", text).unwrap().hash(), r.hash());
}

#[test]
fn a_rubric_that_cannot_work_is_refused_naming_the_line() {
    let err = |text: &str| Rubric::parse("r.j2", text).unwrap_err();
    let msg = |text: &str| err(text).to_string();
    assert!(
        msg("{# instill: min=ten #}\n{{ instruction }}{{ output }}")
            .starts_with("r.j2:1: min=`ten` is not a number"),
    );
    assert!(
        msg("{# instill: min=5 max=5 #}\n{{ instruction }}{{ output }}")
            .starts_with("r.j2:1: min=5 is not below max=5")
    );
    assert!(
        msg("{# instill: scale=1-10 #}\n{{ instruction }}{{ output }}")
            .starts_with("r.j2:1: unknown key `scale` (min or max)")
    );
    assert!(msg("{# instill: max #}\n{{ output }}").starts_with("r.j2:1: `max` is not key=value"));
    assert!(
        msg("{# instill: max=5 #}{{ instruction }}{{ output }}")
            .starts_with("r.j2:1: the header comment must be alone on the first line")
    );
    let syntax = err("Rate this.\n{{ instruction }}\n{% if output %}\n{{ output }}\n");
    assert!(
        matches!(syntax, RubricError::Syntax { line: 4, .. }),
        "{syntax:?}"
    );
    assert_eq!(
        msg("Rate this.\n{{ instruction }}\nAnswer: {{ answer }}\n"),
        "r.j2:3: unknown variable `answer` (a rubric knows instruction, input, output, history, min, max)"
    );
    assert_eq!(
        msg("Rate {{ instruction }} please."),
        "r.j2: the rubric never shows `output`: the judge would not see it"
    );
    // Loops, filters and minijinja's globals are fine.
    Rubric::parse(
        "ok.j2",
        "{% for t in history %}{{ loop.index }} {{ t.user|upper }}{% endfor %}{% for i in range(3) %}{% endfor %}{{ instruction }}{{ output }}",
    )
    .unwrap();
}
