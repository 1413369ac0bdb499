//! Speech synthesis: text in, mono f32 PCM out, one sentence at a time (Piper VITS voices, or any
//! OpenAI-compatible speech server: `remote.rs`).
//!
//! Text is cut into sentences and clauses here; espeak-ng turns each clause into phonemes (its
//! bundled build drops punctuation, so the punctuation is put back between clauses), and the
//! Piper voice, run by onnxruntime, turns the phonemes into audio.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{self, HostError};
use crate::store::{ModelError, Store};
use crate::text::splitter::{split_clauses, split_sentences};

pub mod remote;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Runtime(#[from] super::RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("nothing to say: the text has no words")]
    NothingToSay,
    #[error("espeak-ng data not found (looked in {looked}): install Debian's espeak-ng-data (scripts/setup does) or set tts.espeak_data")]
    NoEspeakData { looked: String },
    #[error("cannot load Piper voice {path}: {detail}")]
    Voice { path: PathBuf, detail: String },
    #[error("rate {0} is out of range: use a value between 0.25 and 4")]
    Rate(f32),
    #[error("cannot turn {text:?} into phonemes: {detail}")]
    Phonemes { text: String, detail: String },
    #[error("synthesis failed: {0}")]
    Inference(String),
    #[error("speech server at {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error("unknown tts.backend '{0}': use piper or openai")]
    Backend(String),
}

/// Speech synthesis settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    /// `piper` (a Piper voice, here) or `openai` (any server with OpenAI's `/v1/audio/speech`:
    /// another `seesay serve`, speaches, LocalAI, OpenAI).
    pub backend: String,
    /// A voice name from `seesay models list`, or the path of any Piper `.onnx` voice (its
    /// `.onnx.json` must sit beside it).
    pub voice: String,
    /// Speaking rate: 1 is the voice's own pace, 2 twice as fast.
    pub rate: f32,
    /// Silence after each sentence, in milliseconds.
    pub sentence_silence_ms: u32,
    /// Folder that contains `espeak-ng-data`. Empty: `$PIPER_ESPEAKNG_DATA_DIRECTORY`, then the
    /// usual system folders (/usr/lib/x86_64-linux-gnu, /usr/share, ...).
    pub espeak_data: String,
    /// onnxruntime shared library (1.24 or newer). Empty: `$ORT_DYLIB_PATH`, else the fetched
    /// `onnxruntime` model.
    pub onnxruntime: String,
    /// CPU threads for onnxruntime; 0: its share of the machine (half the cores: it speaks while
    /// the language model writes).
    pub threads: usize,
    /// Speaker id for multi-speaker voices.
    pub speaker: i64,
    /// How much the voice varies from one reading to the next (Piper's noise scale; 0: the
    /// voice's own setting). Lower is steadier and flatter.
    pub noise_scale: f32,
    /// How much the length of each sound varies (Piper's noise width; 0: the voice's own).
    pub noise_w: f32,
    /// openai: base URL of the server, e.g. http://127.0.0.1:8000/v1 (`$SEESAY_TTS_BASE_URL`
    /// overrides).
    pub base_url: String,
    /// openai: model name sent to the server (`$SEESAY_TTS_MODEL` overrides).
    pub remote_model: String,
    /// openai: voice name sent to the server (`$SEESAY_TTS_VOICE` overrides).
    pub remote_voice: String,
    /// openai: API key; empty reads `$SEESAY_TTS_API_KEY`, then `$OPENAI_API_KEY`.
    pub api_key: String,
    /// openai: seconds to wait for the server to connect and for each piece of the audio.
    pub timeout_s: u64,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            backend: "piper".into(),
            voice: "piper-joe-medium".into(),
            rate: 1.0,
            sentence_silence_ms: 200,
            espeak_data: String::new(),
            onnxruntime: String::new(),
            threads: 0,
            speaker: 0,
            noise_scale: 0.0,
            noise_w: 0.0,
            base_url: "http://127.0.0.1:8000/v1".into(),
            remote_model: "tts-1".into(),
            remote_voice: "alloy".into(),
            api_key: String::new(),
            timeout_s: 30,
        }
    }
}

