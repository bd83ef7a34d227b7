//! Models by Hugging Face id: `generate --backend candle`, `train` and `merge-lora` take
//! `ORG/NAME` from a Hugging Face cache laid out as `huggingface_hub` writes it (offline, no
//! request made), `--revision` picks another snapshot, and a loopback fake hub
//! (`fake_hub.rs`) fills an empty cache that then works with the hub gone. Nothing here
//! reaches the network: every run's `HF_ENDPOINT` is the fake hub or a closed loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::fake_hub::{FakeHub, HubConfig, Revision, blob_id, is_lfs, sha256_hex};
use crate::util::{Env, Run, repo};

const MODEL: &str = "test-org/tiny-llama";
const ADAPTER: &str = "test-org/tiny-llama-lora";
const MAIN: &str = "1111111111111111111111111111111111111111";
const OTHER: &str = "2222222222222222222222222222222222222222";

/// The files of a fixture directory (its `expected.json` left out).
fn fixture(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo("tests/fixtures/local").join(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "expected.json")
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The cache folder of `repo`.
fn folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// Writes `files` as snapshot `commit` of `repo`, as `huggingface_hub` does: blobs named by
/// etag (sha256 for LFS files, the git blob id otherwise), relative symlinks, `refs/REV`.
fn put_snapshot(
    cache: &Path,
    repo: &str,
    commit: &str,
    files: &[(String, Vec<u8>)],
    refs: &[&str],
) {
    let root = folder(cache, repo);
    let snap = root.join("snapshots").join(commit);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (name, bytes) in files {
        let etag = if is_lfs(name) {
            sha256_hex(bytes)
        } else {
            blob_id(bytes)
        };
        std::fs::write(root.join("blobs").join(&etag), bytes).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&etag), snap.join(name)).unwrap();
    }
    for r in refs {
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs").join(r), commit).unwrap();
    }
}

/// A loopback port nothing listens on.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Runs `instill ARGS` in `env`'s directory with only the Hub settings of `vars` (every other
/// HF_* variable removed, HOME the scratch directory, so no real token or cache is seen).
fn run(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_instill"));
    cmd.args(args)
        .arg("--no-progress")
        .env("INSTILL_DB", &env.db.url)
        .env("HOME", env.dir.path())
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path());
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HUGGING_FACE_HUB_TOKEN",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run instill");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Imports the English seeds and generates with the tiny model by id: one request, with a prompt
/// short enough for its 256-token context. The request must succeed (the tiny model's tasks may
/// all be rejected: exit 0 or 1).
fn generate_one(env: &Env, vars: &[(&str, &str)]) -> Run {
    run(env, &["seeds", "import", "--builtin", "en"], vars).expect_code(0);
    let template = env.write(
        "short.j2",
        "{#- instill: format=en shape=chat tasks=3 -#}\nWrite tasks.\n",
    );
    let generated = run(
        env,
        &[
            "generate",
            "--backend",
            "candle",
            "--model",
            MODEL,
            "--target",
            "1",
            "--max-requests",
            "1",
            "--max-tokens",
            "16",
            "--batch-size",
            "1",
            "--concurrency",
            "1",
            "--json",
            "--template",
            template.to_str().unwrap(),
        ],
        vars,
    );
    assert!(
        generated.code == 0 || generated.code == 1,
        "{}\n{}",
        generated.stdout,
        generated.stderr
    );
    assert_eq!(generated.json()["requests_ok"], 1, "{}", generated.stdout);
    generated
}

fn data(env: &Env) -> String {
    let lines: String = (0..4)
        .map(|i| {
            format!(
                "{}\n",
                json!({"instruction": format!("Write a short poem about the sea, number {i}."),
                       "input": "", "output": "The wind and the sea."})
            )
        })
        .collect();
    env.write("train.jsonl", lines).display().to_string()
}

