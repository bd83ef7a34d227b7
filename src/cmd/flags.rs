//! The flag a library error is about, added by the binary (library errors name no CLI flags).

use instill_models::DeviceError;

/// A device or dtype error with its flag: `--device gpu: expected cpu, cuda or cuda:N`,
/// `--dtype f16 needs a GPU; …` (each message starts with the setting's name, the flag's).
pub fn device_error(e: DeviceError) -> anyhow::Error {
    anyhow::anyhow!("--{e}")
}