/// Finds the folder holding `espeak-ng-data` and tells espeak-rs about it.
pub fn locate_espeak_data(configured: &str) -> Result<PathBuf, TtsError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if !configured.is_empty() {
        candidates.push(host::expand_home(configured));
    } else {
        if let Some(d) = std::env::var_os(ESPEAK_VAR) {
            candidates.push(d.into());
        }
        for d in [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
            "/usr/share",
            "/usr/local/share",
            "/opt/homebrew/share",
        ] {
            candidates.push(d.into());
        }
    }
    let found = candidates
        .iter()
        .find(|d| d.join("espeak-ng-data").join("phontab").is_file())
        .cloned()
        .ok_or_else(|| TtsError::NoEspeakData {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    // espeak-rs reads this variable once, on its first call. The binary sets it at start, while
    // it has one thread (`export_espeak_data`); only a library caller that did not gets it set here.
    if std::env::var_os(ESPEAK_VAR).as_deref() != Some(found.as_os_str()) {
        std::env::set_var(ESPEAK_VAR, &found);
    }
    Ok(found)
}

const ESPEAK_VAR: &str = "PIPER_ESPEAKNG_DATA_DIRECTORY";

/// Tells espeak-rs where its data is. Setting a variable is only safe while no other thread may
/// read the environment: call this first thing in `main`, before any thread starts. Data not
/// found is not an error here; loading a voice says so.
pub fn export_espeak_data(configured: &str) {
    let _ = locate_espeak_data(configured);
}

/// The parts of a Piper `.onnx.json` that seesay needs besides what piper-rs reads.
#[derive(Deserialize)]
struct VoiceMeta {
    audio: AudioMeta,
    espeak: EspeakMeta,
}
#[derive(Deserialize)]
struct AudioMeta {
    sample_rate: u32,
}
#[derive(Deserialize)]
struct EspeakMeta {
    voice: String,
}

/// A voice: one sentence of text in, mono f32 audio at `sample_rate` out. The pipeline speaks
/// through this trait, so its plumbing can be tested with a fake voice.
pub trait Voice: Send {
    fn sample_rate(&self) -> u32;
    /// Audio for one sentence, without trailing silence; empty for text with nothing to say.
    fn synthesize(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError>;
    /// Changes the speaking rate (1 normal, 2 twice as fast); returns the previous one.
    fn set_rate(&mut self, rate: f32) -> f32;
}

/// A loaded Piper voice.
pub struct PiperVoice {
    piper: piper_rs::Piper,
    espeak_voice: String,
    length_scale: f32,
    rate: f32,
    speaker: i64,
    /// Piper's noise settings, when not the voice's own.
    noise: (Option<f32>, Option<f32>),
    sample_rate: u32,
}

impl PiperVoice {
    /// Loads `onnx` (with `onnx` + `.json` beside it). onnxruntime and espeak data must be set up
    /// first (`host::init_onnxruntime`, `locate_espeak_data`; `open` does both).
    pub fn load(onnx: &Path, cfg: &TtsConfig) -> Result<PiperVoice, TtsError> {
        host::onnxruntime_loaded()?;
        let voice_err = |detail: String| TtsError::Voice {
            path: onnx.into(),
            detail,
        };
        if !(0.25..=4.0).contains(&cfg.rate) {
            return Err(TtsError::Rate(cfg.rate));
        }
        let json_path = PathBuf::from(format!("{}.json", onnx.display()));
        let json = std::fs::read_to_string(&json_path)
            .map_err(|e| voice_err(format!("{}: {e}", json_path.display())))?;
        let meta: VoiceMeta = serde_json::from_str(&json).map_err(|e| voice_err(e.to_string()))?;
        let model_cfg: piper_rs::ModelConfig =
            serde_json::from_str(&json).map_err(|e| voice_err(e.to_string()))?;
        let threads = host::thread_count(cfg.threads, host::Budget::machine().tts);
        let length_scale = model_cfg.inference.length_scale / cfg.rate;
        let builder = super::varying_inputs(threads);
        // With the `cuda` feature the CUDA execution provider is asked for; onnxruntime falls back
        // to the CPU (with a warning) when the loaded library has no CUDA support.
        #[cfg(feature = "cuda")]
        let builder = builder.and_then(|b| {
            b.with_execution_providers([ort::ep::CUDA::default().build()])
                .map_err(Into::into)
        });
        let session = builder
            .and_then(|mut b| b.commit_from_file(onnx))
            .map_err(|e| voice_err(e.to_string()))?;
        Ok(PiperVoice {
            piper: piper_rs::Piper::from_session(session, model_cfg),
            espeak_voice: meta.espeak.voice,
            length_scale,
            rate: cfg.rate,
            speaker: cfg.speaker,
            noise: (
                (cfg.noise_scale > 0.0).then_some(cfg.noise_scale),
                (cfg.noise_w > 0.0).then_some(cfg.noise_w),
            ),
            sample_rate: meta.audio.sample_rate,
        })
    }

    /// Changes the speaking rate (1 normal, 2 twice as fast); returns the previous rate.
    fn change_rate(&mut self, rate: f32) -> f32 {
        let rate = rate.clamp(0.25, 4.0);
        self.length_scale *= self.rate / rate;
        std::mem::replace(&mut self.rate, rate)
    }

    /// IPA phonemes for one sentence, clause by clause, with the punctuation kept.
    pub fn phonemize(&self, sentence: &str) -> Result<String, TtsError> {
        let mut out = String::new();
        for (clause, punct) in split_clauses(sentence) {
            let ph =
                espeak_rs::text_to_phonemes(&clause, &self.espeak_voice, None).map_err(|e| {
                    TtsError::Phonemes {
                        text: clause.clone(),
                        detail: e.to_string(),
                    }
                })?;
            let ph = ph.join(" ");
            let ph = ph.trim();
            if ph.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(ph);
            if let Some(p) = punct {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Audio for one sentence (no trailing silence). Empty for text with nothing to say.
    fn synthesize_sentence(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
        let phonemes = self.phonemize(sentence)?;
        if phonemes.is_empty() {
            return Ok(Vec::new());
        }
        let (audio, _) = self
            .piper
            .create(
                &phonemes,
                true,
                Some(self.speaker),
                Some(self.length_scale),
                self.noise.0,
                self.noise.1,
            )
            .map_err(|e| TtsError::Inference(e.to_string()))?;
        Ok(normalize(audio))
    }
}

impl Voice for PiperVoice {
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
    fn synthesize(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
        self.synthesize_sentence(sentence)
    }
    fn set_rate(&mut self, rate: f32) -> f32 {
        self.change_rate(rate)
    }
}

/// Opens the configured voice: a Piper voice here, or a client of a remote server (which is not
/// contacted until the first sentence).
pub fn open(cfg: &TtsConfig, store: &Store) -> Result<Box<dyn Voice>, TtsError> {
    match cfg.backend.as_str() {
        "piper" => Ok(Box::new(open_piper(cfg, store)?)),
        "openai" => Ok(Box::new(remote::RemoteVoice::new(cfg)?)),
        other => Err(TtsError::Backend(other.to_string())),
    }
}

/// Sets up onnxruntime and espeak-ng, then loads the configured Piper voice (whatever `backend`
/// says).
pub fn open_piper(cfg: &TtsConfig, store: &Store) -> Result<PiperVoice, TtsError> {
    super::load_onnxruntime(&cfg.onnxruntime, store)?;
    locate_espeak_data(&cfg.espeak_data)?;
    let voice = store.resolve(&cfg.voice)?;
    PiperVoice::load(&voice, cfg)
}

/// Speaks `text`: sentence by sentence (each cut into clauses by the voice), each followed by
/// `gap_ms` of silence and handed to `out` as soon as it is synthesised; `out` returns false to
/// stop (nobody is listening any more). Text that ends in the middle of a sentence (no closing
/// punctuation: the first phrase of an answer, whose rest follows) gets no silence after it.
/// Returns how many sentences were spoken; text with no words is an error.
pub fn speak(
    voice: &mut dyn Voice,
    text: &str,
    gap_ms: u32,
    mut out: impl FnMut(Vec<f32>) -> bool,
) -> Result<usize, TtsError> {
    let sentences = split_sentences(text);
    if sentences.is_empty() {
        return Err(TtsError::NothingToSay);
    }
    let gap = (voice.sample_rate() as u64 * gap_ms as u64 / 1000) as usize;
    for (i, s) in sentences.iter().enumerate() {
        let t = std::time::Instant::now();
        let mut pcm = voice.synthesize(s)?;
        tracing::debug!(sentence = %s, ms = t.elapsed().as_millis() as u64,
            secs = pcm.len() as f64 / voice.sample_rate() as f64, "synthesised");
        let runs_on = i + 1 == sentences.len() && s.ends_with(char::is_alphanumeric);
        if !runs_on {
            pcm.extend(std::iter::repeat_n(0.0, gap));
        }
        if !out(pcm) {
            return Ok(i + 1);
        }
    }
    Ok(sentences.len())
}

/// The whole of `text` spoken into one buffer (see `speak`).
pub fn speak_all(voice: &mut dyn Voice, text: &str, gap_ms: u32) -> Result<Vec<f32>, TtsError> {
    let mut all = Vec::new();
    speak(voice, text, gap_ms, |pcm| {
        all.extend(pcm);
        true
    })?;
    Ok(all)
}

/// Scales to a peak of 0.9, as Piper's own player does (VITS output level varies by sentence).
fn normalize(mut audio: Vec<f32>) -> Vec<f32> {
    let peak = audio.iter().fold(0f32, |m, v| m.max(v.abs()));
    if peak > 0.01 {
        let gain = 0.9 / peak;
        audio.iter_mut().for_each(|v| *v *= gain);
    }
    audio
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample per character of each sentence.
    struct Chars;
    impl Voice for Chars {
        fn sample_rate(&self) -> u32 {
            1000
        }
        fn synthesize(&mut self, s: &str) -> Result<Vec<f32>, TtsError> {
            Ok(vec![0.5; s.len()])
        }
        fn set_rate(&mut self, r: f32) -> f32 {
            r
        }
    }

    #[test]
    fn text_is_spoken_sentence_by_sentence_with_gaps() {
        let mut pieces = Vec::new();
        let n = speak(&mut Chars, "One two. Three!", 10, |pcm| {
            pieces.push(pcm.len());
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        // "One two." (8) + 10 ms at 1 kHz, then "Three!" (6) + 10.
        assert_eq!(pieces, [18, 16]);
        assert_eq!(speak_all(&mut Chars, "Hi.", 0).unwrap().len(), 3);
        // A phrase whose sentence goes on runs into what follows: no silence after it.
        assert_eq!(
            speak_all(&mut Chars, "Hi. The capital", 10).unwrap().len(),
            13 + 11
        );
        assert!(matches!(
            speak_all(&mut Chars, " ... ", 0),
            Err(TtsError::NothingToSay)
        ));
        let mut heard = 0;
        speak(&mut Chars, "A. B. C.", 0, |_| {
            heard += 1;
            false
        })
        .unwrap();
        assert_eq!(heard, 1, "a listener that leaves stops the speech");
    }
}
