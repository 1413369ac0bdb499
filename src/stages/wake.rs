//! Wake word: 16 kHz audio in, "the wake phrase was just said" out. openWakeWord's three TFLite
//! models, run by the TensorFlow Lite C library loaded at run time (as `ort` loads onnxruntime):
//! a melspectrogram model (1,760 samples in, 8 frames of 32 mels out, every 80 ms), a shared
//! speech embedding model (76 mel frames in, 96 features out, every 8 frames) and the wake
//! word's own classifier (its window of embeddings in, a probability out). The streaming
//! bookkeeping follows pyopen-wakeword 1.1.0's `openwakeword.py`.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::store::{ModelError, Store};

/// The manifest entry holding the library and the models.
pub const PACKAGE: &str = "openwakeword";
/// The wake words that come with it.
pub const BUILT_IN: [&str; 5] = [
    "alexa",
    "hey_jarvis",
    "hey_mycroft",
    "hey_rhasspy",
    "okay_nabu",
];

const CHUNK: usize = 1280; // 80 ms
const MEL_WINDOW: usize = 1760;
const MELS: usize = 32;
const EMB_WINDOW: usize = 76;
const EMB_STEP: usize = 8;
const FEATURES: usize = 96;
/// History kept: 10 s of audio, of mel frames (97 a second) and of embeddings (8 a second).
const MAX_AUDIO: usize = 160_000;
const MAX_MELS: usize = 970;
const MAX_EMB: usize = 80;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WakeError {
    #[error("cannot load the TensorFlow Lite C library {path}: {detail}")]
    Library { path: String, detail: String },
    #[error("cannot load wake-word model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("unknown wake word {0:?}: use one of {BUILT_IN:?} or a path to an openWakeWord .tflite model")]
    Unknown(String),
    #[error("wake-word inference failed: {0}")]
    Inference(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

type Ptr = *mut c_void;

/// The functions of the TensorFlow Lite C API seesay uses.
struct Api {
    _lib: libloading::Library,
    model_create: unsafe extern "C" fn(*const c_char) -> Ptr,
    model_delete: unsafe extern "C" fn(Ptr),
    interp_create: unsafe extern "C" fn(Ptr, Ptr) -> Ptr,
    interp_delete: unsafe extern "C" fn(Ptr),
    resize_input: unsafe extern "C" fn(Ptr, i32, *const c_int, i32) -> c_int,
    allocate: unsafe extern "C" fn(Ptr) -> c_int,
    invoke: unsafe extern "C" fn(Ptr) -> c_int,
    input: unsafe extern "C" fn(Ptr, i32) -> Ptr,
    output: unsafe extern "C" fn(Ptr, i32) -> Ptr,
    byte_size: unsafe extern "C" fn(Ptr) -> usize,
    num_dims: unsafe extern "C" fn(Ptr) -> i32,
    dim: unsafe extern "C" fn(Ptr, i32) -> i32,
    copy_from: unsafe extern "C" fn(Ptr, *const c_void, usize) -> c_int,
    copy_to: unsafe extern "C" fn(Ptr, *mut c_void, usize) -> c_int,
}

impl Api {
    /// Loads the library once per process.
    fn load(path: &Path) -> Result<Arc<Api>, WakeError> {
        static API: OnceLock<Result<Arc<Api>, String>> = OnceLock::new();
        API.get_or_init(|| Api::open(path).map(Arc::new))
            .clone()
            .map_err(|detail| WakeError::Library {
                path: path.display().to_string(),
                detail,
            })
    }

    fn open(path: &Path) -> Result<Api, String> {
        // SAFETY: loading the TensorFlow Lite C library runs its initialisers, which have no
        // preconditions; each symbol is looked up with the signature of the C API's header.
        unsafe {
            let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| e.to_string())?
                };
            }
            Ok(Api {
                model_create: sym!(b"TfLiteModelCreateFromFile"),
                model_delete: sym!(b"TfLiteModelDelete"),
                interp_create: sym!(b"TfLiteInterpreterCreate"),
                interp_delete: sym!(b"TfLiteInterpreterDelete"),
                resize_input: sym!(b"TfLiteInterpreterResizeInputTensor"),
                allocate: sym!(b"TfLiteInterpreterAllocateTensors"),
                invoke: sym!(b"TfLiteInterpreterInvoke"),
                input: sym!(b"TfLiteInterpreterGetInputTensor"),
                output: sym!(b"TfLiteInterpreterGetOutputTensor"),
                byte_size: sym!(b"TfLiteTensorByteSize"),
                num_dims: sym!(b"TfLiteTensorNumDims"),
                dim: sym!(b"TfLiteTensorDim"),
                copy_from: sym!(b"TfLiteTensorCopyFromBuffer"),
                copy_to: sym!(b"TfLiteTensorCopyToBuffer"),
                _lib: lib,
            })
        }
    }
}

