//! The GGUF header, read as untrusted input: every count, length, dimension and offset is
//! checked against the file's size (and sane caps) before anything is allocated from it, so a
//! corrupt or hostile file is an error naming the file and the field, never a panic or an
//! abort. The result is candle's own `Content`, which reads tensor data from it.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};

use crate::ModelFileError;

/// Arrays nested deeper than this are refused.
const MAX_DEPTH: usize = 8;
/// Tensor dimensions at most (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// `general.alignment` at most.
const MAX_ALIGNMENT: u64 = 1 << 16;

/// A GGUF file's header: metadata and tensor directory, checked. Tensor data is read from it
/// later with `Content::tensor`.
pub fn read(path: &Path) -> Result<Content, ModelFileError> {
    let file = std::fs::File::open(path).map_err(|e| ModelFileError::io(path, e))?;
    let size = file
        .metadata()
        .map_err(|e| ModelFileError::io(path, e))?
        .len();
    let mut r = Reader {
        inner: BufReader::new(file),
        path,
        size,
        pos: 0,
        long: true,
    };
    // Too short for a magic number, or another one: not GGUF at all.
    if r.u32("the magic number").ok() != Some(0x4655_4747) {
        return Err(ModelFileError::unsupported(
            path,
            "not a GGUF file (no GGUF magic number)",
        ));
    }
    let version = match r.u32("the version")? {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(r.bad("version", format!("{v} is not a GGUF version (1, 2 or 3)"))),
    };
    r.long = !matches!(version, VersionedMagic::GgufV1);
    let tensor_count = r.len("tensor count")?;
    let kv_count = r.len("metadata count")?;
    // Each entry takes some bytes: a count the file cannot hold is refused before looping.
    let prefix = if r.long { 8 } else { 4 };
    r.fits("tensor count", tensor_count, prefix + 4 + 4 + 8)?;
    r.fits("metadata count", kv_count, prefix + 4 + 1)?;
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key = r.string("a metadata key")?;
        let ty = r.u32(&key)?;
        let value = r.value(&key, ty, 0)?;
        metadata.insert(key, value);
    }
    let alignment = alignment(&r, metadata.get("general.alignment"))?;
    let mut tensors = HashMap::new();
    let mut directory = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string("a tensor name")?;
        let info = r.tensor_info(&name)?;
        if tensors.contains_key(&name) {
            return Err(r.bad(format!("tensor {name}"), "appears twice"));
        }
        directory.push(name.clone());
        tensors.insert(name, info);
    }
    let data_offset = r.pos.div_ceil(alignment) * alignment;
    for name in &directory {
        if let Some(info) = tensors.get(name) {
            check_extent(&r, name, info, data_offset, alignment)?;
        }
    }
    Ok(Content {
        magic: version,
        metadata,
        tensor_infos: tensors,
        tensor_data_offset: data_offset,
    })
}

/// `general.alignment`: a power of two (32 when absent).
fn alignment(r: &Reader<'_>, value: Option<&Value>) -> Result<u64, ModelFileError> {
    let field = "general.alignment";
    let a = match value {
        None => return Ok(32),
        Some(Value::U8(v)) => u64::from(*v),
        Some(Value::U16(v)) => u64::from(*v),
        Some(Value::U32(v)) => u64::from(*v),
        Some(Value::U64(v)) => *v,
        Some(other) => return Err(r.bad(field, format!("{other:?} is not an unsigned integer"))),
    };
    if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
        return Err(r.bad(
            field,
            format!("{a} is not a power of two up to {MAX_ALIGNMENT}"),
        ));
    }
    Ok(a)
}