fn merge(env: &Env, out: &str, extra: &[&str], vars: &[(&str, &str)]) -> Run {
    let out = env.path(out).display().to_string();
    let mut args = vec![
        "merge-lora",
        "--model",
        MODEL,
        "--adapter",
        ADAPTER,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run(env, &args, vars)
}

/// Every file under `dir` (symlinks included), relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generate_train_and_merge_lora_take_an_id_from_a_prefilled_cache_offline() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let cache = env.path("hf-cache");
    put_snapshot(&cache, MODEL, MAIN, &fixture("tiny-llama"), &["main"]);
    put_snapshot(
        &cache,
        ADAPTER,
        OTHER,
        &fixture("tiny-llama-lora"),
        &["main"],
    );
    let endpoint = closed_endpoint();
    let vars = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    generate_one(&env, &vars);

    let data = data(&env);
    let trained = env.path("trained").display().to_string();
    run(
        &env,
        &[
            "train",
            "--model",
            MODEL,
            "--data",
            &data,
            "--out",
            &trained,
            "--max-steps",
            "2",
            "--lora",
        ],
        &vars,
    )
    .expect_code(0);
    // The adapter names its base by id, as PEFT does, so that PEFT can load it from the Hub.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("trained/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["base_model_name_or_path"], MODEL);

    merge(&env, "merged", &[], &vars).expect_code(0);
    assert!(env.path("merged/model.safetensors").is_file());
    // Nothing was written to the cache.
    assert!(
        tree(&cache)
            .iter()
            .all(|f| !f.contains("incomplete") && !f.starts_with(".locks")),
        "{:?}",
        tree(&cache)
    );
}

#[test]
fn revision_picks_another_snapshot_and_what_the_cache_lacks_offline_is_named() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let cache = env.path("hf-cache");
    put_snapshot(&cache, MODEL, MAIN, &fixture("tiny-llama"), &["main"]);
    // Revision v2 is a snapshot without tokenizer.json.
    let partial: Vec<_> = fixture("tiny-llama")
        .into_iter()
        .filter(|(n, _)| n != "tokenizer.json")
        .collect();
    put_snapshot(&cache, MODEL, OTHER, &partial, &["v2"]);
    put_snapshot(
        &cache,
        ADAPTER,
        MAIN,
        &fixture("tiny-llama-lora"),
        &["main"],
    );
    let endpoint = closed_endpoint();
    let vars = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "true"),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    let failed = merge(&env, "v2", &["--revision", "v2"], &vars).expect_code(2);
    let snapshot = folder(&cache, MODEL).join("snapshots").join(OTHER);
    assert!(
        failed.stderr.contains("tokenizer.json")
            && failed.stderr.contains(snapshot.to_str().unwrap())
            && failed.stderr.contains("no such local path")
            && failed.stderr.contains("HF_HUB_OFFLINE"),
        "{}",
        failed.stderr
    );
    assert!(!env.path("v2").exists());
    // A full commit hash is a revision too; main is the default.
    merge(&env, "by-commit", &["--revision", MAIN], &vars).expect_code(0);
    merge(&env, "by-main", &[], &vars).expect_code(0);
    // A repository the cache does not hold: the ref file looked for is named.
    let absent = run(
        &env,
        &[
            "merge-lora",
            "--model",
            "test-org/absent",
            "--adapter",
            ADAPTER,
            "--out",
            "x",
        ],
        &vars,
    )
    .expect_code(2);
    let refs = folder(&cache, "test-org/absent").join("refs/main");
    assert!(
        absent.stderr.contains(refs.to_str().unwrap()),
        "{}",
        absent.stderr
    );
    // A local path wins over an id, and --revision with one is refused.
    let local = repo("tests/fixtures/local/tiny-llama")
        .display()
        .to_string();
    let refused = run(
        &env,
        &[
            "merge-lora",
            "--model",
            &local,
            "--revision",
            "v2",
            "--adapter",
            ADAPTER,
            "--out",
            "y",
        ],
        &vars,
    )
    .expect_code(2);
    assert!(
        refused.stderr.contains("is a local path"),
        "{}",
        refused.stderr
    );
}

/// The fake hub's revisions: the model at main (and its adapter).
fn hub_revisions() -> Vec<Revision> {
    vec![
        Revision {
            repo: MODEL.into(),
            revision: "main".into(),
            commit: MAIN.into(),
            files: fixture("tiny-llama"),
        },
        Revision {
            repo: ADAPTER.into(),
            revision: "main".into(),
            commit: OTHER.into(),
            files: fixture("tiny-llama-lora"),
        },
    ]
}