/// One TFLite model with its interpreter, one float input and one float output.
struct Net {
    api: Arc<Api>,
    model: Ptr,
    interp: Ptr,
    input: Ptr,
    output: Ptr,
    out: Vec<f32>,
}

// SAFETY: a TFLite interpreter may be used from any thread, one at a time; `Net` is only ever
// used through `&mut`.
unsafe impl Send for Net {}

impl Net {
    /// Loads `path`, resizing its input to `shape` if given.
    fn load(api: &Arc<Api>, path: &Path, shape: Option<&[c_int]>) -> Result<Net, WakeError> {
        let fail = |detail: &str| WakeError::Load {
            path: path.display().to_string(),
            detail: detail.to_string(),
        };
        if !path.is_file() {
            return Err(fail("no such file"));
        }
        let c_path =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| fail("bad path"))?;
        // SAFETY: the C API's contract: a model from a NUL-terminated path; an interpreter from a
        // model and no options; both freed in `Drop`, interpreter first. Null results are errors.
        unsafe {
            let model = (api.model_create)(c_path.as_ptr());
            if model.is_null() {
                return Err(fail("not a TensorFlow Lite model"));
            }
            let interp = (api.interp_create)(model, std::ptr::null_mut());
            if interp.is_null() {
                (api.model_delete)(model);
                return Err(fail("cannot create an interpreter"));
            }
            let mut net = Net {
                api: api.clone(),
                model,
                interp,
                input: std::ptr::null_mut(),
                output: std::ptr::null_mut(),
                out: Vec::new(),
            };
            if let Some(dims) = shape {
                if (api.resize_input)(interp, 0, dims.as_ptr(), dims.len() as i32) != 0 {
                    return Err(fail("cannot resize its input"));
                }
            }
            if (api.allocate)(interp) != 0 {
                return Err(fail("cannot allocate its tensors"));
            }
            net.input = (api.input)(interp, 0);
            net.output = (api.output)(interp, 0);
            if net.input.is_null() || net.output.is_null() {
                return Err(fail("no input or output tensor"));
            }
            net.out = vec![0.0; (api.byte_size)(net.output) / 4];
            Ok(net)
        }
    }

    /// The size of input dimension `i`.
    fn input_dim(&self, i: i32) -> usize {
        // SAFETY: `input` is a live tensor of this interpreter; out-of-range dims are checked.
        unsafe {
            match i < (self.api.num_dims)(self.input) {
                true => (self.api.dim)(self.input, i).max(0) as usize,
                false => 0,
            }
        }
    }

    fn run(&mut self, x: &[f32]) -> Result<&[f32], WakeError> {
        // SAFETY: the input tensor holds exactly `byte_size` bytes, checked against `x`; the
        // output buffer was sized from the output tensor.
        unsafe {
            if (self.api.byte_size)(self.input) != std::mem::size_of_val(x) {
                return Err(WakeError::Inference(format!(
                    "input of {} bytes given {} floats",
                    (self.api.byte_size)(self.input),
                    x.len()
                )));
            }
            if (self.api.copy_from)(self.input, x.as_ptr().cast(), std::mem::size_of_val(x)) != 0
                || (self.api.invoke)(self.interp) != 0
                || (self.api.copy_to)(
                    self.output,
                    self.out.as_mut_ptr().cast(),
                    self.out.len() * 4,
                ) != 0
            {
                return Err(WakeError::Inference("the interpreter failed".into()));
            }
        }
        Ok(&self.out)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // SAFETY: both were created in `load` and are freed once, interpreter first.
        unsafe {
            (self.api.interp_delete)(self.interp);
            (self.api.model_delete)(self.model);
        }
    }
}

/// Listens for a wake word. The pipeline listens through this trait, so its plumbing can be
/// tested with a fake.
pub trait WakeDetector: Send {
    /// Feeds audio (16 kHz, any length); returns the highest wake-word probability computed.
    fn push(&mut self, audio: &[f32]) -> Result<f32, WakeError>;
    /// Forgets what it heard (after a detection).
    fn reset(&mut self);
}

/// openWakeWord, streaming.
pub struct OpenWakeWord {
    mel: Net,
    emb: Net,
    word: Net,
    /// The word model's window, in embeddings.
    windows: usize,
    audio: Vec<f32>,
    new_audio: usize,
    mels: Vec<[f32; MELS]>,
    new_mels: usize,
    embeddings: Vec<[f32; FEATURES]>,
    new_emb: usize,
    name: String,
}

