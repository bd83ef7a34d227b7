//! Model files as untrusted input, through the binary: mutated copies of the tiny fixtures (a
//! Hugging Face directory, a GGUF file written here from the same weights, a PEFT adapter) give
//! exit 2 and one line naming the file and the field, never a panic or an abort, for
//! `generate --backend candle`, `train` and `merge-lora`. Also: merge-lora's rsLoRA, rank and
//! alpha patterns against weights computed here, and directories that ship
//! `consolidated.safetensors` or a stale single file beside indexed Hugging Face shards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use crate::util::{Env, repo};

fn fixture(name: &str) -> PathBuf {
    repo(&format!("tests/fixtures/local/{name}"))
}

/// A copy of a fixture directory (its files, not its expected.json).
fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "expected.json" {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to.to_path_buf()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// A GGUF value, as the writer below encodes it.
#[derive(Clone)]
enum Meta {
    U32(u32),
    U64(u64),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A GGUF file (v3) of F32 tensors, written by hand so that tests can break any part of it.
#[derive(Clone)]
struct Gguf {
    meta: Vec<(String, Meta)>,
    /// Name, row-major shape, values.
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Offsets written instead of the real ones.
    fake_offsets: HashMap<String, u64>,
}

impl Gguf {
    /// tiny-qwen2 as GGUF: its weights under llama.cpp's names, its shape and its tokenizer
    /// (byte-level BPE, the gpt2 pre-tokenizer it was trained with) as metadata.
    fn tiny_qwen2() -> Gguf {
        Gguf::tiny("tiny-qwen2", "qwen2")
    }

    /// tiny-llama3 as llama.cpp writes a Llama 3.x: llama's names and metadata, the q/k rows
    /// permuted for interleaved RoPE, and the llama3 scaling as per-frequency divisors in
    /// `rope_freqs.weight` (computed here as llama.cpp's converter does), none in metadata.
    fn tiny_llama3() -> Gguf {
        let mut g = Gguf::tiny("tiny-llama3", "llama");
        for (name, shape, values) in &mut g.tensors {
            let heads = if name.ends_with("attn_q.weight") {
                4
            } else if name.ends_with("attn_k.weight") {
                2
            } else {
                continue;
            };
            let (rows, cols) = (shape[0], shape[1]);
            let half = rows / heads / 2;
            let mut permuted = vec![0.0; values.len()];
            for h in 0..heads {
                for j in 0..half {
                    for k in 0..2 {
                        let to = h * 2 * half + 2 * j + k;
                        let from = h * 2 * half + k * half + j;
                        permuted[to * cols..(to + 1) * cols]
                            .copy_from_slice(&values[from * cols..(from + 1) * cols]);
                    }
                }
            }
            *values = permuted;
        }
        let (factor, low, high, original) = (8.0f64, 1.0f64, 4.0f64, 32.0f64);
        let factors: Vec<f32> = (0..8)
            .map(|i| {
                let freq = 1.0 / 10_000f64.powf(2.0 * i as f64 / 16.0);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < original / high {
                    1.0
                } else if wavelen > original / low {
                    factor as f32
                } else {
                    let smooth = (original / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect();
        g.tensors
            .push(("rope_freqs.weight".into(), vec![8], factors));
        g
    }

    /// The fixture `name` as a GGUF file of architecture `arch`: its weights under llama.cpp's
    /// names (as stored: no permutation), its shape and its tokenizer (byte-level BPE, the gpt2
    /// pre-tokenizer it was trained with) as metadata.
    fn tiny(name: &str, arch: &str) -> Gguf {
        let dir = fixture(name);
        let module = |hf: &str| -> String {
            let table = [
                ("self_attn.q_proj", "attn_q"),
                ("self_attn.k_proj", "attn_k"),
                ("self_attn.v_proj", "attn_v"),
                ("self_attn.o_proj", "attn_output"),
                ("mlp.gate_proj", "ffn_gate"),
                ("mlp.up_proj", "ffn_up"),
                ("mlp.down_proj", "ffn_down"),
                ("input_layernorm", "attn_norm"),
                ("post_attention_layernorm", "ffn_norm"),
            ];
            match hf {
                "model.embed_tokens.weight" => return "token_embd.weight".into(),
                "model.norm.weight" => return "output_norm.weight".into(),
                "lm_head.weight" => return "output.weight".into(),
                _ => {}
            }
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (i, rest) = rest.split_once('.').unwrap();
            let (m, kind) = rest.rsplit_once('.').unwrap();
            let g = table.iter().find(|(h, _)| *h == m).unwrap().1;
            format!("blk.{i}.{g}.{kind}")
        };
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
            tensors(&dir.join("model.safetensors"))
                .into_iter()
                .map(|(name, t)| {
                    let shape = t.dims().to_vec();
                    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    (module(&name), shape, values)
                })
                .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let tok: Value =
            serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
        let vocab = tok["model"]["vocab"].as_object().unwrap();
        let mut tokens = vec![String::new(); vocab.len()];
        for (t, id) in vocab {
            tokens[id.as_u64().unwrap() as usize] = t.clone();
        }
        let merges: Vec<String> = tok["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                Value::Array(pair) => format!(
                    "{} {}",
                    pair[0].as_str().unwrap(),
                    pair[1].as_str().unwrap()
                ),
                other => other.as_str().unwrap().to_string(),
            })
            .collect();
        let special: Vec<u64> = tok["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        let types = (0..tokens.len())
            .map(|i| if special.contains(&(i as u64)) { 3 } else { 1 })
            .collect();
        let s = |v: &str| Meta::Str(v.into());
        let a = |key: &str| format!("{arch}.{key}");
        let meta = vec![
            ("general.architecture".into(), s(arch)),
            ("general.alignment".into(), Meta::U32(32)),
            (a("embedding_length"), Meta::U32(64)),
            (a("block_count"), Meta::U32(2)),
            (a("attention.head_count"), Meta::U32(4)),
            (a("attention.head_count_kv"), Meta::U32(2)),
            (a("context_length"), Meta::U32(256)),
            (a("feed_forward_length"), Meta::U32(128)),
            (a("attention.layer_norm_rms_epsilon"), Meta::F32(1e-6)),
            (a("rope.freq_base"), Meta::F32(10_000.0)),
            ("tokenizer.ggml.model".into(), s("gpt2")),
            ("tokenizer.ggml.pre".into(), s("default")),
            ("tokenizer.ggml.tokens".into(), Meta::Strs(tokens)),
            ("tokenizer.ggml.merges".into(), Meta::Strs(merges)),
            ("tokenizer.ggml.token_type".into(), Meta::I32s(types)),
            ("tokenizer.ggml.bos_token_id".into(), Meta::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Meta::U32(2)),
            (
                "tokenizer.chat_template".into(),
                Meta::Str(std::fs::read_to_string(dir.join("chat_template.jinja")).unwrap()),
            ),
        ];
        Gguf {
            meta,
            tensors,
            fake_offsets: HashMap::new(),
        }
    }

    fn set(mut self, key: &str, value: Meta) -> Gguf {
        self.meta.retain(|(k, _)| k != key);
        self.meta.push((key.into(), value));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (key, value) in &self.meta {
            string(&mut out, key);
            match value {
                Meta::U32(v) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(v.to_le_bytes());
                }
                Meta::U64(v) => {
                    out.extend(10u32.to_le_bytes());
                    out.extend(v.to_le_bytes());
                }
                Meta::F32(v) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(v.to_le_bytes());
                }
                Meta::Str(v) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, v);
                }
                Meta::Strs(list) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((list.len() as u64).to_le_bytes());
                    for v in list {
                        string(&mut out, v);
                    }
                }
                Meta::I32s(list) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((list.len() as u64).to_le_bytes());
                    for v in list {
                        out.extend(v.to_le_bytes());
                    }
                }
            }
        }
        // The layout always uses 32 bytes, whatever general.alignment claims.
        let mut offset = 0u64;
        for (name, shape, values) in &self.tensors {
            string(&mut out, name);
            out.extend((shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                out.extend((*d as u64).to_le_bytes());
            }
            out.extend(0u32.to_le_bytes());
            out.extend(self.fake_offsets.get(name).unwrap_or(&offset).to_le_bytes());
            offset += (values.len() as u64 * 4).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for (_, _, values) in &self.tensors {
            for v in values {
                out.extend(v.to_le_bytes());
            }
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        out
    }
}

/// A few alpaca records to train on.
fn data(env: &Env) -> PathBuf {
    let lines: String = (0..4)
        .map(|i| {
            format!(
                "{}\n",
                json!({"instruction": format!("Write a short poem about the sea, number {i}."),
                       "input": "", "output": "The wind and the sea."})
            )
        })
        .collect();
    env.write("train.jsonl", lines)
}

/// The three commands that load a model, for `model` (and an adapter for merge-lora).
fn commands(env: &Env, model: &Path, adapter: &Path) -> Vec<Vec<String>> {
    let m = model.display().to_string();
    let out = |n: &str| env.path(n).display().to_string();
    vec![
        vec![
            "generate".into(),
            "--backend".into(),
            "candle".into(),
            "--model".into(),
            m.clone(),
            "--target".into(),
            "1".into(),
        ],
        vec![
            "train".into(),
            "--model".into(),
            m.clone(),
            "--data".into(),
            data(env).display().to_string(),
            "--out".into(),
            out("trained"),
            "--max-steps".into(),
            "1".into(),
        ],
        vec![
            "merge-lora".into(),
            "--model".into(),
            m,
            "--adapter".into(),
            adapter.display().to_string(),
            "--out".into(),
            out("merged"),
        ],
    ]
}

/// Exit 2, one error line on stderr naming `file` and `field`, nothing that looks like a panic.
#[track_caller]
fn refused(env: &Env, args: &[String], file: &str, field: &str, case: &str) {
    let run = env.run(args);
    let stderr = run.stderr.trim();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert!(
        run.code == 2
            && errors.len() == 1
            && errors[0].contains(file)
            && errors[0].contains(field)
            && !stderr.contains("panicked")
            && !stderr.contains("RUST_BACKTRACE"),
        "{case}: `instill {}` gave exit {} and stderr:\n{stderr}\n(wanted exit 2 and one line naming {file} and {field})",
        args[0],
        run.code
    );
}

#[test]
fn the_tiny_gguf_written_here_loads_and_matches_its_checkpoint() {
    // The GGUF the table below mutates is itself a working model: same logits as the
    // safetensors checkpoint it was written from.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let path = env.write("tiny.gguf", Gguf::tiny_qwen2().bytes());
    let opts = instill_generator::local::LoadOptions::default();
    let gguf = instill_generator::local::load(&path, &Device::Cpu, &opts).unwrap();
    let hf = instill_generator::local::load(&fixture("tiny-qwen2"), &Device::Cpu, &opts).unwrap();
    let ids = hf.codec.encode("Write a short poem about").unwrap();
    assert_eq!(gguf.codec.encode("Write a short poem about").unwrap(), ids);
    let logits = |m: &instill_generator::local::Model| {
        let mut cache = m.new_cache();
        m.forward(&[&ids], &mut [&mut cache])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b) = (logits(&gguf.model), logits(&hf.model));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "logits differ by {worst}");
    // Both decode as transformers did (16 greedy tokens: RoPE at every later position).
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("tiny-qwen2").join("expected.json")).unwrap(),
    )
    .unwrap();
    let case = &expected["cases"][0];
    let greedy: Vec<u32> = case["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let params = instill_generator::local::SeqParams {
        max_new_tokens: 16,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: Vec::new(),
        stop_ids: Vec::new(),
    };
    for loaded in [&gguf, &hf] {
        let no_eos = instill_generator::local::Codec {
            eos_ids: Vec::new(),
            ..loaded.codec.clone()
        };
        let out = instill_generator::local::generate_all(
            &loaded.model,
            &no_eos,
            &[(ids.clone(), params.clone())],
            1,
        )
        .unwrap();
        assert_eq!(out[0].ids, greedy);
    }
    // And train takes it (one step).
    let args = &commands(&env, &path, &fixture("tiny-llama-lora"))[1];
    env.run(args).expect_code(0);
}

