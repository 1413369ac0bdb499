//! Whisper import: a CTranslate2 (faster-whisper) Whisper folder in, a whisper.cpp ggml file out
//! (written by `ggml.rs`).
//!
//! The CTranslate2 `model.bin` is a flat list of named tensors. whisper.cpp wants its own names,
//! separate query/key/value matrices, the mel filter bank and the byte-level vocabulary in one file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::ggml::{io, write_atomically, write_ggml, Hparams, ImportError, Quantize, Tensor};

/// Reads every variable of a CTranslate2 `model.bin` stream (binary version 6).
pub fn read_ct2(mut r: impl Read) -> Result<HashMap<String, Tensor>, ImportError> {
    let version = read_u32(&mut r)?;
    if version != 6 {
        return Err(bad(&format!(
            "binary version {version}, only 6 is supported"
        )));
    }
    let spec = read_string(&mut r)?;
    if spec != "WhisperSpec" {
        return Err(bad(&format!("model spec is {spec}, not WhisperSpec")));
    }
    let _revision = read_u32(&mut r)?;
    let count = read_u32(&mut r)?;
    let mut raw: HashMap<String, Tensor> = HashMap::new();
    for _ in 0..count {
        let (name, tensor) = read_variable(&mut r)?;
        raw.insert(name, tensor);
    }
    apply_int8_scales(&mut raw)?;
    Ok(raw)
}

/// A format error with this message.
fn bad(m: &str) -> ImportError {
    ImportError::Format(m.to_string())
}

/// Exactly `n` bytes from `r`, or a "truncated file" error.
fn read_bytes(r: &mut dyn Read, n: usize) -> Result<Vec<u8>, ImportError> {
    // Grows as bytes arrive: a damaged length cannot make it allocate gigabytes up front.
    let mut b = Vec::new();
    r.take(n as u64)
        .read_to_end(&mut b)
        .map_err(|e| bad(&format!("cannot read ({e})")))?;
    if b.len() < n {
        return Err(bad("truncated file"));
    }
    Ok(b)
}

/// One little-endian u32.
fn read_u32(r: &mut dyn Read) -> Result<u32, ImportError> {
    Ok(u32::from_le_bytes(read_bytes(r, 4)?.try_into().unwrap()))
}

/// One string: a u16 length, then that many bytes ending in a NUL.
fn read_string(r: &mut dyn Read) -> Result<String, ImportError> {
    let n = u16::from_le_bytes(read_bytes(r, 2)?.try_into().unwrap()) as usize;
    let mut b = read_bytes(r, n)?;
    b.pop(); // trailing NUL
    String::from_utf8(b).map_err(|_| bad("variable name is not UTF-8"))
}

/// One variable: its name, shape, dtype and values (as f32), its size checked against its shape.
fn read_variable(r: &mut dyn Read) -> Result<(String, Tensor), ImportError> {
    let name = read_string(r)?;
    let rank = read_bytes(r, 1)?[0] as usize;
    let shape = (0..rank)
        .map(|_| read_u32(r).map(|d| d as usize))
        .collect::<Result<Vec<_>, _>>()?;
    let dtype = read_bytes(r, 1)?[0];
    let nbytes = read_u32(r)? as usize;
    let elems = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= 1 << 31)
        .ok_or_else(|| bad(&format!("{name}: implausible shape {shape:?}")))?;
    let width = match dtype {
        0 | 3 => 4,
        2 | 4 | 5 => 2,
        1 => 1,
        _ => return Err(bad(&format!("{name}: unsupported dtype {dtype}"))),
    };
    if nbytes != elems * width {
        return Err(bad(&format!(
            "{name}: {nbytes} bytes for shape {shape:?} of {width}-byte values"
        )));
    }
    let bytes = read_bytes(r, nbytes)?;
    let data = decode_values(&bytes, dtype, width).ok_or_else(|| {
        bad(&format!(
            "{name}: unsupported dtype {dtype} ({nbytes} bytes for {elems} values)"
        ))
    })?;
    Ok((name, Tensor { shape, data }))
}

