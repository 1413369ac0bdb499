//! Voice activity detection: 16 kHz PCM frames in, speech start / speech end events out.
//!
//! `SileroVad` is the model (Silero VAD v6 ONNX through onnxruntime): one 512-sample frame in, the
//! probability of speech out, its recurrent state carried between frames. `Endpointer` is the
//! decision on top of it: speech starts after `min_speech_ms` above the threshold and ends after
//! `min_silence_ms` below it, with hysteresis. Neither knows about threads.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host;
use crate::store::{ModelError, Store};

/// Samples per VAD frame at 16 kHz (32 ms).
pub const FRAME: usize = 512;
/// Samples of the previous frame the v5/v6 model sees in front of each frame.
const CONTEXT: usize = 64;
const RATE: i64 = 16_000;
/// The recurrent state: 2 x batch 1 x 128.
const STATE_LEN: usize = 2 * 128;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VadError {
    #[error("cannot load VAD model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("VAD inference failed: {0}")]
    Inference(String),
    #[error(transparent)]
    Runtime(#[from] super::RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Voice activity detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadConfig {
    /// Silero VAD model: a name from `seesay models list` or an .onnx path.
    pub model: String,
    /// Speech probability above which a frame counts as speech.
    pub threshold: f32,
    /// Speech ends only when the probability falls below `threshold - hysteresis`.
    pub hysteresis: f32,
    /// Speech shorter than this is ignored (clicks, coughs).
    pub min_speech_ms: u32,
    /// Silence that ends an utterance.
    pub min_silence_ms: u32,
    /// Audio kept before the detected start, so the first syllable is not cut.
    pub pre_roll_ms: u32,
    /// Longest utterance; longer speech is cut and answered in parts.
    pub max_utterance_s: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            model: "silero-vad".into(),
            threshold: 0.5,
            hysteresis: 0.15,
            min_speech_ms: 160,
            min_silence_ms: 300,
            pre_roll_ms: 200,
            max_utterance_s: 28.0,
        }
    }
}

/// A voice activity detector: one frame (`FRAME` samples at 16 kHz) in, the probability that it
/// is speech out, with state carried from frame to frame. The pipeline listens through this
/// trait, so its plumbing can be tested with a fake detector.
pub trait SpeechDetector: Send {
    fn step(&mut self, frame: &[f32]) -> Result<f32, VadError>;
    /// Forgets the state (the microphone was ignored meanwhile).
    fn reset(&mut self);
}

/// Silero VAD: frame in, speech probability out.
pub struct SileroVad {
    session: ort::session::Session,
    state: Vec<f32>,
    context: Vec<f32>,
}