#[test]
fn absurd_gguf_files_are_refused_naming_the_file_and_the_field() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let base = Gguf::tiny_qwen2();
    let mut zero_dim = base.clone();
    zero_dim
        .tensors
        .iter_mut()
        .filter(|t| t.0 == "blk.0.attn_q.weight")
        .for_each(|t| {
            t.1 = vec![0, 64];
            t.2.clear();
        });
    let mut past_end = base.clone();
    past_end
        .fake_offsets
        .insert("output_norm.weight".into(), 1 << 40);
    let mut wrong_shape = base.clone();
    wrong_shape
        .tensors
        .iter_mut()
        .filter(|t| t.0 == "blk.1.ffn_down.weight")
        .for_each(|t| t.1 = vec![128, 64]);
    let full = base.bytes();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "0 layers",
            base.clone().set("qwen2.block_count", Meta::U32(0)).bytes(),
            "qwen2.block_count",
        ),
        (
            "10^12 layers",
            base.clone()
                .set("qwen2.block_count", Meta::U64(1_000_000_000_000))
                .bytes(),
            "qwen2.block_count",
        ),
        (
            "0 heads",
            base.clone()
                .set("qwen2.attention.head_count", Meta::U32(0))
                .bytes(),
            "qwen2.attention.head_count",
        ),
        (
            "10^12 heads",
            base.clone()
                .set("qwen2.attention.head_count", Meta::U64(1_000_000_000_000))
                .bytes(),
            "qwen2.attention.head_count",
        ),
        (
            "context 2^40",
            base.clone()
                .set("qwen2.context_length", Meta::U64(1 << 40))
                .bytes(),
            "qwen2.context_length",
        ),
        (
            "alignment 0",
            base.clone().set("general.alignment", Meta::U32(0)).bytes(),
            "general.alignment",
        ),
        (
            "hidden not divisible by heads",
            base.clone()
                .set("qwen2.attention.head_count", Meta::U32(3))
                .bytes(),
            "qwen2.embedding_length",
        ),
        (
            "huge vocabulary",
            base.clone()
                .set("qwen2.vocab_size", Meta::U64(1 << 40))
                .bytes(),
            "qwen2.vocab_size",
        ),
        (
            "vocabulary disagrees",
            base.clone().set("qwen2.vocab_size", Meta::U32(500)).bytes(),
            "qwen2.vocab_size 500",
        ),
        (
            "zero-sized dimension",
            zero_dim.bytes(),
            "blk.0.attn_q.weight",
        ),
        (
            "shape disagrees with the metadata",
            wrong_shape.bytes(),
            "blk.1.ffn_down.weight",
        ),
        (
            "offset past the end",
            past_end.bytes(),
            "output_norm.weight",
        ),
        ("truncated", full[..full.len() - 1000].to_vec(), "tensor "),
        (
            "truncated header",
            full[..1000].to_vec(),
            "tokenizer.ggml.tokens",
        ),
    ];
    let adapter = fixture("tiny-llama-lora");
    for (case, bytes, field) in cases {
        let path = env.write("model.gguf", bytes);
        for args in commands(&env, &path, &adapter) {
            refused(&env, &args, "model.gguf", field, case);
        }
    }
}