/// Where a wake word's model is: a built-in name, or a path to a .tflite file.
pub fn model_path(dir: &Path, word: &str) -> Result<PathBuf, WakeError> {
    if BUILT_IN.contains(&word) {
        return Ok(dir.join(format!("{word}.tflite")));
    }
    let path = crate::host::expand_home(word);
    match path.extension().is_some_and(|e| e == "tflite") {
        true => Ok(path),
        false => Err(WakeError::Unknown(word.to_string())),
    }
}

impl OpenWakeWord {
    /// Loads wake word `word` (a built-in name or a .tflite path) with the fetched library and
    /// feature models.
    pub fn open(word: &str, store: &Store) -> Result<OpenWakeWord, WakeError> {
        let lib = store.resolve(PACKAGE)?;
        let dir = lib.parent().unwrap_or(Path::new("."));
        OpenWakeWord::load(&lib, dir, &model_path(dir, word)?)
    }

    /// `lib`: libtensorflowlite_c; `dir`: the folder with melspectrogram.tflite and
    /// embedding_model.tflite; `word`: the wake word's model.
    pub fn load(lib: &Path, dir: &Path, word: &Path) -> Result<OpenWakeWord, WakeError> {
        let api = Api::load(lib)?;
        let mel = Net::load(
            &api,
            &dir.join("melspectrogram.tflite"),
            Some(&[1, MEL_WINDOW as c_int]),
        )?;
        let emb = Net::load(
            &api,
            &dir.join("embedding_model.tflite"),
            Some(&[1, EMB_WINDOW as c_int, MELS as c_int, 1]),
        )?;
        let word_net = Net::load(&api, word, None)?;
        let windows = word_net.input_dim(1);
        if windows == 0 || windows > MAX_EMB {
            return Err(WakeError::Load {
                path: word.display().to_string(),
                detail: format!("unexpected input window of {windows} embeddings"),
            });
        }
        let mut w = OpenWakeWord {
            mel,
            emb,
            word: word_net,
            windows,
            audio: Vec::new(),
            new_audio: 0,
            mels: Vec::new(),
            new_mels: 0,
            embeddings: Vec::new(),
            new_emb: 0,
            name: word
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into(),
        };
        w.reset();
        Ok(w)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl WakeDetector for OpenWakeWord {
    fn push(&mut self, audio: &[f32]) -> Result<f32, WakeError> {
        // The models were trained on 16-bit sample values.
        self.audio.extend(audio.iter().map(|v| v * 32768.0));
        let extra = self.audio.len().saturating_sub(MAX_AUDIO);
        self.audio.drain(..extra);
        self.new_audio = (self.new_audio + audio.len()).min(self.audio.len());
        let mut best = 0f32;
        while self.new_audio >= MEL_WINDOW {
            let at = self.audio.len() - self.new_audio;
            self.new_audio = self.new_audio.saturating_sub(CHUNK);
            let frames = self.mel.run(&self.audio[at..at + MEL_WINDOW])?;
            for f in frames.chunks_exact(MELS) {
                let mut m = [0f32; MELS];
                for (d, v) in m.iter_mut().zip(f) {
                    *d = v / 10.0 + 2.0;
                }
                self.mels.push(m);
                self.new_mels += 1;
            }
            let extra = self.mels.len().saturating_sub(MAX_MELS);
            self.mels.drain(..extra);
            self.new_mels = self.new_mels.min(self.mels.len());
            while self.new_mels >= EMB_WINDOW {
                let at = self.mels.len() - self.new_mels;
                self.new_mels = self.new_mels.saturating_sub(EMB_STEP);
                let x: Vec<f32> = self.mels[at..at + EMB_WINDOW]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                let e = self.emb.run(&x)?;
                let mut f = [0f32; FEATURES];
                f.copy_from_slice(&e[..FEATURES.min(e.len())]);
                self.embeddings.push(f);
                let extra = self.embeddings.len().saturating_sub(MAX_EMB);
                self.embeddings.drain(..extra);
                self.new_emb = (self.new_emb + 1).min(self.embeddings.len());
                while self.new_emb >= self.windows {
                    let at = self.embeddings.len() - self.new_emb;
                    self.new_emb -= 1;
                    let x: Vec<f32> = self.embeddings[at..at + self.windows]
                        .iter()
                        .flatten()
                        .copied()
                        .collect();
                    let p = self.word.run(&x)?.first().copied().unwrap_or(0.0);
                    best = best.max(p);
                }
            }
        }
        Ok(best)
    }

    /// As pyopen-wakeword does: 8 s of silence to start from, no mels or embeddings.
    fn reset(&mut self) {
        self.audio = vec![0.0; MAX_AUDIO];
        self.new_audio = 8 * 16_000;
        self.mels = vec![[0.0; MELS]; MAX_MELS];
        self.new_mels = 0;
        self.embeddings = vec![[0.0; FEATURES]; MAX_EMB];
        self.new_emb = 0;
    }
}
