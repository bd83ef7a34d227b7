//! Checkpoints: the trainable variables, the optimiser's moments and step, and the settings the
//! run was started with. A new one is written beside the old one and synced, renamed into place,
//! and only then is the old one removed, so a crash at any moment leaves one whole checkpoint. A
//! resume whose settings differ from the checkpoint's is refused, naming the first that differs.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use crate::TrainError;
use crate::model::Model;
use crate::optim::AdamW;

/// The files of one checkpoint directory.
pub const FILES: [&str; 3] = [
    "trainable.safetensors",
    "optimizer.safetensors",
    "state.json",
];

/// Where a checkpoint is written before it is moved into place.
fn staged(dir: &Path) -> PathBuf {
    dir.with_extension("tmp")
}

/// Where the previous checkpoint waits while the new one is moved into place.
fn previous(dir: &Path) -> PathBuf {
    dir.with_extension("old")
}

/// Every directory a checkpoint at `dir` may occupy, moved or half-written ones included.
pub fn dirs(dir: &Path) -> [PathBuf; 3] {
    [dir.to_path_buf(), staged(dir), previous(dir)]
}

/// Saves the model's trainable variables, the optimiser and `settings` at `dir`.
pub fn save(
    dir: &Path,
    model: &Model,
    optim: &AdamW,
    settings: &[(String, String)],
) -> Result<(), TrainError> {
    let (tmp, old) = (staged(dir), previous(dir));
    remove(&tmp)?; // a save that crashed half-way: never loaded
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let vars: HashMap<String, Tensor> = model
        .trainable
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    candle_core::safetensors::save(&vars, tmp.join(FILES[0]))?;
    candle_core::safetensors::save(&optim.state(), tmp.join(FILES[1]))?;
    let state = json!({ "step": optim.step, "settings": settings });
    let state_path = tmp.join(FILES[2]);
    std::fs::write(&state_path, state.to_string()).map_err(|e| TrainError::io(&state_path, e))?;
    for f in FILES {
        sync(&tmp.join(f))?;
    }
    sync(&tmp)?;
    if dir.exists() {
        remove(&old)?; // `dir` is whole, so an older one left by a crash is not needed
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync(parent)?;
    }
    remove(&old)
}

/// Checks that the checkpoint at `dir` (or the previous one, see [`load`]) was written with
/// `settings`, reading nothing but its state: a resume is refused before anything is written.
/// Returns the directory holding it and its step.
pub fn check(dir: &Path, settings: &[(String, String)]) -> Result<(PathBuf, usize), TrainError> {
    let dir = [dir.to_path_buf(), previous(dir)]
        .into_iter()
        .find(|d| d.join(FILES[2]).is_file())
        .ok_or_else(|| {
            TrainError::Config(format!("{}: no checkpoint to resume from", dir.display()))
        })?;
    let state_path = dir.join(FILES[2]);
    let bytes = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", state_path.display())))?;
    let step = state["step"]
        .as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| TrainError::Config(format!("{}: no step", state_path.display())))?;
    compare(&state["settings"], settings)
        .map_err(|m| TrainError::Config(format!("{}: {m}", dir.display())))?;
    Ok((dir, step))
}

/// Loads the checkpoint at `dir` (or the previous one, when a crash came between moving it aside
/// and moving the new one into place) into `model` and `optim`, after checking that it was
/// written with `settings`. Returns its step.
pub fn load(
    dir: &Path,
    model: &Model,
    optim: &mut AdamW,
    settings: &[(String, String)],
    device: &Device,
) -> Result<usize, TrainError> {
    let (dir, step) = check(dir, settings)?;
    let vars = candle_core::safetensors::load(dir.join(FILES[0]), device)?;
    for (name, var) in &model.trainable {
        let saved = vars.get(name).ok_or_else(|| {
            TrainError::Config(format!(
                "{}: checkpoint has no {name}: not this model's",
                dir.display()
            ))
        })?;
        var.set(saved)?;
    }
    optim.restore(
        candle_core::safetensors::load(dir.join(FILES[1]), device)?,
        step,
    );
    Ok(step)
}

/// Why a checkpoint's recorded settings are not this run's: the first that differs.
fn compare(saved: &Value, now: &[(String, String)]) -> Result<(), String> {
    let refuse = "resume with the settings the run was started with, or start a new run";
    let Some(saved) = saved.as_array() else {
        return Err(format!(
            "the checkpoint records no settings (an older instill wrote it), so a resume cannot \
             be checked; {refuse}"
        ));
    };
    let saved: Vec<(&str, &str)> = saved
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_str()?, p.get(1)?.as_str()?)))
        .collect();
    let value_of = |name: &str| saved.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    for (name, value) in now {
        match value_of(name) {
            Some(old) if old == value => {}
            Some(old) => {
                return Err(format!(
                    "{name} differs: this run's is {value}, the checkpoint's is {old}; {refuse}"
                ));
            }
            None => return Err(format!("the checkpoint records no {name}; {refuse}")),
        }
    }
    if let Some((name, _)) = saved.iter().find(|(n, _)| !now.iter().any(|(m, _)| m == n)) {
        return Err(format!(
            "{name} was set when the checkpoint was written and is not now; {refuse}"
        ));
    }
    Ok(())
}

fn sync(path: &Path) -> Result<(), TrainError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

fn remove(dir: &Path) -> Result<(), TrainError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(dir, e)),
        _ => Ok(()),
    }
}
