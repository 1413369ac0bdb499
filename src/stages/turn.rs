//! End of turn: has the user finished, or only paused? Two signals, one decision.
//!
//! - Acoustic: Smart Turn v3.2 (a Whisper-tiny encoder with a linear head, int8 ONNX, through
//!   onnxruntime) reads the log-mel features of the turn's last 8 s and gives the probability
//!   that the turn is complete, judged by prosody.
//! - Textual: the language model's own view of the transcript so far: the probability that the
//!   user's message ends there (its end-of-turn token, or a full stop or question mark and
//!   nothing more), read while it prefills that transcript (see `ChatModel::end_of_turn`).
//!
//! `decide` combines the two in log-odds. Prosody alone is fooled by synthetic voices (Piper's
//! "What is the capital of" alone scores 0.98) and by speakers who pause mid-sentence; the text
//! alone misses questions the model would continue ("How far is the moon" -> "from"). Neither
//! knows about threads.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host;
use crate::media::mel;
use crate::store::{ModelError, Store};

/// Seconds of audio Smart Turn reads (the end of the turn; less is zero-padded in front).
pub const WINDOW_S: usize = 8;
const RATE: usize = 16_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    #[error("cannot load end-of-turn model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("end-of-turn inference failed: {0}")]
    Inference(String),
    #[error("turn.{name} = {value}: {why}")]
    Setting {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Runtime(#[from] super::RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// End-of-turn settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Decide at short pauses whether the turn is over (Smart Turn + the language model). Off,
    /// a turn ends after `vad.min_silence_ms` of silence, whatever was said.
    pub semantic: bool,
    /// Smart Turn model: a name from `seesay models list` or an .onnx path.
    pub model: String,
    /// Silence after which the decision is taken.
    pub pause_ms: u32,
    /// Silence after which the turn ends whatever the decision (the user paused mid-sentence
    /// and did not go on).
    pub max_silence_ms: u32,
    /// Silence after which a turn judged not over, but only just (its score at the threshold),
    /// ends; the surer the verdict that the user will go on, the nearer the wait to
    /// `max_silence_ms` (`patience_ms`). Whole questions the models doubt ("What do bees
    /// make?": 0.38) then wait about 1 s instead of 1.6 s. At least `max_silence_ms`: off.
    pub unsure_silence_ms: u32,
    /// Weight of the acoustic signal (Smart Turn) in the decision.
    pub audio_weight: f32,
    /// Weight of the textual signal (the language model) in the decision. Twice the sound's by
    /// default: on 60 questions and 60 fragments spoken by espeak-ng and Piper (`seesay bench
    /// --stage turn`) this cut off 3 fragments and let 55 questions end at once; equal weights
    /// cut off 7, the sound alone 45.
    pub text_weight: f32,
    /// The turn is over when the combined probability reaches this.
    pub threshold: f32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            semantic: true,
            model: "smart-turn-v3.2".into(),
            pause_ms: 64,
            max_silence_ms: 1600,
            unsure_silence_ms: 800,
            audio_weight: 1.0,
            text_weight: 2.0,
            threshold: 0.5,
        }
    }
}

impl TurnConfig {
    pub fn check(&self) -> Result<(), TurnError> {
        let bad = |name, value: String, why| Err(TurnError::Setting { name, value, why });
        if self.pause_ms < 32 {
            return bad(
                "pause_ms",
                self.pause_ms.to_string(),
                "must be at least 32 (one VAD frame)",
            );
        }
        if self.max_silence_ms <= self.pause_ms {
            return bad(
                "max_silence_ms",
                self.max_silence_ms.to_string(),
                "must be longer than turn.pause_ms",
            );
        }
        // (Longer than `max_silence_ms` is allowed, and means off: a config that shortened only
        // `max_silence_ms` below the default 800 keeps working.)
        if self.unsure_silence_ms <= self.pause_ms {
            return bad(
                "unsure_silence_ms",
                self.unsure_silence_ms.to_string(),
                "must be longer than turn.pause_ms",
            );
        }
        for (name, w) in [
            ("audio_weight", self.audio_weight),
            ("text_weight", self.text_weight),
        ] {
            if !(0.0..=10.0).contains(&w) {
                return bad(name, w.to_string(), "must be between 0 and 10");
            }
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return bad(
                "threshold",
                self.threshold.to_string(),
                "must be between 0 and 1",
            );
        }
        Ok(())
    }
}

