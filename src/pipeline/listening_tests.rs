//! The pipeline's listening on fake stages: half duplex, backchannels, questions heard faster
//! than real time during an answer, and pauses judged by the end-of-turn signals.

use std::time::{Duration, Instant};

use super::fakes::Fakes;
use super::messages::Update;
use super::tests::{brief, done, no_stage_left, start, started, transcripts, under_a_second};
use crate::stages::vad::FRAME;

/// Half duplex: question 2, spoken while question 1 is answered, does not interrupt it; it is
/// answered once the answer is over.
fn answered_after_the_answer(f: Fakes) {
    let t = Instant::now();
    let mut h = start(false, f);
    h.ask(1);
    h.wait_for("audio of turn 1", |u| {
        matches!(u, Update::Audio { turn: 1, .. })
    });
    h.ask(2); // spoken while seesay answers: kept, not an interruption
    h.wait_for("turn 1 done", |u| done(u, 1));
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    let heard = transcripts(&summary);
    assert_eq!(heard, ["question 1", "question 2"], "{}", brief(&seen));
    assert!(!summary.turns[0].interrupted);
    assert_eq!(seen.iter().filter_map(started).collect::<Vec<_>>(), [1, 2]);
    // Turn 2 began after turn 1 was over.
    let done1 = seen.iter().position(|u| done(u, 1)).unwrap();
    let began2 = seen.iter().position(|u| started(u) == Some(2)).unwrap();
    assert!(began2 > done1, "{}", brief(&seen));
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn half_duplex_answers_a_question_asked_during_an_answer_after_it() {
    answered_after_the_answer(Fakes {
        words: 4,
        long: &[1],
        ..Fakes::default()
    });
}

/// Half duplex, question 1 asked and its long answer begun.
fn answering_at_length() -> super::tests::Harness {
    let mut h = start(
        false,
        Fakes {
            words: 8,
            long: &[1],
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
fn half_duplex_answers_two_questions_asked_during_an_answer_in_order() {
    // The second question used to replace the first while both waited for the answer to end.
    let t = Instant::now();
    let mut h = answering_at_length();
    h.ask(2);
    h.ask(3);
    h.wait_for("turn 3 done", |u| done(u, 3));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    let heard = transcripts(&summary);
    assert_eq!(
        heard,
        ["question 1", "question 2", "question 3"],
        "{}",
        brief(&seen)
    );
    assert!(summary.turns.iter().all(|m| !m.interrupted));
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn half_duplex_lets_a_backchannel_go_and_answers_the_question_right_after_it() {
    // "Mm-hmm" (amplitude 0.95), then at once a question, both during the answer: the
    // backchannel, set aside while its verdict comes, is not answered; the question is.
    let mut h = answering_at_length();
    h.push(&vec![0.95; FRAME * 8]);
    h.push(&vec![0.0; FRAME * 4]);
    h.ask(2);
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(
        transcripts(&summary),
        ["question 1", "question 2"],
        "{}",
        brief(&seen)
    );
}

#[test]
fn a_question_heard_faster_than_real_time_during_an_answer_is_not_lost() {
    // The whole question arrives before the recogniser has heard its first fraction of a second
    // (a client sending a recording at once, or a recogniser slowed by load): that first
    // fraction, without words, must not dismiss the rest.
    answered_after_the_answer(Fakes {
        words: 6,
        long: &[1],
        token_ms: 10,
        asr_short: FRAME * 6,
        asr_ms: 40,
        ..Fakes::default()
    });
}

#[test]
fn a_backchannel_or_a_false_start_lets_the_answer_go_on() {
    a_backchannel_lets_the_answer_go_on(Fakes {
        words: 12,
        long: &[1],
        token_ms: 10,
        ..Fakes::default()
    });
}

#[test]
fn a_stray_word_heard_in_the_start_of_a_backchannel_does_not_interrupt() {
    // The first probe hears a fraction of the hum as one word ("Amen.") and comes back after
    // the hum has ended: it did not hear the whole of it, so it is not the verdict.
    a_backchannel_lets_the_answer_go_on(Fakes {
        words: 12,
        long: &[1],
        token_ms: 10,
        asr_short: FRAME * 6,
        asr_ms: 40,
        ..Fakes::default()
    });
}

fn a_backchannel_lets_the_answer_go_on(f: Fakes) {
    let t = Instant::now();
    let mut h = start(true, f);
    h.ask(1);
    h.wait_for("audio of turn 1", |u| {
        matches!(u, Update::Audio { turn: 1, .. })
    });
    // "Mm-hmm" (the fake recogniser hears it in speech of amplitude 0.95), then a false start.
    h.push(&vec![0.95; FRAME * 8]);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("turn 1 done", |u| done(u, 1));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    assert_eq!(summary.turns.len(), 1, "{}", brief(&seen));
    assert!(!summary.turns[0].interrupted, "{}", brief(&seen));
    assert_eq!(seen.iter().filter_map(started).collect::<Vec<_>>(), [1]);
    no_stage_left(&models, &tokens);
    under_a_second(t);
}

#[test]
fn a_pause_judged_final_ends_the_turn_without_waiting_out_the_silence() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            ..Fakes::default()
        },
    );
    // 10 frames of speech and 5 of silence (160 ms); the silence limit is a minute.
    h.ask(1);
    h.wait_for(
        "the answer",
        |u| matches!(u, Update::TurnDone(m) if m.turn == 1),
    );
    let (result, seen, ..) = h.finish();
    result.unwrap();
    let done = seen.iter().find_map(|u| match u {
        Update::TurnDone(m) => Some(m.clone()),
        _ => None,
    });
    let m = done.unwrap();
    assert_eq!(m.transcript, "question 1");
    assert_eq!(m.ended_by, "model");
    assert_eq!(m.turn_audio_p, Some(0.98));
    assert_eq!(m.turn_text_p, Some(0.99));
}

#[test]
fn a_fragment_at_a_pause_waits_for_the_rest_of_the_question() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            split: &[2],
            ..Fakes::default()
        },
    );
    // "question 2 of" ... pause ... the rest.
    h.push(&vec![0.5; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(300));
    h.push(&vec![0.5; FRAME * 6]);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("the answer", |u| matches!(u, Update::TurnDone(_)));
    let (result, seen, ..) = h.finish();
    result.unwrap();
    let transcripts: Vec<&str> = seen
        .iter()
        .filter_map(|u| match u {
            Update::Transcript { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(transcripts, ["question 2"], "{}", brief(&seen));
    let started = seen
        .iter()
        .filter(|u| matches!(u, Update::SpeechStarted { .. }))
        .count();
    assert_eq!(started, 1, "{}", brief(&seen));
}

/// A reading of the speech so far sent at its last voiced frame covers the pause that follows:
/// it used to be stopped there and asked again, and its stopped (empty) answer came back under
/// the pause's name, so the pause was judged on its sound alone and a fragment ended the turn.
/// The reading goes at the 16th voiced frame (the half second of audio it waits for: no pre-roll
/// before the first speech), here the last; the recogniser is slow enough to be stopped.
#[test]
fn a_reading_sent_at_the_last_voiced_frame_is_the_pauses() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            split: &[2],
            asr_ms: 120,
            ..Fakes::default()
        },
    );
    // "question 2 of" ... pause ... the rest.
    h.push(&vec![0.5; FRAME * 16]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(500));
    h.push(&vec![0.5; FRAME * 6]);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("the answer", |u| matches!(u, Update::TurnDone(_)));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 2"], "{}", brief(&seen));
}

