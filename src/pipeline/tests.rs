//! The pipeline's plumbing on fake stages, in milliseconds: turns in order, barge-in, half
//! duplex, shutdown, failures and panics. The fakes stand in for the models behind the stage
//! traits; the threads, channels, turn clock and sinks are the real ones.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::error::PipelineError;
use super::messages::Update;
use super::models::{lock, Models};
use super::{run_with, Input, Output, RunOptions, RunSummary};
use crate::config::Config;
use crate::stages::camera::FrameSource;
use crate::stages::caption::Captioner;
use crate::stages::llm::ChatModel;
use crate::stages::mic::Framer;
use crate::stages::vad::{SpeechDetector, FRAME};

use super::fakes::*;

/// A pipeline on fake stages, fed frame by frame, with the client's updates collected.
pub(super) struct Harness {
    framer: Option<Framer>,
    typed: crossbeam_channel::Sender<String>,
    updates: Receiver<Update>,
    seen: Vec<Update>,
    run: JoinHandle<Result<RunSummary, PipelineError>>,
    pub(super) models: Models,
    tokens: Arc<AtomicUsize>,
}

pub(super) fn start(barge_in: bool, f: Fakes) -> Harness {
    start_seeing(barge_in, f, None)
}

/// What a test pipeline looks at: a captioner, and a source asked every `interval_s`, its
/// pictures described when they differ by `scene_change`.
pub(super) struct Sight {
    pub(super) captioner: Box<dyn Captioner>,
    pub(super) source: Box<dyn FrameSource>,
    pub(super) interval_s: f32,
    pub(super) scene_change: f32,
}

/// `start`, with eyes.
pub(super) fn start_seeing(barge_in: bool, f: Fakes, sight: Option<Sight>) -> Harness {
    let (captioner, source, interval_s, scene_change) = match sight {
        Some(s) => (
            Some(s.captioner),
            Some(s.source),
            s.interval_s,
            s.scene_change,
        ),
        None => (None, None, 1.0, 0.03),
    };
    let tokens = Arc::new(AtomicUsize::new(0));
    let fail_at = f.vad_fails_at;
    let models = Models::new(
        Box::new(FakeAsr {
            panic_on: f.asr_panics_on,
            split: f.split,
            short: f.asr_short,
            ms: f.asr_ms,
            timer_on: f.timer_on,
        }),
        Box::new(FakeVoice {
            ms: f.voice_ms,
            fails_on: f.voice_fails_on,
        }),
        {
            let tokens = tokens.clone();
            Arc::new(move || {
                Ok(Box::new(FakeLlm {
                    words: f.words,
                    long: f.long,
                    token_ms: f.token_ms,
                    tokens: tokens.clone(),
                    timer_on: f.timer_on,
                }) as Box<dyn ChatModel>)
            })
        },
        captioner,
        Arc::new(move || Ok(Box::new(FakeVad { frames: 0, fail_at }) as Box<dyn SpeechDetector>)),
    );
    let mut models = match f.semantic {
        true => models.with_turn(Box::new(FakeTurn)),
        false => models,
    };
    models.llm_sees = f.llm_sees;
    let mut cfg = Config::default();
    cfg.pipeline.barge_in = barge_in.into();
    cfg.turn.semantic = f.semantic;
    // Longer than any test waits (unless it says): only a decision at a pause ends a turn.
    cfg.turn.max_silence_ms = f.max_silence_ms;
    cfg.turn.unsure_silence_ms = f.unsure_silence_ms;
    cfg.tts.sentence_silence_ms = 0;
    cfg.vad.min_speech_ms = 64;
    cfg.vad.min_silence_ms = 96;
    cfg.vad.pre_roll_ms = 32;
    cfg.pipeline.frame_interval_s = interval_s;
    cfg.pipeline.scene_change = scene_change;
    cfg.tools.live = true;
    let (tx_frames, rx_frames) = crossbeam_channel::bounded(64);
    let (tx_up, updates) = crossbeam_channel::unbounded();
    let (typed, rx_typed) = crossbeam_channel::bounded(4);
    let m = models.clone();
    let run = std::thread::spawn(move || {
        let opts = RunOptions {
            input: Input::Frames(rx_frames),
            output: Output::Client,
            image: None,
            camera: None,
            frames: source,
            metrics: None,
            max_turns: None,
            updates: Some(tx_up),
            memory: None,
            typed: Some(rx_typed),
            on_listening: None,
        };
        let flag = || Arc::new(AtomicBool::new(false));
        run_with(&cfg, &m, opts, flag(), flag())
    });
    Harness {
        framer: Some(Framer::new(tx_frames)),
        typed,
        updates,
        seen: Vec::new(),
        run,
        models,
        tokens,
    }
}