/// The values of `bytes` as f32, by dtype and width; `None` for a combination not read.
fn decode_values(bytes: &[u8], dtype: u8, width: usize) -> Option<Vec<f32>> {
    let two = |f: fn([u8; 2]) -> f32| -> Vec<f32> {
        bytes.chunks_exact(2).map(|c| f([c[0], c[1]])).collect()
    };
    let four = |f: fn([u8; 4]) -> f32| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    };
    Some(match (dtype, width) {
        (0, 4) => four(f32::from_le_bytes),
        (4, 2) => two(|b| f16::from_le_bytes(b).to_f32()),
        (5, 2) => two(|b| bf16::from_le_bytes(b).to_f32()),
        (1, 1) => bytes.iter().map(|&b| b as i8 as f32).collect(),
        (2, 2) => two(|b| i16::from_le_bytes(b) as f32),
        (3, 4) => four(|b| i32::from_le_bytes(b) as f32),
        _ => return None,
    })
}

/// int8 weights carry a per-row scale: w = q / scale. Divides them out, removing the scales.
fn apply_int8_scales(raw: &mut HashMap<String, Tensor>) -> Result<(), ImportError> {
    let scaled: Vec<String> = raw
        .keys()
        .filter(|k| k.ends_with("/weight_scale"))
        .cloned()
        .collect();
    for scale_name in scaled {
        let scale = raw.remove(&scale_name).unwrap();
        let wname = scale_name.trim_end_matches("_scale").to_string();
        let w = raw
            .get_mut(&wname)
            .ok_or_else(|| bad(&format!("{scale_name} without {wname}")))?;
        if scale.data.is_empty()
            || w.data.len() % scale.data.len() != 0
            || (scale.data.len() != 1 && w.shape.first() != Some(&scale.data.len()))
        {
            return Err(bad(&format!(
                "{scale_name} has {} values for {wname} of shape {:?} (one per row expected)",
                scale.data.len(),
                w.shape
            )));
        }
        let cols = w.data.len() / scale.data.len();
        for (row, s) in w.data.chunks_mut(cols).zip(&scale.data) {
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    Ok(())
}

fn get<'a>(t: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor, ImportError> {
    t.get(name)
        .ok_or_else(|| ImportError::Format(format!("tensor {name} is missing")))
}

fn count_layers(t: &HashMap<String, Tensor>, side: &str) -> usize {
    (0..)
        .take_while(|i| t.contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight")))
        .count()
}

pub fn hparams(t: &HashMap<String, Tensor>) -> Result<Hparams, ImportError> {
    let emb = get(t, "decoder/embeddings/weight")?;
    let enc_pos = get(t, "encoder/position_encodings/encodings")?;
    let dec_pos = get(t, "decoder/position_encodings/encodings")?;
    let conv1 = get(t, "encoder/conv1/weight")?;
    let heads = |side: &str| -> Result<usize, ImportError> {
        Ok(get(t, &format!("{side}/num_heads"))?.data[0] as usize)
    };
    let h = Hparams {
        n_vocab: emb.shape[0],
        n_audio_ctx: enc_pos.shape[0],
        n_audio_state: enc_pos.shape[1],
        n_audio_head: heads("encoder")?,
        n_audio_layer: count_layers(t, "encoder"),
        n_text_ctx: dec_pos.shape[0],
        n_text_state: emb.shape[1],
        n_text_head: heads("decoder")?,
        n_text_layer: count_layers(t, "decoder"),
        n_mels: conv1.shape[1],
    };
    if h.n_audio_layer == 0 || h.n_text_layer == 0 {
        return Err(ImportError::Format("no encoder or decoder layers".into()));
    }
    Ok(h)
}

/// The tensors in whisper.cpp's names and shapes (row-major, outermost dimension first).
pub fn rename(
    t: &HashMap<String, Tensor>,
    h: &Hparams,
) -> Result<Vec<(String, Tensor)>, ImportError> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    for side in ["encoder", "decoder"] {
        let (layers, pos) = if side == "encoder" {
            (h.n_audio_layer, "encoder.positional_embedding")
        } else {
            (h.n_text_layer, "decoder.positional_embedding")
        };
        let src = get(t, &format!("{side}/position_encodings/encodings"))?;
        out.push((pos.into(), src.clone()));
        for i in 0..layers {
            let mut layer = LayerRenamer {
                t,
                out: &mut out,
                side,
                i,
            };
            layer.self_attention()?;
            if side == "decoder" {
                layer.cross_attention()?;
            }
            layer.mlp()?;
        }
    }
    rename_outer(t, &mut out)?;
    Ok(out)
}

/// Splits a fused [k*d, d] matrix (or [k*d] bias) into k parts.
fn split(src: &Tensor, k: usize) -> Vec<Tensor> {
    let n = src.data.len() / k;
    let mut shape = src.shape.clone();
    shape[0] /= k;
    src.data
        .chunks(n)
        .map(|c| Tensor {
            shape: shape.clone(),
            data: c.to_vec(),
        })
        .collect()
}

/// Appends one encoder or decoder layer's tensors to `out` in whisper.cpp's names.
struct LayerRenamer<'a> {
    t: &'a HashMap<String, Tensor>,
    out: &'a mut Vec<(String, Tensor)>,
    side: &'a str,
    i: usize,
}