#[test]
fn the_loopback_hub_fills_an_empty_cache_in_huggingface_hub_layout_then_it_works_offline() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let home = env.path("hf-home");
    let hub = FakeHub::start(HubConfig {
        revisions: hub_revisions(),
        token: Some("hf_secret_token".into()),
        corrupt: None,
    });
    let vars = [
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_TOKEN", "hf_secret_token"),
    ];
    let first = merge(&env, "merged", &[], &vars).expect_code(0);
    assert!(first.stderr.contains("downloaded"), "{}", first.stderr);
    let requests = hub.requests();
    assert!(!requests.is_empty());
    for (path, auth) in &requests {
        assert_eq!(auth.as_deref(), Some("Bearer hf_secret_token"), "{path}");
        assert!(!first.stderr.contains("hf_secret_token"));
    }
    // The layout huggingface_hub writes: refs/main → the commit; each snapshot file a relative
    // symlink into blobs/, named by sha256 (LFS) or git blob id; no partial file left.
    let cache = home.join("hub");
    let root = folder(&cache, MODEL);
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        MAIN
    );
    for (name, bytes) in fixture("tiny-llama") {
        let link = root.join("snapshots").join(MAIN).join(&name);
        let etag = if is_lfs(&name) {
            sha256_hex(&bytes)
        } else {
            blob_id(&bytes)
        };
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../blobs").join(&etag),
            "{name}"
        );
        assert_eq!(std::fs::read(&link).unwrap(), bytes, "{name}");
    }
    assert!(
        tree(&cache).iter().all(|f| !f.ends_with(".incomplete")),
        "{:?}",
        tree(&cache)
    );
    // A second run makes no request; with the hub gone it works, offline or not.
    let before = hub.requests().len();
    merge(&env, "again", &[], &vars).expect_code(0);
    assert_eq!(hub.requests().len(), before);
    drop(hub);
    let gone = closed_endpoint();
    let offline = [
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_ENDPOINT", gone.as_str()),
    ];
    merge(&env, "gone", &[], &offline).expect_code(0);
    let with_flag = [offline[0], offline[1], ("HF_HUB_OFFLINE", "1")];
    let data = data(&env);
    let trained = env.path("trained").display().to_string();
    run(
        &env,
        &[
            "train",
            "--model",
            MODEL,
            "--data",
            &data,
            "--out",
            &trained,
            "--max-steps",
            "1",
        ],
        &with_flag,
    )
    .expect_code(0);
}

/// generate and train, each into an empty cache of its own, from the loopback hub (merge-lora's
/// download is the test above).
#[test]
fn generate_and_train_download_an_id_from_the_loopback_hub() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let hub = FakeHub::start(HubConfig {
        revisions: hub_revisions(),
        token: None,
        corrupt: None,
    });
    let (gen_home, train_home) = (env.path("hf-generate"), env.path("hf-train"));
    let (gen_dir, train_dir) = (
        gen_home.display().to_string(),
        train_home.display().to_string(),
    );
    let gen_vars = [
        ("HF_HOME", gen_dir.as_str()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
    ];
    let train_vars = [
        ("HF_HOME", train_dir.as_str()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
    ];
    let generated = generate_one(&env, &gen_vars);
    assert!(
        generated.stderr.contains("downloaded"),
        "{}",
        generated.stderr
    );

    let data = data(&env);
    let trained = env.path("trained").display().to_string();
    let run_train = run(
        &env,
        &[
            "train",
            "--model",
            MODEL,
            "--data",
            &data,
            "--out",
            &trained,
            "--max-steps",
            "1",
        ],
        &train_vars,
    )
    .expect_code(0);
    assert!(
        run_train.stderr.contains("downloaded"),
        "{}",
        run_train.stderr
    );
    assert!(
        folder(&train_home.join("hub"), MODEL)
            .join("refs/main")
            .is_file(),
        "{:?}",
        tree(&train_home)
    );
}

#[test]
fn a_refusing_or_lying_hub_is_a_clear_error_and_leaves_nothing_half_written() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    // 401: no token sent to a hub that wants one.
    let hub = FakeHub::start(HubConfig {
        revisions: hub_revisions(),
        token: Some("hf_secret_token".into()),
        corrupt: None,
    });
    let cache = env.path("cache-401");
    let vars = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
    ];
    let run401 = merge(&env, "m401", &[], &vars).expect_code(2);
    assert!(
        run401.stderr.contains("401") && run401.stderr.contains("HF_TOKEN"),
        "{}",
        run401.stderr
    );
    assert!(tree(&cache).is_empty(), "{:?}", tree(&cache));
    // 404: no such repository.
    let with_token = [vars[0], vars[1], ("HF_TOKEN", "hf_secret_token")];
    let missing = run(
        &env,
        &[
            "merge-lora",
            "--model",
            "test-org/nope",
            "--adapter",
            ADAPTER,
            "--out",
            "m404",
        ],
        &with_token,
    )
    .expect_code(2);
    assert!(
        missing.stderr.contains("404") && missing.stderr.contains("test-org/nope"),
        "{}",
        missing.stderr
    );
    assert!(tree(&cache).is_empty(), "{:?}", tree(&cache));
    // Without HF_TOKEN, the token file HF_HOME/token (as `hf auth login` writes it) is sent.
    let home = env.path("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_secret_token\n").unwrap();
    let from_file = [("HF_HOME", home.to_str().unwrap()), vars[1]];
    merge(&env, "from-file", &[], &from_file).expect_code(0);
    drop(hub);
    // The weights arrive with a flipped byte: the sha256 check refuses them, no blob is kept
    // under its name, no partial file stays, and refs/main is not written.
    let hub = FakeHub::start(HubConfig {
        revisions: hub_revisions(),
        token: None,
        corrupt: Some("model.safetensors".into()),
    });
    let cache = env.path("cache-bad");
    let vars = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
    ];
    let bad = merge(&env, "mbad", &[], &vars).expect_code(2);
    assert!(
        bad.stderr.contains("model.safetensors") && bad.stderr.contains("sha256"),
        "{}",
        bad.stderr
    );
    let files = tree(&cache);
    let weights = fixture("tiny-llama")
        .into_iter()
        .find(|(n, _)| n == "model.safetensors")
        .unwrap()
        .1;
    assert!(
        files
            .iter()
            .all(|f| !f.contains(&sha256_hex(&weights)[..16]) || f.ends_with(".lock"))
            && files
                .iter()
                .all(|f| !f.ends_with(".incomplete") && !f.contains("refs")),
        "{files:?}"
    );
    assert!(!env.path("mbad").exists());
}