impl Harness {
    pub(super) fn push(&mut self, samples: &[f32]) {
        if let Some(f) = &mut self.framer {
            if !f.push(samples, |_| Instant::now()) {
                self.framer = None; // the pipeline stopped reading
            }
        }
    }

    /// Question `id`: 10 frames of speech, then enough silence to end the utterance.
    pub(super) fn ask(&mut self, id: u32) {
        self.push(&vec![0.3 + id as f32 / 10.0; FRAME * 10]);
        self.push(&vec![0.0; FRAME * 5]);
    }

    /// A question typed by the client.
    pub(super) fn type_question(&self, text: &str) {
        self.typed.send(text.into()).unwrap();
    }

    /// Collects updates until one matches, and returns it (fails after a few seconds).
    pub(super) fn wait_for(&mut self, what: &str, hit: impl Fn(&Update) -> bool) -> Update {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.updates.recv_timeout(left) {
                Ok(u) => {
                    self.seen.push(u.clone());
                    if hit(&u) {
                        return u;
                    }
                }
                Err(_) => panic!("no {what} within 5 s; saw {}", brief(&self.seen)),
            }
        }
    }

    /// The updates so far.
    pub(super) fn seen(&mut self) -> &[Update] {
        self.seen.extend(self.updates.try_iter());
        &self.seen
    }

    /// Drops the source and waits for the run to end; returns its result and every update.
    pub(super) fn finish(
        mut self,
    ) -> (
        Result<RunSummary, PipelineError>,
        Vec<Update>,
        Models,
        Arc<AtomicUsize>,
    ) {
        self.framer = None;
        let result = self.run.join().expect("run_with itself never panics");
        self.seen.extend(self.updates.try_iter());
        (result, self.seen, self.models, self.tokens)
    }
}

