//! Speech recognition: 16 kHz mono PCM in, timed text segments out (Whisper through whisper.cpp,
//! or any OpenAI-compatible transcription server: `remote.rs`).
//!
//! `WhisperModel` is the maths (one window of audio → segments); `Windower` (`window.rs`) cuts an
//! endless stream into windows of at most 30 s at its quietest points, so files of any length
//! stream through.

use std::ffi::c_void;
use std::path::Path;

use serde::{Deserialize, Serialize};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::host;
use crate::media::audio::{rms, SAMPLE_RATE};
use crate::stages::Cancel;
use crate::store::{ModelError, Store};
use crate::text::transcript::Segment;
use watch::Watch;

mod checks;
pub mod remote;
mod timed;
mod watch;
mod window;
pub use timed::{Decode, Timed, Word};
pub use window::{transcribe_stream, Windower};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsrError {
    #[error("cannot load Whisper model {path}: {detail} (is it a whisper.cpp ggml file? `seesay models import` converts CTranslate2 models)")]
    Load { path: String, detail: String },
    #[error("unknown language '{0}': use a Whisper language code such as en, de, fr, or auto")]
    Language(String),
    #[error("model {model} is English-only; it cannot transcribe language '{language}' (try --model whisper-base)")]
    EnglishOnly { model: String, language: String },
    #[error("Whisper failed: {0}")]
    Inference(String),
    #[error("asr.{name} = {value}: {why}")]
    Setting {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("transcription stopped: its result was no longer needed")]
    Stopped,
    #[error("transcription server at {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error("unknown asr.backend '{0}': use whisper or openai")]
    Backend(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Speech recognition settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// `whisper` (whisper.cpp, here) or `openai` (any server with OpenAI's
    /// `/v1/audio/transcriptions`: another `seesay serve`, speaches, vLLM, LocalAI).
    pub backend: String,
    /// A model name from `seesay models list`, or the path of any whisper.cpp ggml file.
    pub model: String,
    /// Spoken language code (en, de, ...), or "auto" to detect it (multilingual models only).
    pub language: String,
    /// CPU threads for whisper.cpp; 0: its share of the machine (every core: it runs alone).
    pub threads: usize,
    /// Segments whose no-speech probability is above this are dropped (Whisper's own silence guess).
    pub no_speech_threshold: f32,
    /// Windows whose loudest 30 ms frame is quieter than this RMS level (0..1) are not sent to
    /// Whisper at all: it invents text on silence. 0.01 is about -40 dBFS.
    pub silence_rms: f32,
    /// Longest window handed to Whisper, in seconds (at most 30).
    pub window_seconds: f32,
    /// Shrink Whisper's audio context to the window's length (much faster on short audio).
    pub fit_audio_context: bool,
    /// The shortest audio context, in seconds, when it is fitted to the audio.
    pub min_context_s: f32,
    /// whisper: beams the decoder keeps, 1 (greedy, the most likely token each step) to 8. Five
    /// heard fewer words wrong on held-out espeak-ng questions and cost 30-60 ms a
    /// transcription on two cores (`seesay bench --stage hearing`).
    pub beam_size: usize,
    /// whisper: on the short (fitted) context, a segment Whisper is unsure of (low mean
    /// log-probability, or repetitive) is decoded again at rising temperatures, as on the full
    /// context.
    pub temperature_fallback: bool,
    /// The multilingual model `seesay serve` translates with (`/v1/audio/translations`), loaded
    /// on first use unless it is `model` itself.
    pub translate_model: String,
    /// openai: base URL of the server, e.g. http://127.0.0.1:8000/v1 (`$SEESAY_ASR_BASE_URL`
    /// overrides).
    pub base_url: String,
    /// openai: model name sent to the server (`$SEESAY_ASR_MODEL` overrides).
    pub remote_model: String,
    /// openai: API key; empty reads `$SEESAY_ASR_API_KEY`, then `$OPENAI_API_KEY`.
    pub api_key: String,
    /// openai: seconds to wait for the server to connect and to answer.
    pub timeout_s: u64,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            backend: "whisper".into(),
            model: "whisper-tiny.en".into(),
            language: "en".into(),
            threads: 0,
            no_speech_threshold: 0.6,
            silence_rms: 0.01,
            window_seconds: 30.0,
            fit_audio_context: true,
            min_context_s: 6.0,
            beam_size: 1,
            temperature_fallback: false,
            translate_model: "whisper-base".into(),
            base_url: "http://127.0.0.1:8000/v1".into(),
            remote_model: "whisper-1".into(),
            api_key: String::new(),
            timeout_s: 30,
        }
    }
}

