//! Reads a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format and writes its tensors as
//! safetensors. Used at fetch time for the EfficientNet-Lite0 weights, which only ship that way.
//!
//! The legacy format is five things in a row: a pickled magic number, a pickled protocol version,
//! pickled system info, the pickled state dict (tensors refer to storages by key through
//! persistent ids), a pickled list of storage keys, and then each storage's raw bytes in that order,
//! each preceded by its element count as a little-endian u64.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use super::ggml::ImportError;

/// The magic number torch writes first: protocol 2, LONG1 of 10 bytes, 0x1950a86a20f9469cfc6c, STOP.
const MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Where one tensor lives: which storage, at what element offset, with what shape.
struct TensorRef {
    storage: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> ImportError {
    ImportError::Checkpoint(format!("{}: {detail}", path.display()))
}

fn read_pickle<R: BufRead>(r: &mut R, path: &Path) -> Result<Object, ImportError> {
    // candle's pickle reader can panic on damaged input (an over-long integer overflows a shift,
    // found by fuzzing): that is a damaged file, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        // One opcode at a time, watching what it built: candle copies a memoized object each
        // time it is referenced, so a few hundred bytes of nested references could ask for
        // gigabytes (found by fuzzing).
        while !stack.read(r).map_err(|e| bad(path, e))? {
            let built = stack
                .stack()
                .last()
                .map_or(0, |o| objects(o, MAX_OBJECTS + 1));
            if built > MAX_OBJECTS {
                return Err(bad(
                    path,
                    "the pickle data expands beyond any real checkpoint",
                ));
            }
        }
        stack.finalize().map_err(|e| bad(path, e))
    }))
    .unwrap_or_else(|_| Err(bad(path, "the pickle data is damaged")))
}

/// The most objects one pickled value may hold (a state dict of 100 000 tensors holds ~1.5 M).
const MAX_OBJECTS: usize = 4_000_000;

/// How many objects `o` is made of, counting up to `cap` at most.
fn objects(o: &Object, cap: usize) -> usize {
    let mut n = 1;
    let add = |child: &Object, n: &mut usize| {
        if *n <= cap {
            *n += objects(child, cap - *n);
        }
    };
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().for_each(|c| add(c, &mut n)),
        Object::Dict(kv) => kv.iter().for_each(|(k, v)| {
            add(k, &mut n);
            add(v, &mut n);
        }),
        Object::Reduce { callable, args } => {
            add(callable, &mut n);
            add(args, &mut n);
        }
        Object::Build { callable, args } => {
            add(callable, &mut n);
            add(args, &mut n);
        }
        Object::PersistentLoad(p) => add(p, &mut n),
        _ => {}
    }
    n
}

fn usizes(obj: Object) -> Option<Vec<usize>> {
    obj.tuple()
        .ok()?
        .into_iter()
        .map(|o| o.int_or_long().ok().and_then(|v| usize::try_from(v).ok()))
        .collect()
}

fn storage_dtype(class_name: &str) -> Option<DType> {
    Some(match class_name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        _ => return None,
    })
}

/// `_rebuild_tensor_v2(persistent_id, offset, size, stride, ...)` → where the tensor lives.
fn tensor_ref(value: Object) -> Option<TensorRef> {
    let (callable, args) = value.reduce().ok()?;
    let (module, class) = callable.class().ok()?;
    if module != "torch._utils" || class != "_rebuild_tensor_v2" {
        return None;
    }
    let mut args = args.tuple().ok()?.into_iter();
    let pid = args.next()?.persistent_load().ok()?.tuple().ok()?;
    let offset = usize::try_from(args.next()?.int_or_long().ok()?).ok()?;
    let shape = usizes(args.next()?)?;
    let stride = usizes(args.next()?)?;
    let mut pid = pid.into_iter();
    if pid.next()?.unicode().ok()? != "storage" {
        return None;
    }
    let (_, storage_class) = pid.next()?.class().ok()?;
    let dtype = storage_dtype(&storage_class)?;
    let storage = pid.next()?.unicode().ok()?;
    Some(TensorRef {
        storage,
        dtype,
        offset,
        shape,
        stride,
    })
}

