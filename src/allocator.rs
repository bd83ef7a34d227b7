//! The binary's allocator: mimalloc, told to keep the pages it frees.
//!
//! mimalloc because imports and exports allocate and free millions of short strings, often on
//! another thread than the one that allocated them: glibc's allocator made an import of the 52k
//! Alpaca records ~15% slower and the MinHash dedup of them ~25% slower.
//!
//! By default mimalloc hands freed pages back to the OS shortly after they are freed (its purge
//! delay). candle allocates a fresh buffer for every op of a training or inference pass, so each
//! pass faulted in, and the kernel zeroed, the same few gigabytes again: `instill train --lora`
//! on SmolLM2 ran at 170–183 tokens/s with the default, 234–247 with purging off (peak memory
//! 2.57 GB against 2.75 GB), imports and dedup unchanged. mimalloc reads the setting from
//! `MIMALLOC_PURGE_DELAY` when the process starts, and setting it from inside needs its C API
//! (`unsafe`, which the workspace forbids), so [`keep_freed_pages`] runs the binary again, once,
//! with the variable set. A caller who set it keeps their value.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's purge delay: `-1` never hands freed pages back while the process runs.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Replaces this process (same pid, arguments, standard streams and environment) by the same
/// binary with [`PURGE_DELAY`] set to `-1`, unless it is set already. Returns only when it did
/// not: the variable was set, or this is not Unix (`None`), or the binary could not be run
/// again (the error; the process goes on with mimalloc's defaults).
#[cfg(unix)]
pub fn keep_freed_pages() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY).is_some() {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Some(e),
    };
    let mut args = std::env::args_os();
    let arg0: std::ffi::OsString = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    Some(
        std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(PURGE_DELAY, "-1")
            .exec(),
    )
}

#[cfg(not(unix))]
pub fn keep_freed_pages() -> Option<std::io::Error> {
    None
}