/// tiny-llama's weights as a sharded checkpoint (two shards and their index), without
/// tokenizer_config.json.
fn sharded() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let weights = repo("tests/fixtures/local/tiny-llama/model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut shards = [
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    ];
    let mut map = serde_json::Map::new();
    for (i, name) in names.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        map.insert(name.clone(), json!(file));
        shards[i % 2].insert(name.clone(), tensors[name].clone());
    }
    let mut files: Vec<(String, Vec<u8>)> = fixture("tiny-llama")
        .into_iter()
        .filter(|(n, _)| n != "model.safetensors" && n != "tokenizer_config.json")
        .collect();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        let path = dir.path().join(&name);
        candle_core::safetensors::save(shard, &path).unwrap();
        files.push((name, std::fs::read(&path).unwrap()));
    }
    let index = json!({"metadata": {}, "weight_map": map});
    files.push((
        "model.safetensors.index.json".into(),
        index.to_string().into_bytes(),
    ));
    files
}

#[test]
fn a_sharded_checkpoint_comes_with_every_shard_and_a_file_the_repo_lacks_is_remembered() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let cache = env.path("hf-cache");
    let mut revisions = hub_revisions();
    revisions[0].files = sharded();
    let hub = FakeHub::start(HubConfig {
        revisions,
        token: None,
        corrupt: None,
    });
    let endpoint = hub.endpoint.clone();
    let vars = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    merge(&env, "merged", &[], &vars).expect_code(0);
    let root = folder(&cache, MODEL);
    let snap = root.join("snapshots").join(MAIN);
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snap.join(shard).is_file(), "{shard}: {:?}", tree(&cache));
    }
    assert!(!snap.join("model.safetensors").exists());
    // The repository has no tokenizer_config.json: marked as huggingface_hub marks it, so the
    // snapshot counts as whole offline.
    assert!(
        root.join(".no_exist")
            .join(MAIN)
            .join("tokenizer_config.json")
            .is_file()
    );
    drop(hub);
    let offline = [vars[0], ("HF_HUB_OFFLINE", "1")];
    merge(&env, "again", &[], &offline).expect_code(0);
    // The offline merge wrote the same weights as the one that downloaded.
    let a = std::fs::read(env.path("merged/model.safetensors")).unwrap();
    assert_eq!(
        a,
        std::fs::read(env.path("again/model.safetensors")).unwrap()
    );
}