/// Reads every tensor of a legacy `.pth` state dict, skipping non-float bookkeeping tensors
/// (`num_batches_tracked`).
pub fn read_legacy_pth(path: &Path) -> Result<Vec<(String, Tensor)>, ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_legacy_pth_from(BufReader::new(file), path)
}

/// `read_legacy_pth` from any reader (`path` names it in errors).
pub fn read_legacy_pth_from(
    mut r: impl BufRead,
    path: &Path,
) -> Result<Vec<(String, Tensor)>, ImportError> {
    check_magic(&mut r, path)?;
    let _protocol = read_pickle(&mut r, path)?;
    let _sys_info = read_pickle(&mut r, path)?;
    let state = read_pickle(&mut r, path)?;
    let keys = read_pickle(&mut r, path)?;
    let refs = tensor_refs(state, path)?;
    let keys: Vec<String> = match keys {
        Object::List(k) => k.into_iter().filter_map(|o| o.unicode().ok()).collect(),
        _ => return Err(bad(path, "no storage key list after the state dict")),
    };
    let storages = read_storages(&mut r, path, &keys, &refs)?;
    let mut out = Vec::new();
    for (name, t) in refs {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let tensor = build_tensor(&name, &t, &storages, path)?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Reads the magic number torch writes first; an error if it is not there.
fn check_magic(r: &mut impl BufRead, path: &Path) -> Result<(), ImportError> {
    let mut magic = [0u8; 15];
    r.read_exact(&mut magic)
        .map_err(|_| bad(path, "too short to be a PyTorch checkpoint"))?;
    if magic != MAGIC {
        return Err(bad(
            path,
            "not a legacy PyTorch checkpoint (no magic number; zip checkpoints are read by candle directly)",
        ));
    }
    Ok(())
}

/// The state dict's tensors, by name, in order: where each lives.
fn tensor_refs(state: Object, path: &Path) -> Result<Vec<(String, TensorRef)>, ImportError> {
    // The state dict is an OrderedDict (candle's reader makes it a Dict); torch may BUILD it with
    // a `_metadata` attribute afterwards.
    let items = match state {
        Object::Dict(items) => items,
        Object::Build { callable, .. } => callable
            .dict()
            .map_err(|_| bad(path, "state dict is not a dict"))?,
        _ => return Err(bad(path, "the checkpoint holds no state dict")),
    };
    let mut refs = Vec::new();
    for (name, value) in items {
        let Ok(name) = name.unicode() else { continue };
        if name == "_metadata" {
            continue; // module versions torch keeps beside the tensors
        }
        match tensor_ref(value) {
            Some(t) => refs.push((name, t)),
            None => return Err(bad(path, format!("entry {name} is not a plain tensor"))),
        }
    }
    Ok(refs)
}

/// Each storage's raw bytes, in the order of `keys`, each after its element count.
fn read_storages(
    r: &mut impl BufRead,
    path: &Path,
    keys: &[String],
    refs: &[(String, TensorRef)],
) -> Result<HashMap<String, Vec<u8>>, ImportError> {
    let dtype_of: HashMap<&str, DType> = refs
        .iter()
        .map(|(_, t)| (t.storage.as_str(), t.dtype))
        .collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        r.read_exact(&mut n)
            .map_err(|_| bad(path, format!("truncated before storage {key}")))?;
        let count = u64::from_le_bytes(n) as usize;
        let dtype = dtype_of.get(key.as_str()).copied().unwrap_or(DType::F32);
        let len = count
            .checked_mul(dtype.size_in_bytes())
            .filter(|&l| l <= 1 << 31)
            .ok_or_else(|| bad(path, format!("storage {key} claims {count} elements")))?;
        // Grows as bytes arrive: a damaged count cannot allocate gigabytes up front.
        let mut bytes = Vec::new();
        (&mut *r)
            .take(len as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(path, format!("storage {key}: {e}")))?;
        if bytes.len() < len {
            return Err(bad(path, format!("truncated inside storage {key}")));
        }
        storages.insert(key.clone(), bytes);
    }
    Ok(storages)
}

/// The tensor `t` describes, taken out of its storage (its extent checked first).
fn build_tensor(
    name: &str,
    t: &TensorRef,
    storages: &HashMap<String, Vec<u8>>,
    path: &Path,
) -> Result<Tensor, ImportError> {
    let bytes = storages
        .get(&t.storage)
        .ok_or_else(|| bad(path, format!("{name}: storage {} is missing", t.storage)))?;
    let esize = t.dtype.size_in_bytes();
    let all = Tensor::from_raw_buffer(bytes, t.dtype, &[bytes.len() / esize], &Device::Cpu)
        .map_err(|e| bad(path, e))?;
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| bad(path, format!("{name}: implausible shape {:?}", t.shape)))?;
    check_extent(name, t, numel, bytes.len() / esize, path)?;
    // Gather through the strides (all contiguous in practice, but do not assume it).
    if is_contiguous(&t.shape, &t.stride) {
        all.narrow(0, t.offset, numel)
            .and_then(|x| x.reshape(t.shape.as_slice()))
    } else {
        let idx: Vec<u32> = strided_indices(&t.shape, &t.stride, t.offset);
        Tensor::new(idx.as_slice(), &Device::Cpu)
            .and_then(|i| all.index_select(&i, 0))
            .and_then(|x| x.reshape(t.shape.as_slice()))
    }
    .map_err(|e| bad(path, format!("{name}: {e}")))
}

