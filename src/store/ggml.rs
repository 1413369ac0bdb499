//! The ggml-family formats: the import error and tensor types the converters share, and the
//! writers of a whisper.cpp model from renamed tensors and of a GGUF language model with its
//! weights requantized to Q8_0 (candle has fast CPU kernels for Q8_0 but none for
//! Q4_1/Q5_0, so a 4-bit GGUF runs ~3x faster requantized, with the same answers). Outputs are
//! written to a temporary file and renamed into place, so a partial file never appears.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} has no model.bin (nor model.bin.part1, ...): is it a CTranslate2 Whisper folder?"
    )]
    NoModel(PathBuf),
    #[error("{0} has no vocabulary.txt or vocabulary.json")]
    NoVocab(PathBuf),
    #[error("not a CTranslate2 Whisper model: {0}")]
    Format(String),
    #[error("unknown quantization '{0}' (use f16 or q8_0)")]
    Quantize(String),
    #[error("cannot read PyTorch checkpoint {0}")]
    Checkpoint(String),
}

/// Output precision of the big 2-D weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    F16,
    Q8_0,
}

impl std::str::FromStr for Quantize {
    type Err = ImportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(Quantize::F16),
            "q8_0" => Ok(Quantize::Q8_0),
            other => Err(ImportError::Quantize(other.to_string())),
        }
    }
}

impl std::fmt::Display for Quantize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantize::F16 => "f16",
            Quantize::Q8_0 => "q8_0",
        })
    }
}

pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One tensor from a CTranslate2 file, widened to f32.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Whisper model sizes, read off the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;
const GGML_TYPE_Q8_0: i32 = 8;
/// GGML_FTYPE_MOSTLY_Q8_0 + 1000 * GGML_QNT_VERSION (2).
const FTYPE_Q8_0: i32 = 7 + 2000;

/// ggml's reference Q8_0 quantiser: blocks of 32 values, an f16 scale and 32 signed bytes.
pub fn quantize_q8_0(values: &[f32], out: &mut Vec<u8>) {
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

/// Writes a whisper.cpp model file; `progress` is told after each tensor.
pub fn write_ggml(
    w: &mut impl Write,
    h: &Hparams,
    mel: (usize, usize, &[f32]),
    vocab: &[Vec<u8>],
    tensors: &[(String, Tensor)],
    quantize: Quantize,
    progress: &dyn Fn(),
) -> std::io::Result<()> {
    let i32s = |w: &mut dyn Write, vals: &[i32]| -> std::io::Result<()> {
        vals.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
    };
    let ftype = match quantize {
        Quantize::F16 => 1,
        Quantize::Q8_0 => FTYPE_Q8_0,
    };
    w.write_all(&0x6767_6d6c_i32.to_le_bytes())?;
    let hp = [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
    ];
    i32s(w, &hp.map(|v| v as i32))?;
    i32s(w, &[ftype, mel.0 as i32, mel.1 as i32])?;
    mel.2
        .iter()
        .try_for_each(|v| w.write_all(&v.to_le_bytes()))?;
    i32s(w, &[vocab.len() as i32])?;
    for tok in vocab {
        w.write_all(&(tok.len() as u32).to_le_bytes())?;
        w.write_all(tok)?;
    }
    let mut buf = Vec::new();
    for (name, t) in tensors {
        let keep_f32 = t.shape.len() < 2
            || name.ends_with("positional_embedding")
            || name.starts_with("encoder.conv") && name.ends_with(".bias");
        let ttype = if keep_f32 {
            GGML_TYPE_F32
        } else if quantize == Quantize::Q8_0 && t.shape.len() == 2 && t.shape[1] % 32 == 0 {
            GGML_TYPE_Q8_0
        } else {
            GGML_TYPE_F16
        };
        i32s(w, &[t.shape.len() as i32, name.len() as i32, ttype])?;
        i32s(
            w,
            &t.shape.iter().rev().map(|&d| d as i32).collect::<Vec<_>>(),
        )?;
        w.write_all(name.as_bytes())?;
        buf.clear();
        match ttype {
            GGML_TYPE_F32 => t
                .data
                .iter()
                .for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
            GGML_TYPE_F16 => t
                .data
                .iter()
                .for_each(|v| buf.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            _ => quantize_q8_0(&t.data, &mut buf),
        }
        w.write_all(&buf)?;
        progress();
    }
    Ok(())
}

/// Rewrites a GGUF file with every quantized tensor other than Q8_0 requantized to Q8_0.
/// Metadata and tensors are written in sorted order, so the output is reproducible.
pub fn requantize_gguf_q8_0(src: &Path, dst: &Path) -> Result<(), ImportError> {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let bad = |e: candle_core::Error| ImportError::Format(format!("{}: {e}", src.display()));
    let mut file = BufReader::new(File::open(src).map_err(io(src))?);
    let (ct, stored) = read_gguf(&mut file, src)?;
    let cpu = candle_core::Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(stored.len());
    for (name, qt) in stored {
        let dims = qt.shape().dims().to_vec();
        let requant = !matches!(
            qt.dtype(),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0
        ) && dims.last().is_some_and(|d| d % 32 == 0);
        let qt = if requant {
            QTensor::quantize(&qt.dequantize(&cpu).map_err(bad)?, GgmlDType::Q8_0).map_err(bad)?
        } else {
            qt
        };
        tensors.push((name, qt));
    }
    let mut metadata: Vec<(&str, gguf_file::Value)> = ct
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in metadata.iter_mut() {
        if *k == "general.file_type" {
            *v = gguf_file::Value::U32(7); // LLAMA_FTYPE_MOSTLY_Q8_0
        }
    }
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    write_atomically(dst, |out| gguf_file::write(out, &md, &ts).map_err(bad))
}

/// A GGUF file's metadata and every tensor as stored, sorted by name (`src` names it in errors).
/// Shapes are checked before anything is read, so a damaged header is an error, not a panic or a
/// huge allocation.
#[allow(clippy::type_complexity)]
pub fn read_gguf<R: std::io::Read + std::io::Seek>(
    r: &mut R,
    src: &Path,
) -> Result<
    (
        candle_core::quantized::gguf_file::Content,
        Vec<(String, candle_core::quantized::QTensor)>,
    ),
    ImportError,
> {
    use candle_core::quantized::gguf_file;
    let bad = |e: String| ImportError::Format(format!("{}: {e}", src.display()));
    let ct = gguf_file::Content::read(r).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = ct.tensor_infos.keys().cloned().collect();
    names.sort();
    let cpu = candle_core::Device::Cpu;
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let info = &ct.tensor_infos[&name];
        let dims = info.shape.dims();
        // No elements is no tensor either (and candle would cast an unaligned empty buffer).
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none_or(|n| n == 0 || n > 1 << 32)
        {
            return Err(bad(format!("{name}: implausible shape {dims:?}")));
        }
        let qt = ct
            .tensor(r, &name, &cpu)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        tensors.push((name, qt));
    }
    Ok((ct, tensors))
}

/// Writes `dst` through `write` into a `.part` file beside it, renamed into place only when
/// complete, so an interrupted import never leaves a file that looks finished.
pub(crate) fn write_atomically(
    dst: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = dst.with_extension("part");
    let mut out = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    write(&mut out)?;
    out.flush().map_err(io(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, dst).map_err(io(dst))
}