#[test]
fn absurd_configs_and_checkpoints_are_refused_naming_the_file_and_the_field() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let adapter = fixture("tiny-llama-lora");
    let config = |case: &str, key: &str, value: Value| {
        let dir = copy_dir(&fixture("tiny-llama"), &env.path(case));
        edit_json(&dir.join("config.json"), |v| v[key] = value);
        dir
    };
    let mut cases: Vec<(&str, PathBuf, &str, &str)> = vec![
        (
            "0 layers",
            config("l0", "num_hidden_layers", json!(0)),
            "config.json",
            "num_hidden_layers",
        ),
        (
            "10^12 layers",
            config("l12", "num_hidden_layers", json!(1_000_000_000_000u64)),
            "config.json",
            "num_hidden_layers",
        ),
        (
            "0 heads",
            config("h0", "num_attention_heads", json!(0)),
            "config.json",
            "num_attention_heads",
        ),
        (
            "10^12 heads",
            config("h12", "num_attention_heads", json!(1_000_000_000_000u64)),
            "config.json",
            "num_attention_heads",
        ),
        (
            "context 2^40",
            config("ctx", "max_position_embeddings", json!(1u64 << 40)),
            "config.json",
            "max_position_embeddings",
        ),
        (
            "negative vocabulary",
            config("vneg", "vocab_size", json!(-400)),
            "config.json",
            "vocab_size",
        ),
        (
            "huge vocabulary",
            config("vhuge", "vocab_size", json!(1u64 << 40)),
            "config.json",
            "vocab_size",
        ),
        (
            "vocabulary as text",
            config("vtext", "vocab_size", json!("400")),
            "config.json",
            "vocab_size",
        ),
        (
            "hidden not divisible by heads",
            {
                let dir = config("hd", "num_attention_heads", json!(3));
                edit_json(&dir.join("config.json"), |v| {
                    v.as_object_mut().unwrap().remove("head_dim");
                });
                dir
            },
            "config.json",
            "hidden_size",
        ),
        (
            "key/value heads disagree with the tensors",
            config("kv", "num_key_value_heads", json!(4)),
            "config.json",
            "num_key_value_heads 4",
        ),
        (
            "more layers than tensors",
            config("l3", "num_hidden_layers", json!(3)),
            "l3",
            "model.layers.2.",
        ),
        (
            "fewer layers than tensors",
            config("l1", "num_hidden_layers", json!(1)),
            "config.json",
            "num_hidden_layers is 1",
        ),
    ];
    // A zero-sized dimension in the safetensors file.
    let zero = copy_dir(&fixture("tiny-llama"), &env.path("zero"));
    let mut weights = tensors(&zero.join("model.safetensors"));
    weights.insert(
        "model.layers.0.mlp.up_proj.weight".into(),
        Tensor::zeros((0, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&weights, zero.join("model.safetensors")).unwrap();
    cases.push((
        "zero-sized dimension",
        zero,
        "zero",
        "model.layers.0.mlp.up_proj.weight",
    ));
    // A truncated safetensors file.
    let cut = copy_dir(&fixture("tiny-llama"), &env.path("cut"));
    let bytes = std::fs::read(cut.join("model.safetensors")).unwrap();
    std::fs::write(cut.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    cases.push((
        "truncated safetensors",
        cut,
        "model.safetensors",
        "unreadable safetensors",
    ));
    for (case, dir, file, field) in cases {
        for args in commands(&env, &dir, &adapter) {
            refused(&env, &args, file, field, case);
        }
    }
}

#[test]
fn absurd_adapter_configs_are_refused_naming_the_field() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let model = fixture("tiny-llama");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "alpha as text",
            json!({"lora_alpha": "sixteen"}),
            "lora_alpha",
        ),
        ("alpha missing", json!({"lora_alpha": null}), "lora_alpha"),
        ("rank 0", json!({"r": 0}), "r:"),
        ("rank 10^12", json!({"r": 1_000_000_000_000u64}), "r:"),
        ("rank 4.5", json!({"r": 4.5}), "r:"),
        ("DoRA", json!({"use_dora": true}), "use_dora"),
        ("another method", json!({"peft_type": "IA3"}), "peft_type"),
        ("rsLoRA as text", json!({"use_rslora": "yes"}), "use_rslora"),
        (
            "rank pattern of text",
            json!({"rank_pattern": {"q_proj": "8"}}),
            "rank_pattern",
        ),
        (
            "two alpha patterns for one module",
            json!({"alpha_pattern": {"q_proj": 2.0, "self_attn.q_proj": 3.0}}),
            "alpha_pattern",
        ),
        (
            "rank pattern that is not the tensors'",
            json!({"rank_pattern": {"q_proj": 4}}),
            "rank_pattern",
        ),
        ("dropout 2", json!({"lora_dropout": 2}), "lora_dropout"),
    ];
    for (i, (case, patch, field)) in cases.into_iter().enumerate() {
        let adapter = copy_dir(&fixture("tiny-llama-lora"), &env.path(&format!("a{i}")));
        edit_json(&adapter.join("adapter_config.json"), |v| {
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
        });
        let args = &commands(&env, &model, &adapter)[2];
        refused(&env, args, "adapter_config.json", field, case);
    }
}