impl<'a> LayerRenamer<'a> {
    /// This layer's tensor `ct` (its CTranslate2 name).
    fn get(&self, ct: &str) -> Result<&'a Tensor, ImportError> {
        get(self.t, &format!("{}/layer_{}/{ct}", self.side, self.i))
    }

    /// Appends a copy of `src` as this layer's tensor `gg` (its whisper.cpp name).
    fn put(&mut self, gg: &str, src: &Tensor) {
        let name = format!("{}.blocks.{}.{gg}", self.side, self.i);
        self.out.push((name, src.clone()));
    }

    /// Copies this layer's tensor `ct` as `gg`.
    fn copy(&mut self, gg: &str, ct: &str) -> Result<(), ImportError> {
        self.put(gg, self.get(ct)?);
        Ok(())
    }

    /// Self-attention: its norm, the fused QKV split in three (the key has no bias), its output.
    fn self_attention(&mut self) -> Result<(), ImportError> {
        self.copy("attn_ln.weight", "self_attention/layer_norm/gamma")?;
        self.copy("attn_ln.bias", "self_attention/layer_norm/beta")?;
        let w = split(self.get("self_attention/linear_0/weight")?, 3);
        let b = split(self.get("self_attention/linear_0/bias")?, 3);
        self.put("attn.query.weight", &w[0]);
        self.put("attn.query.bias", &b[0]);
        self.put("attn.key.weight", &w[1]);
        self.put("attn.value.weight", &w[2]);
        self.put("attn.value.bias", &b[2]);
        self.copy("attn.out.weight", "self_attention/linear_1/weight")?;
        self.copy("attn.out.bias", "self_attention/linear_1/bias")
    }

    /// A decoder layer's cross-attention: its norm, query, the fused KV split in two, output.
    fn cross_attention(&mut self) -> Result<(), ImportError> {
        self.copy("cross_attn_ln.weight", "attention/layer_norm/gamma")?;
        self.copy("cross_attn_ln.bias", "attention/layer_norm/beta")?;
        self.copy("cross_attn.query.weight", "attention/linear_0/weight")?;
        self.copy("cross_attn.query.bias", "attention/linear_0/bias")?;
        let w = split(self.get("attention/linear_1/weight")?, 2);
        let b = split(self.get("attention/linear_1/bias")?, 2);
        self.put("cross_attn.key.weight", &w[0]);
        self.put("cross_attn.value.weight", &w[1]);
        self.put("cross_attn.value.bias", &b[1]);
        self.copy("cross_attn.out.weight", "attention/linear_2/weight")?;
        self.copy("cross_attn.out.bias", "attention/linear_2/bias")
    }

    /// The feed-forward block: its norm and two linear layers.
    fn mlp(&mut self) -> Result<(), ImportError> {
        self.copy("mlp_ln.weight", "ffn/layer_norm/gamma")?;
        self.copy("mlp_ln.bias", "ffn/layer_norm/beta")?;
        self.copy("mlp.0.weight", "ffn/linear_0/weight")?;
        self.copy("mlp.0.bias", "ffn/linear_0/bias")?;
        self.copy("mlp.2.weight", "ffn/linear_1/weight")?;
        self.copy("mlp.2.bias", "ffn/linear_1/bias")
    }
}

/// The tensors outside the layers: convolutions, final norms and the token embedding.
fn rename_outer(
    t: &HashMap<String, Tensor>,
    out: &mut Vec<(String, Tensor)>,
) -> Result<(), ImportError> {
    for i in 1..=2 {
        let weight = get(t, &format!("encoder/conv{i}/weight"))?;
        out.push((format!("encoder.conv{i}.weight"), weight.clone()));
        let mut bias = get(t, &format!("encoder/conv{i}/bias"))?.clone();
        bias.shape = vec![bias.shape[0], 1];
        out.push((format!("encoder.conv{i}.bias"), bias));
    }
    for (gg, ct) in [
        ("encoder.ln_post.weight", "encoder/layer_norm/gamma"),
        ("encoder.ln_post.bias", "encoder/layer_norm/beta"),
        (
            "decoder.token_embedding.weight",
            "decoder/embeddings/weight",
        ),
        ("decoder.ln.weight", "decoder/layer_norm/gamma"),
        ("decoder.ln.bias", "decoder/layer_norm/beta"),
    ] {
        out.push((gg.into(), get(t, ct)?.clone()));
    }
    Ok(())
}