impl AsrConfig {
    pub fn threads(&self) -> usize {
        host::thread_count(self.threads, host::Budget::machine().asr)
    }
}

/// Speech recognition: one window of 16 kHz audio (at most 30 s) in, timed segments out. The
/// pipeline and the server transcribe through this trait, so their plumbing can be tested with a
/// fake recogniser.
pub trait Transcriber: Send {
    /// Transcribes one window; segment times are offset by `offset` seconds.
    fn transcribe(&mut self, samples: &[f32], offset: f64) -> Result<Vec<Segment>, AsrError>;
    /// As `transcribe`, but gives up (`AsrError::Stopped`) once `stop` is cancelled: a
    /// speculation that no longer matters leaves the cores at once.
    fn transcribe_unless(
        &mut self,
        samples: &[f32],
        offset: f64,
        stop: &Cancel,
    ) -> Result<Vec<Segment>, AsrError> {
        if stop.is_cancelled() {
            return Err(AsrError::Stopped);
        }
        self.transcribe(samples, offset)
    }
    /// Switches the spoken language; returns the previous one.
    fn set_language(&mut self, language: &str) -> Result<String, AsrError>;
    /// As `transcribe`, decoded as `how` says: translated to English, words timed. A recogniser
    /// that can do neither only answers the plain request.
    fn transcribe_timed(
        &mut self,
        samples: &[f32],
        offset: f64,
        how: Decode,
    ) -> Result<Vec<Timed>, AsrError> {
        if how != Decode::default() {
            return Err(AsrError::Inference(
                "this recogniser neither translates nor times words".into(),
            ));
        }
        let segments = self.transcribe(samples, offset)?;
        Ok(segments
            .into_iter()
            .map(|segment| Timed {
                segment,
                words: Vec::new(),
            })
            .collect())
    }
    /// Whether the model knows languages other than English (and so can translate them).
    fn is_multilingual(&self) -> bool {
        false
    }
}

/// Opens the configured recogniser: the Whisper model here, or a client of a remote server
/// (which is not contacted until the first transcription).
pub fn open(cfg: &AsrConfig, store: &Store) -> Result<Box<dyn Transcriber>, AsrError> {
    match cfg.backend.as_str() {
        "whisper" => Ok(Box::new(open_whisper(cfg, store)?)),
        "openai" => Ok(Box::new(remote::RemoteTranscriber::new(cfg)?)),
        other => Err(AsrError::Backend(other.to_string())),
    }
}

/// Finds the configured Whisper model and loads it (whatever `backend` says).
pub fn open_whisper(cfg: &AsrConfig, store: &Store) -> Result<WhisperModel, AsrError> {
    WhisperModel::load(&store.resolve(&cfg.model)?, cfg)
}

/// A loaded Whisper model with its decoding state.
pub struct WhisperModel {
    ctx: WhisperContext,
    state: WhisperState,
    cfg: AsrConfig,
    name: String,
    /// While set, whisper.cpp checks it between the steps of its computation and gives up.
    stop: Option<Cancel>,
    /// How the window under way is decoded.
    decode: Decode,
}

