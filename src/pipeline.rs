//! The live pipeline: audio frames in (a microphone or a recording), spoken answers out (a
//! speaker or a WAV timeline), every stage on its own thread, joined by bounded channels:
//!
//! ```text
//! source ─► vad ─► asr ─► llm (+ splitter) ─► tts ─► sink (speaker / WAV timeline)
//!                          ▲
//! frames ─► captioner ─────┘ (the newest caption, as context)
//! ```
//!
//! Interruption is by turn number: the VAD starts a new turn when the user starts speaking; every
//! stage drops work of older turns, the LLM stops between two tokens and the sink stops playing.
//! Shutdown is by dropping senders: when the source ends, each stage drains and returns in turn.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::asr::SAMPLE_RATE;
use crate::mic::AudioFrame;
use crate::vad::{Endpointer, SileroVad, VadEvent};

/// Pipeline settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Let the user interrupt: speech while seesay talks stops it and starts a new turn. Off
    /// (half duplex), the microphone is ignored from the end of a question until the answer has
    /// been spoken, so seesay never answers its own voice. Turn on with headphones or echo
    /// cancellation.
    pub barge_in: bool,
    /// Speak the first clause of an answer on its own once it has this many words (0: whole
    /// sentences only). Speech starts sooner.
    pub first_clause_words: usize,
    /// Microphone name (empty: the default input device).
    pub input_device: String,
    /// Speaker name (empty: the default output device).
    pub output_device: String,
    /// Seconds between camera / image-folder frames.
    pub frame_interval_s: f32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            barge_in: false,
            first_clause_words: 4,
            input_device: String::new(),
            output_device: String::new(),
            frame_interval_s: 2.0,
        }
    }
}

/// Where the user's voice comes from.
pub enum Input {
    File {
        path: PathBuf,
        pace: crate::mic::Pace,
    },
    Mic,
    /// Frames from elsewhere (a WebSocket client); the input ends when the sender is dropped.
    Frames(Receiver<AudioFrame>),
}

/// Where the answers go.
pub enum Output {
    /// A WAV file holding what a speaker would have played, silences included.
    File(PathBuf),
    Speaker,
    /// `Update::Audio` messages on `RunOptions::updates`, sent as soon as they are synthesised;
    /// the client plays them. A turn counts as playing until its audio's length has passed.
    Client,
}

pub struct RunOptions {
    pub input: Input,
    pub output: Output,
    /// An image, or a folder of images shown one after another, as the camera.
    pub image: Option<PathBuf>,
    /// Pictures from elsewhere (a WebSocket client's camera), captioned as they come.
    pub camera: Option<crate::camera::FrameReceiver>,
    pub metrics: Option<PathBuf>,
    /// Stop after this many answered turns.
    pub max_turns: Option<usize>,
    /// Where to report what happens, as it happens (speech, transcripts, answer text, audio for
    /// `Output::Client`, per-turn figures).
    pub updates: Option<Sender<Update>>,
}

/// What a pipeline reports to a client as it happens.
#[derive(Debug, Clone)]
pub enum Update {
    /// The user started speaking: turn `turn` begins; older answers stop.
    SpeechStarted { turn: u64 },
    /// What the user said.
    Transcript { turn: u64, text: String },
    /// The next piece of the answer, as the LLM writes it.
    AnswerText { turn: u64, text: String },
    /// Answer audio, mono at the voice's rate (`Output::Client` only).
    Audio { turn: u64, pcm: Vec<f32> },
    /// What the camera shows now.
    Caption { text: String },
    /// A turn was answered (or interrupted): its latency figures.
    TurnDone(TurnMetrics),
    /// A turn heard no words, or was interrupted before anything was said.
    TurnDropped { turn: u64 },
    /// A stage failed on this turn; the conversation goes on.
    TurnFailed { turn: u64, error: String },
}

/// The models a pipeline uses. Cloning shares them: `seesay serve` runs one pipeline per
/// conversation over the same models, and each stage locks its model for one step (an
/// utterance, an answer, a sentence, a picture).
#[derive(Clone)]
pub struct Models {
    pub asr: Arc<Mutex<crate::asr::WhisperModel>>,
    pub voice: Arc<Mutex<crate::tts::PiperVoice>>,
    pub llm: Arc<Mutex<Box<dyn crate::llm::ChatModel>>>,
    pub captioner: Option<Arc<Mutex<Box<dyn crate::caption::Captioner>>>>,
    /// The Silero VAD file; each pipeline loads its own (it keeps state, and is small) before its
    /// first frame.
    pub vad: PathBuf,
    pub voice_rate: u32,
}

