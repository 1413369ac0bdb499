//! The stage loops after the VAD's (`listen.rs`): each runs on its own thread, takes messages from the stage before, does one
//! step of its model and passes the result on. They only move messages; the models' maths is
//! behind the stage traits. A failed send means the next stage is gone: the loop returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::error::PipelineError;
use super::hands::{announce, Hands};
use super::messages::{Feedback, Heard, Play, Purpose, Say, ToolCall, Utterance, What};
use super::models::{lock, Locked};
use super::turns::Context;
use crate::media::audio::SAMPLE_RATE;
use crate::stages::asr::{AsrError, Transcriber};
use crate::stages::llm::{open_ended, ChatModel, Conversation, Finish};
use crate::stages::lock_within;
use crate::stages::tts::{self, TtsError, Voice};
use crate::stages::Cancel;
use crate::text::splitter::SentenceSplitter;
use crate::text::transcript::plain_text;
use crate::tools;

/// How long a served conversation's transcript ahead of a pause waits for the shared recogniser
/// (a language model's reading of the words so far holds it for 35-55 ms).
const SHARED_GUESS_WAIT: Duration = Duration::from_millis(150);

/// The ASR stage: utterances in, transcripts out. Silence and noise end here.
pub(crate) fn asr_loop(
    asr: Locked<Box<dyn Transcriber>>,
    rx: Receiver<Utterance>,
    tx: Sender<Heard>,
    hints: Sender<Feedback>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("asr").entered();
    // (turn, speech end, transcript) of the last speculative transcription.
    let mut ahead: Option<(u64, u64, String)> = None;
    for u in rx {
        let _turn = tracing::debug_span!("turn", turn = u.turn).entered();
        // Whatever happens to a speculation, the VAD stage hears back (without the language
        // model's view when there is no transcript to give it).
        let no_text = || {
            let _ = hints.try_send(Feedback::EndOfTurn {
                turn: u.turn,
                speech_end: u.speech_end,
                text_p: None,
            });
        };
        if u.purpose == Purpose::Probe {
            // Speech during an answer: its words decide whether it interrupts.
            let mut model = lock(&asr);
            let began = Instant::now();
            let text = match model.transcribe(&u.audio, 0.0) {
                Ok(segments) => plain_text(&segments),
                Err(e) => {
                    tracing::debug!("transcribing speech heard during the answer failed: {e}");
                    String::new()
                }
            };
            drop(model);
            tracing::debug!(
                ms = began.elapsed().as_secs_f64() * 1000.0,
                audio_s = u.audio.len() as f64 / SAMPLE_RATE as f64,
                %text,
                "speech during the answer transcribed"
            );
            let _ = hints.try_send(Feedback::Heard {
                start: u.speech_end,
                text,
            });
            continue;
        }
        let speculative = u.purpose == Purpose::Pause;
        // A speculation that no longer matters is dropped before it waits for the recogniser.
        if speculative && u.stop.as_ref().is_some_and(Cancel::is_cancelled) {
            no_text();
            continue;
        }
        if cx.turns.is_stale(u.turn) {
            match speculative {
                true => no_text(),
                false => {
                    cx.event(u.turn, What::Dropped("interrupted"));
                    cx.turns.finish(u.turn);
                }
            }
            continue;
        }
        let reuse = match ahead.take() {
            Some((turn, end, text)) if !speculative && turn == u.turn && end == u.speech_end => {
                tracing::debug!("using the transcript made during the pause");
                Some(Ok(text))
            }
            _ => None,
        };
        if speculative {
            // The decision at the pause waits for this transcript, so it waits for the
            // recogniser too; it is the work the end of the turn would need anyway. But in
            // `seesay serve` the recogniser is shared by every conversation and the API: a guess
            // that would wait long for it is given up (the pause is judged by its silence), so
            // the guesses of several conversations never hold up finished questions.
            let model = match cx.updates.is_some() {
                true => lock_within(&asr, SHARED_GUESS_WAIT),
                false => Some(lock(&asr)),
            };
            let Some(mut model) = model else {
                tracing::debug!("the recogniser is busy: no transcript ahead of this pause");
                no_text();
                continue;
            };
            let began = Instant::now();
            let done = match &u.stop {
                Some(stop) => model.transcribe_unless(&u.audio, 0.0, stop),
                None => model.transcribe(&u.audio, 0.0),
            };
            match done {
                Ok(segments) => {
                    drop(model);
                    let text = plain_text(&segments);
                    tracing::debug!(
                        ms = began.elapsed().as_secs_f64() * 1000.0,
                        audio_s = u.audio.len() as f64 / SAMPLE_RATE as f64,
                        %text,
                        "speculative transcript"
                    );
                    if text.trim().is_empty() {
                        no_text();
                    } else {
                        // Only if the LLM is free: a prefill must never delay a real question.
                        let hint = Heard {
                            turn: u.turn,
                            text: text.clone(),
                            speculative: true,
                            speech_end: u.speech_end,
                        };
                        match tx.try_send(hint) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => no_text(),
                            Err(TrySendError::Disconnected(_)) => return Ok(()),
                        }
                    }
                    ahead = Some((u.turn, u.speech_end, text));
                }
                Err(AsrError::Stopped) => {
                    tracing::debug!(
                        ms = began.elapsed().as_secs_f64() * 1000.0,
                        "speculative transcript stopped: no longer needed"
                    );
                    no_text();
                }
                Err(e) => {
                    tracing::debug!("speculative transcription failed: {e}");
                    no_text();
                }
            }
            continue;
        }
        let text = match reuse.unwrap_or_else(|| {
            lock(&asr)
                .transcribe(&u.audio, 0.0)
                .map(|segments| plain_text(&segments))
        }) {
            Ok(text) => text,
            Err(e) => {
                cx.event(u.turn, What::Failed(format!("speech recognition: {e}")));
                cx.turns.finish(u.turn);
                continue;
            }
        };
        if text.trim().is_empty() {
            cx.event(u.turn, What::Dropped("no words"));
            cx.turns.finish(u.turn);
            continue;
        }
        cx.event(u.turn, What::Transcript(text.clone()));
        let heard = Heard {
            turn: u.turn,
            text,
            speculative: false,
            speech_end: u.speech_end,
        };
        if tx.send(heard).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The LLM stage: transcripts in, sentences out while the answer is being written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn llm_loop(
    mut llm: Box<dyn ChatModel>,
    mut hands: Hands,
    // Held while the model reads or prefills the user's words (short steps), so the recogniser
    // and the model never compute at once: on the same cores both thread pools spin while they
    // wait for each other, and each step took up to 8 times as long (a 90 ms transcript and a
    // 50 ms reading both took 750 ms).
    cores: Locked<Box<dyn Transcriber>>,
    mut conv: Conversation,
    first_clause_words: usize,
    judge_turns: bool,
    rx: Receiver<Heard>,
    tx: Sender<Say>,
    hints: Sender<Feedback>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("llm").entered();
    // The prompt's fixed start (the system prompt with what the camera shows, and the turns so
    // far) is computed before anyone speaks, and again when the picture changes while nobody
    // speaks, so a question waits only for its own tokens.
    let mut scene: Option<String> = None;
    let mut warmed = false;
    // With memory, the system prompt says how recalled lines come (the same words for every
    // question): prefilled with the rest before anyone speaks.
    if cx.memory.is_some() {
        conv.set_recalled(Some(Vec::new()));
    }
    // The last reading of the user's words (turn, words, probability): a pause whose words were
    // all heard by the last reading made while the user spoke needs no new one.
    let mut last_read: Option<(u64, String, f32)> = None;
    loop {
        let h = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(h) => h,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if cx.turns.idle() {
                    if let Ok(text) = hands.announcements.try_recv() {
                        if !announce(text, &tx, &cx) {
                            return Ok(());
                        }
                        continue;
                    }
                }
                let now = lock(&cx.scene).clone();
                if (!warmed || now != scene) && cx.turns.idle() {
                    scene = now;
                    conv.set_scene(scene.clone());
                    warmed = true;
                    let _cores = lock(&cores);
                    if let Err(e) = llm.warm_up(&conv.preamble()) {
                        tracing::warn!("could not prefill the system prompt: {e}");
                    }
                }
                continue;
            }
        };
        let _turn = tracing::debug_span!("turn", turn = h.turn).entered();
        if cx.turns.is_stale(h.turn) {
            match h.speculative {
                true => {
                    let _ = hints.try_send(Feedback::EndOfTurn {
                        turn: h.turn,
                        speech_end: h.speech_end,
                        text_p: None,
                    });
                }
                false => {
                    cx.event(h.turn, What::Dropped("interrupted"));
                    cx.turns.finish(h.turn);
                }
            }
            continue;
        }
        scene = lock(&cx.scene).clone();
        conv.set_scene(scene.clone());
        conv.set_recalled(hands.recall(&cx, &h.text));
        conv.with_tools(hands.tools.with_tools(&h.text));
        if h.speculative {
            // The user paused: prefill the question as heard so far (if they go on, the next
            // prompt shares less of it and the work is simply not reused) and, when the turn
            // is being judged, read how likely it is to end there.
            let cores = lock(&cores);
            let t = Instant::now();
            let words = open_ended(&h.text);
            let text_p = match &last_read {
                Some((turn, read, p)) if judge_turns && *turn == h.turn && read == words => {
                    Some(*p)
                }
                _ if judge_turns => conv
                    .prompt_for(llm.as_mut(), words)
                    .and_then(|msgs| llm.end_of_turn(&msgs))
                    .unwrap_or_else(|e| {
                        tracing::debug!("no end-of-turn reading: {e}");
                        None
                    }),
                _ => None,
            };
            last_read = text_p.map(|p| (h.turn, words.to_string(), p));
            if text_p.is_none() {
                match conv
                    .prompt_for(llm.as_mut(), &h.text)
                    .and_then(|msgs| llm.warm_up(&msgs))
                {
                    Ok(()) => {}
                    Err(e) => tracing::debug!("speculative prefill failed: {e}"),
                }
            }
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                text = %h.text,
                ?text_p,
                "prefilled the question heard so far"
            );
            drop(cores);
            let _ = hints.try_send(Feedback::EndOfTurn {
                turn: h.turn,
                speech_end: h.speech_end,
                text_p,
            });
            continue;
        }
        let msgs = match conv.prompt_for(llm.as_mut(), &h.text) {
            Ok(m) => m,
            Err(e) => {
                cx.event(h.turn, What::Failed(format!("language model: {e}")));
                cx.turns.finish(h.turn);
                continue;
            }
        };
        let cancel = Cancel::for_turn(cx.turns.clock.clone(), h.turn);
        let mut splitter = SentenceSplitter::new(first_clause_words);
        let mut first = true;
        let mut gone = false;
        // What went to the voice: whole sentences (and the first clause).
        let mut spoken: Vec<String> = Vec::new();
        lock(&cx.speaking).clear();
        let registry = hands.tools.for_question(&h.text);
        let result = tools::answer(llm.as_mut(), &msgs, registry, &cancel, &mut |chunk| {
            if first {
                first = false;
                cx.event(h.turn, What::FirstToken);
            }
            lock(&cx.speaking).push_str(chunk);
            if cx.updates.is_some() {
                cx.event(h.turn, What::Delta(chunk.to_string()));
            }
            for text in splitter.push(chunk) {
                spoken.push(text.clone());
                gone |= tx.send(Say::Sentence { turn: h.turn, text }).is_err();
            }
        });
        if gone {
            return Ok(());
        }
        match result {
            Ok(tools::Answer {
                text: mut answer,
                finish,
                calls,
            }) => {
                let cancelled = finish == Finish::Cancelled;
                let rest = splitter.finish();
                // An answer cut by llm.max_tokens ends with its last whole sentence: the words
                // after it are not spoken (unless there is no whole sentence at all).
                let cut = finish == Finish::Length && !spoken.is_empty();
                if !cancelled && !cut {
                    for text in rest {
                        spoken.push(text.clone());
                        let _ = tx.send(Say::Sentence { turn: h.turn, text });
                    }
                }
                if cut {
                    answer = spoken.join(" ");
                }
                if !answer.is_empty() {
                    conv.record(&h.text, &answer);
                    hands.keep_said(&cx, &h.text);
                    // The history as the template writes it is prefilled again once nobody
                    // speaks (the cache holds the answer as generated, whose tokens may differ),
                    // so the next question pays only for its own words.
                    warmed = false;
                }
                let calls = calls
                    .into_iter()
                    .map(|c| ToolCall {
                        at_s: c.ended.saturating_duration_since(cx.t0).as_secs_f64(),
                        name: c.name,
                        arguments: c.arguments,
                        result: c.result,
                        ms: c.ms,
                        ok: c.ok,
                    })
                    .collect();
                cx.event(
                    h.turn,
                    What::Answer {
                        text: answer,
                        cancelled,
                        calls,
                    },
                );
            }
            Err(e) => cx.event(h.turn, What::Failed(format!("language model: {e}"))),
        }
        if tx.send(Say::End { turn: h.turn }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The TTS stage: sentences in, audio out; sentences of older turns are skipped.
pub(crate) fn tts_loop(
    voice: Locked<Box<dyn Voice>>,
    gap_ms: u32,
    rx: Receiver<Say>,
    tx: Sender<Play>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("tts").entered();
    // Speaking can wait a little; listening cannot (see `host::BACKGROUND_NICE`).
    crate::host::lower_this_thread();
    let mut first_of: Option<u64> = None;
    // The turn whose speech failed: the rest of its answer is not tried (a voice server that is
    // gone would fail, or make each sentence wait for its timeout, once more per sentence).
    let mut failed: Option<u64> = None;
    for msg in rx {
        let out = match msg {
            Say::Sentence { turn, text } => {
                let _turn = tracing::debug_span!("turn", turn).entered();
                if cx.turns.is_stale(turn) || failed == Some(turn) {
                    continue;
                }
                let mut audio = Vec::new();
                let spoken = tts::speak(lock(&voice).as_mut(), &text, gap_ms, |pcm| {
                    audio.extend(pcm);
                    true
                });
                match spoken {
                    Ok(_) => {}
                    Err(TtsError::NothingToSay) => continue,
                    Err(e) => {
                        // The turn fails, once, with the reason (its client hears of it too).
                        tracing::debug!("speech synthesis failed for {text:?}: {e}");
                        failed = Some(turn);
                        cx.event(turn, What::Failed(format!("speech synthesis: {e}")));
                        continue;
                    }
                }
                if cx.turns.is_stale(turn) {
                    continue;
                }
                if first_of != Some(turn) {
                    first_of = Some(turn);
                    cx.event(turn, What::FirstAudioReady);
                }
                Play::Audio { turn, pcm: audio }
            }
            Say::End { turn } => Play::End { turn },
        };
        if tx.send(out).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The next message, or `None` once the sender is gone or the run is stopping (checked at
/// least every 50 ms, so a stage waiting on a quiet source still stops).
pub(crate) fn next<T>(rx: &Receiver<T>, cx: &Context) -> Option<T> {
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => return (!cx.turns.clock.stopped()).then_some(m),
            Err(RecvTimeoutError::Timeout) if !cx.turns.clock.stopped() => continue,
            Err(_) => return None,
        }
    }
}