/// The updates, audio as its length only.
pub(super) fn brief(seen: &[Update]) -> String {
    let line = |u: &Update| match u {
        Update::Audio { turn, pcm } => format!("Audio {{ turn: {turn}, samples: {} }}", pcm.len()),
        other => format!("{other:?}"),
    };
    seen.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// What was heard, turn by turn.
pub(super) fn transcripts(summary: &RunSummary) -> Vec<&str> {
    summary
        .turns
        .iter()
        .map(|m| m.transcript.as_str())
        .collect()
}

pub(super) fn started(u: &Update) -> Option<u64> {
    match u {
        Update::SpeechStarted { turn } => Some(*turn),
        _ => None,
    }
}

pub(super) fn done(u: &Update, t: u64) -> bool {
    matches!(u, Update::TurnDone(m) if m.turn == t)
}

/// Every stage thread has ended: none holds a model any more (the LLM stage owns its chat model
/// outright; it is dropped with the thread, and the fake counts that too).
pub(super) fn no_stage_left(models: &Models, tokens: &Arc<AtomicUsize>) {
    assert_eq!(Arc::strong_count(&models.asr), 1, "an ASR thread is left");
    assert_eq!(Arc::strong_count(&models.voice), 1, "a TTS thread is left");
    // The test's own handle and the maker's.
    assert_eq!(Arc::strong_count(tokens), 2, "an LLM thread is left");
}

/// Turns 1..=`last` each end exactly once for the client: done, dropped or failed.
fn each_ends_once(seen: &[Update], last: u64) {
    for turn in 1..=last {
        let ends = seen
            .iter()
            .filter(|u| match u {
                Update::TurnDone(m) => m.turn == turn,
                Update::TurnDropped { turn: t, .. } | Update::TurnFailed { turn: t, .. } => {
                    *t == turn
                }
                _ => false,
            })
            .count();
        assert_eq!(ends, 1, "turn {turn} ended {ends} times: {}", brief(seen));
    }
}

pub(super) fn under_a_second(t: Instant) {
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn two_turns_are_answered_in_order() {
    let t = Instant::now();
    let mut h = start(false, Fakes::default());
    h.ask(1);
    h.wait_for("turn 1 done", |u| done(u, 1));
    h.ask(2);
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 1", "question 2"]);
    assert!(summary.turns[1]
        .answer
        .starts_with("Answer0 to question 2."));
    assert!(summary.turns.iter().all(|m| !m.interrupted));
    let order: Vec<u64> = seen.iter().filter_map(started).collect();
    assert_eq!(order, [1, 2]);
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

/// Question 1 asked and its answer playing: a long one, slow to write and slow to speak, so
/// that sentences and audio queue up.
pub(super) fn answering_slowly(barge_in: bool) -> Harness {
    let mut h = start(
        barge_in,
        Fakes {
            words: 200,
            long: &[1],
            token_ms: 3,
            voice_ms: 15,
            ..Fakes::default()
        },
    );
    h.ask(1);
    h.wait_for("audio of turn 1", |u| {
        matches!(u, Update::Audio { turn: 1, .. })
    });
    h
}

#[test]
fn barge_in_cancels_the_answer_within_one_token_and_drops_its_audio() {
    let t = Instant::now();
    let mut h = answering_slowly(true);
    h.push(&vec![0.5; FRAME * 10]); // the user speaks over the answer
    h.wait_for("turn 2 starting", |u| started(u) == Some(2));
    let tokens_at_barge_in = h.tokens.load(Ordering::SeqCst);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, models, tokens) = h.finish();
    result.unwrap();
    // Turn 1 wrote at most one more token after turn 2 began (the one under way), then stopped.
    let turn1_tokens = seen
        .iter()
        .filter(|u| matches!(u, Update::AnswerText { turn: 1, .. }))
        .count();
    assert!(turn1_tokens < 200, "turn 1 was not cancelled");
    assert!(
        turn1_tokens <= tokens_at_barge_in + 1,
        "{turn1_tokens} tokens of turn 1, {tokens_at_barge_in} when turn 2 began"
    );
    // Nothing of turn 1 reached the client after turn 2 began: its queued audio was dropped.
    let began = seen.iter().position(|u| started(u) == Some(2)).unwrap();
    assert!(
        !seen[began..]
            .iter()
            .any(|u| matches!(u, Update::Audio { turn: 1, .. })),
        "audio of turn 1 after turn 2 began"
    );
    let m1 = seen
        .iter()
        .find_map(|u| match u {
            Update::TurnDone(m) if m.turn == 1 => Some(m.clone()),
            _ => None,
        })
        .expect("turn 1 reported");
    assert!(m1.interrupted);
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn dropping_the_source_joins_every_thread() {
    let t = Instant::now();
    let mut h = start(false, Fakes::default());
    h.ask(1);
    // The source ends while the answer is still being written.
    let (result, _, models, tokens) = h.finish();
    let summary = result.unwrap();
    assert!(summary.turns.len() <= 1);
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn a_failing_stage_ends_the_run_with_its_error() {
    let t = Instant::now();
    let mut h = start(
        false,
        Fakes {
            vad_fails_at: Some(8),
            ..Fakes::default()
        },
    );
    h.ask(1); // the VAD breaks on its 8th frame
              // The source is still open: the failure alone must end the run.
    let result = h.run.join().unwrap();
    let err = result.err().expect("the run fails");
    assert!(
        matches!(&err, PipelineError::Stage { stage: "vad", error }
            if matches!(**error, PipelineError::Vad(_))),
        "{err}"
    );
    assert!(err.to_string().contains("the fake VAD broke"), "{err}");
    no_stage_left(&h.models, &h.tokens);
    under_a_second(t);
}

#[test]
fn a_voice_that_fails_fails_its_turn_once_and_the_next_is_answered() {
    let t = Instant::now();
    let mut h = start(
        false,
        Fakes {
            voice_fails_on: Some("Answer0 to question 1"),
            ..Fakes::default()
        },
    );
    h.ask(1);
    let failed = h.wait_for("turn 1 failed", |u| {
        matches!(u, Update::TurnFailed { turn: 1, .. })
    });
    let Update::TurnFailed { error, .. } = failed else {
        unreachable!()
    };
    assert!(
        error.starts_with("speech synthesis: speech server at http://fake/"),
        "{error}"
    );
    h.ask(2);
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    // The rest of the failed answer was not tried: none of it was heard.
    assert!(
        !seen
            .iter()
            .any(|u| matches!(u, Update::Audio { turn: 1, .. })),
        "{}",
        brief(&seen)
    );
    let answered: Vec<u64> = summary.turns.iter().map(|m| m.turn).collect();
    assert_eq!(answered, [2]);
    each_ends_once(&seen, 2);
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn a_stage_that_panics_ends_the_run_and_leaves_no_thread() {
    let t = Instant::now();
    let mut h = start(
        false,
        Fakes {
            asr_panics_on: Some(2),
            ..Fakes::default()
        },
    );
    h.ask(1);
    h.wait_for("turn 1 done", |u| done(u, 1));
    h.ask(2);
    let result = h.run.join().unwrap();
    let err = result.err().expect("the run fails");
    assert!(matches!(err, PipelineError::Panicked("asr")), "{err}");
    no_stage_left(&h.models, &h.tokens);
    under_a_second(t);
}

#[test]
fn turn_numbers_never_skip_or_repeat() {
    let t = Instant::now();
    let mut h = start(
        true,
        Fakes {
            words: 30,
            long: &[1, 2, 3, 4],
            token_ms: 2,
            voice_ms: 5,
            ..Fakes::default()
        },
    );
    // Five questions, each cutting into the answer of the one before, then one left to finish.
    for id in 1..=5 {
        h.ask(id);
        h.wait_for(
            "the answer",
            |u| matches!(u, Update::AnswerText { turn, .. } if *turn == id as u64),
        );
    }
    h.wait_for("turn 5 done", |u| done(u, 5));
    let (result, seen, models, tokens) = h.finish();
    result.unwrap();
    let order: Vec<u64> = seen.iter().filter_map(started).collect();
    assert_eq!(order, [1, 2, 3, 4, 5]);
    // Each turn ends exactly once, and no update names a turn that never started.
    each_ends_once(&seen, 5);
    let named = |u: &Update| match u {
        Update::SpeechStarted { turn }
        | Update::Transcript { turn, .. }
        | Update::AnswerText { turn, .. }
        | Update::Audio { turn, .. }
        | Update::TurnDropped { turn, .. }
        | Update::TurnFailed { turn, .. } => Some(*turn),
        Update::TurnDone(m) => Some(m.turn),
        Update::Caption { .. } | Update::WakeWord { .. } | Update::SpeechIgnored { .. } => None,
    };
    assert!(seen.iter().filter_map(named).all(|t| (1..=5).contains(&t)));
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

/// A barge-in storm: 200 questions, each cutting into the answer before it at a random moment
/// (while it is transcribed, thought about, spoken, or just over). Every turn still ends exactly
/// once, the one after the storm is answered, and no stage is left behind.
#[test]
fn a_barge_in_storm_leaves_nothing_stuck() {
    let mut h = start(
        true,
        Fakes {
            words: 20,
            long: &[1, 2, 3, 4, 5, 6],
            token_ms: 1,
            voice_ms: 2,
            ..Fakes::default()
        },
    );
    let mut x: u32 = 2024;
    let mut random = |n: u32| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) % n
    };
    // Questions 1 to 5; the one after the storm is question 6.
    const STORM: u64 = 200;
    for i in 0..STORM {
        h.ask(1 + (i % 5) as u32);
        std::thread::sleep(Duration::from_millis(random(25) as u64));
        h.seen.extend(h.updates.try_iter());
    }
    // Speech heard as seesay's own voice (the fake answers say "question" too) is no
    // interruption, so not every question becomes a turn; most do.
    std::thread::sleep(Duration::from_millis(300));
    h.seen.extend(h.updates.try_iter());
    let last = h.seen.iter().filter_map(started).max().unwrap();
    assert!(last > STORM / 2, "only {last} turns");
    h.ask(6);
    h.wait_for(
        "the question after the storm answered",
        |u| matches!(u, Update::TurnDone(m) if m.transcript == "question 6" && !m.interrupted),
    );
    let (result, seen, models, tokens) = h.finish();
    result.unwrap();
    let order: Vec<u64> = seen.iter().filter_map(started).collect();
    assert_eq!(order, (1..=last + 1).collect::<Vec<_>>());
    each_ends_once(&seen, last + 1);
    let interrupted = seen
        .iter()
        .filter(|u| matches!(u, Update::TurnDone(m) if m.interrupted))
        .count();
    let dropped = seen
        .iter()
        .filter(|u| matches!(u, Update::TurnDropped { .. }))
        .count();
    // The storm did interrupt answers at every stage (some mid-speech, some before a word).
    assert!(
        interrupted > 10 && dropped > 10,
        "{interrupted} interrupted, {dropped} dropped"
    );
    no_stage_left(&models, &tokens);
}

/// Keeps the helper types honest: a poisoned model lock still serves.
#[test]
fn a_poisoned_lock_still_serves() {
    let m = Arc::new(Mutex::new(1));
    let m2 = m.clone();
    let _ = std::thread::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("poison");
    })
    .join();
    assert_eq!(*lock(&m), 1);
}

#[test]
fn a_timers_end_is_spoken_as_a_turn_of_its_own() {
    let mut h = start(
        true,
        Fakes {
            timer_on: &[1],
            ..Fakes::default()
        },
    );
    h.ask(1);
    let Update::TurnDone(set) = h.wait_for("the answer", |u| done(u, 1)) else {
        unreachable!()
    };
    let set_at = Instant::now();
    // The call ran and was never said; the model's words after it were.
    assert_eq!(set.answer, "Timer set.");
    assert_eq!(set.tool_calls.len(), 1);
    assert!(set.tool_calls[0].ok && set.tool_calls[0].name == "set_timer");
    let Update::TurnDone(end) = h.wait_for(
        "the timer's end",
        |u| matches!(u, Update::TurnDone(m) if m.announcement),
    ) else {
        unreachable!()
    };
    assert!(
        set_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        set_at.elapsed()
    );
    assert_eq!(end.turn, 2);
    assert_eq!(end.answer, "Your 1 second timer is done.");
    assert!(end.answer_audio_s > 0.0, "the end was not spoken");
    let said = end.said_at_s - set.tool_calls[0].at_s;
    assert!(
        (0.95..1.5).contains(&said),
        "spoken {said} s after the timer was set"
    );
    let (result, seen, ..) = h.finish();
    result.unwrap();
    assert!(seen
        .iter()
        .any(|u| matches!(u, Update::Audio { turn: 2, .. })));
    assert!(!seen
        .iter()
        .any(|u| matches!(u, Update::AnswerText { text, .. } if text.contains("tool_call"))));
}
