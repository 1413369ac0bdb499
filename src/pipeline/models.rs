//! The models a pipeline runs on: loaded once from the config (or made by a test), behind the
//! stage traits, shared by every pipeline of a process.

use std::sync::{Arc, Mutex};

use super::error::PipelineError;
use crate::config::Config;
use crate::stages::asr::{self, Transcriber};
use crate::stages::caption::{self, Captioner};
use crate::stages::llm::{self, ChatModel, LlmError};
pub use crate::stages::lock;
use crate::stages::tts::{self, Voice};
use crate::stages::turn::{SmartTurn, TurnDetector};
use crate::stages::vad::{SileroVad, SpeechDetector, VadError};
use crate::stages::wake::{OpenWakeWord, WakeDetector, WakeError};
use crate::store::Store;

/// A model one step at a time: each stage locks it for one step (an utterance, an answer, a
/// sentence, a picture).
pub type Locked<T> = Arc<Mutex<T>>;

/// Makes a VAD for a new pipeline (each has its own: it keeps state, and is small).
pub type VadMaker = Arc<dyn Fn() -> Result<Box<dyn SpeechDetector>, VadError> + Send + Sync>;

/// Makes a wake-word detector for a new pipeline (each has its own: it keeps state), by name.
pub type WakeMaker = Arc<dyn Fn(&str) -> Result<Box<dyn WakeDetector>, WakeError> + Send + Sync>;

/// Makes a chat model for a new conversation or request (see `llm::Engine::chat`): with
/// llama.cpp each has a server slot of its own and nobody waits for another's answer.
pub type ChatMaker = Arc<dyn Fn() -> Result<Box<dyn ChatModel>, LlmError> + Send + Sync>;

/// The models a pipeline uses. Cloning shares them: `seesay serve` runs one pipeline per
/// conversation over the same models.
#[derive(Clone)]
pub struct Models {
    pub asr: Locked<Box<dyn Transcriber>>,
    pub voice: Locked<Box<dyn Voice>>,
    pub llm: ChatMaker,
    pub captioner: Option<Locked<Box<dyn Captioner>>>,
    pub vad: VadMaker,
    /// Judges at pauses whether the turn is over (`turn.semantic`); shared, one call at a time.
    pub turn: Option<Locked<Box<dyn TurnDetector>>>,
    /// Wake-word detectors, for pipelines with `pipeline.wake_word`.
    pub wake: WakeMaker,
    pub voice_rate: u32,
    /// The language model takes images (`llm.mmproj`): the camera's frame itself comes with each
    /// question, besides its description.
    pub llm_sees: bool,
}

impl Models {
    /// Loads every shared model (the captioner only if asked), so a missing one fails at once;
    /// the VAD is loaded once here to check it, and then once per pipeline. `conversations` is
    /// how many may be answered at once.
    pub fn load(
        cfg: &Config,
        captioner: bool,
        conversations: usize,
    ) -> Result<Models, PipelineError> {
        let store = Store::from_config(&cfg.models)?;
        let asr = asr::open(&cfg.asr, &store)?;
        let voice = tts::open(&cfg.tts, &store)?;
        let vad = SileroVad::open(&cfg.vad, &cfg.tts.onnxruntime, &store)?;
        let vad_path = store.resolve(&cfg.vad.model)?;
        let engine = llm::Engine::load(&cfg.llm, &store, conversations)?;
        let captioner = match captioner {
            true => Some(caption::open_with_reading(
                &cfg.vision,
                &cfg.read,
                &cfg.tts.onnxruntime,
                &store,
                Some(&engine),
            )?),
            false => None,
        };
        let llm_sees = engine.takes_images();
        let llm_cfg = cfg.llm.clone();
        let chat: ChatMaker = Arc::new(move || engine.chat(&llm_cfg));
        let turn = match cfg.turn.semantic {
            true => Some(SmartTurn::open(&cfg.turn, &cfg.tts.onnxruntime, &store)?),
            false => None,
        };
        // The checked VAD serves the first pipeline; later ones load their own.
        let spare = Mutex::new(Some(vad));
        let maker: VadMaker = Arc::new(move || match lock(&spare).take() {
            Some(v) => Ok(Box::new(v) as Box<dyn SpeechDetector>),
            None => Ok(Box::new(SileroVad::load(&vad_path)?)),
        });
        // A configured wake word is loaded once here, so a bad one fails at once.
        if !cfg.pipeline.wake_word.is_empty() {
            OpenWakeWord::open(&cfg.pipeline.wake_word, &store)?;
        }
        let mut models = Models::new(asr, voice, chat, captioner, maker);
        models.llm_sees = llm_sees;
        models.wake = Arc::new(move |word: &str| {
            Ok(Box::new(OpenWakeWord::open(word, &store)?) as Box<dyn WakeDetector>)
        });
        Ok(match turn {
            Some(t) => models.with_turn(Box::new(t)),
            None => models,
        })
    }

    /// Adds the end-of-turn model.
    pub fn with_turn(mut self, turn: Box<dyn TurnDetector>) -> Models {
        self.turn = Some(Arc::new(Mutex::new(turn)));
        self
    }

    /// Models from parts (the real ones, or fakes in tests).
    pub fn new(
        asr: Box<dyn Transcriber>,
        voice: Box<dyn Voice>,
        llm: ChatMaker,
        captioner: Option<Box<dyn Captioner>>,
        vad: VadMaker,
    ) -> Models {
        Models {
            voice_rate: voice.sample_rate(),
            asr: Arc::new(Mutex::new(asr)),
            voice: Arc::new(Mutex::new(voice)),
            llm,
            captioner: captioner.map(|c| Arc::new(Mutex::new(c))),
            vad,
            turn: None,
            wake: Arc::new(|word: &str| Err(WakeError::Unknown(word.to_string()))),
            llm_sees: false,
        }
    }
}
