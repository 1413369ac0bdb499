//! The messages between the pipeline's stages, and what it reports to the outside. Data carries
//! its turn number, so every stage can drop work of a turn that is over.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::stages::camera::Frame;
use crate::stages::Cancel;

/// What a pipeline reports to a client as it happens.
#[derive(Debug, Clone)]
pub enum Update {
    /// The user started speaking: turn `turn` begins; older answers stop.
    SpeechStarted { turn: u64 },
    /// The wake word was heard (`pipeline.wake_word`): seesay listens.
    WakeWord { word: String },
    /// What the user said.
    Transcript { turn: u64, text: String },
    /// The next piece of the answer, as the LLM writes it.
    AnswerText { turn: u64, text: String },
    /// Answer audio, mono at the voice's rate (`Output::Client` only).
    Audio { turn: u64, pcm: Vec<f32> },
    /// A new scene was described: what the camera shows now, and the frame described. Sent
    /// once per scene (a frame of the scene last described is not described again).
    Caption { text: String, frame: Frame },
    /// A turn was answered (or interrupted): its latency figures.
    TurnDone(TurnMetrics),
    /// A turn ended without an answer being spoken: `reason` says why ("no words", "interrupted",
    /// "nothing to say", "superseded", "the conversation ended").
    TurnDropped { turn: u64, reason: &'static str },
    /// A stage failed on this turn; the conversation goes on.
    TurnFailed { turn: u64, error: String },
    /// Speech heard during an answer was let go, not taken as a question: `why` says what it
    /// was taken for ("no words", "a backchannel", "seesay's own voice"), `heard` what the
    /// recogniser heard.
    SpeechIgnored { heard: String, why: &'static str },
}

/// Why an utterance goes to ASR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The user's turn is over: transcribe it and answer.
    Final,
    /// The audio up to a pause that may turn out to be the end: transcribed ahead (the
    /// transcript is used if nothing was said after it) and read by the language model.
    Pause,
    /// Speech heard while seesay answers (`speech_end` holds where it started): do its words
    /// mean to interrupt?
    Probe,
}

/// One utterance, cut by the VAD.
pub(crate) struct Utterance {
    pub turn: u64,
    pub audio: Vec<f32>,
    pub speech_end: u64,
    pub purpose: Purpose,
    /// A speculation's token: cancelled once it no longer matters (the user went on speaking,
    /// or a pause superseded a reading), it is dropped, or stopped while being transcribed.
    pub stop: Option<Cancel>,
    /// A typed question's words: nothing to transcribe (`audio` is empty).
    pub typed: Option<String>,
}

/// The transcript of an utterance. A speculative one (of the audio up to a pause) is only
/// prefilled by the language model, so that its answer starts sooner if the pause was the end.
pub(crate) struct Heard {
    pub turn: u64,
    pub text: String,
    pub speculative: bool,
    /// Where the utterance's speech ended (sample index), to match a speculation to its pause.
    pub speech_end: u64,
}

/// What the later stages tell the VAD stage about its speculations.
pub(crate) enum Feedback {
    /// The language model's reading of the transcript up to a pause: the probability that the
    /// user's message ends there (`None`: no transcript, or the model cannot tell).
    EndOfTurn {
        turn: u64,
        speech_end: u64,
        text_p: Option<f32>,
    },
    /// A probe's transcript: the speech heard during an answer that began at sample `start`.
    Heard { start: u64, text: String },
}

/// How a turn's speech was judged over.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ending {
    /// "model" (judged complete at a pause), "silence", "length" or "input end".
    pub by: &'static str,
    pub audio_p: Option<f32>,
    pub text_p: Option<f32>,
    /// From the pause being noticed to the decision.
    pub decision_ms: f64,
}