impl WhisperModel {
    pub fn load(path: &Path, cfg: &AsrConfig) -> Result<WhisperModel, AsrError> {
        whisper_rs::install_logging_hooks();
        // whisper.cpp's own messages, through ours: a stopped transcription is no error.
        // SAFETY: `whisper_log` is a plain function that only reads the text it is given.
        unsafe {
            whisper_rs::whisper_rs_sys::whisper_log_set(Some(whisper_log), std::ptr::null_mut())
        };
        let load_err = |detail: String| AsrError::Load {
            path: path.display().to_string(),
            detail,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        checks::decoding(cfg)?;
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| load_err(e.to_string()))?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        checks::language(&ctx, &name, &cfg.language)?;
        let state = ctx.create_state().map_err(|e| load_err(e.to_string()))?;
        Ok(WhisperModel {
            ctx,
            state,
            cfg: cfg.clone(),
            name,
            stop: None,
            decode: Decode::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns the short-audio context on or off (the benchmark compares both).
    pub fn set_fit_audio_context(&mut self, on: bool) {
        self.cfg.fit_audio_context = on;
    }

    /// Transcribes one window (at most 30 s); times are offset by `offset` seconds.
    fn transcribe_window(&mut self, samples: &[f32], offset: f64) -> Result<Vec<Timed>, AsrError> {
        if is_silent(samples, self.cfg.silence_rms) {
            tracing::debug!(offset, "window is silent; not sent to Whisper");
            return Ok(Vec::new());
        }
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        let n_ctx = self.ctx.model_n_audio_ctx();
        if self.cfg.fit_audio_context && secs < 29.0 {
            // 50 encoder frames per second of audio, with a margin. A short context is ~5x faster,
            // but Whisper was trained on 30 s and sometimes derails on it (timestamps past the end
            // of the audio, text repeated in a loop). Below about 8 s of context tiny.en looped on
            // a 2.5 s utterance ("And so my fellow Americans." x 30) where 8 s gave the right text
            // in 258 ms, whole process. Which lengths derail is chaotic (a 1.28 s question looped at
            // 6 and 7 s of context, not at 8), so a derailed window is decoded again with twice
            // the context (~0.1 s more) before the full one (~0.9 s on two cores).
            let first =
                (((secs + 1.5).max(self.cfg.min_context_s as f64) * 50.0).ceil() as i32).min(n_ctx);
            for ctx in [first, first * 2].into_iter().filter(|&c| c < n_ctx) {
                let Some(timed) = self.run(samples, offset, ctx)? else {
                    tracing::debug!(
                        ctx,
                        secs,
                        "short audio context ran away (a loop); decoding again with a longer one"
                    );
                    continue;
                };
                let segments: Vec<Segment> = timed.iter().map(|t| t.segment.clone()).collect();
                if !derailed(&segments, offset, secs, ctx as f64 / 50.0) {
                    // Timestamps past the audio's end are clamped to it.
                    let end = offset + secs;
                    return Ok(timed.into_iter().map(|t| t.clamped(end)).collect());
                }
                tracing::debug!(
                    ctx,
                    secs,
                    segments = ?segments.iter().map(|s| format!("{:.2}-{:.2} {}", s.start, s.end, s.text)).collect::<Vec<_>>(),
                    "short audio context derailed; decoding again with a longer one"
                );
            }
        }
        // The full context is the last try: a loop there is cut at the token limit, not retried.
        Ok(self.run(samples, offset, n_ctx)?.unwrap_or_default())
    }

    fn run(
        &mut self,
        samples: &[f32],
        offset: f64,
        audio_ctx: i32,
    ) -> Result<Option<Vec<Timed>>, AsrError> {
        let short = audio_ctx < self.ctx.model_n_audio_ctx();
        let mut params = decoding(&self.cfg, self.decode, audio_ctx, short);
        // (whisper-rs 0.16's `set_abort_callback_safe` hands whisper.cpp a pointer of another
        // type than its trampoline reads: it aborted at once, or not at all.)
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        let watch = Watch::new(self.stop.clone(), secs, short);
        // SAFETY: `watch` lives, unmoved, until `full`, the only call that uses it, returns.
        unsafe { watch.install(&mut params) };
        let t = std::time::Instant::now();
        let done = self.state.full(params, samples);
        let ms = t.elapsed().as_millis() as u64;
        match ms as f64 > SLOW_MS + SLOW_MS_PER_S * audio_ctx as f64 / 50.0 {
            true => tracing::info!(ms, audio_ctx, secs, "slow transcription"),
            false => tracing::debug!(ms, audio_ctx, secs, "transcribed"),
        }
        if watch.stopped() {
            return Err(AsrError::Stopped);
        }
        if watch.ran_away() {
            return Ok(None);
        }
        done.map_err(|e| AsrError::Inference(e.to_string()))?;
        let timed = self.segments(offset)?;
        if short || !watch.reached_limit() {
            return Ok(Some(timed));
        }
        tracing::info!(
            audio_ctx,
            secs,
            "a decode reached its token limit (a loop): kept once"
        );
        Ok(Some(timed.into_iter().map(timed::without_loop).collect()))
    }

    /// The segments of the last decode (Whisper's silence guesses dropped), `offset` seconds on.
    fn segments(&self, offset: f64) -> Result<Vec<Timed>, AsrError> {
        let mut out = Vec::new();
        for seg in self.state.as_iter() {
            let text = seg
                .to_str_lossy()
                .map_err(|e| AsrError::Inference(e.to_string()))?;
            let text = text.trim();
            let p = seg.no_speech_probability();
            if text.is_empty() || p > self.cfg.no_speech_threshold {
                tracing::debug!(text, no_speech = p, "dropping segment");
                continue;
            }
            let words = match self.decode.words {
                true => timed::words_of(&seg, self.ctx.token_eot(), offset),
                false => Vec::new(),
            };
            let segment = Segment {
                start: offset + seg.start_timestamp() as f64 / 100.0,
                end: offset + seg.end_timestamp() as f64 / 100.0,
                text: text.to_string(),
            };
            out.push(Timed { segment, words });
        }
        Ok(out)
    }
}

/// A decode slower than this (ms, and ms per second of audio context) is logged at info, with its
/// context and audio length: with tiny.en on two cores a turn at a 6 s context takes 0.1-0.3 s,
/// a whole 30 s window 1-2 s (larger models take longer: set RUST_LOG to hide it).
const SLOW_MS: f64 = 1000.0;
const SLOW_MS_PER_S: f64 = 150.0;

thread_local! {
    /// The token of the transcription under way on this thread, if it can be stopped.
    static STOPPING: std::cell::RefCell<Option<Cancel>> = const { std::cell::RefCell::new(None) };
}

/// whisper.cpp's log, to tracing (as whisper-rs's hook does), except that the "failed to encode"
/// of a transcription stopped on purpose (or given up as a loop) is only debug.
unsafe extern "C" fn whisper_log(
    level: whisper_rs::whisper_rs_sys::ggml_log_level,
    text: *const std::ffi::c_char,
    _: *mut c_void,
) {
    use whisper_rs::whisper_rs_sys as sys;
    if text.is_null() {
        return;
    }
    // SAFETY: whisper.cpp passes a NUL-terminated string that lives for the call.
    let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end();
    let stopped = STOPPING.with(|s| s.borrow().as_ref().is_some_and(Cancel::is_cancelled))
        || watch::ran_away_here();
    match level {
        _ if text.is_empty() => {}
        sys::ggml_log_level_GGML_LOG_LEVEL_ERROR if !stopped => {
            tracing::error!(target: "whisper", "{text}")
        }
        sys::ggml_log_level_GGML_LOG_LEVEL_WARN if !stopped => {
            tracing::warn!(target: "whisper", "{text}")
        }
        sys::ggml_log_level_GGML_LOG_LEVEL_INFO => tracing::info!(target: "whisper", "{text}"),
        _ => tracing::debug!(target: "whisper", "{text}"),
    }
}

impl Transcriber for WhisperModel {
    fn transcribe(&mut self, samples: &[f32], offset: f64) -> Result<Vec<Segment>, AsrError> {
        Ok(segments_of(self.transcribe_window(samples, offset)?))
    }

    fn transcribe_unless(
        &mut self,
        samples: &[f32],
        offset: f64,
        stop: &Cancel,
    ) -> Result<Vec<Segment>, AsrError> {
        self.stop = Some(stop.clone());
        STOPPING.with(|s| *s.borrow_mut() = Some(stop.clone()));
        let result = self.transcribe_window(samples, offset).map(segments_of);
        STOPPING.with(|s| *s.borrow_mut() = None);
        self.stop = None;
        result
    }

    fn set_language(&mut self, language: &str) -> Result<String, AsrError> {
        checks::language(&self.ctx, &self.name, language)?;
        Ok(std::mem::replace(
            &mut self.cfg.language,
            language.to_string(),
        ))
    }

    fn transcribe_timed(
        &mut self,
        samples: &[f32],
        offset: f64,
        how: Decode,
    ) -> Result<Vec<Timed>, AsrError> {
        if how.translate && !self.ctx.is_multilingual() {
            return Err(AsrError::EnglishOnly {
                model: self.name.clone(),
                language: "any but en (to translate)".into(),
            });
        }
        if how.translate {
            // A state that has translated once gives no segments the next time (whisper.cpp
            // 1.7, language "auto"): each translation starts from a fresh one.
            self.state = self
                .ctx
                .create_state()
                .map_err(|e| AsrError::Inference(e.to_string()))?;
        }
        self.decode = how;
        let result = self.transcribe_window(samples, offset);
        self.decode = Decode::default();
        result
    }

    fn is_multilingual(&self) -> bool {
        self.ctx.is_multilingual()
    }
}

fn segments_of(timed: Vec<Timed>) -> Vec<Segment> {
    timed.into_iter().map(|t| t.segment).collect()
}

/// How whisper.cpp is to decode a window at `audio_ctx` (`short`: less than the model's whole
/// context): the configured search, language and threads, the window's own way (translated,
/// words timed), nothing printed.
fn decoding(cfg: &AsrConfig, how: Decode, audio_ctx: i32, short: bool) -> FullParams<'_, '_> {
    let strategy = match cfg.beam_size {
        1 => SamplingStrategy::Greedy { best_of: 1 },
        n => SamplingStrategy::BeamSearch {
            beam_size: n as i32,
            patience: -1.0,
        },
    };
    let mut params = FullParams::new(strategy);
    params.set_n_threads(cfg.threads() as i32);
    params.set_language(Some(&cfg.language));
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_special(false);
    params.set_print_timestamps(false);
    params.set_no_context(true);
    params.set_suppress_nst(true);
    params.set_no_speech_thold(cfg.no_speech_threshold);
    params.set_audio_ctx(audio_ctx);
    params.set_translate(how.translate);
    params.set_token_timestamps(how.words);
    if short && !cfg.temperature_fallback {
        // No temperature fallback on the short context: a derailed decode would otherwise be
        // repeated at five temperatures (seconds of work) before the full-context retry.
        params.set_temperature_inc(0.0);
    }
    params
}

/// Signs that Whisper lost its way: a segment ends well after the audio does, or the same words
/// come back segment after segment (in any case: "and you tell me where the nearest train
/// station is." then "And you tell me ..." went through as a transcript).
/// `window` is the audio context in seconds: a short context often stretches the last timestamp a
/// little past the audio with the right text (2.2 s of audio, "0.00-4.00 What is the largest
/// ocean?"), so only a segment ending past the context itself counts.
pub fn derailed(segments: &[Segment], offset: f64, secs: f64, window: f64) -> bool {
    let past_end = segments
        .iter()
        .any(|s| s.end > offset + secs.max(window) + 1.0);
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let repeats = segments
        .windows(2)
        .any(|w| words(&w[0].text) == words(&w[1].text));
    past_end || repeats
}

/// True when no 30 ms frame of `samples` reaches `threshold` RMS.
pub fn is_silent(samples: &[f32], threshold: f32) -> bool {
    let frame = (SAMPLE_RATE as usize * 30) / 1000;
    samples.chunks(frame).all(|f| rms(f) < threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derailment_is_spotted() {
        let seg = |start: f64, end: f64, text: &str| Segment {
            start,
            end,
            text: text.into(),
        };
        assert!(!derailed(
            &[seg(10.0, 12.0, "a"), seg(12.0, 13.4, "b")],
            10.0,
            3.5,
            8.0
        ));
        // Past the audio but inside an 8 s context: the text is trusted.
        assert!(!derailed(&[seg(0.0, 4.0, "a")], 0.0, 2.2, 8.0));
        assert!(derailed(&[seg(10.0, 35.7, "a")], 10.0, 3.5, 8.0));
        assert!(derailed(
            &[seg(0.0, 1.0, "x y"), seg(1.0, 2.0, "x y")],
            0.0,
            3.0,
            8.0
        ));
        assert!(derailed(
            &[seg(0.0, 1.5, "and you go?"), seg(1.5, 3.0, "And you go.")],
            0.0,
            3.0,
            8.0
        ));
    }

    #[test]
    fn silence_detection_looks_at_the_loudest_frame() {
        let mut s = vec![0.001f32; 16_000];
        assert!(is_silent(&s, 0.01));
        s[8000..8480].iter_mut().for_each(|v| *v = 0.2);
        assert!(!is_silent(&s, 0.01));
    }
}