/// GPT-2's byte-level alphabet: the printable character each byte is written as, inverted.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (char::from_u32(c).unwrap(), b as u8))
        .collect()
}

/// The ordinary (non-special) tokens as raw bytes, in id order, from vocabulary.txt or .json.
pub fn read_vocab(dir: &Path) -> Result<Vec<Vec<u8>>, ImportError> {
    let txt = dir.join("vocabulary.txt");
    let json = dir.join("vocabulary.json");
    let tokens: Vec<String> = if txt.is_file() {
        std::fs::read_to_string(&txt)
            .map_err(io(&txt))?
            .lines()
            .map(str::to_string)
            .collect()
    } else if json.is_file() {
        let text = std::fs::read_to_string(&json).map_err(io(&json))?;
        serde_json::from_str(&text)
            .map_err(|e| ImportError::Format(format!("{}: {e}", json.display())))?
    } else {
        return Err(ImportError::NoVocab(dir.to_path_buf()));
    };
    let dec = byte_decoder();
    let mut out = Vec::new();
    for tok in tokens.iter().take_while(|t| t.as_str() != "<|endoftext|>") {
        let bytes = tok
            .chars()
            .map(|c| dec.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| ImportError::Format(format!("token {tok:?} is not byte-level BPE")))?;
        out.push(bytes);
    }
    if out.len() == tokens.len() {
        return Err(ImportError::Format(
            "vocabulary has no <|endoftext|> token".into(),
        ));
    }
    Ok(out)
}

/// Reads `mel_{n_mels}` from Whisper's `mel_filters.npz`: (rows, cols, values).
pub fn read_mel_filters(
    npz: &Path,
    n_mels: usize,
) -> Result<(usize, usize, Vec<f32>), ImportError> {
    let file = File::open(npz).map_err(io(npz))?;
    let bad = |m: String| ImportError::Format(format!("{}: {m}", npz.display()));
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut member = zip
        .by_name(&format!("mel_{n_mels}.npy"))
        .map_err(|_| bad(format!("no mel_{n_mels} filter bank")))?;
    let mut bytes = Vec::new();
    member.read_to_end(&mut bytes).map_err(io(npz))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy array".into()));
    }
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + hlen]).to_string();
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad(format!("unsupported array layout {header}")));
    }
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_default();
    if shape.len() != 2 {
        return Err(bad(format!("unexpected shape in {header}")));
    }
    let data: Vec<f32> = bytes[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if data.len() != shape[0] * shape[1] {
        return Err(bad("array data is truncated".into()));
    }
    Ok((shape[0], shape[1], data))
}

/// The model.bin stream of a CTranslate2 folder: `model.bin`, or its parts joined in order.
fn open_model_bin(dir: &Path) -> Result<Box<dyn Read>, ImportError> {
    let whole = dir.join("model.bin");
    if whole.is_file() {
        return Ok(Box::new(BufReader::new(
            File::open(&whole).map_err(io(&whole))?,
        )));
    }
    let parts: Vec<PathBuf> = (1..)
        .map(|i| dir.join(format!("model.bin.part{i}")))
        .take_while(|p| p.is_file())
        .collect();
    if parts.is_empty() {
        return Err(ImportError::NoModel(dir.to_path_buf()));
    }
    let mut reader: Box<dyn Read> = Box::new(std::io::empty());
    for p in parts {
        let f = BufReader::new(File::open(&p).map_err(io(&p))?);
        reader = Box::new(reader.chain(f));
    }
    Ok(reader)
}