/// Text for the voice.
pub(crate) enum Say {
    Sentence {
        turn: u64,
        text: String,
    },
    /// A sentence of an answer written ahead (the user may not be done): synthesised and held
    /// until it is released or discarded.
    Ahead {
        turn: u64,
        text: String,
        /// Cancelled once the answer is not wanted: the sentence is then not synthesised
        /// (only read here, never cancelled: see `Cancel::cancel`).
        stop: Cancel,
    },
    /// The answer written ahead is the turn's: its held audio plays, in order, before what
    /// follows.
    Release {
        turn: u64,
    },
    /// The answer written ahead is not wanted (the user went on, or said something else): its
    /// held audio is dropped unheard.
    Discard {
        turn: u64,
    },
    End {
        turn: u64,
    },
}

/// A pause judged not over, but maybe over: the language model may write the answer ahead, to
/// be played at once if the turn ends there (`pipeline.preemptive_answer`).
#[derive(Debug, Clone)]
pub(crate) struct Ahead {
    pub turn: u64,
    pub speech_end: u64,
    /// Cancelled once the user goes on speaking after the pause.
    pub stop: Cancel,
}

/// Audio for the sink, at the voice's rate.
pub(crate) enum Play {
    Audio { turn: u64, pcm: Vec<f32> },
    End { turn: u64 },
}

/// What happened in a turn, for the latency figures.
pub(crate) enum What {
    Speech {
        start_s: f64,
        end_s: f64,
        end_at: Instant,
        ending: Ending,
    },
    Transcript(String),
    FirstToken,
    /// A piece of the answer as it is written.
    Delta(String),
    Answer {
        text: String,
        cancelled: bool,
        /// The tools called for it.
        calls: Vec<ToolCall>,
    },
    /// Something said outside the user's turns (a timer's end), as this turn of its own.
    Announcement(String),
    FirstAudioReady,
    FirstAudio(Instant),
    Done {
        interrupted: bool,
        audio_s: f64,
    },
    Failed(String),
    /// The turn ended without a word spoken, for this reason.
    Dropped(&'static str),
    /// What came of an answer written ahead at a pause: "used", "dropped" or "redone".
    Preemptive(&'static str),
    /// The VAD stage began the turn (the user started speaking).
    Began,
    /// Speech began while the answer was being given (an interruption, a backchannel, a
    /// cough, or seesay's own voice).
    SpeechDuringAnswer,
}

/// Something that happened in a turn, and when.
pub(crate) struct Event {
    pub turn: u64,
    pub at: Instant,
    pub what: What,
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
    /// What ended the user's turn: "model" (a pause judged final by the end-of-turn
    /// signals), "unsure" (a pause they judged not over, but only just, lasted
    /// `turn::patience_ms`), "silence" (`turn.max_silence_ms`, or `vad.min_silence_ms` without
    /// them), "typed",
    /// "length" or "input end"; the two signals at the last pause (probabilities that the turn
    /// was over: Smart Turn's, the language model's), and the time from noticing that pause to
    /// the decision.
    pub ended_by: String,
    pub turn_audio_p: Option<f32>,
    pub turn_text_p: Option<f32>,
    pub decision_ms: f64,
    /// Times speech began during the answer, whether or not it interrupted it (a backchannel,
    /// a cough, seesay's own voice coming back, or the user).
    pub speech_during_answer: u32,
    /// The tools the model called for this answer.
    pub tool_calls: Vec<ToolCall>,
    /// This turn is no answer but something seesay said on its own (a timer's end).
    pub announcement: bool,
    /// Seconds from the start of the run at which the answer's (or announcement's) text was
    /// complete.
    pub said_at_s: f64,
    /// The answer written ahead at a doubted pause (`pipeline.preemptive_answer`): "used" (it
    /// was this answer, begun before the turn ended), "redone" (the final
    /// transcript said something else: answered afresh), "dropped" (the user went on after the
    /// pause); `None` when none was written.
    #[serde(default)]
    pub preemptive: Option<String>,
}

/// One tool call of a turn, in the per-turn figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: serde_json::Value,
    /// What the model was told (the tool's text or the error).
    pub result: String,
    pub ms: f64,
    pub ok: bool,
    /// Seconds from the start of the run at which the call ended.
    pub at_s: f64,
}
