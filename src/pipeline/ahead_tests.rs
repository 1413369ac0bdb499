//! The preemptive answer on fake stages: written ahead at a doubted pause, it plays when the
//! turn ends there; when the user goes on, none of it is heard or seen.

use std::time::Duration;

use super::fakes::Fakes;
use super::messages::Update;
use super::tests::{brief, start, transcripts};
use crate::stages::vad::FRAME;

/// Judged pauses, "question 2 of" a fragment the fake models doubt (a score of 0.146: the turn
/// ends after 2150 ms of silence, sooner than the 3 s limit), and a voice `voice_ms` slow.
fn doubting(voice_ms: u64) -> Fakes {
    Fakes {
        semantic: true,
        split: &[2],
        max_silence_ms: 3000,
        unsure_silence_ms: 100,
        voice_ms,
        ..Fakes::default()
    }
}

/// The audio and the words the client got, and where the turn's transcript came among them.
fn heard(seen: &[Update]) -> (usize, String, usize) {
    let mut samples = 0;
    let mut text = String::new();
    let mut transcript_at = usize::MAX;
    for (i, u) in seen.iter().enumerate() {
        match u {
            Update::Audio { pcm, .. } => samples += pcm.len(),
            Update::AnswerText { text: t, .. } => text.push_str(t),
            Update::Transcript { .. } => transcript_at = transcript_at.min(i),
            _ => {}
        }
    }
    (samples, text, transcript_at)
}

#[test]
fn an_answer_written_ahead_plays_when_the_turn_ends_at_the_doubted_pause() {
    let mut h = start(false, doubting(1));
    // "question 2 of", the pause doubted, the answer written ahead meanwhile; then silence
    // until the doubt's patience is over.
    h.push(&vec![0.5; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(300));
    let seen = h.seen();
    let (samples, text, _) = heard(seen);
    assert_eq!((samples, text.as_str()), (0, ""), "{}", brief(seen));
    h.push(&vec![0.0; FRAME * 65]);
    h.wait_for("the answer", |u| matches!(u, Update::TurnDone(_)));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 2 of"], "{}", brief(&seen));
    let m = &summary.turns[0];
    assert_eq!(m.ended_by, "unsure", "{}", brief(&seen));
    assert_eq!(m.preemptive.as_deref(), Some("used"), "{}", brief(&seen));
    // The whole answer, once, after the transcript: three sentences of 800 samples.
    let (samples, text, transcript_at) = heard(&seen);
    assert_eq!(samples, 3 * 800, "{}", brief(&seen));
    assert_eq!(text.matches("Answer0").count(), 1, "{text}");
    assert!(text.contains("Answer2 to question 2 of."), "{text}");
    let first_word = seen
        .iter()
        .position(|u| matches!(u, Update::AnswerText { .. } | Update::Audio { .. }));
    assert!(first_word > Some(transcript_at), "{}", brief(&seen));
    assert!(
        m.answer.contains("Answer2 to question 2 of."),
        "{}",
        m.answer
    );
}

#[test]
fn speech_after_the_pause_never_hears_the_answer_written_ahead() {
    // A slow voice: the user goes on while the answer ahead's first sentence is synthesised.
    let mut h = start(false, doubting(600));
    h.push(&vec![0.5; FRAME * 10]);
    h.push(&vec![0.0; FRAME * 5]);
    std::thread::sleep(Duration::from_millis(200));
    // The rest of the question.
    h.push(&vec![0.5; FRAME * 6]);
    h.push(&vec![0.0; FRAME * 5]);
    h.wait_for("the answer", |u| matches!(u, Update::TurnDone(_)));
    let (result, seen, ..) = h.finish();
    let summary = result.unwrap();
    assert_eq!(transcripts(&summary), ["question 2"], "{}", brief(&seen));
    let m = &summary.turns[0];
    assert_eq!(m.preemptive.as_deref(), Some("dropped"), "{}", brief(&seen));
    // Only the answer to the whole question reached the client: its three sentences.
    let (samples, text, _) = heard(&seen);
    assert_eq!(samples, 3 * 800, "{}", brief(&seen));
    assert!(!text.contains("question 2 of"), "{text}");
    assert!(!m.answer.contains("question 2 of"), "{}", m.answer);
}