/// Converts a CTranslate2 Whisper folder into a whisper.cpp file at `dst` (written atomically).
pub fn convert_ct2_dir(
    dir: &Path,
    mel_npz: &Path,
    quantize: Quantize,
    dst: &Path,
) -> Result<Hparams, ImportError> {
    let tensors = read_ct2(open_model_bin(dir)?)?;
    let h = hparams(&tensors)?;
    let renamed = rename(&tensors, &h)?;
    drop(tensors);
    let vocab = read_vocab(dir)?;
    let (rows, cols, mel) = read_mel_filters(mel_npz, h.n_mels)?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(renamed.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("  writing {bar:30} {pos}/{len} tensors")
            .expect("valid template"),
    );
    let tick = || bar.inc(1);
    write_atomically(dst, |out| {
        write_ggml(
            out,
            &h,
            (rows, cols, &mel),
            &vocab,
            &renamed,
            quantize,
            &tick,
        )
        .map_err(io(dst))
    })?;
    bar.finish_and_clear();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::super::ggml::quantize_q8_0;
    use super::*;

    #[test]
    fn byte_decoder_covers_every_byte_once() {
        let dec = byte_decoder();
        assert_eq!(dec.len(), 256);
        assert_eq!(dec[&'Ġ'], b' ');
        assert_eq!(dec[&'Ċ'], b'\n');
        assert_eq!(dec[&'a'], b'a');
    }

    #[test]
    fn q8_0_round_trips_within_one_step() {
        let vals: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let mut out = Vec::new();
        quantize_q8_0(&vals, &mut out);
        assert_eq!(out.len(), 2 * 34);
        for (b, block) in vals.chunks(32).enumerate() {
            let d = f16::from_le_bytes([out[b * 34], out[b * 34 + 1]]).to_f32();
            for (j, v) in block.iter().enumerate() {
                let q = out[b * 34 + 2 + j] as i8 as f32;
                // Half a step of rounding, plus the f16 rounding of the scale itself.
                assert!((q * d - v).abs() <= d * 0.6, "{v} vs {}", q * d);
            }
        }
    }

    /// A variable: name, shape, dtype, data bytes, and the size it states.
    type Var<'a> = (&'a str, &'a [u32], u8, Vec<u8>, u32);

    /// A CTranslate2 file of these variables.
    fn ct2_file(vars: &[Var]) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend((t.len() as u16 + 1).to_le_bytes());
            b.extend(t.as_bytes());
            b.push(0);
        };
        b.extend(6u32.to_le_bytes());
        s(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend((vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data, stated) in vars {
            s(&mut b, name);
            b.push(shape.len() as u8);
            shape.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.push(*dtype);
            b.extend(stated.to_le_bytes());
            b.extend(data);
        }
        b
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A tiny CTranslate2 file written here: the reader gets names, shapes, dtypes and int8 scales right.
    #[test]
    fn reads_a_handmade_ct2_file() {
        let b = ct2_file(&[
            ("a/weight", &[2, 2], 1, vec![2, 4, 6, 8], 4),
            ("a/weight_scale", &[2], 0, f32s(&[2.0, 4.0]), 8),
        ]);
        let t = read_ct2(&b[..]).unwrap();
        assert_eq!(t["a/weight"].shape, vec![2, 2]);
        assert_eq!(t["a/weight"].data, vec![1.0, 2.0, 1.5, 2.0]);
        assert!(!t.contains_key("a/weight_scale"));
        assert!(matches!(read_ct2(&b[..20]), Err(ImportError::Format(_))));
    }

    /// Damaged files give an error, never a panic or a huge allocation.
    #[test]
    fn damaged_ct2_files_are_errors() {
        let err = |b: Vec<u8>| match read_ct2(&b[..]) {
            Err(ImportError::Format(m)) => m,
            other => panic!("{:?}", other.map(|t| t.len())),
        };
        // A scale longer than its weight (it used to panic).
        let m = err(ct2_file(&[
            ("a/weight", &[2, 2], 1, vec![2, 4, 6, 8], 4),
            ("a/weight_scale", &[8], 0, f32s(&[2.0; 8]), 32),
        ]));
        assert!(m.contains("one per row"), "{m}");
        // A stated size that does not match the shape.
        let m = err(ct2_file(&[("a/bias", &[2], 0, f32s(&[1.0, 2.0]), 9)]));
        assert!(m.contains("9 bytes"), "{m}");
        // A shape too large to be real, and a size the file does not hold.
        let m = err(ct2_file(&[("a", &[u32::MAX, u32::MAX, 4], 0, vec![], 0)]));
        assert!(m.contains("implausible"), "{m}");
        let m = err(ct2_file(&[("a", &[1 << 28], 0, vec![], 1 << 30)]));
        assert!(m.contains("truncated"), "{m}");
    }
}