impl Models {
    /// Loads every shared model (the captioner only if asked), so a missing one fails at once;
    /// the VAD is only found here.
    pub fn load(cfg: &crate::config::Config, captioner: bool) -> anyhow::Result<Models> {
        let store = crate::models::Store::from_config(&cfg.models)?;
        let asr = crate::cli::load_whisper(cfg)?;
        let voice = crate::cli::load_voice(cfg)?;
        let vad = store.resolve(&cfg.vad.model)?;
        let llm = crate::llm::open(&cfg.llm, &store)?;
        let captioner = match captioner {
            true => Some(Arc::new(Mutex::new(crate::caption::open(
                &cfg.vision,
                &store,
            )?))),
            false => None,
        };
        Ok(Models {
            voice_rate: voice.sample_rate,
            asr: Arc::new(Mutex::new(asr)),
            voice: Arc::new(Mutex::new(voice)),
            llm: Arc::new(Mutex::new(llm)),
            captioner,
            vad,
        })
    }
}

/// Locks a model; a poisoned lock (a panic mid-step) still serves the next one.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turn bookkeeping shared by the stages.
#[derive(Default)]
pub struct Turns {
    /// The turn being answered now; anything older is dropped. Shared with the LLM's cancel
    /// token and the speaker callback.
    current: Arc<AtomicU64>,
    /// The newest turn handed to ASR.
    handling: AtomicU64,
    /// The newest turn whose answer is over (spoken, dropped or failed).
    finished: AtomicU64,
}

impl Turns {
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }
    fn is_stale(&self, turn: u64) -> bool {
        turn < self.current()
    }
    fn begin(&self) -> u64 {
        self.current.fetch_add(1, Ordering::AcqRel) + 1
    }
    fn finish(&self, turn: u64) {
        self.finished.fetch_max(turn, Ordering::AcqRel);
    }
    /// Is seesay answering (thinking or speaking)?
    fn busy(&self) -> bool {
        self.finished.load(Ordering::Acquire) < self.handling.load(Ordering::Acquire)
    }
    /// Is nobody speaking and nothing being answered?
    fn idle(&self) -> bool {
        !self.busy() && self.handling.load(Ordering::Acquire) >= self.current()
    }
}

/// One utterance, cut by the VAD. A speculative one is the audio up to a pause that may turn out
/// to be the end: it is transcribed ahead, and the transcript used if nothing was said after it.
struct Utterance {
    turn: u64,
    audio: Vec<f32>,
    speech_end: u64,
    speculative: bool,
}

/// The transcript of an utterance.
struct Heard {
    turn: u64,
    text: String,
}

/// Text for the voice.
enum Say {
    Sentence { turn: u64, text: String },
    End { turn: u64 },
}

/// Audio for the sink, at the voice's rate.
enum Play {
    Audio { turn: u64, pcm: Vec<f32> },
    End { turn: u64 },
}

/// What happened in a turn, for the latency figures.
enum What {
    Started,
    Speech {
        start_s: f64,
        end_s: f64,
        end_at: Instant,
    },
    Transcript(String),
    NoWords,
    FirstToken,
    /// A piece of the answer as it is written.
    Delta(String),
    Answer {
        text: String,
        cancelled: bool,
    },
    FirstAudioReady,
    FirstAudio(Instant),
    Done {
        interrupted: bool,
        audio_s: f64,
    },
    Failed(String),
    Unspoken,
}

struct Event {
    turn: u64,
    at: Instant,
    what: What,
}