/// In `seesay serve` a pause's transcript is given up when the shared recogniser is busy; the
/// pause is then not ended on its sound alone (the fake Smart Turn hears every pause as final)
/// when the language model can read words: asked again, and doubted if still unread.
#[test]
fn a_pause_whose_words_could_not_be_read_is_not_ended_on_its_sound() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            split: &[2],
            ..Fakes::default()
        },
    );
    h.ask(1);
    h.wait_for("turn 1 done", |u| done(u, 1));
    // "question 2 of" ... pause (the recogniser busy elsewhere for 400 ms) ... the rest.
    let asr = h.models.asr.clone();
    let busy = crate::pipeline::models::lock(&asr);
    h.push(&vec![0.5; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(400));
    drop(busy);
    std::thread::sleep(Duration::from_millis(100));
    h.push(&vec![0.5; FRAME * 6]);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("turn 2 done", |u| done(u, 2));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(
        transcripts(&summary),
        ["question 1", "question 2"],
        "{}",
        brief(&seen)
    );
}

/// A pause left unread (the recogniser busy through both asks) is doubted; when the input
/// already holds the doubt's wait (a client stops sending after its question), the turn ends
/// then, not at a frame that never comes.
#[test]
fn a_doubted_pause_whose_wait_has_passed_ends_the_turn_without_more_frames() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            max_silence_ms: 3000,
            unsure_silence_ms: 100,
            ..Fakes::default()
        },
    );
    let asr = h.models.asr.clone();
    let busy = crate::pipeline::models::lock(&asr);
    h.push(&vec![0.6; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 8]); // 256 ms of silence, then nothing more
    std::thread::sleep(Duration::from_millis(700));
    drop(busy);
    h.wait_for("turn 1 done", |u| done(u, 1));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 3"], "{}", brief(&seen));
    assert_eq!(summary.turns[0].ended_by, "unsure", "{}", brief(&seen));
}

