//! The device a model runs on and the dtype of its weights, by name (`cpu`, `cuda:1`; `bf16`).

use candle_core::{DType, Device};

/// A device or dtype name that cannot be used. Its `Display` names the value, not the option
/// it came from.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not a device name.
    #[error("device {0}: expected cpu, cuda or cuda:N")]
    Name(String),
    /// A CUDA device that cannot be opened.
    #[error(
        "device {name}: {message} (CUDA needs a build with the `cuda` feature and an NVIDIA driver)"
    )]
    Cuda {
        /// The name given.
        name: String,
        /// candle's reason.
        message: String,
    },
    /// Not a dtype name.
    #[error("dtype {0}: expected f32, bf16 or f16")]
    DType(String),
    /// A dtype the device cannot compute in.
    #[error("dtype {0} needs a GPU; use f32 or bf16 on the CPU")]
    NeedsGpu(String),
}

/// Opens a candle device by name: `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<Device, DeviceError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|_| DeviceError::Name(cuda.to_string()))?;
            Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
                name: cuda.to_string(),
                message: e.to_string(),
            })
        }
        other => Err(DeviceError::Name(other.to_string())),
    }
}

/// A dtype by name: `f32`, `bf16` or `f16`.
pub fn dtype(name: &str) -> Result<DType, DeviceError> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(DeviceError::DType(other.to_string())),
    }
}

/// A dtype by name that `device` can compute in (f16 needs a GPU).
pub fn dtype_on(name: &str, device: &Device) -> Result<DType, DeviceError> {
    let dtype = dtype(name)?;
    if dtype == DType::F16 && device.is_cpu() {
        return Err(DeviceError::NeedsGpu(name.to_string()));
    }
    Ok(dtype)
}