/// The figures of one answered turn, as written to the metrics file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TurnMetrics {
    pub turn: u64,
    pub transcript: String,
    pub answer: String,
    /// Where the user's speech began and ended, seconds from the start of the input.
    pub speech_start_s: f64,
    pub speech_end_s: f64,
    /// From the end of the user's speech: the VAD's decision, the final transcript, the first
    /// LLM token, the first synthesised audio, the first sample played.
    pub endpoint_ms: f64,
    pub transcript_ms: f64,
    pub first_token_ms: f64,
    pub first_audio_ready_ms: f64,
    pub voice_to_voice_ms: f64,
    /// Seconds of answer audio played.
    pub answer_audio_s: f64,
    /// The user spoke again before the answer was over.
    pub interrupted: bool,
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Collects events into per-turn figures; logs each finished turn and writes it as a JSON line.
fn collect(
    rx: Receiver<Event>,
    mut sink: Option<std::io::BufWriter<std::fs::File>>,
    updates: Option<Sender<Update>>,
) -> Vec<TurnMetrics> {
    use std::io::Write;
    let publish = |u: Update| {
        if let Some(tx) = &updates {
            let _ = tx.send(u);
        }
    };
    struct Partial {
        m: TurnMetrics,
        end_at: Option<Instant>,
    }
    let mut open: HashMap<u64, Partial> = HashMap::new();
    let mut done = Vec::new();
    for ev in rx {
        match ev.what {
            What::Started => {
                publish(Update::SpeechStarted { turn: ev.turn });
                continue;
            }
            What::Delta(text) => {
                publish(Update::AnswerText {
                    turn: ev.turn,
                    text,
                });
                continue;
            }
            _ => {}
        }
        let p = open.entry(ev.turn).or_insert_with(|| Partial {
            m: TurnMetrics {
                turn: ev.turn,
                ..Default::default()
            },
            end_at: None,
        });
        let since_end = |p: &Partial, at: Instant| p.end_at.map_or(0.0, |e| ms_between(e, at));
        match ev.what {
            What::Speech {
                start_s,
                end_s,
                end_at,
            } => {
                p.m.speech_start_s = start_s;
                p.m.speech_end_s = end_s;
                p.end_at = Some(end_at);
                p.m.endpoint_ms = since_end(p, ev.at);
            }
            What::Transcript(t) => {
                p.m.transcript_ms = since_end(p, ev.at);
                publish(Update::Transcript {
                    turn: ev.turn,
                    text: t.clone(),
                });
                p.m.transcript = t;
            }
            What::NoWords => {
                tracing::info!(turn = ev.turn, "heard no words; not answering");
                open.remove(&ev.turn);
                publish(Update::TurnDropped { turn: ev.turn });
            }
            What::FirstToken => p.m.first_token_ms = since_end(p, ev.at),
            What::Answer { text, cancelled } => {
                p.m.answer = text;
                p.m.interrupted |= cancelled;
            }
            What::FirstAudioReady => p.m.first_audio_ready_ms = since_end(p, ev.at),
            What::FirstAudio(at) => p.m.voice_to_voice_ms = since_end(p, at),
            What::Failed(error) => {
                tracing::error!(turn = ev.turn, "turn failed: {error}");
                open.remove(&ev.turn);
                publish(Update::TurnFailed {
                    turn: ev.turn,
                    error,
                });
            }
            What::Unspoken => {
                tracing::info!(
                    turn = ev.turn,
                    "no answer was spoken (interrupted or empty)"
                );
                open.remove(&ev.turn);
                publish(Update::TurnDropped { turn: ev.turn });
            }
            What::Started | What::Delta(_) => {}
            What::Done {
                interrupted,
                audio_s,
            } => {
                let Some(mut p) = open.remove(&ev.turn) else {
                    continue;
                };
                p.m.interrupted |= interrupted;
                p.m.answer_audio_s = audio_s;
                let m = p.m;
                tracing::info!(
                    turn = m.turn,
                    transcript = %m.transcript,
                    answer = %m.answer,
                    "turn {}: endpoint {:.0} ms, transcript {:.0} ms, first token {:.0} ms, first audio {:.0} ms{}",
                    m.turn, m.endpoint_ms, m.transcript_ms, m.first_token_ms, m.voice_to_voice_ms,
                    if m.interrupted { " (interrupted)" } else { "" }
                );
                if let Some(f) = &mut sink {
                    let line = serde_json::to_string(&m).unwrap_or_default();
                    if writeln!(f, "{line}").and_then(|_| f.flush()).is_err() {
                        tracing::error!("cannot write the metrics file");
                    }
                }
                publish(Update::TurnDone(m.clone()));
                done.push(m);
            }
        }
    }
    done
}

/// Everything the stages share.
struct Shared {
    turns: Turns,
    /// Sample index (16 kHz) of the newest frame the VAD has seen: the input's "now".
    input_pos: AtomicU64,
    /// Stop the source (end of the run, Ctrl-C, enough turns).
    stop: Arc<AtomicBool>,
    /// Drop queued audio instead of playing it out (Ctrl-C).
    abort: Arc<AtomicBool>,
    scene: Mutex<Option<String>>,
    t0: Instant,
    events: Sender<Event>,
    updates: Option<Sender<Update>>,
}

impl Shared {
    fn publish(&self, u: Update) -> bool {
        self.updates.as_ref().is_none_or(|tx| tx.send(u).is_ok())
    }