/// The tensor's bytes lie within the file, at an aligned offset.
fn check_extent(
    r: &Reader<'_>,
    name: &str,
    info: &TensorInfo,
    data_offset: u64,
    alignment: u64,
) -> Result<(), ModelFileError> {
    let field = format!("tensor {name}");
    let elems = info
        .shape
        .dims()
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    let block = info.ggml_dtype.block_size() as u64;
    let Some(elems) = elems.filter(|n| n % block == 0) else {
        return Err(r.bad(
            field,
            format!(
                "shape {:?} is not a whole number of {:?} blocks",
                info.shape.dims(),
                info.ggml_dtype
            ),
        ));
    };
    let bytes = (elems / block).saturating_mul(info.ggml_dtype.type_size() as u64);
    if !info.offset.is_multiple_of(alignment) {
        return Err(r.bad(
            field,
            format!("offset {} is not a multiple of {alignment}", info.offset),
        ));
    }
    let end = data_offset
        .saturating_add(info.offset)
        .saturating_add(bytes);
    if end > r.size {
        return Err(r.bad(
            field,
            format!(
                "{bytes} bytes at offset {} end past the end of the file ({} bytes): truncated or corrupt",
                info.offset, r.size
            ),
        ));
    }
    Ok(())
}

struct Reader<'a> {
    inner: BufReader<std::fs::File>,
    path: &'a Path,
    size: u64,
    pos: u64,
    /// Lengths are u64 (GGUF v2, v3), else u32 (v1).
    long: bool,
}

impl Reader<'_> {
    fn bad(&self, field: impl Into<String>, message: impl Into<String>) -> ModelFileError {
        ModelFileError::field(self.path, field, message)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ModelFileError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| {
            self.bad(
                what,
                format!("cannot be read at byte {} ({e}): truncated", self.pos),
            )
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelFileError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ModelFileError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn len(&mut self, what: &str) -> Result<u64, ModelFileError> {
        if self.long {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    /// `count` items of at least `each` bytes fit in what is left of the file.
    fn fits(&self, what: &str, count: u64, each: u64) -> Result<(), ModelFileError> {
        let left = self.size.saturating_sub(self.pos);
        if count.saturating_mul(each) > left {
            return Err(self.bad(
                what,
                format!("{count} entries cannot fit in the {left} bytes left in the file"),
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, ModelFileError> {
        let n = self.len(what)?;
        self.fits(what, n, 1)?;
        let mut v = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|e| self.bad(what, format!("cannot be read ({e}): truncated")))?;
        self.pos += n;
        // Writers are known to leave NUL terminators and invalid UTF-8 behind.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<Value, ModelFileError> {
        Ok(match ty {
            0 => Value::U8(self.bytes::<1>(key)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.bytes(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.bytes(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes(key)?)),
            7 => Value::Bool(self.bytes::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 if depth < MAX_DEPTH => {
                let item = self.u32(key)?;
                let n = self.len(key)?;
                let each = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                self.fits(key, n, each)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(key, item, depth + 1)?);
                }
                Value::Array(items)
            }
            9 => return Err(self.bad(key, format!("arrays nested deeper than {MAX_DEPTH}"))),
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.bytes(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes(key)?)),
            t => return Err(self.bad(key, format!("unknown value type {t}"))),
        })
    }

    fn tensor_info(&mut self, name: &str) -> Result<TensorInfo, ModelFileError> {
        let field = format!("tensor {name}");
        let n = self.u32(&field)?;
        if !(1..=MAX_DIMS).contains(&n) {
            return Err(self.bad(field, format!("{n} dimensions (1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let d = self.len(&field)?;
            if d == 0 || d > self.size.saturating_mul(8) {
                return Err(self.bad(
                    field,
                    format!("dimension {d} is zero or larger than the file can hold"),
                ));
            }
            dims.push(d as usize);
        }
        // GGUF lists the fastest-varying dimension first; candle's shapes are row-major.
        dims.reverse();
        let ty = self.u32(&field)?;
        let dtype = dtype(ty)
            .ok_or_else(|| self.bad(field.clone(), format!("tensor type {ty} is not supported")))?;
        let offset = self.u64(&field)?;
        Ok(TensorInfo {
            ggml_dtype: dtype,
            shape: candle_core::Shape::from(dims),
            offset,
        })
    }
}

/// ggml's type numbers (ggml.h) of the types candle reads.
fn dtype(ty: u32) -> Option<GgmlDType> {
    Some(match ty {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Checks every tensor of a GGUF file the loaders use against `dims` (from its metadata).
pub fn check_tensors(content: &Content, dims: &crate::Dims) -> Result<(), ModelFileError> {
    dims.check_tensors(content.tensor_infos.iter().filter_map(|(name, info)| {
        crate::names::hf_name(name).map(|hf| (name.as_str(), hf, info.shape.dims()))
    }))
}
