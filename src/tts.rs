//! Speech synthesis: text in, mono f32 PCM out, one sentence at a time (Piper VITS voices).
//!
//! Text is cut into sentences and clauses here; espeak-ng turns each clause into phonemes (its
//! bundled build drops punctuation, so the punctuation is put back between clauses), and the
//! Piper voice, run by onnxruntime, turns the phonemes into audio.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    #[error("onnxruntime library {path} not found: run `seesay models fetch onnxruntime` or set tts.onnxruntime")]
    NoRuntime { path: PathBuf },
    #[error("cannot load onnxruntime from {path}: {detail}")]
    Runtime { path: PathBuf, detail: String },
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
}

/// Speech synthesis settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
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
    /// CPU threads for onnxruntime; 0 uses every core.
    pub threads: usize,
    /// Speaker id for multi-speaker voices.
    pub speaker: i64,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            voice: "piper-joe-medium".into(),
            rate: 1.0,
            sentence_silence_ms: 200,
            espeak_data: String::new(),
            onnxruntime: String::new(),
            threads: 0,
            speaker: 0,
        }
    }
}

/// Loads onnxruntime once per process. A missing or old library is an error here, not a hang.
pub fn init_onnxruntime(path: &Path) -> Result<(), TtsError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    if !path.is_file() {
        return Err(TtsError::NoRuntime { path: path.into() });
    }
    INIT.get_or_init(|| {
        ort::init_from(path)
            .map_err(|e| e.to_string())?
            .with_name("seesay")
            .commit();
        Ok(())
    })
    .clone()
    .map_err(|detail| TtsError::Runtime {
        path: path.into(),
        detail,
    })
}

/// Finds the folder holding `espeak-ng-data` and tells espeak-rs about it.
pub fn locate_espeak_data(configured: &str) -> Result<PathBuf, TtsError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if !configured.is_empty() {
        candidates.push(crate::config::expand_home(configured));
    } else {
        if let Some(d) = std::env::var_os("PIPER_ESPEAKNG_DATA_DIRECTORY") {
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
    // espeak-rs reads this variable once, on its first call.
    std::env::set_var("PIPER_ESPEAKNG_DATA_DIRECTORY", &found);
    Ok(found)
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

/// A loaded Piper voice.
pub struct PiperVoice {
    piper: piper_rs::Piper,
    espeak_voice: String,
    length_scale: f32,
    rate: f32,
    speaker: i64,
    pub sample_rate: u32,
}

impl PiperVoice {
    /// Loads `onnx` (with `onnx` + `.json` beside it). onnxruntime and espeak data must be set up
    /// first (`init_onnxruntime`, `locate_espeak_data`).
    pub fn load(onnx: &Path, cfg: &TtsConfig) -> Result<PiperVoice, TtsError> {
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
        let threads = crate::config::thread_count(cfg.threads);
        let length_scale = model_cfg.inference.length_scale / cfg.rate;
        let builder = ort::session::Session::builder()
            .and_then(|b| b.with_intra_threads(threads).map_err(Into::into));
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
            sample_rate: meta.audio.sample_rate,
        })
    }

    /// Changes the speaking rate (1 normal, 2 twice as fast); returns the previous rate.
    pub fn set_rate(&mut self, rate: f32) -> f32 {
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
    pub fn synthesize(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
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
                None,
                None,
            )
            .map_err(|e| TtsError::Inference(e.to_string()))?;
        Ok(normalize(audio))
    }
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

/// Cuts text into sentences at `.`, `!`, `?` (and line breaks) followed by a space or the end.
/// Decimal points, "e.g." and common titles do not end a sentence.
pub fn split_sentences(text: &str) -> Vec<String> {
    const TITLES: [&str; 9] = [
        "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "e.g.", "i.e.", "etc.",
    ];
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cur = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            cur.push(c);
            let at_break = matches!(c, '.' | '!' | '?' | '…')
                && chars.peek().is_none_or(|n| n.is_whitespace());
            if !at_break {
                continue;
            }
            // Swallow runs like "?!" or "...".
            while let Some(&n) = chars.peek() {
                if matches!(n, '.' | '!' | '?' | '"' | '\'' | ')') {
                    cur.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let last_word = cur.split_whitespace().last().unwrap_or("").to_lowercase();
            if c == '.' && TITLES.contains(&last_word.as_str()) {
                continue;
            }
            push_trimmed(&mut out, &cur);
            cur.clear();
        }
        push_trimmed(&mut out, &cur);
    }
    out
}

fn push_trimmed(out: &mut Vec<String>, s: &str) {
    let t = s.trim();
    if t.chars().any(char::is_alphanumeric) {
        out.push(t.to_string());
    }
}

/// Cuts a sentence into clauses at punctuation followed by a space or the end; each clause comes
/// with the punctuation mark that closed it.
pub fn split_clauses(sentence: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sentence.chars().peekable();
    while let Some(c) = chars.next() {
        let closes = matches!(c, ',' | ';' | ':' | '.' | '!' | '?' | '—')
            && chars.peek().is_none_or(|n| n.is_whitespace());
        if closes {
            let p = if c == '—' { ',' } else { c };
            if cur.chars().any(char::is_alphanumeric) {
                out.push((cur.trim().to_string(), Some(p)));
            } else if let Some(last) = out.last_mut() {
                last.1 = Some(p);
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if cur.chars().any(char::is_alphanumeric) {
        out.push((cur.trim().to_string(), None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_real_ends_only() {
        let s = split_sentences("Dr. Smith paid 3.50 dollars. Really?! Yes... ok\nNew line here");
        assert_eq!(
            s,
            vec![
                "Dr. Smith paid 3.50 dollars.",
                "Really?!",
                "Yes...",
                "ok",
                "New line here"
            ]
        );
        assert!(split_sentences("  ...  ").is_empty());
    }

    #[test]
    fn clauses_keep_their_punctuation() {
        let c = split_clauses("Hello world, this is a test; fine. ");
        assert_eq!(
            c,
            vec![
                ("Hello world".to_string(), Some(',')),
                ("this is a test".to_string(), Some(';')),
                ("fine".to_string(), Some('.')),
            ]
        );
        assert_eq!(split_clauses("1,000 people")[0].0, "1,000 people");
    }
}
