//! The models a pipeline runs on: loaded once from the config (or made by a test), behind the
//! stage traits, shared by every pipeline of a process.

use std::sync::{Arc, Mutex, MutexGuard};

use super::error::PipelineError;
use crate::config::Config;
use crate::stages::asr::{self, Transcriber};
use crate::stages::caption::{self, Captioner};
use crate::stages::llm::{self, ChatModel};
use crate::stages::tts::{self, Voice};
use crate::stages::vad::{SileroVad, SpeechDetector, VadError};
use crate::store::Store;

/// A model one step at a time: each stage locks it for one step (an utterance, an answer, a
/// sentence, a picture).
pub type Locked<T> = Arc<Mutex<T>>;

/// Makes a VAD for a new pipeline (each has its own: it keeps state, and is small).
pub type VadMaker = Arc<dyn Fn() -> Result<Box<dyn SpeechDetector>, VadError> + Send + Sync>;

/// The models a pipeline uses. Cloning shares them: `seesay serve` runs one pipeline per
/// conversation over the same models.
#[derive(Clone)]
pub struct Models {
    pub asr: Locked<Box<dyn Transcriber>>,
    pub voice: Locked<Box<dyn Voice>>,
    pub llm: Locked<Box<dyn ChatModel>>,
    pub captioner: Option<Locked<Box<dyn Captioner>>>,
    pub vad: VadMaker,
    pub voice_rate: u32,
}

impl Models {
    /// Loads every shared model (the captioner only if asked), so a missing one fails at once;
    /// the VAD is loaded once here to check it, and then once per pipeline.
    pub fn load(cfg: &Config, captioner: bool) -> Result<Models, PipelineError> {
        let store = Store::from_config(&cfg.models)?;
        let asr = asr::open(&cfg.asr, &store)?;
        let voice = tts::open(&cfg.tts, &store)?;
        let vad = SileroVad::open(&cfg.vad, &cfg.tts.onnxruntime, &store)?;
        let vad_path = store.resolve(&cfg.vad.model)?;
        let llm = llm::open(&cfg.llm, &store)?;
        let captioner = match captioner {
            true => Some(caption::open(&cfg.vision, &store)?),
            false => None,
        };
        // The checked VAD serves the first pipeline; later ones load their own.
        let spare = Mutex::new(Some(vad));
        let maker: VadMaker = Arc::new(move || match lock(&spare).take() {
            Some(v) => Ok(Box::new(v) as Box<dyn SpeechDetector>),
            None => Ok(Box::new(SileroVad::load(&vad_path)?)),
        });
        Ok(Models::new(
            Box::new(asr),
            Box::new(voice),
            llm,
            captioner,
            maker,
        ))
    }

    /// Models from parts (the real ones, or fakes in tests).
    pub fn new(
        asr: Box<dyn Transcriber>,
        voice: Box<dyn Voice>,
        llm: Box<dyn ChatModel>,
        captioner: Option<Box<dyn Captioner>>,
        vad: VadMaker,
    ) -> Models {
        Models {
            voice_rate: voice.sample_rate(),
            asr: Arc::new(Mutex::new(asr)),
            voice: Arc::new(Mutex::new(voice)),
            llm: Arc::new(Mutex::new(llm)),
            captioner: captioner.map(|c| Arc::new(Mutex::new(c))),
            vad,
        }
    }
}

/// Locks a model; a poisoned lock (a panic mid-step) still serves the next one.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