/// What the two signals said at a pause, and what was decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub audio: Option<f32>,
    pub text: Option<f32>,
    /// The combined probability that the turn is over.
    pub score: f32,
    pub complete: bool,
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

/// Combines the signals: a weighted mean of their log-odds (a missing signal has no say); with
/// neither, the turn is not declared over (the silence limit ends it).
pub fn decide(cfg: &TurnConfig, audio: Option<f32>, text: Option<f32>) -> Verdict {
    let parts: Vec<(f32, f32)> = [(audio, cfg.audio_weight), (text, cfg.text_weight)]
        .into_iter()
        .filter_map(|(p, w)| p.map(|p| (logit(p), w)))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    let weights: f32 = parts.iter().map(|&(_, w)| w).sum();
    let score = if weights > 0.0 {
        let z = parts.iter().map(|&(l, w)| l * w).sum::<f32>() / weights;
        1.0 / (1.0 + (-z).exp())
    } else {
        0.0
    };
    Verdict {
        audio,
        text,
        score,
        complete: weights > 0.0 && score >= cfg.threshold,
    }
}

/// How long the silence of a pause judged not over (with `score`) may last before the turn
/// ends anyway: `max_silence_ms` when the models are sure the user goes on (score 0), falling
/// in a straight line to `unsure_silence_ms` as the score nears the threshold.
pub fn patience_ms(cfg: &TurnConfig, score: f32) -> u32 {
    let near = (score / cfg.threshold).clamp(0.0, 1.0);
    let span = cfg.max_silence_ms.saturating_sub(cfg.unsure_silence_ms) as f32;
    (cfg.max_silence_ms as f32 - span * near).round() as u32
}

/// Could the sound change the verdict the text gives? Not when the text alone settles it, for
/// whatever Smart Turn could say (its probability is clamped like the text's): then the sound
/// need not be judged at all.
pub fn sound_matters(cfg: &TurnConfig, text: Option<f32>) -> bool {
    cfg.audio_weight > 0.0
        && decide(cfg, Some(0.0), text).complete != decide(cfg, Some(1.0), text).complete
}

/// Judges from the sound of a turn whether it is complete. The pipeline listens through this
/// trait, so its plumbing can be tested with a fake.
pub trait TurnDetector: Send {
    /// Probability that the turn whose audio (16 kHz, ending now) is `audio` is complete.
    fn complete(&mut self, audio: &[f32]) -> Result<f32, TurnError>;
}

/// Smart Turn v3 through onnxruntime.
pub struct SmartTurn {
    session: ort::session::Session,
}

impl SmartTurn {
    /// Loads the model; onnxruntime must have been loaded (`open` does it).
    pub fn load(path: &Path) -> Result<SmartTurn, TurnError> {
        let fail = |detail: String| TurnError::Load {
            path: path.display().to_string(),
            detail,
        };
        host::onnxruntime_loaded().map_err(|e| fail(e.to_string()))?;
        let session = ort::session::Session::builder()
            // It runs once the recogniser and the language model are done with a pause (and
            // only when the text leaves the verdict open), so it may take the cores they use.
            .and_then(|b| {
                b.with_intra_threads(host::Budget::machine().asr.min(4))
                    .map_err(Into::into)
            })
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| fail(e.to_string()))?;
        Ok(SmartTurn { session })
    }

    /// Finds the configured model and loads it (and onnxruntime, `onnxruntime` being the
    /// `tts.onnxruntime` setting).
    pub fn open(
        cfg: &TurnConfig,
        onnxruntime: &str,
        store: &Store,
    ) -> Result<SmartTurn, TurnError> {
        cfg.check()?;
        super::load_onnxruntime(onnxruntime, store)?;
        SmartTurn::load(&store.resolve(&cfg.model)?)
    }
}

/// The model's input: the last `WINDOW_S` seconds, zero-padded in front.
pub fn window(audio: &[f32]) -> Vec<f32> {
    let n = WINDOW_S * RATE;
    let tail = &audio[audio.len().saturating_sub(n)..];
    let mut x = vec![0.0; n - tail.len()];
    x.extend_from_slice(tail);
    x
}

