//! A fake OpenAI-compatible server for tests and benchmarks: in-process, loopback, port 0.
//! Replies are tasks in the self-instruct format derived deterministically from the prompt (same
//! prompt, same reply), varied so that most are new, with some exact and near duplicates and
//! some tasks the quality rules reject. Latency (with jitter) and faults (429 with Retry-After,
//! 500, timeouts, garbage bodies, `finish_reason=length`, always 401, refusals with no tasks, a
//! NUL in a task, error replies that repeat the request's credentials) are configurable; faults
//! are drawn from the prompt and its attempt number, so a run sees the same ones whatever its
//! concurrency.
//! Replies can carry reasoning as DeepSeek's and vLLM's APIs send it ([`FakeReasoning`]).
//! Replies can also come in bursts: one request in every `hold_every` (by arrival) is held back
//! while the ones after it are answered at once, so that they all become acceptable together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Fault rates, each a probability per attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub rate_limited: f64,
    pub server_error: f64,
    pub timeout: f64,
    pub garbage: f64,
    pub length: f64,
}

/// How the fake server behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Tasks per reply.
    pub items: usize,
    /// `en` or `zh` task text and labels.
    pub lang: &'static str,
    /// Delay before every answer.
    pub latency: Duration,
    /// Up to this much more delay, drawn from the prompt: replies come back out of order.
    pub jitter: Duration,
    /// How long a "timeout" fault stalls.
    pub stall: Duration,
    pub faults: Faults,
    /// Answer every request with this status (401 to test a bad key).
    pub always_status: Option<u16>,
    /// How many distinct task topics replies draw from: fewer means more duplicates.
    pub topics: u64,
    /// The first this many requests (in arrival order) get a refusal: a reply with no tasks.
    pub refuse_first: usize,
    /// One reply in this many (drawn from the prompt; 0: none) has a NUL (U+0000) in its first
    /// task's instruction.
    pub nul_every: u64,
    /// Every reply's `usage` object, instead of the counts of its text (absurd or negative
    /// counts, to test that they overflow nothing).
    pub usage: Option<serde_json::Value>,
    /// Bytes of padding (a field clients ignore) in every successful reply: an oversize body.
    pub padding: usize,
    /// Every successful reply is a body that never ends (the start of a reply, then spaces).
    pub endless: bool,
    /// Hold back the first request and every `hold_every`-th after it (by arrival; 0: none)…
    pub hold_every: usize,
    /// …for this long before answering it.
    pub hold: Duration,
    /// Error replies repeat the request's `Authorization` headers (as some servers and proxies
    /// do), to test that no message shows them.
    pub echo_auth: bool,
    /// Answer with this function of the prompt instead of self-instruct tasks: a judge whose
    /// grades a test plants in the data it judges, or a model answering questions.
    pub answer: Option<fn(&str) -> String>,
    /// Answer with this function of the prompt and the reply's hash (the prompt's, mixed with
    /// the request's `seed` when it sends one): a sampled model whose K answers to one prompt
    /// differ by their seeds.
    pub answer_seeded: Option<fn(&str, u64) -> String>,
    /// How replies carry a reasoning model's thinking.
    pub reasoning: FakeReasoning,
    /// Reply as a chat model continuing raw ChatML text ([`magpie_reply`]): a user's
    /// instruction after a user turn's opening, an answer after the assistant's.
    pub magpie: bool,
    /// Serve no `/completions` (a chat-only API): 404 there.
    pub chat_only: bool,
    /// Keep every request's model and prompt (see [`FakeServer::bodies`]).
    pub keep_bodies: bool,
}

/// The shapes in which servers send reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FakeReasoning {
    /// None.
    #[default]
    None,
    /// `message.reasoning_content` (DeepSeek's reasoner, vLLM's reasoning parsers), and
    /// `"reasoning_content": null` on every third reply.
    Field,
    /// `message.reasoning` (newer vLLM).
    VllmField,
    /// A `<think>` block at the start of the content (or of a completion's text).
    Think,
    /// A `<think>` block at the start of every task's output.
    InTasks,
    /// Cut off while thinking: `content: null`, the reasoning, `finish_reason: length`.
    CutOff,
}