/// Every element `t` reads (`numel` of them) must lie inside its storage of `elements`.
fn check_extent(
    name: &str,
    t: &TensorRef,
    numel: usize,
    elements: usize,
    path: &Path,
) -> Result<(), ImportError> {
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |at, (&d, &s)| {
            at.checked_add(d.saturating_sub(1).checked_mul(s)?)
        });
    if t.shape.len() != t.stride.len() || (numel > 0 && last.is_none_or(|l| l >= elements)) {
        return Err(bad(
            path,
            format!(
                "{name}: shape {:?}, strides {:?} and offset {} reach outside its storage",
                t.shape, t.stride, t.offset
            ),
        ));
    }
    Ok(())
}

/// The most elements one tensor may have (a billion f32s: 4 GB).
const MAX_ELEMENTS: usize = 1 << 30;

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

fn strided_indices(shape: &[usize], stride: &[usize], offset: usize) -> Vec<u32> {
    let mut idx = vec![offset as u32];
    for (&d, &s) in shape.iter().zip(stride) {
        idx = idx
            .iter()
            .flat_map(|&base| (0..d).map(move |i| base + (i * s) as u32))
            .collect();
    }
    idx
}

/// Converts a legacy `.pth` checkpoint into a safetensors file (float32 weights).
pub fn convert_pth_to_safetensors(src: &Path, dst: &Path) -> Result<(), ImportError> {
    let tensors: HashMap<String, Tensor> = read_legacy_pth(src)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| bad(src, e))?;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ImportError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let tmp = dst.with_extension("part");
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| bad(dst, e))?;
    std::fs::rename(&tmp, dst).map_err(|source| ImportError::Io {
        path: dst.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_walk_like_torch() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        // A transposed 3x2 view of a 2x3 storage [0..6]: rows are columns of the original.
        assert_eq!(strided_indices(&[3, 2], &[1, 3], 0), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn rejects_files_that_are_not_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pth");
        std::fs::write(&p, b"PK\x03\x04 not a legacy checkpoint at all").unwrap();
        let err = read_legacy_pth(&p).unwrap_err().to_string();
        assert!(err.contains("not a legacy PyTorch checkpoint"), "{err}");
        std::fs::write(&p, &MAGIC[..]).unwrap();
        let err = read_legacy_pth(&p).unwrap_err().to_string();
        assert!(err.contains("x.pth"), "{err}");
    }
}