impl TurnDetector for SmartTurn {
    fn complete(&mut self, audio: &[f32]) -> Result<f32, TurnError> {
        let err = |e: ort::Error| TurnError::Inference(e.to_string());
        let features = mel::log_mel(&window(audio));
        let frames = features.len() / mel::N_MELS;
        let x = ort::value::Tensor::<f32>::from_array(([1, mel::N_MELS, frames], features))
            .map_err(err)?;
        let out = self
            .session
            .run(ort::inputs!["input_features" => x])
            .map_err(err)?;
        let (_, p) = out[0].try_extract_tensor::<f32>().map_err(err)?;
        p.first()
            .copied()
            .ok_or_else(|| TurnError::Inference("the model gave no output".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_fragment_vetoes_confident_prosody() {
        let cfg = TurnConfig::default();
        // Piper's "What is the capital of": prosody says complete, the text plainly not.
        let v = decide(&cfg, Some(0.98), Some(0.002));
        assert!(!v.complete, "{v:?}");
        // A finished question: both agree.
        assert!(decide(&cfg, Some(0.9), Some(0.95)).complete);
        // One signal alone decides when the other is unavailable.
        assert!(decide(&cfg, Some(0.9), None).complete);
        assert!(!decide(&cfg, None, Some(0.1)).complete);
        // Nothing to go on: not over (the silence limit ends the turn).
        assert!(!decide(&cfg, None, None).complete);
        // A weight of 0 silences a signal.
        let audio_only = TurnConfig {
            text_weight: 0.0,
            ..TurnConfig::default()
        };
        assert!(decide(&audio_only, Some(0.98), Some(0.002)).complete);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(TurnConfig::default().check().is_ok());
        for bad in [
            TurnConfig {
                max_silence_ms: 32,
                ..TurnConfig::default()
            },
            TurnConfig {
                threshold: 1.0,
                ..TurnConfig::default()
            },
            TurnConfig {
                audio_weight: -1.0,
                ..TurnConfig::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sound_is_asked_only_when_it_could_change_the_verdict() {
        let cfg = TurnConfig::default();
        for (text, matters) in [
            (None, true),
            (Some(0.6), true),
            (Some(0.95), true),
            (Some(0.9999), false),
            (Some(0.0), false),
        ] {
            assert_eq!(sound_matters(&cfg, text), matters, "{text:?}");
            if !matters {
                let v = |a| decide(&cfg, Some(a), text).complete;
                assert!(
                    [0.0, 0.3, 0.7, 1.0].iter().all(|&a| v(a) == v(0.5)),
                    "{text:?}"
                );
            }
        }
        let text_only = TurnConfig {
            audio_weight: 0.0,
            ..TurnConfig::default()
        };
        assert!(!sound_matters(&text_only, Some(0.6)));
    }

    #[test]
    fn a_doubted_pause_waits_less_than_a_surely_unfinished_one() {
        let cfg = TurnConfig::default();
        assert_eq!(patience_ms(&cfg, 0.0), 1600);
        assert_eq!(patience_ms(&cfg, 0.5), 800);
        assert_eq!(patience_ms(&cfg, 0.25), 1200);
        // The bench's fragments scored up to 0.45: a 0.7 s pause in one still waits past it.
        assert!(patience_ms(&cfg, 0.45) > 700);
        let off = TurnConfig {
            unsure_silence_ms: 1600,
            ..TurnConfig::default()
        };
        assert_eq!(patience_ms(&off, 0.49), 1600);
        let bad = TurnConfig {
            unsure_silence_ms: 64,
            ..TurnConfig::default()
        };
        assert!(bad.check().is_err());
        // A shorter silence limit alone is kept, whatever the score.
        let short = TurnConfig {
            max_silence_ms: 600,
            ..TurnConfig::default()
        };
        assert!(short.check().is_ok());
        assert_eq!(patience_ms(&short, 0.0), 600);
        assert_eq!(patience_ms(&short, 0.49), 600);
    }

    #[test]
    fn the_window_keeps_the_end_and_pads_the_front() {
        let short = window(&[1.0; 10]);
        assert_eq!(short.len(), WINDOW_S * RATE);
        assert_eq!(short[short.len() - 10..], [1.0; 10]);
        assert_eq!(short[0], 0.0);
        let long: Vec<f32> = (0..WINDOW_S * RATE + 5).map(|i| i as f32).collect();
        let w = window(&long);
        assert_eq!(w[0], 5.0);
        assert_eq!(*w.last().unwrap(), long[long.len() - 1]);
    }
}