/// A pause the models judge not over, but without certainty, ends the turn once it has lasted
/// `turn::patience_ms` (here 0.146 -> 2150 ms), sooner than the silence limit (3 s); not before.
#[test]
fn a_doubted_pause_ends_the_turn_after_its_patience_and_not_before() {
    let mut h = start(
        false,
        Fakes {
            semantic: true,
            split: &[2],
            max_silence_ms: 3000,
            unsure_silence_ms: 100,
            ..Fakes::default()
        },
    );
    // "question 2 of" (the fake models: 0.98 and 0.01, a score of 0.146), then 2 s of silence.
    h.push(&vec![0.5; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(300));
    h.push(&vec![0.0; FRAME * 58]);
    std::thread::sleep(Duration::from_millis(300));
    let seen = h.seen();
    assert!(
        !seen
            .iter()
            .any(|u| matches!(u, Update::Transcript { .. } | Update::TurnDone(_))),
        "ended before its patience: {}",
        brief(seen)
    );
    // 2.24 s of silence.
    h.push(&vec![0.0; FRAME * 7]);
    h.wait_for("the answer", |u| matches!(u, Update::TurnDone(_)));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 2 of"], "{}", brief(&seen));
    assert_eq!(summary.turns[0].ended_by, "unsure");
}

/// A typed question is a turn of its own at once: with no recogniser in the way, and stopping
/// the answer under way even in half duplex (typing is never seesay's echo or a backchannel).
#[test]
fn a_typed_question_is_answered_and_stops_the_answer_under_way() {
    let t = Instant::now();
    let mut h = super::tests::answering_slowly(false);
    h.type_question("question 2");
    h.wait_for("turn 2 done", |u| done(u, 2));
    h.type_question("question 3");
    h.wait_for("turn 3 done", |u| done(u, 3));
    let (result, seen, models, tokens) = h.finish();
    let summary = result.unwrap();
    let heard = transcripts(&summary);
    assert_eq!(
        heard,
        ["question 1", "question 2", "question 3"],
        "{}",
        brief(&seen)
    );
    assert!(summary.turns[0].interrupted, "{}", brief(&seen));
    assert!(summary.turns[2]
        .answer
        .starts_with("Answer0 to question 3."));
    assert_eq!(summary.turns[1].ended_by, "typed");
    // No audio of turn 1 after turn 2 began.
    let began2 = seen.iter().position(|u| started(u) == Some(2)).unwrap();
    assert!(!seen[began2..]
        .iter()
        .any(|u| matches!(u, Update::Audio { turn: 1, .. })));
    no_stage_left(&models, &tokens);
    under_a_second(t);
}