    fn event(&self, turn: u64, what: What) {
        let _ = self.events.send(Event {
            turn,
            at: Instant::now(),
            what,
        });
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

/// The VAD stage: frames in, utterances out; starts turns and interrupts answers.
fn vad_loop(
    mut vad: SileroVad,
    mut ep: Endpointer,
    barge_in: bool,
    rx: Receiver<AudioFrame>,
    tx: Sender<Utterance>,
    sh: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut ignoring = false;
    let mut last_at = sh.t0;
    for frame in rx {
        let end = frame.start + frame.samples.len() as u64;
        sh.input_pos.store(end, Ordering::Release);
        last_at = frame.at;
        if !barge_in && sh.turns.busy() {
            // Half duplex: seesay is answering; the microphone is not listened to.
            ignoring = true;
            ep.reset_at(end);
            continue;
        }
        if ignoring {
            ignoring = false;
            vad.reset();
        }
        let p = vad.step(&frame.samples)?;
        match ep.push(&frame.samples, p) {
            Some(VadEvent::Start { start }) => {
                let was_busy = sh.turns.busy();
                let turn = sh.turns.begin();
                sh.event(turn, What::Started);
                tracing::debug!(
                    turn,
                    at_s = start as f64 / SAMPLE_RATE as f64,
                    "speech started"
                );
                if was_busy {
                    tracing::info!(turn, "barge-in: the user speaks; the answer stops");
                }
            }
            Some(VadEvent::End { audio, speech_end }) => {
                let sent = utterance_ended(&sh, &tx, audio, speech_end, end, frame.at);
                if !sent {
                    return Ok(());
                }
            }
            Some(VadEvent::Pause { audio, speech_end }) => {
                let u = Utterance {
                    turn: sh.turns.current(),
                    audio,
                    speech_end,
                    speculative: true,
                };
                // Only if ASR is free: a speculation must never delay a real utterance.
                if let Err(crossbeam_channel::TrySendError::Disconnected(_)) = tx.try_send(u) {
                    return Ok(());
                }
            }
            None => {}
        }
    }
    // End of input: an utterance still under way is answered.
    if let Some(VadEvent::End { audio, speech_end }) = ep.flush() {
        let end = sh.input_pos.load(Ordering::Acquire);
        utterance_ended(&sh, &tx, audio, speech_end, end, last_at);
    }
    Ok(())
}

/// Reports the end of the user's speech and hands the utterance to ASR. `frame_end` is the sample
/// index just after the frame that decided it, heard at `frame_at`. Returns false when ASR is gone.
fn utterance_ended(
    sh: &Shared,
    tx: &Sender<Utterance>,
    audio: Vec<f32>,
    speech_end: u64,
    frame_end: u64,
    frame_at: Instant,
) -> bool {
    let turn = sh.turns.current();
    let behind = frame_end.saturating_sub(speech_end) as f64 / SAMPLE_RATE as f64;
    let end_at = frame_at
        .checked_sub(Duration::from_secs_f64(behind))
        .unwrap_or(frame_at);
    sh.event(
        turn,
        What::Speech {
            start_s: (speech_end as f64 - audio.len() as f64).max(0.0) / SAMPLE_RATE as f64,
            end_s: speech_end as f64 / SAMPLE_RATE as f64,
            end_at,
        },
    );
    sh.turns.handling.fetch_max(turn, Ordering::AcqRel);
    tx.send(Utterance {
        turn,
        audio,
        speech_end,
        speculative: false,
    })
    .is_ok()
}

/// The ASR stage: utterances in, transcripts out. Silence and noise end here.
fn asr_loop(
    asr: Arc<Mutex<crate::asr::WhisperModel>>,
    rx: Receiver<Utterance>,
    tx: Sender<Heard>,
    sh: Arc<Shared>,
) -> anyhow::Result<()> {
    // (turn, speech end, transcript) of the last speculative transcription.
    let mut ahead: Option<(u64, u64, String)> = None;
    for u in rx {
        if sh.turns.is_stale(u.turn) {
            if !u.speculative {
                sh.turns.finish(u.turn);
            }
            continue;
        }
        let reuse = match ahead.take() {
            Some((turn, end, text)) if !u.speculative && turn == u.turn && end == u.speech_end => {
                tracing::debug!(turn, "using the transcript made during the pause");
                Some(Ok(text))
            }
            _ => None,
        };
        let text = match reuse.unwrap_or_else(|| {
            lock(&asr)
                .transcribe(&u.audio, 0.0)
                .map(|segments| crate::transcript::plain_text(&segments))
        }) {
            Ok(text) => text,
            Err(e) if u.speculative => {
                tracing::debug!("speculative transcription failed: {e}");
                continue;
            }
            Err(e) => {
                sh.event(u.turn, What::Failed(format!("speech recognition: {e}")));
                sh.turns.finish(u.turn);
                continue;
            }
        };
        if u.speculative {
            ahead = Some((u.turn, u.speech_end, text));
            continue;
        }
        if text.trim().is_empty() {
            sh.event(u.turn, What::NoWords);
            sh.turns.finish(u.turn);
            continue;
        }
        sh.event(u.turn, What::Transcript(text.clone()));
        if tx.send(Heard { turn: u.turn, text }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The LLM stage: transcripts in, sentences out while the answer is being written.
fn llm_loop(
    llm: Arc<Mutex<Box<dyn crate::llm::ChatModel>>>,
    mut conv: crate::llm::Conversation,
    first_clause_words: usize,
    rx: Receiver<Heard>,
    tx: Sender<Say>,
    sh: Arc<Shared>,
) -> anyhow::Result<()> {
    // The prompt's fixed start (the system prompt with what the camera shows, and the turns so
    // far) is computed before anyone speaks, and again when the picture changes while nobody
    // speaks, so a question waits only for its own tokens.
    let mut scene: Option<String> = None;
    let mut warmed = false;
    loop {
        let h = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(h) => h,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let now = lock(&sh.scene).clone();
                if (!warmed || now != scene) && sh.turns.idle() {
                    scene = now;
                    conv.set_scene(scene.clone());
                    warmed = true;
                    if let Err(e) = lock(&llm).warm_up(&conv.preamble()) {
                        tracing::warn!("could not prefill the system prompt: {e}");
                    }
                }
                continue;
            }
        };
        if sh.turns.is_stale(h.turn) {
            sh.turns.finish(h.turn);
            continue;
        }
        scene = lock(&sh.scene).clone();
        conv.set_scene(scene.clone());
        // Held for the whole answer: one answer at a time per model, across conversations.
        let mut model = lock(&llm);
        let msgs = match conv.prompt_for(model.as_mut(), &h.text) {
            Ok(m) => m,
            Err(e) => {
                sh.event(h.turn, What::Failed(format!("language model: {e}")));
                sh.turns.finish(h.turn);
                continue;
            }
        };
        let cancel = crate::llm::Cancel::for_turn(sh.turns.current.clone(), h.turn);
        let mut splitter = crate::splitter::SentenceSplitter::new(first_clause_words);
        let mut first = true;
        let mut gone = false;
        let result = model.generate(&msgs, &cancel, &mut |chunk| {
            if first {
                first = false;
                sh.event(h.turn, What::FirstToken);
            }
            if sh.updates.is_some() {
                sh.event(h.turn, What::Delta(chunk.to_string()));
            }
            for text in splitter.push(chunk) {
                gone |= tx.send(Say::Sentence { turn: h.turn, text }).is_err();
            }
        });
        if gone {
            return Ok(());
        }
        match result {
            Ok((answer, finish)) => {
                let cancelled = finish == crate::llm::Finish::Cancelled;
                if !cancelled {
                    for text in splitter.finish() {
                        let _ = tx.send(Say::Sentence { turn: h.turn, text });
                    }
                }
                if !answer.is_empty() {
                    conv.record(&h.text, &answer);
                }
                sh.event(
                    h.turn,
                    What::Answer {
                        text: answer,
                        cancelled,
                    },
                );
            }
            Err(e) => sh.event(h.turn, What::Failed(format!("language model: {e}"))),
        }
        if tx.send(Say::End { turn: h.turn }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The TTS stage: sentences in, audio out; sentences of older turns are skipped.
fn tts_loop(
    voice: Arc<Mutex<crate::tts::PiperVoice>>,
    rate: u32,
    gap_ms: u32,
    rx: Receiver<Say>,
    tx: Sender<Play>,
    sh: Arc<Shared>,
) -> anyhow::Result<()> {
    let gap = (rate as u64 * gap_ms as u64 / 1000) as usize;
    let mut first_of: Option<u64> = None;
    for msg in rx {
        let out = match msg {
            Say::Sentence { turn, text } => {
                if sh.turns.is_stale(turn) {
                    continue;
                }
                let synthesized = lock(&voice).synthesize(&text);
                let mut pcm = match synthesized {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(turn, "speech synthesis failed for {text:?}: {e}");
                        continue;
                    }
                };
                if sh.turns.is_stale(turn) {
                    continue;
                }
                if first_of != Some(turn) {
                    first_of = Some(turn);
                    sh.event(turn, What::FirstAudioReady);
                }
                pcm.extend(std::iter::repeat_n(0.0, gap));
                Play::Audio { turn, pcm }
            }
            Say::End { turn } => Play::End { turn },
        };
        if tx.send(out).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A turn's audio waiting to be played.
struct Queued {
    turn: u64,
    pcm: Vec<f32>,
    pos: usize,
}

/// Sink bookkeeping common to the WAV timeline and the speaker.
struct TurnAudio {
    queue: VecDeque<Queued>,
    /// Turns whose audio is complete (End received).
    ended: Vec<u64>,
    /// Samples played per turn, and whether its first sample went out.
    played: HashMap<u64, usize>,
    answered: usize,
}

impl TurnAudio {
    fn new() -> TurnAudio {
        TurnAudio {
            queue: VecDeque::new(),
            ended: Vec::new(),
            played: HashMap::new(),
            answered: 0,
        }
    }

    fn take(&mut self, msg: Play) {
        match msg {
            Play::Audio { turn, pcm } => self.queue.push_back(Queued { turn, pcm, pos: 0 }),
            Play::End { turn } => self.ended.push(turn),
        }
    }

    /// Drops audio of stale turns; reports interrupted turns as done.
    fn drop_stale(&mut self, sh: &Shared, rate: u32) {
        let current = sh.turns.current();
        while self.queue.front().is_some_and(|q| q.turn < current) {
            self.queue.pop_front();
        }
        let stale: Vec<u64> = self
            .ended
            .iter()
            .copied()
            .filter(|&t| t < current)
            .collect();
        for t in stale {
            self.close(t, true, sh, rate);
        }
    }

    /// Turns whose audio has all been played are done.
    fn finish_played(&mut self, sh: &Shared, rate: u32) {
        let done: Vec<u64> = self
            .ended
            .iter()
            .copied()
            .filter(|&t| !self.queue.iter().any(|q| q.turn == t))
            .collect();
        for t in done {
            self.close(t, false, sh, rate);
        }
    }

    fn close(&mut self, turn: u64, interrupted: bool, sh: &Shared, rate: u32) {
        self.ended.retain(|&t| t != turn);
        let samples = self.played.remove(&turn).unwrap_or(0);
        sh.turns.finish(turn);
        if samples > 0 {
            self.answered += 1;
            sh.event(
                turn,
                What::Done {
                    interrupted,
                    audio_s: samples as f64 / rate as f64,
                },
            );
        } else {
            // Nothing was said (interrupted before the first word, or no answer).
            sh.event(turn, What::Unspoken);
        }
    }

    /// The next sample to play, or `None` when nothing is queued.
    fn next_sample(&mut self, sh: &Shared, at: impl FnOnce() -> Instant) -> Option<f32> {
        let q = self.queue.front_mut()?;
        let v = q.pcm[q.pos];
        let n = self.played.entry(q.turn).or_insert(0);
        if *n == 0 {
            sh.event(q.turn, What::FirstAudio(at()));
        }
        *n += 1;
        q.pos += 1;
        if q.pos >= q.pcm.len() {
            self.queue.pop_front();
        }
        Some(v)
    }
}

/// The sink for files: a timeline at the voice's rate that advances with the input, so the
/// output shows when each answer would have been heard.
fn timeline_loop(
    rate: u32,
    max_turns: Option<usize>,
    rx: Receiver<Play>,
    sh: Arc<Shared>,
) -> anyhow::Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::new();
    let mut audio = TurnAudio::new();
    let time_of = |pos: usize| sh.t0 + Duration::from_secs_f64(pos as f64 / rate as f64);
    let mut open = true;
    let mut aborted = false;
    while open {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(msg) => audio.take(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if !aborted && sh.abort.load(Ordering::Acquire) {
            // Ctrl-C: cancel the turn in flight everywhere and stop playing.
            aborted = true;
            sh.turns.begin();
            sh.stop.store(true, Ordering::Release);
        }
        audio.drop_stale(&sh, rate);
        let target = if open {
            (sh.input_pos.load(Ordering::Acquire) as f64 * rate as f64 / SAMPLE_RATE as f64)
                as usize
        } else if sh.abort.load(Ordering::Acquire) {
            out.len()
        } else {
            usize::MAX // end of input: play out what is left
        };
        while out.len() < target {
            let pos = out.len();
            match audio.next_sample(&sh, || time_of(pos)) {
                Some(v) => out.push(v),
                None if open => out.push(0.0),
                None => break,
            }
        }
        audio.finish_played(&sh, rate);
        if max_turns.is_some_and(|n| audio.answered >= n) {
            sh.stop.store(true, Ordering::Release);
        }
    }
    audio.queue.clear();
    for t in audio.ended.clone() {
        audio.close(t, true, &sh, rate);
    }
    Ok(out)
}

/// The sink for a speaker: audio goes to the device as it comes; the device callback drops
/// audio of older turns the moment a new turn starts.
fn speaker_loop(
    voice_rate: u32,
    device: String,
    max_turns: Option<usize>,
    rx: Receiver<Play>,
    sh: Arc<Shared>,
) -> anyhow::Result<Vec<f32>> {
    let spk = crate::speaker::LiveSpeaker::open(&device, sh.turns.current.clone(), sh.t0)?;
    let mut audio = TurnAudio::new();
    let mut open = true;
    let mut reported = 0u64;
    while open || !audio.queue.is_empty() || !audio.ended.is_empty() {
        if let Ok(e) = spk.errors.try_recv() {
            anyhow::bail!("the speaker failed: {e}");
        }
        if open {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(msg) => audio.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if sh.abort.load(Ordering::Acquire) {
            sh.turns.begin();
            sh.stop.store(true, Ordering::Release);
            break;
        }
        audio.drop_stale(&sh, voice_rate);
        // Hand whole sentences to the device, resampled to its rate.
        while let Some(q) = audio.queue.pop_front() {
            let pcm = crate::audio::resample(&q.pcm, voice_rate, spk.rate)?;
            *audio.played.entry(q.turn).or_insert(0) += q.pcm.len();
            spk.queued.fetch_add(pcm.len() as u64, Ordering::Relaxed);
            for piece in pcm.chunks(1024) {
                let chunk = crate::speaker::Chunk {
                    turn: q.turn,
                    samples: piece.to_vec(),
                };
                if spk.tx.send(chunk).is_err() {
                    anyhow::bail!("the speaker stream ended");
                }
            }
        }
        let started = spk.started_turn.load(Ordering::Acquire);
        if started > reported {
            reported = started;
            let at = sh.t0 + Duration::from_nanos(spk.started_ns.load(Ordering::Acquire));
            sh.event(started, What::FirstAudio(at));
        }
        if spk.queued.load(Ordering::Relaxed) == 0 {
            audio.finish_played(&sh, voice_rate);
        }
        if max_turns.is_some_and(|n| audio.answered >= n) {
            sh.stop.store(true, Ordering::Release);
        }
    }
    Ok(Vec::new())
}

/// The sink for a client (a WebSocket): audio goes out as soon as it is synthesised and the client
/// plays it in order. The client's playback is modelled: each piece plays after the one before,
/// or at once if that one is over. A turn counts as playing until its last piece has, which is
/// what keeps a half-duplex conversation deaf to its own answer; an interruption counts only the
/// audio that had time to play.
fn client_loop(
    rate: u32,
    max_turns: Option<usize>,
    rx: Receiver<Play>,
    sh: Arc<Shared>,
) -> anyhow::Result<Vec<f32>> {
    let mut audio = TurnAudio::new();
    // When each turn's audio sent so far will have been played.
    let mut play_end: HashMap<u64, Instant> = HashMap::new();
    let secs = |samples: usize| Duration::from_secs_f64(samples as f64 / rate as f64);
    // Samples of `turn` played by now, of `sent`.
    let heard = |play_end: &HashMap<u64, Instant>, turn: u64, sent: usize| {
        let left = play_end.get(&turn).map_or(0.0, |e| {
            e.saturating_duration_since(Instant::now()).as_secs_f64()
        });
        sent.saturating_sub((left * rate as f64) as usize)
    };
    let mut gone = false;
    while !gone {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(Play::Audio { turn, pcm }) if !sh.turns.is_stale(turn) => {
                let now = Instant::now();
                let start = match play_end.get(&turn) {
                    Some(e) => (*e).max(now),
                    None => {
                        sh.event(turn, What::FirstAudio(now));
                        now
                    }
                };
                play_end.insert(turn, start + secs(pcm.len()));
                *audio.played.entry(turn).or_insert(0) += pcm.len();
                if !sh.publish(Update::Audio { turn, pcm }) {
                    // The client is gone: nothing more to play to.
                    sh.turns.begin();
                    sh.stop.store(true, Ordering::Release);
                    gone = true;
                }
            }
            Ok(Play::Audio { .. }) => {}
            Ok(Play::End { turn }) => audio.ended.push(turn),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => gone = true,
        }
        if sh.abort.load(Ordering::Acquire) {
            sh.turns.begin();
            sh.stop.store(true, Ordering::Release);
        }
        let current = sh.turns.current();
        for turn in audio.ended.clone() {
            let sent = audio.played.get(&turn).copied().unwrap_or(0);
            let played = heard(&play_end, turn, sent);
            // Over when all of it has played, or cut short by a newer turn (or the client
            // leaving): then what had not played by now never will.
            if played >= sent || turn < current || gone {
                audio.played.insert(turn, played);
                play_end.remove(&turn);
                audio.close(turn, played < sent, &sh, rate);
            }
        }
        if max_turns.is_some_and(|n| audio.answered >= n) {
            sh.stop.store(true, Ordering::Release);
        }
    }
    Ok(Vec::new())
}

/// What a run produced.
pub struct RunSummary {
    pub turns: Vec<TurnMetrics>,
    /// Seconds of output written (file output only).
    pub output_s: f64,
    /// Microphone buffers dropped because the pipeline fell behind.
    pub mic_dropped: u64,
}

/// Loads the models, then runs the pipeline until the input ends (or the microphone is stopped
/// by `stop`).
pub fn run(
    cfg: &crate::config::Config,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
) -> anyhow::Result<RunSummary> {
    // Load everything before the first frame, so a missing model fails at once.
    let t_load = Instant::now();
    let models = Models::load(cfg, opts.image.is_some() || opts.camera.is_some())?;
    tracing::info!(ms = t_load.elapsed().as_millis() as u64, "models loaded");
    run_with(cfg, &models, opts, stop, abort)
}

/// Runs the pipeline on models already loaded (and perhaps shared with other pipelines).
pub fn run_with(
    cfg: &crate::config::Config,
    models: &Models,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
) -> anyhow::Result<RunSummary> {
    let vad = SileroVad::load(&models.vad)?;
    let captioner = match (&opts.image, &opts.camera) {
        (None, None) => None,
        (Some(_), Some(_)) => anyhow::bail!("an image and a camera at once: pick one"),
        _ => Some(
            models
                .captioner
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the models were loaded without a captioner"))?,
        ),
    };
    let frames = match &opts.image {
        Some(p) => crate::camera::image_files(p)?,
        None => Vec::new(),
    };
    if matches!(opts.output, Output::Client) && opts.updates.is_none() {
        anyhow::bail!("client output needs an updates channel");
    }
    let metrics_file = match &opts.metrics {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| anyhow::anyhow!("cannot create metrics file {}: {e}", p.display()),
        )?)),
        None => None,
    };

    let (tx_ev, rx_ev) = crossbeam_channel::unbounded::<Event>();
    let sh = Arc::new(Shared {
        turns: Turns::default(),
        input_pos: AtomicU64::new(0),
        stop: stop.clone(),
        abort,
        scene: Mutex::new(None),
        t0: Instant::now(),
        events: tx_ev,
        updates: opts.updates.clone(),
    });
    let collector = {
        let updates = opts.updates.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || collect(rx_ev, metrics_file, updates))?
    };

    // A caption for the first image before anything is heard, then the rest in the background.
    let mut stages: Vec<(&str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
    let mut pictures = opts.camera;
    if let (Some(cap), Some(first)) = (&captioner, frames.first()) {
        let img = crate::caption::load_image(first, cfg.vision.max_side)?;
        let text = lock(cap).caption(&img)?;
        tracing::info!(image = %first.display(), caption = %text, "the camera shows");
        sh.publish(Update::Caption { text: text.clone() });
        *lock(&sh.scene) = Some(text);
        if frames.len() > 1 {
            let (tx_frame, rx_frame) = crate::camera::frame_slot();
            let rest = frames[1..].to_vec();
            let interval = Duration::from_secs_f32(cfg.pipeline.frame_interval_s.max(0.05));
            let max_side = cfg.vision.max_side;
            stages.push((
                "frames",
                spawn("frames", move || {
                    crate::camera::play_files(&rest, interval, false, max_side, &tx_frame);
                    Ok(())
                })?,
            ));
            pictures = Some(rx_frame);
        }
    }
    if let (Some(cap), Some(rx_frame)) = (captioner, pictures) {
        let sh2 = sh.clone();
        stages.push((
            "captioner",
            spawn("captioner", move || {
                while let Ok(frame) = rx_frame.channel().recv() {
                    let captioned = lock(&cap).caption(&frame.image);
                    match captioned {
                        Ok(text) => {
                            tracing::info!(image = %frame.source, caption = %text, "the camera shows");
                            sh2.publish(Update::Caption { text: text.clone() });
                            *lock(&sh2.scene) = Some(text);
                        }
                        Err(e) => tracing::warn!("captioning {} failed: {e}", frame.source),
                    }
                }
                Ok(())
            })?,
        ));
    }

    let (tx_frames, mut rx_frames) = crossbeam_channel::bounded::<AudioFrame>(64);
    let (tx_utt, rx_utt) = crossbeam_channel::bounded::<Utterance>(2);
    let (tx_heard, rx_heard) = crossbeam_channel::bounded::<Heard>(2);
    let (tx_say, rx_say) = crossbeam_channel::bounded::<Say>(16);
    let (tx_play, rx_play) = crossbeam_channel::bounded::<Play>(16);

    let mic_dropped = Arc::new(AtomicU64::new(0));
    let source = match opts.input {
        Input::File { path, pace } => Some(crate::mic::file_source(
            &path,
            pace,
            Duration::from_secs(1),
            stop.clone(),
            tx_frames,
        )?),
        Input::Mic => Some(crate::mic::mic_source(
            &cfg.pipeline.input_device,
            stop.clone(),
            mic_dropped.clone(),
            tx_frames,
        )?),
        Input::Frames(rx) => {
            rx_frames = rx;
            None
        }
    };

    {
        let sh2 = sh.clone();
        let ep = Endpointer::new(&cfg.vad);
        let barge_in = cfg.pipeline.barge_in;
        stages.push((
            "vad",
            spawn("vad", move || {
                vad_loop(vad, ep, barge_in, rx_frames, tx_utt, sh2)
            })?,
        ));
    }
    {
        let sh2 = sh.clone();
        let asr = models.asr.clone();
        stages.push((
            "asr",
            spawn("asr", move || asr_loop(asr, rx_utt, tx_heard, sh2))?,
        ));
    }
    {
        let sh2 = sh.clone();
        let conv = crate::llm::Conversation::new(&cfg.llm);
        let words = cfg.pipeline.first_clause_words;
        let llm = models.llm.clone();
        stages.push((
            "llm",
            spawn("llm", move || {
                llm_loop(llm, conv, words, rx_heard, tx_say, sh2)
            })?,
        ));
    }
    let rate = models.voice_rate;
    {
        let sh2 = sh.clone();
        let gap = cfg.tts.sentence_silence_ms;
        let voice = models.voice.clone();
        stages.push((
            "tts",
            spawn("tts", move || {
                tts_loop(voice, rate, gap, rx_say, tx_play, sh2)
            })?,
        ));
    }
    let sink = {
        let sh2 = sh.clone();
        let max = opts.max_turns;
        match &opts.output {
            Output::File(_) => spawn("sink", move || timeline_loop(rate, max, rx_play, sh2))?,
            Output::Client => spawn("client", move || client_loop(rate, max, rx_play, sh2))?,
            Output::Speaker => {
                let dev = cfg.pipeline.output_device.clone();
                spawn("speaker", move || {
                    speaker_loop(rate, dev, max, rx_play, sh2)
                })?
            }
        }
    };

    let mut first_err: Option<anyhow::Error> = None;
    let sink_result = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?;
    let out = match sink_result {
        Ok(o) => o,
        Err(e) => {
            // The sink is gone: stop the source so everything upstream drains.
            stop.store(true, Ordering::Release);
            sh.turns.begin();
            first_err = Some(e);
            Vec::new()
        }
    };
    match source.map(JoinHandle::join) {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => {
            first_err.get_or_insert(e.into());
        }
        Some(Err(_)) => {
            first_err.get_or_insert(anyhow::anyhow!("the audio source panicked"));
        }
    }
    for (name, h) in stages {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e.context(format!("{name} stage")));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("the {name} stage panicked"));
            }
        }
    }
    drop(sh);
    let turns = collector
        .join()
        .map_err(|_| anyhow::anyhow!("the metrics thread panicked"))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    if let Output::File(path) = &opts.output {
        crate::audio::write_wav(path, &out, rate)?;
    }
    Ok(RunSummary {
        turns,
        output_s: out.len() as f64 / rate as f64,
        mic_dropped: mic_dropped.load(Ordering::Relaxed),
    })
}