impl SileroVad {
    /// Loads the model; onnxruntime must have been loaded (`stages::load_onnxruntime`; `open`
    /// does it).
    pub fn load(path: &Path) -> Result<SileroVad, VadError> {
        host::onnxruntime_loaded().map_err(|e| VadError::Load {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let session = ort::session::Session::builder()
            .and_then(|b| {
                b.with_intra_threads(host::Budget::machine().vad)
                    .map_err(Into::into)
            })
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| VadError::Load {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Ok(SileroVad {
            session,
            state: vec![0.0; STATE_LEN],
            context: vec![0.0; CONTEXT],
        })
    }

    /// Finds the configured model and loads it, loading onnxruntime first if need be
    /// (`onnxruntime`: the `tts.onnxruntime` setting).
    pub fn open(cfg: &VadConfig, onnxruntime: &str, store: &Store) -> Result<SileroVad, VadError> {
        super::load_onnxruntime(onnxruntime, store)?;
        SileroVad::load(&store.resolve(&cfg.model)?)
    }
}

impl SpeechDetector for SileroVad {
    /// Probability that `frame` (512 samples, 16 kHz) is speech.
    fn step(&mut self, frame: &[f32]) -> Result<f32, VadError> {
        let err = |e: ort::Error| VadError::Inference(e.to_string());
        let mut input = Vec::with_capacity(CONTEXT + FRAME);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(&frame[..FRAME.min(frame.len())]);
        input.resize(CONTEXT + FRAME, 0.0);
        self.context.copy_from_slice(&input[FRAME..]);
        let x =
            ort::value::Tensor::<f32>::from_array(([1, CONTEXT + FRAME], input)).map_err(err)?;
        let state = ort::value::Tensor::<f32>::from_array(([2, 1, 128], self.state.clone()))
            .map_err(err)?;
        let sr = ort::value::Tensor::<i64>::from_array(([0usize; 0], vec![RATE])).map_err(err)?;
        let out = self
            .session
            .run(ort::inputs!["input" => x, "state" => state, "sr" => sr])
            .map_err(err)?;
        let (_, p) = out["output"].try_extract_tensor::<f32>().map_err(err)?;
        let prob = p.first().copied().unwrap_or(0.0);
        let (_, s) = out["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        let n = STATE_LEN.min(s.len());
        self.state[..n].copy_from_slice(&s[..n]);
        Ok(prob)
    }

    fn reset(&mut self) {
        self.state.iter_mut().for_each(|v| *v = 0.0);
        self.context.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// What the endpointer decided about a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Speech began `min_speech_ms` ago; `start` is the sample index where it began.
    Start { start: u64 },
    /// The speaker paused (see `Endpointer::with_pause`): the audio so far, for a speculative
    /// transcription that is ready if the pause turns out to be the end, and for deciding
    /// whether it is.
    Pause { audio: Vec<f32>, speech_end: u64 },
    /// The utterance ended: its audio (with pre-roll), and the sample index just after its last
    /// voiced frame.
    End { audio: Vec<f32>, speech_end: u64 },
}

/// Turns per-frame probabilities into utterances.
pub struct Endpointer {
    cfg: VadConfig,
    /// Frames kept before speech starts (pre-roll).
    history: std::collections::VecDeque<Vec<f32>>,
    /// Audio of the current (candidate) utterance.
    audio: Vec<f32>,
    in_speech: bool,
    confirmed: bool,
    voiced_frames: usize,
    silent_frames: usize,
    start: u64,
    last_voiced_end: u64,
    pos: u64,
    /// Silent frames after which a pause is reported, and after which the utterance ends.
    pause_frames: usize,
    end_frames: usize,
}

fn frames_in(ms: u32) -> usize {
    (ms as usize * 16).div_ceil(FRAME)
}

impl Endpointer {
    /// Reports a pause after half of `min_silence_ms` and ends the utterance after all of it.
    pub fn new(cfg: &VadConfig) -> Endpointer {
        let end = frames_in(cfg.min_silence_ms);
        Endpointer::with_silences(cfg, frames_in(cfg.min_silence_ms / 2).max(1), end)
    }

    /// Reports a pause after `pause_ms` of silence (where the pipeline decides whether the turn
    /// is over, and may end it with `end_now`) and ends the utterance after `end_ms` regardless.
    pub fn with_pause(cfg: &VadConfig, pause_ms: u32, end_ms: u32) -> Endpointer {
        Endpointer::with_silences(cfg, frames_in(pause_ms).max(1), frames_in(end_ms))
    }

    fn with_silences(cfg: &VadConfig, pause_frames: usize, end_frames: usize) -> Endpointer {
        Endpointer {
            pause_frames,
            end_frames,
            cfg: cfg.clone(),
            history: Default::default(),
            audio: Vec::new(),
            in_speech: false,
            confirmed: false,
            voiced_frames: 0,
            silent_frames: 0,
            start: 0,
            last_voiced_end: 0,
            pos: 0,
        }
    }

    /// Forgets any utterance under way (the microphone was ignored meanwhile); the next frame
    /// starts at sample index `pos`.
    pub fn reset_at(&mut self, pos: u64) {
        *self = Endpointer::with_silences(&self.cfg.clone(), self.pause_frames, self.end_frames);
        self.pos = pos;
    }

    /// Is a confirmed utterance paused (silent since its last voiced frame, which ended at
    /// sample `speech_end`)?
    pub fn paused_at(&self, speech_end: u64) -> bool {
        self.confirmed && self.silent_frames > 0 && self.last_voiced_end == speech_end
    }

    /// The speech end of the pause the utterance is in, once it has lasted long enough to be
    /// reported (`None`: speaking, or no utterance).
    pub fn pause(&self) -> Option<u64> {
        (self.confirmed && self.silent_frames >= self.pause_frames).then_some(self.last_voiced_end)
    }

    /// Ends the paused utterance now (the turn was judged complete); `None` if the user went on
    /// speaking since the pause that ended at `speech_end`.
    pub fn end_now(&mut self, speech_end: u64) -> Option<VadEvent> {
        self.paused_at(speech_end).then(|| self.end())
    }

    /// The speech end of a pause that began with this very frame (its first silent frame).
    pub fn just_paused(&self) -> Option<u64> {
        (self.confirmed && self.silent_frames == 1).then_some(self.last_voiced_end)
    }

    /// Is the user speaking right now (confirmed speech, not paused)?
    pub fn voiced(&self) -> bool {
        self.confirmed && self.silent_frames == 0
    }

    /// Where the speech ends so far, if this very frame was speech (of a confirmed utterance).
    pub fn voiced_until(&self) -> Option<u64> {
        self.voiced().then_some(self.last_voiced_end)
    }

    /// Is an utterance under way (confirmed speech, perhaps paused)?
    pub fn speaking(&self) -> bool {
        self.confirmed
    }

    /// The audio of the utterance under way (with its pre-roll).
    pub fn audio(&self) -> &[f32] {
        &self.audio
    }

    /// Would an utterance of `samples` samples be cut for length?
    pub fn too_long(&self, samples: usize) -> bool {
        samples as f32 / 16_000.0 >= self.cfg.max_utterance_s
    }

    /// Feeds one frame and its speech probability.
    pub fn push(&mut self, frame: &[f32], prob: f32) -> Option<VadEvent> {
        let frame_start = self.pos;
        self.pos += frame.len() as u64;
        let voiced = if self.in_speech {
            prob >= self.cfg.threshold - self.cfg.hysteresis
        } else {
            prob >= self.cfg.threshold
        };
        if !self.in_speech {
            if voiced {
                self.in_speech = true;
                self.start = frame_start;
                self.voiced_frames = 0;
                self.silent_frames = 0;
                self.audio = self.history.drain(..).flatten().collect();
            } else {
                self.history.push_back(frame.to_vec());
                while self.history.len() > frames_in(self.cfg.pre_roll_ms) {
                    self.history.pop_front();
                }
                return None;
            }
        }
        self.audio.extend_from_slice(frame);
        if voiced {
            self.voiced_frames += 1;
            self.silent_frames = 0;
            self.last_voiced_end = self.pos;
        } else {
            self.silent_frames += 1;
        }
        if !self.confirmed {
            if self.voiced_frames >= frames_in(self.cfg.min_speech_ms) {
                self.confirmed = true;
                return Some(VadEvent::Start { start: self.start });
            }
            // A blip that faded before it counted as speech.
            if self.silent_frames >= frames_in(self.cfg.min_silence_ms.min(self.cfg.min_speech_ms))
            {
                self.in_speech = false;
                self.history = self.audio.chunks(FRAME).map(<[f32]>::to_vec).collect();
                while self.history.len() > frames_in(self.cfg.pre_roll_ms) {
                    self.history.pop_front();
                }
                self.audio.clear();
            }
            return None;
        }
        if self.silent_frames >= self.end_frames || self.too_long(self.audio.len()) {
            return Some(self.end());
        }
        if self.silent_frames == self.pause_frames && self.pause_frames < self.end_frames {
            return Some(VadEvent::Pause {
                audio: self.audio.clone(),
                speech_end: self.last_voiced_end,
            });
        }
        None
    }

    /// Ends a confirmed utterance now (end of input); `None` if none is under way.
    pub fn flush(&mut self) -> Option<VadEvent> {
        self.confirmed.then(|| self.end())
    }

    fn end(&mut self) -> VadEvent {
        self.in_speech = false;
        self.confirmed = false;
        self.history.clear();
        VadEvent::End {
            audio: std::mem::take(&mut self.audio),
            speech_end: self.last_voiced_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32]) -> Vec<(usize, VadEvent)> {
        let mut e = Endpointer::new(&VadConfig {
            min_speech_ms: 64,  // 2 frames
            min_silence_ms: 96, // 3 frames
            pre_roll_ms: 32,    // 1 frame
            ..VadConfig::default()
        });
        let frame = vec![0.1; FRAME];
        let mut out = Vec::new();
        for (i, &p) in probs.iter().enumerate() {
            if let Some(ev) = e.push(&frame, p) {
                out.push((i, ev));
            }
        }
        if let Some(ev) = e.flush() {
            out.push((probs.len(), ev));
        }
        out
    }

    #[test]
    fn speech_is_confirmed_then_ended_by_silence() {
        let ev = run(&[0.0, 0.0, 0.9, 0.9, 0.9, 0.4, 0.9, 0.1, 0.1, 0.1, 0.0]);
        let kinds: Vec<(usize, &str)> = ev
            .iter()
            .map(|(i, e)| match e {
                VadEvent::Start { .. } => (*i, "start"),
                VadEvent::Pause { .. } => (*i, "pause"),
                VadEvent::End { .. } => (*i, "end"),
            })
            .collect();
        // Confirmed after two voiced frames; after two quiet frames (half the trailing silence)
        // a pause is reported; 0.4 is above threshold - hysteresis, so it is still speech.
        assert_eq!(kinds, [(3, "start"), (8, "pause"), (9, "end")]);
        assert_eq!(
            ev[0].1,
            VadEvent::Start {
                start: 2 * FRAME as u64
            }
        );
        let VadEvent::Pause { speech_end, .. } = &ev[1].1 else {
            unreachable!()
        };
        assert_eq!(*speech_end, 7 * FRAME as u64);
        let (i, VadEvent::End { audio, speech_end }) = &ev[2] else {
            unreachable!()
        };
        assert_eq!(*i, 9);
        assert_eq!(*speech_end, 7 * FRAME as u64);
        // One frame of pre-roll plus frames 2..=9.
        assert_eq!(audio.len(), 9 * FRAME);
    }

    #[test]
    fn a_pause_judged_final_ends_the_utterance_at_once() {
        let mut e = Endpointer::with_pause(
            &VadConfig {
                min_speech_ms: 64,
                pre_roll_ms: 0,
                ..VadConfig::default()
            },
            64,
            320,
        );
        let frame = vec![0.1; FRAME];
        let mut events = Vec::new();
        for p in [0.9, 0.9, 0.9, 0.1, 0.1] {
            events.extend(e.push(&frame, p));
        }
        let Some(VadEvent::Pause { speech_end, .. }) = events.pop() else {
            panic!("no pause: {events:?}")
        };
        assert_eq!(speech_end, 3 * FRAME as u64);
        // Speech again: the decision about that pause comes too late to end anything.
        e.push(&frame, 0.9);
        assert!(e.end_now(speech_end).is_none());
        // A new pause, judged final: the utterance ends there.
        e.push(&frame, 0.1);
        let end = e.end_now(6 * FRAME as u64);
        assert!(
            matches!(&end, Some(VadEvent::End { audio, speech_end }) if audio.len() == 7 * FRAME && *speech_end == 6 * FRAME as u64),
            "{end:?}"
        );
        assert!(e.flush().is_none());
    }

    #[test]
    fn blips_and_silence_make_no_utterance() {
        assert!(run(&[0.0; 20]).is_empty());
        assert!(run(&[0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0]).is_empty());
    }

    #[test]
    fn input_ending_mid_speech_still_ends_the_utterance() {
        let ev = run(&[0.9, 0.9, 0.9, 0.9]);
        assert!(!ev.iter().any(|(_, e)| matches!(e, VadEvent::Pause { .. })));
        assert!(
            matches!(ev.last(), Some((4, VadEvent::End { .. }))),
            "{ev:?}"
        );
    }
}