/// `W + scale · B A` of one module of `adapter`, computed here.
fn merged_by_hand(
    base: &HashMap<String, Tensor>,
    adapter: &HashMap<String, Tensor>,
    module: &str,
    scale: f64,
) -> Tensor {
    let a = &adapter[&format!("base_model.model.{module}.lora_A.weight")];
    let b = &adapter[&format!("base_model.model.{module}.lora_B.weight")];
    (&base[&format!("{module}.weight")] + (b.matmul(a).unwrap() * scale).unwrap()).unwrap()
}

#[test]
fn merge_lora_applies_rslora_and_rank_and_alpha_patterns() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let model = fixture("tiny-llama");
    let adapter = copy_dir(&fixture("tiny-llama-lora"), &env.path("adapter"));
    // k_proj adapters of rank 4 (the first 4 of the 8), given by rank_pattern; one module with
    // its own alpha; rsLoRA throughout.
    let mut weights = tensors(&adapter.join("adapter_model.safetensors"));
    for (name, t) in weights.iter_mut() {
        if name.contains("k_proj.lora_A") {
            *t = t.narrow(0, 0, 4).unwrap().contiguous().unwrap();
        } else if name.contains("k_proj.lora_B") {
            *t = t.narrow(1, 0, 4).unwrap().contiguous().unwrap();
        }
    }
    candle_core::safetensors::save(&weights, adapter.join("adapter_model.safetensors")).unwrap();
    edit_json(&adapter.join("adapter_config.json"), |v| {
        v["use_rslora"] = json!(true);
        v["rank_pattern"] = json!({"k_proj": 4});
        v["alpha_pattern"] = json!({"model.layers.1.mlp.down_proj": 4.0});
    });
    let out = env.path("merged");
    env.run([
        "merge-lora",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .expect_code(0);
    let base = tensors(&model.join("model.safetensors"));
    let merged = tensors(&out.join("model.safetensors"));
    let mut checked = 0;
    for layer in 0..2 {
        for m in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "mlp.down_proj",
            "mlp.up_proj",
        ] {
            let module = format!("model.layers.{layer}.{m}");
            let (r, alpha) = match (layer, m) {
                (_, "self_attn.k_proj") => (4.0f64, 16.0),
                (1, "mlp.down_proj") => (8.0, 4.0),
                _ => (8.0, 16.0),
            };
            let want = merged_by_hand(&base, &weights, &module, alpha / r.sqrt());
            let got = &merged[&format!("{module}.weight")];
            let worst = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(worst < 1e-5, "{module}: merged weight differs by {worst}");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

/// tiny-llama's weights split into two indexed shards, with what a download can leave beside
/// them: `consolidated.safetensors` as a Git LFS pointer (only the HF files were pulled), and,
/// with the index, a stale single `model.safetensors` of other weights.
fn sharded(env: &Env, name: &str, with_index: bool) -> PathBuf {
    let dir = copy_dir(&fixture("tiny-llama"), &env.path(name));
    let weights = tensors(&dir.join("model.safetensors"));
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), weights[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.join(&file)).unwrap();
        for n in part {
            map.insert((*n).clone(), json!(file));
        }
    }
    if with_index {
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap();
        let stale: HashMap<String, Tensor> = weights
            .iter()
            .map(|(n, t)| (n.clone(), (t * 0.5).unwrap()))
            .collect();
        candle_core::safetensors::save(&stale, dir.join("model.safetensors")).unwrap();
    } else {
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    }
    std::fs::write(
        dir.join("consolidated.safetensors"),
        "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 503144\n",
    )
    .unwrap();
    dir
}

#[test]
fn hf_shards_are_read_once_and_consolidated_weights_are_left_alone() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let opts = instill_generator::local::LoadOptions::default();
    let reference =
        instill_generator::local::load(&fixture("tiny-llama"), &Device::Cpu, &opts).unwrap();
    let ids = reference.codec.encode("Write a short poem about").unwrap();
    let logits = |m: &instill_generator::local::Model| {
        let mut cache = m.new_cache();
        m.forward(&[&ids], &mut [&mut cache])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let want_logits = logits(&reference.model);
    let lora = fixture("tiny-llama-lora");
    let merge = |model: &Path, out: &str| -> HashMap<String, Tensor> {
        let out = env.path(out);
        env.run([
            "merge-lora",
            "--model",
            model.to_str().unwrap(),
            "--adapter",
            lora.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .expect_code(0);
        tensors(&out.join("model.safetensors"))
    };
    let want = merge(&fixture("tiny-llama"), "merged-reference");
    for (name, with_index) in [("indexed", true), ("unindexed", false)] {
        let dir = sharded(&env, name, with_index);
        // Inference.
        let loaded = instill_generator::local::load(&dir, &Device::Cpu, &opts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(logits(&loaded.model), want_logits, "{name}: logits");
        // Training's loader (merge-lora reads the base model with it).
        let got = merge(&dir, &format!("merged-{name}"));
        assert_eq!(got.len(), want.len(), "{name}");
        for (n, t) in &want {
            let same = (t - &got[n])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 0.0, "{name}: {n}");
        }
    }
}

/// A Llama 3.x GGUF as llama.cpp writes it (interleaved q/k, `rope_freqs.weight`): the candle
/// backend computes transformers' logits and greedy tokens of tiny-llama3 from it. Training
/// from it is refused naming the tensor: the config written beside a trained model could not
/// carry the factors.
#[test]
fn a_llama3_gguf_with_rope_freqs_matches_transformers() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let path = env.write("tiny-llama3.gguf", Gguf::tiny_llama3().bytes());
    let opts = instill_generator::local::LoadOptions::default();
    let gguf = instill_generator::local::load(&path, &Device::Cpu, &opts).unwrap();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("tiny-llama3").join("expected.json")).unwrap(),
    )
    .unwrap();
    let list = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let no_eos = instill_generator::local::Codec {
        eos_ids: Vec::new(),
        ..gguf.codec.clone()
    };
    for case in expected["cases"].as_array().unwrap() {
        let ids = list(&case["ids"]);
        let mut cache = gguf.model.new_cache();
        let got = gguf
            .model
            .forward(&[&ids], &mut [&mut cache])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = got
            .iter()
            .zip(case["logits"].as_array().unwrap())
            .map(|(a, b)| (a - b.as_f64().unwrap() as f32).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{}: logits differ by {worst}", case["prompt"]);
        let params = instill_generator::local::SeqParams {
            max_new_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            stop_ids: Vec::new(),
        };
        let out = instill_generator::local::generate_all(&gguf.model, &no_eos, &[(ids, params)], 1)
            .unwrap();
        assert_eq!(out[0].ids, list(&case["greedy"]), "{}", case["prompt"]);
    }
    let args = &commands(&env, &path, &fixture("tiny-llama-lora"))[1];
    refused(
        &env,
        args,
        "tiny-llama3.gguf",
        "rope_freqs.weight",
        "training from per-frequency factors",
    );
}

/// A RoPE scaling instill does not implement (yarn) is refused by every command that loads a
/// model, naming the file and the field, in config.json and in GGUF metadata alike.
#[test]
fn rope_scaling_types_instill_lacks_are_refused_by_name() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let adapter = fixture("tiny-llama-lora");
    let dir = copy_dir(&fixture("tiny-llama"), &env.path("yarn"));
    edit_json(&dir.join("config.json"), |v| {
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0,
                                   "original_max_position_embeddings": 64});
    });
    for args in commands(&env, &dir, &adapter) {
        refused(&env, &args, "config.json", "rope_scaling.rope_type", "yarn");
    }
    let gguf = Gguf::tiny_qwen2()
        .set("qwen2.rope.scaling.type", Meta::Str("yarn".into()))
        .set("qwen2.rope.scaling.factor", Meta::F32(4.0));
    let path = env.write("yarn.gguf", gguf.bytes());
    for args in commands(&env, &path, &adapter) {
        refused(&env, &args, "yarn.gguf", "qwen2.rope.scaling.type", "yarn");
    }
}
