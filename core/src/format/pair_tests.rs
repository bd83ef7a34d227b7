//! The pair layouts: every shape read, errors naming the field, the hand-written lines equal to
//! serde_json's, and each written layout read back to the pair it came from.

use expect_test::expect;
use serde_json::{Value, json};

use super::{Columns, InputFormat, PairFormat, Unfit, parse_pair, parse_records, write_pair};
use crate::pair::{Answer, Pair};
use crate::record::{Exchange, Record};

fn read(format: InputFormat, json: &str) -> String {
    match parse_pair(json.as_bytes(), format) {
        Ok(p) => format!("{p:?}"),
        Err(e) => format!("{}:{:?}: {e}", e.line, e.column),
    }
}

#[test]
fn reads_every_shape_of_trls_format_and_ultrafeedback() {
    let got = [
        r#"{"prompt":"Hi","chosen":"<think>\nhm\n</think>\n\nHello","rejected":"Go away"}"#,
        r#"{"prompt":[{"role":"system","content":"Be kind"},{"role":"user","content":"Hi"}],"chosen":[{"role":"assistant","content":"Hello","reasoning_content":"greet"}],"rejected":[{"role":"assistant","content":"No"}]}"#,
        // Implicit prompt: the shared conversation before the answers.
        r#"{"chosen":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"},{"role":"assistant","content":"good"}],"rejected":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"},{"role":"assistant","content":"bad"}]}"#,
        // UltraFeedback-binarized, in the Hub's schema.
        r#"{"prompt":"2+2?","prompt_id":"ab12","chosen":[{"content":"2+2?","role":"user"},{"content":"4","role":"assistant"}],"rejected":[{"content":"2+2?","role":"user"},{"content":"5","role":"assistant"}],"messages":[{"content":"2+2?","role":"user"},{"content":"4","role":"assistant"}],"score_chosen":8.5,"score_rejected":3.0}"#,
    ]
    .map(|j| read(InputFormat::Dpo, j));
    expect![[r#"
        Pair { prompt: Record { instruction: "Hi", input: "", output: "", system: "", history: [], reasoning: "" }, chosen: Answer { text: "Hello", reasoning: "hm", score: None }, rejected: Answer { text: "Go away", reasoning: "", score: None } }
        Pair { prompt: Record { instruction: "Hi", input: "", output: "", system: "Be kind", history: [], reasoning: "" }, chosen: Answer { text: "Hello", reasoning: "greet", score: None }, rejected: Answer { text: "No", reasoning: "", score: None } }
        Pair { prompt: Record { instruction: "q2", input: "", output: "", system: "", history: [Exchange("q1", "a1")], reasoning: "" }, chosen: Answer { text: "good", reasoning: "", score: None }, rejected: Answer { text: "bad", reasoning: "", score: None } }
        Pair { prompt: Record { instruction: "2+2?", input: "", output: "", system: "", history: [], reasoning: "" }, chosen: Answer { text: "4", reasoning: "", score: Some(8.5) }, rejected: Answer { text: "5", reasoning: "", score: Some(3.0) } }"#]]
    .assert_eq(&got.join("\n"));
}

#[test]
fn reads_llama_factorys_ranking_layouts() {
    let got = [
        r#"{"instruction":"Sum","input":"1 2","chosen":"3","rejected":"4","system":"s","history":[["u","v"]]}"#,
        r#"{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"u"},{"from":"gpt","value":"v"},{"from":"human","value":"q"}],"chosen":{"from":"gpt","value":"good"},"rejected":{"from":"gpt","value":"bad"}}"#,
    ]
    .map(|j| read(InputFormat::Ranking, j));
    expect![[r#"
        Pair { prompt: Record { instruction: "Sum", input: "1 2", output: "", system: "s", history: [Exchange("u", "v")], reasoning: "" }, chosen: Answer { text: "3", reasoning: "", score: None }, rejected: Answer { text: "4", reasoning: "", score: None } }
        Pair { prompt: Record { instruction: "q", input: "", output: "", system: "s", history: [Exchange("u", "v")], reasoning: "" }, chosen: Answer { text: "good", reasoning: "", score: None }, rejected: Answer { text: "bad", reasoning: "", score: None } }"#]]
    .assert_eq(&got.join("\n"));
    // As records, a pair is its prompt answered by the chosen answer.
    let mut records = Vec::new();
    let line = br#"{"instruction":"Sum","chosen":"<think>add</think>3","rejected":"4"}"#;
    assert_eq!(
        parse_records(line, InputFormat::Ranking, &mut records),
        Ok(())
    );
    let mut want = Record::new("Sum", "", "3");
    want.reasoning = "add".into();
    assert_eq!(records, vec![want]);
}

#[test]
fn detects_the_pair_layouts_before_the_others() {
    let cases = [
        (r#"{"prompt":"p","chosen":"a","rejected":"b"}"#, "dpo"),
        (
            r#"{"chosen":[],"rejected":[],"messages":[],"prompt":"x"}"#,
            "dpo",
        ),
        (
            r#"{"instruction":"i","chosen":"a","rejected":"b"}"#,
            "lf-ranking",
        ),
        (
            r#"{"conversations":[],"chosen":{},"rejected":{}}"#,
            "lf-ranking",
        ),
    ];
    for (json, want) in cases {
        assert_eq!(
            InputFormat::detect(json.as_bytes()).map(InputFormat::name),
            Ok(want)
        );
    }
    assert_eq!(
        InputFormat::detect_columns(&["prompt", "prompt_id", "chosen", "rejected", "messages"]),
        Ok(InputFormat::Dpo)
    );
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (InputFormat::Dpo, r#"{"prompt":"p","rejected":"b"}"#),
        (
            InputFormat::Dpo,
            r#"{"prompt":"p","chosen":7,"rejected":"b"}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"prompt":"p","chosen":"a","rejected":[]}"#,
        ),
        (InputFormat::Dpo, r#"{"chosen":"a","rejected":"b"}"#),
        (
            InputFormat::Dpo,
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"user","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"tool","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"prompt":[{"role":"assistant","content":"q"}],"chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"chosen":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"rejected":[{"role":"user","content":"other"},{"role":"assistant","content":"b"}]}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"prompt":"p","chosen":"a","rejected":"b","score_chosen":"high"}"#,
        ),
        (
            InputFormat::Dpo,
            r#"{"prompt":"p","chosen":"a\u0000","rejected":"b"}"#,
        ),
        (
            InputFormat::Ranking,
            r#"{"instruction":"i","chosen":{"from":"gpt","value":"a"},"rejected":"b"}"#,
        ),
        (InputFormat::Ranking, r#"{"chosen":"a","rejected":"b"}"#),
        (
            InputFormat::Ranking,
            r#"{"conversations":[{"from":"human","value":"q"}],"chosen":{"from":"human","value":"a"},"rejected":{"from":"gpt","value":"b"}}"#,
        ),
        (
            InputFormat::Ranking,
            r#"{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}],"chosen":{"from":"gpt","value":"a"},"rejected":{"from":"gpt","value":"b"}}"#,
        ),
    ];
    let got: Vec<String> = cases.iter().map(|(f, j)| read(*f, j)).collect();
    expect![[r#"
        1:None: field `chosen`: missing (expected a string or a list of messages)
        1:None: field `chosen`: invalid type: number, expected a string or a list of messages
        1:None: field `rejected`: a list while `chosen` is a string: both are texts or both are message lists
        1:None: field `prompt`: missing (expected a string: chosen and rejected are texts)
        1:None: field `chosen[0].role`: expected an assistant message (the answer)
        1:None: field `chosen[0].role`: unsupported role `tool` (expected system, user or assistant)
        1:None: field `prompt[0].role`: the prompt ends with this turn; it must end with a user turn
        1:None: field `rejected`: its messages before the last differ from chosen's: both hold the same conversation up to their answers
        1:Some(63): field `score_chosen`: invalid type: string "high", expected f64
        1:None: field `chosen`: contains a NUL character (\u0000), which databases cannot store
        1:None: field `chosen`: invalid type: object, expected a string (a {from, value} answer goes with `conversations`)
        1:None: field `instruction`: missing (expected a string)
        1:None: field `chosen.from`: `human`: the answer is the assistant's (gpt)
        1:None: field `conversations[1].from`: the prompt ends with this turn; it must end with a human turn"#]]
    .assert_eq(&got.join("\n"));
}

fn sample() -> Pair {
    Pair {
        prompt: Record {
            instruction: "翻译成英文".into(),
            input: "你好".into(),
            system: "你是翻译".into(),
            history: vec![Exchange("在吗？".into(), "在的。".into())],
            ..Record::default()
        },
        chosen: Answer {
            text: "Hello".into(),
            reasoning: "先想一想".into(),
            score: Some(9.0),
        },
        rejected: Answer::new("Hi \"there\"\n"),
    }
}

#[test]
fn writes_each_layout_and_refuses_what_dpo_cannot_say() {
    let mut out = Vec::new();
    let mut pair = sample();
    assert_eq!(
        write_pair(&pair, PairFormat::Dpo, Columns::default(), &mut out),
        Err(Unfit::NotOneText)
    );
    assert!(out.is_empty());
    for f in [PairFormat::DpoMessages, PairFormat::Ranking] {
        write_pair(&pair, f, Columns::default(), &mut out).unwrap();
    }
    pair.prompt.system.clear();
    pair.prompt.history.clear();
    write_pair(&pair, PairFormat::Dpo, Columns::default(), &mut out).unwrap();
    let every = Columns {
        system: true,
        history: true,
        reasoning: true,
    };
    let plain = Pair {
        prompt: Record::new("q", "", ""),
        chosen: Answer::new("a"),
        rejected: Answer::new("b"),
    };
    for f in [PairFormat::DpoMessages, PairFormat::Ranking] {
        write_pair(&plain, f, every, &mut out).unwrap();
    }
    expect![[r#"
        {"prompt":[{"role":"system","content":"你是翻译"},{"role":"user","content":"在吗？"},{"role":"assistant","content":"在的。"},{"role":"user","content":"翻译成英文\n\n你好"}],"chosen":[{"role":"assistant","content":"Hello","reasoning_content":"先想一想"}],"rejected":[{"role":"assistant","content":"Hi \"there\"\n"}]}
        {"instruction":"翻译成英文","input":"你好","chosen":"Hello","rejected":"Hi \"there\"\n","system":"你是翻译","history":[["在吗？","在的。"]]}
        {"prompt":"翻译成英文\n\n你好","chosen":"Hello","rejected":"Hi \"there\"\n"}
        {"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"assistant","content":"a","reasoning_content":""}],"rejected":[{"role":"assistant","content":"b","reasoning_content":""}]}
        {"instruction":"q","input":"","chosen":"a","rejected":"b","system":"","history":[]}
    "#]]
    .assert_eq(&String::from_utf8_lossy(&out));
}

/// The same lines through serde_json, the oracle of the hand-written writer.
fn with_serde(pair: &Pair, format: PairFormat) -> Value {
    let p = &pair.prompt;
    let message = |role: &str, content: &str, reasoning: &str| {
        let mut m = json!({"role": role, "content": content});
        if !reasoning.is_empty() {
            m["reasoning_content"] = json!(reasoning);
        }
        m
    };
    match format {
        PairFormat::Dpo => {
            json!({"prompt": p.user_turn(), "chosen": pair.chosen.text, "rejected": pair.rejected.text})
        }
        PairFormat::DpoMessages => {
            let mut prompt = Vec::new();
            if !p.system.is_empty() {
                prompt.push(message("system", &p.system, ""));
            }
            for Exchange(u, a) in &p.history {
                prompt.push(message("user", u, ""));
                prompt.push(message("assistant", a, ""));
            }
            prompt.push(message("user", &p.user_turn(), ""));
            let side = |a: &Answer| json!([message("assistant", &a.text, &a.reasoning)]);
            json!({"prompt": prompt, "chosen": side(&pair.chosen), "rejected": side(&pair.rejected)})
        }
        PairFormat::RankingShareGpt => {
            let turn = |from: &str, value: &str| json!({"from": from, "value": value});
            let mut conv = Vec::new();
            if !p.system.is_empty() {
                conv.push(turn("system", &p.system));
            }
            for Exchange(u, a) in &p.history {
                conv.push(turn("human", u));
                conv.push(turn("gpt", a));
            }
            conv.push(turn("human", &p.user_turn()));
            json!({"conversations": conv, "chosen": turn("gpt", &pair.chosen.text),
                   "rejected": turn("gpt", &pair.rejected.text)})
        }
        PairFormat::Ranking => {
            let mut v = json!({"instruction": p.instruction, "input": p.input,
                "chosen": pair.chosen.text, "rejected": pair.rejected.text});
            if !p.system.is_empty() {
                v["system"] = json!(p.system);
            }
            if !p.history.is_empty() {
                v["history"] = json!(p.history.iter().map(|e| [&e.0, &e.1]).collect::<Vec<_>>());
            }
            v
        }
    }
}

#[test]
fn writes_what_serde_json_writes_and_reads_it_back() {
    let texts = ["", "a", "“引号” \"q\" \\ \n\t\u{1f} 😀", "<b>12345678</b>"];
    let mut n = 0;
    for (i, t) in texts.iter().enumerate() {
        for (j, u) in texts.iter().enumerate() {
            let mut pair = sample();
            pair.prompt.instruction = format!("{t}{u}x");
            pair.prompt.input = (*u).to_string();
            pair.prompt.system = if i % 2 == 0 {
                String::new()
            } else {
                (*t).to_string()
            };
            if j % 2 == 0 {
                pair.prompt.history.clear();
            }
            pair.chosen = Answer {
                text: (*t).to_string(),
                reasoning: (*u).to_string(),
                score: None,
            };
            pair.rejected = Answer::new(*u);
            for f in PairFormat::ALL {
                let mut line = Vec::new();
                if write_pair(&pair, f, Columns::default(), &mut line).is_err() {
                    continue;
                }
                let ours: Value = serde_json::from_slice(&line).unwrap();
                let mut shown = pair.clone();
                if !f.has_reasoning_field() {
                    shown.chosen.reasoning.clear();
                }
                assert_eq!(ours, with_serde(&shown, f), "{f} {i} {j}");
                let back = parse_pair(&line, f.as_input()).unwrap();
                let mut want = shown.clone();
                want.chosen.score = None;
                if f != PairFormat::Ranking {
                    want.prompt.instruction = want.prompt.user_turn();
                    want.prompt.input.clear();
                }
                assert_eq!(back, want, "{f}");
                n += 1;
            }
        }
    }
    assert!(n > 30, "{n}");
}
