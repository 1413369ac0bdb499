//! Fake stages for the pipeline's tests: they stand in for the models behind the stage traits
//! and count or misbehave on request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::stages::asr::{AsrError, Transcriber};
use crate::stages::llm::{ChatModel, Finish, LlmConfig, LlmError, Message};
use crate::stages::tts::{TtsError, Voice};
use crate::stages::turn::{TurnDetector, TurnError};
use crate::stages::vad::{SpeechDetector, VadError, FRAME};
use crate::stages::Cancel;
use crate::text::transcript::Segment;

/// Speech is any frame louder than 0.25.
pub(super) struct FakeVad {
    pub(super) frames: usize,
    pub(super) fail_at: Option<usize>,
}

impl SpeechDetector for FakeVad {
    fn step(&mut self, frame: &[f32]) -> Result<f32, VadError> {
        self.frames += 1;
        if Some(self.frames) == self.fail_at {
            return Err(VadError::Inference("the fake VAD broke".into()));
        }
        Ok(if frame.iter().any(|v| v.abs() > 0.25) {
            1.0
        } else {
            0.0
        })
    }
    fn reset(&mut self) {}
}

/// Hears "question N" in speech of amplitude 0.3 + N/10 ("Mm-hmm." for N = 7, at 1.0); panics on
/// `panic_on`. Questions in
/// `split` are asked in two stretches of speech: the first alone is heard as "question N of".
/// Audio shorter than `short` samples holds no words (a fraction of a second of a question), or,
/// in a hum ("Mm-hmm", amplitude 0.95), one stray word (Whisper hears the start of espeak-ng's
/// "Mm-hmm" as "Amen."); each transcription takes `ms`. Questions in `timer_on` ask for a timer
/// ("question 1: set a timer", which a live conversation asks with the tools described).
pub(super) struct FakeAsr {
    pub(super) panic_on: Option<u32>,
    pub(super) split: &'static [u32],
    pub(super) short: usize,
    pub(super) ms: u64,
    pub(super) timer_on: &'static [u32],
}

impl Transcriber for FakeAsr {
    fn transcribe(&mut self, samples: &[f32], offset: f64) -> Result<Vec<Segment>, AsrError> {
        let loudest = samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = ((loudest - 0.3) * 10.0).round() as u32;
        if Some(id) == self.panic_on {
            panic!("the fake recogniser broke on question {id}");
        }
        std::thread::sleep(Duration::from_millis(self.ms));
        if samples.len() < self.short {
            let text = match id {
                7 => "Amen.",
                _ => return Ok(Vec::new()),
            };
            return Ok(vec![Segment {
                start: offset,
                end: offset + 1.0,
                text: text.to_string(),
            }]);
        }
        let loud: Vec<bool> = samples
            .chunks(FRAME)
            .map(|f| f.iter().any(|v| v.abs() > 0.25))
            .collect();
        let stretches = loud.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(loud[0]);
        let text = match id {
            7 => "Mm-hmm.".to_string(),
            _ if self.split.contains(&id) && stretches < 2 => format!("question {id} of"),
            _ if self.timer_on.contains(&id) => format!("question {id}: set a timer"),
            _ => format!("question {id}"),
        };
        Ok(vec![Segment {
            start: offset,
            end: offset + 1.0,
            text,
        }])
    }
    /// Like whisper.cpp's abort callback: a speculation stopped while it is being transcribed
    /// is given up.
    fn transcribe_unless(
        &mut self,
        samples: &[f32],
        offset: f64,
        stop: &Cancel,
    ) -> Result<Vec<Segment>, AsrError> {
        if stop.is_cancelled() {
            return Err(AsrError::Stopped);
        }
        let heard = self.transcribe(samples, offset)?;
        match stop.is_cancelled() {
            true => Err(AsrError::Stopped),
            false => Ok(heard),
        }
    }
    fn set_language(&mut self, l: &str) -> Result<String, AsrError> {
        Ok(l.to_string())
    }
}

/// Answers the questions in `long` with `words` short sentences and the others with three, one
/// token every `token_ms`, stopping at the first token after a cancel; counts its tokens.
pub(super) struct FakeLlm {
    pub(super) words: usize,
    pub(super) long: &'static [u32],
    pub(super) token_ms: u64,
    pub(super) tokens: Arc<AtomicUsize>,
    /// Questions answered by setting a one-second timer (a call, then "Timer set.").
    pub(super) timer_on: &'static [u32],
}