/// The reasoning of the reply to prompt hash `h`: words a quality rule rejects wherever it
/// reads them (self-reference, Alpaca's and BELLE's blacklists), and a long text shared by
/// every reply, so that a filter or dedup that read it would reject records.
pub fn reasoning_text(h: u64) -> String {
    format!(
        "As an AI language model, I first look at the image and the 图片 at http://example.com/plan, \
         then I list what the user needs, check each step twice, and write the answer last. \
         Plan {h:x}."
    )
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            items: 8,
            lang: "en",
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            stall: Duration::from_secs(3),
            faults: Faults::default(),
            always_status: None,
            topics: 50_000,
            refuse_first: 0,
            nul_every: 0,
            usage: None,
            padding: 0,
            endless: false,
            hold_every: 0,
            hold: Duration::ZERO,
            echo_auth: false,
            answer: None,
            answer_seeded: None,
            reasoning: FakeReasoning::None,
            magpie: false,
            chat_only: false,
            keep_bodies: false,
        }
    }
}

/// What the server saw: every request's prompt hash and outcome, in arrival order.
#[derive(Debug, Default)]
pub struct Log {
    pub requests: Vec<(u64, &'static str)>,
    /// The `Authorization` headers of every request, in arrival order.
    pub auth: Vec<Vec<String>>,
    /// With `keep_bodies`: every request's model and prompt, in arrival order.
    pub bodies: Vec<(String, String)>,
    attempts: HashMap<u64, u64>,
}

struct Shared {
    config: FakeConfig,
    log: Mutex<Log>,
}

/// A running fake server; it stops when dropped.
pub struct FakeServer {
    pub base_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(config: FakeConfig) -> FakeServer {
        let shared = Arc::new(Shared {
            config,
            log: Mutex::new(Log::default()),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/completions", post(completion))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        FakeServer {
            base_url: format!("http://{addr}/v1"),
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Prompt hashes of every request, with what the server answered.
    pub fn requests(&self) -> Vec<(u64, &'static str)> {
        self.shared.log.lock().expect("log").requests.clone()
    }

    /// With `keep_bodies`: every request's model and prompt, in arrival order.
    pub fn bodies(&self) -> Vec<(String, String)> {
        self.shared.log.lock().expect("log").bodies.clone()
    }

    /// The `Authorization` headers of every request, in arrival order.
    pub fn auth_headers(&self) -> Vec<Vec<String>> {
        self.shared.log.lock().expect("log").auth.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hash the server logs for a prompt (tests hash stored prompts the same way).
pub fn prompt_hash(prompt: &str) -> u64 {
    xxh3_64(prompt.as_bytes())
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(s, headers, body, false).await
}

async fn completion(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(s, headers, body, true).await
}

async fn answer(s: Arc<Shared>, headers: HeaderMap, body: Bytes, completion: bool) -> Response {
    let auth: Vec<String> = headers
        .get_all("authorization")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = if completion {
        v["prompt"].as_str().unwrap_or("").to_string()
    } else {
        v["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // A request's own seed (magpie's identical prompts) varies its reply.
    let h = match v["seed"].as_u64() {
        Some(seed) => xxh3_64_with_seed(prompt.as_bytes(), seed),
        None => prompt_hash(&prompt),
    };
    let cfg = &s.config;
    if completion && cfg.chat_only {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"error": {"message": "Not Found", "type": "invalid_request_error"}}"#,
        )
            .into_response();
    }
    let f = cfg.faults;
    // One lock for the attempt count, the arrival number and the log: arrivals are exact.
    let (outcome, arrival) = {
        let mut log = s.log.lock().expect("log");
        let arrival = log.requests.len();
        let a = log.attempts.entry(h).or_insert(0);
        *a += 1;
        let draw = unit(xxh3_64_with_seed(&a.to_le_bytes(), h));
        let outcome = if let Some(status) = cfg.always_status {
            if status == 401 {
                "unauthorized"
            } else {
                "status"
            }
        } else if arrival < cfg.refuse_first {
            "refused"
        } else if draw < f.rate_limited {
            "rate_limited"
        } else if draw < f.rate_limited + f.server_error {
            "server_error"
        } else if draw < f.rate_limited + f.server_error + f.timeout {
            "timeout"
        } else if draw < f.rate_limited + f.server_error + f.timeout + f.garbage {
            "garbage"
        } else if draw < f.rate_limited + f.server_error + f.timeout + f.garbage + f.length {
            "length"
        } else {
            "ok"
        };
        log.requests.push((h, outcome));
        log.auth.push(auth.clone());
        if cfg.keep_bodies {
            let model = v["model"].as_str().unwrap_or("").to_string();
            log.bodies.push((model, prompt.clone()));
        }
        (outcome, arrival)
    };
    let delay = cfg.latency + cfg.jitter.mul_f64(unit(xxh3_64_with_seed(b"jitter", h)));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if cfg.hold_every > 0 && arrival.is_multiple_of(cfg.hold_every) {
        tokio::time::sleep(cfg.hold).await;
    }
    let error = |status: StatusCode, message: &str| {
        let message = if cfg.echo_auth {
            format!("{message}: {}", auth.join(", "))
        } else {
            message.to_string()
        };
        (
            status,
            [("content-type", "application/json")],
            serde_json::json!({"error": {"message": message, "type": "fake"}}).to_string(),
        )
            .into_response()
    };
    match outcome {
        "unauthorized" => return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided"),
        "status" => {
            return error(
                StatusCode::from_u16(cfg.always_status.unwrap_or(500))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "forced",
            );
        }
        "rate_limited" => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached");
            r.headers_mut()
                .insert("retry-after", "0.05".parse().expect("header"));
            return r;
        }
        "server_error" => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "The server had an error");
        }
        "timeout" => {
            tokio::time::sleep(cfg.stall).await;
            return error(StatusCode::GATEWAY_TIMEOUT, "too slow");
        }
        "garbage" => {
            return (
                StatusCode::OK,
                "{\"choices\": [{\"message\": {\"content\": ",
            )
                .into_response();
        }
        _ => {}
    }
    let examples = prompt
        .matches(if cfg.lang == "zh" {
            ". 指令:"
        } else {
            ". Instruction:"
        })
        .count();
    let first = if completion {
        examples.max(1)
    } else {
        examples + 1
    };
    let mut magpie_finish = "stop";
    let mut text = if cfg.magpie {
        let (text, finish) = magpie_reply(h, &prompt);
        magpie_finish = finish;
        text
    } else if outcome == "refused" {
        "I'm sorry, but I can't help with that request.".to_string()
    } else if let Some(answer) = cfg.answer {
        answer(&prompt)
    } else if let Some(answer) = cfg.answer_seeded {
        answer(&prompt, h)
    } else {
        reply_text(cfg, h, first)
    };
    if completion && cfg.answer.is_none() && cfg.answer_seeded.is_none() && !cfg.magpie {
        // The prompt ended with "N. Instruction:"; the reply continues it.
        let label = if cfg.lang == "zh" {
            format!("{first}. 指令:")
        } else {
            format!("{first}. Instruction:")
        };
        text = text.replacen(&label, "", 1);
    }
    let finish = if outcome == "length" {
        // Cut in the middle of the last task.
        let cut = text
            .rfind("###")
            .map_or(text.len() / 2, |i| i + (text.len() - i) / 2);
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        "length"
    } else {
        magpie_finish
    };
    let prompt_tokens = prompt.len() as u64 / 4;
    let completion_tokens = text.len() as u64 / 4;
    let finish = if cfg.reasoning == FakeReasoning::CutOff {
        "length"
    } else {
        finish
    };
    let choice = reply_choice(cfg.reasoning, h, text, finish, completion);
    let mut body = serde_json::json!({
        "id": format!("fake-{h:x}"),
        "object": if completion { "text_completion" } else { "chat.completion" },
        "model": "fake",
        "choices": [choice],
        "usage": cfg.usage.clone().unwrap_or_else(|| serde_json::json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})),
    });
    if cfg.padding > 0 {
        body["padding"] = " ".repeat(cfg.padding).into();
    }
    if cfg.endless {
        let start = std::iter::once(Bytes::from_static(b"{\"choices\": ["));
        let spaces = std::iter::repeat_with(|| Bytes::from(vec![b' '; 64 << 10]));
        let stream = futures::stream::iter(start.chain(spaces).map(Ok::<_, std::io::Error>));
        return (
            [("content-type", "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
    }
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// The choice object of a reply: `text` as the content (or a completion's `text`), with the
/// reasoning where `how` puts it.
fn reply_choice(
    how: FakeReasoning,
    h: u64,
    text: String,
    finish: &str,
    completion: bool,
) -> serde_json::Value {
    let thought = reasoning_text(h);
    let text = match how {
        FakeReasoning::Think => format!("<think>\n{thought}\n</think>\n\n{text}"),
        _ => text,
    };
    if completion {
        return serde_json::json!({"index": 0, "text": text, "finish_reason": finish});
    }
    let mut message = serde_json::json!({"role": "assistant", "content": text});
    match how {
        FakeReasoning::Field if h.is_multiple_of(3) => {
            message["reasoning_content"] = serde_json::Value::Null;
        }
        FakeReasoning::Field => message["reasoning_content"] = thought.into(),
        FakeReasoning::VllmField => message["reasoning"] = thought.into(),
        FakeReasoning::CutOff => {
            message["content"] = serde_json::Value::Null;
            message["reasoning_content"] = thought.into();
        }
        FakeReasoning::None | FakeReasoning::Think | FakeReasoning::InTasks => {}
    }
    serde_json::json!({"index": 0, "message": message, "finish_reason": finish})
}

/// A chat model continuing raw ChatML text, as `--mode magpie` sends it. After a user turn's
/// opening: an instruction drawn from `h` (the prompt and the request's seed); one in ten from a
/// small common pool (exact duplicates), one in twelve cut off at the token limit (`length`),
/// one in fifteen empty. After the assistant's opening: an answer drawn from the instruction.
pub fn magpie_reply(h: u64, prompt: &str) -> (String, &'static str) {
    if let Some(before) = prompt.strip_suffix("<|im_start|>assistant\n") {
        let instruction = before
            .rsplit("<|im_start|>user\n")
            .next()
            .unwrap_or("")
            .trim_end_matches('\n')
            .trim_end_matches("<|im_end|>");
        let words = topic_words(xxh3_64(instruction.as_bytes()), 14, false).join(" ");
        return (format!("Here is the answer: {words}."), "stop");
    }
    if (h >> 7).is_multiple_of(15) {
        return (String::new(), "stop");
    }
    let topic = if (h >> 13).is_multiple_of(6) {
        h % 2
    } else {
        h
    };
    let mut words = topic_words(topic, 9, false).join(" ");
    if let Some(c) = words.get_mut(0..1) {
        c.make_ascii_uppercase();
    }
    if (h >> 23).is_multiple_of(12) {
        return (words, "length");
    }
    (format!("{words}?"), "stop")
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A word of the fake language: two or three syllables (English-like) or two CJK characters,
/// drawn from `seed`: tens of thousands of distinct words, so tasks rarely overlap by chance (as
/// real instructions do not).
fn word(seed: u64, zh: bool) -> String {
    const SYLLABLES: &[&str] = &[
        "ba", "be", "bi", "bo", "bu", "ca", "ce", "ci", "co", "cu", "da", "de", "di", "do", "du",
        "fa", "fe", "fi", "fo", "fu", "ga", "ge", "gi", "go", "gu", "ha", "he", "hi", "ho", "hu",
        "ka", "ke", "ki", "ko", "ku", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "mu",
        "na", "ne", "ni", "no", "nu", "pa", "pe", "pi", "po", "pu", "ra", "re", "ri", "ro", "ru",
        "sa", "se", "si", "so", "su", "ta", "te", "ti", "to", "tu", "va", "ve", "vi", "vo", "vu",
        "za", "ze", "zi", "zo", "zu", "ran", "ten", "lin", "son", "mar", "ver", "tor", "len",
    ];
    if zh {
        // Two common CJK characters.
        let a = char::from_u32(0x4E00 + (seed % 3000) as u32).unwrap_or('中');
        let b = char::from_u32(0x4E00 + ((seed >> 16) % 3000) as u32).unwrap_or('文');
        return format!("{a}{b}");
    }
    let n = 2 + (seed >> 40) % 2;
    (0..n)
        .map(|k| SYLLABLES[((seed >> (k * 8)) % SYLLABLES.len() as u64) as usize])
        .collect()
}

/// Words of topic `t`, `n` of them, in a deterministic order.
fn topic_words(t: u64, n: usize, zh: bool) -> Vec<String> {
    (0..n)
        .map(|k| word(xxh3_64_with_seed(&(k as u64).to_le_bytes(), t), zh))
        .collect()
}

/// The reply text for prompt hash `h`: `cfg.items` tasks numbered from `first`.
fn reply_text(cfg: &FakeConfig, h: u64, first: usize) -> String {
    let zh = cfg.lang == "zh";
    let (li, ln, lo, none) = if zh {
        ("指令", "输入", "输出", "<无输入>")
    } else {
        ("Instruction", "Input", "Output", "<noinput>")
    };
    let mut blocks = Vec::new();
    for i in 0..cfg.items {
        let r = xxh3_64_with_seed(&(i as u64).to_le_bytes(), h);
        // One in 25 tasks comes from a small common pool, word for word: exact duplicates.
        let common = (r >> 56).is_multiple_of(25);
        let topic = if common {
            r % 50
        } else {
            r % cfg.topics.max(1)
        };
        let mut ins_words = topic_words(topic, 12, zh);
        // One in six tasks is a near copy: the same topic with one word changed.
        if !common && (r >> 20).is_multiple_of(6) {
            ins_words[5] = word(r >> 8, zh);
        }
        let sep = if zh { "" } else { " " };
        let mut instruction = ins_words.join(sep);
        if zh {
            instruction.push('。');
        } else {
            instruction.push('.');
            if let Some(c) = instruction.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
        }
        // One in ten tasks breaks a quality rule.
        match if common { 2 } else { (r >> 40) % 20 } {
            0 => {
                instruction = if zh {
                    "写诗".into()
                } else {
                    "Explain this.".into()
                }
            }
            1 => {
                instruction = if zh {
                    format!("{instruction}请描述这张图片。")
                } else {
                    format!("{instruction} Describe the image.")
                }
            }
            _ => {}
        }
        if i == 0 && cfg.nul_every > 0 && h.is_multiple_of(cfg.nul_every) {
            // After the first character: inside the instruction, wherever the labels are.
            let at = instruction.char_indices().nth(1).map_or(0, |(k, _)| k);
            instruction.insert(at, '\0');
        }
        let input = if common || (r >> 48).is_multiple_of(2) {
            none.to_string()
        } else {
            topic_words(topic ^ 0xABCD, 6, zh).join(if zh { "" } else { " " })
        };
        let variant = if common { 0 } else { r & 0xFF };
        let mut output =
            topic_words(topic ^ 0x5555 ^ variant, 20, zh).join(if zh { "" } else { " " });
        if cfg.reasoning == FakeReasoning::InTasks {
            output = format!("<think>\n{}\n</think>\n\n{output}", reasoning_text(r));
        }
        let n = first + i;
        blocks.push(format!(
            "{n}. {li}: {instruction}\n{n}. {ln}:\n{input}\n{n}. {lo}:\n{output}"
        ));
    }
    blocks.join("\n###\n")
}