impl ChatModel for FakeLlm {
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        let q = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if self
            .timer_on
            .iter()
            .any(|id| q == format!("question {id}: set a timer"))
        {
            let call = "<tool_call>\n{\"name\": \"set_timer\", \"arguments\": {\"seconds\": 1}}\n</tool_call>";
            on_text(call);
            return Ok((call.to_string(), Finish::Stop));
        }
        if q.starts_with("<tool_response>") {
            on_text("Timer set.");
            return Ok(("Timer set.".to_string(), Finish::Stop));
        }
        let long = self.long.iter().any(|id| q == format!("question {id}"));
        let seen = match messages.last().is_some_and(|m| m.image.is_some()) {
            true => " (seen)",
            false => "",
        };
        let mut answer = String::new();
        for i in 0..if long { self.words } else { 3 } {
            if cancel.is_cancelled() {
                return Ok((answer, Finish::Cancelled));
            }
            let word = format!("Answer{i} to {q}{seen}. ");
            self.tokens.fetch_add(1, Ordering::SeqCst);
            on_text(&word);
            answer.push_str(&word);
            std::thread::sleep(Duration::from_millis(self.token_ms));
        }
        Ok((answer.trim().to_string(), Finish::Stop))
    }
    fn count_tokens(&mut self, m: &[Message]) -> Result<usize, LlmError> {
        Ok(m.iter().map(|m| m.content.len() / 4).sum())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
    fn set_config(&mut self, _: &LlmConfig) {}
    /// A message ending in "of" is plainly unfinished.
    fn end_of_turn(&mut self, m: &[Message]) -> Result<Option<f32>, LlmError> {
        let text = m.last().map(|m| m.content.clone()).unwrap_or_default();
        Ok(Some(if text.ends_with(" of") { 0.01 } else { 0.99 }))
    }
    fn reads_turns(&self) -> bool {
        true
    }
}

/// Prosody that always sounds final (as synthetic voices do).
pub(super) struct FakeTurn;

impl TurnDetector for FakeTurn {
    fn complete(&mut self, _: &[f32]) -> Result<f32, TurnError> {
        Ok(0.98)
    }
}

/// 50 ms of sound per sentence, after `ms` of "synthesis"; a sentence holding `fails_on` fails
/// as a voice server that is down does.
pub(super) struct FakeVoice {
    pub(super) ms: u64,
    pub(super) fails_on: Option<&'static str>,
}

impl Voice for FakeVoice {
    fn sample_rate(&self) -> u32 {
        16_000
    }
    fn synthesize(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
        std::thread::sleep(Duration::from_millis(self.ms));
        if self.fails_on.is_some_and(|f| sentence.contains(f)) {
            return Err(TtsError::Remote {
                url: "http://fake/v1/audio/speech".into(),
                detail: "Connection refused".into(),
            });
        }
        Ok(vec![0.1; 800])
    }
    fn set_rate(&mut self, r: f32) -> f32 {
        r
    }
}

pub(super) struct Fakes {
    pub(super) words: usize,
    pub(super) long: &'static [u32],
    pub(super) token_ms: u64,
    pub(super) voice_ms: u64,
    pub(super) voice_fails_on: Option<&'static str>,
    pub(super) vad_fails_at: Option<usize>,
    pub(super) asr_panics_on: Option<u32>,
    /// Judge pauses (a fake Smart Turn and the fake LLM's reading) instead of waiting out the
    /// silence.
    pub(super) semantic: bool,
    pub(super) split: &'static [u32],
    /// The recogniser: audio shorter than this (samples) has no words; ms per transcription.
    pub(super) asr_short: usize,
    pub(super) asr_ms: u64,
    pub(super) timer_on: &'static [u32],
    /// The language model takes images: each answer says whether a picture came with the
    /// question ("(seen)").
    pub(super) llm_sees: bool,
    /// `turn.max_silence_ms` and `turn.unsure_silence_ms`: longer than any test waits, unless
    /// a test says otherwise.
    pub(super) max_silence_ms: u32,
    pub(super) unsure_silence_ms: u32,
}

impl Default for Fakes {
    fn default() -> Self {
        Fakes {
            words: 3,
            long: &[],
            token_ms: 2,
            voice_ms: 1,
            voice_fails_on: None,
            vad_fails_at: None,
            asr_panics_on: None,
            semantic: false,
            split: &[],
            asr_short: 0,
            asr_ms: 0,
            timer_on: &[],
            llm_sees: false,
            max_silence_ms: 60_000,
            unsure_silence_ms: 60_000,
        }
    }
}
