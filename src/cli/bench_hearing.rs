//! `seesay bench --stage hearing`: how well the recogniser hears spoken questions, and at what
//! cost. Forty questions no other benchmark asks (so settings chosen here are not tuned on the
//! pipeline's questions), each spoken at three paces by espeak-ng or Piper and transcribed as the
//! pipeline transcribes a turn: a little silence before, the speech, the pause after it. Reports
//! the word error rate, the questions heard word for word, the time per transcription, and each
//! question misheard.

use std::time::Instant;

use anyhow::Result;

use seesay::config::Config;
use seesay::media::audio::SAMPLE_RATE;
use seesay::stages::asr;
use seesay::store::Store;
use seesay::text::transcript::plain_text;

use super::bench_common::{median, p95, QuestionVoice};

/// Held-out questions: everyday words, no numbers (a digit heard for a word is no mishearing).
pub const HEARD: [&str; 40] = [
    "What is the opposite of cold?",
    "Which animal has the longest neck?",
    "Why do leaves change colour in autumn?",
    "How do you make a cup of tea?",
    "What does a bee collect from flowers?",
    "Where do penguins live?",
    "Why do cats purr when they are happy?",
    "Can you tell me a joke about cats?",
    "What colour do you get when you mix blue and yellow?",
    "Who discovered penicillin?",
    "What do frogs eat?",
    "How far away is the moon?",
    "What is the boiling point of water?",
    "Which planet is closest to the sun?",
    "What does a tadpole grow into?",
    "How do birds know where to fly in winter?",
    "How do submarines dive so deep?",
    "Is a tomato a fruit or a vegetable?",
    "What is the largest desert on Earth?",
    "How does a rainbow form?",
    "What should I cook for dinner tonight?",
    "Remind me to water the plants tomorrow morning.",
    "What is the weather like outside?",
    "Turn off the lights in the kitchen.",
    "Who painted the ceiling of the Sistine Chapel?",
    "What is the capital city of Spain?",
    "How many wheels does a bicycle have?",
    "What is the main ingredient in guacamole?",
    "Why is the sky dark at night?",
    "What do you call a baby kangaroo?",
    "Which ocean is the deepest?",
    "What instrument has black and white keys?",
    "How do plants make their food?",
    "What is the largest bone in the human body?",
    "Where is the Great Barrier Reef?",
    "What sound does an owl make?",
    "Set a timer for the pasta.",
    "What is the difference between weather and climate?",
    "Who invented the telephone?",
    "What is the meaning of the word generous?",
];

/// Paces each question is spoken at (1: the voice's own).
const PACES: [f32; 3] = [0.85, 1.0, 1.2];

/// What was heard of all the recordings.
#[derive(Default)]
struct Tally {
    words: usize,
    errors: usize,
    exact: usize,
    ms: Vec<f64>,
    misheard: Vec<serde_json::Value>,
}

/// Transcribes the first `questions` (at most 40), spoken by `voice`, with the configured
/// recogniser.
pub fn run(cfg: &Config, questions: usize, voice: &str) -> Result<serde_json::Value> {
    let questions = &HEARD[..questions.clamp(1, HEARD.len())];
    let store = Store::from_config(&cfg.models)?;
    let mut recogniser = asr::open(&cfg.asr, &store)?;
    let mut speak = QuestionVoice::new(cfg, voice)?;
    let silence = |ms: u32| vec![0.0f32; ms as usize * SAMPLE_RATE as usize / 1000];
    let warm = speak.say(HEARD[0])?;
    recogniser.transcribe(&warm, 0.0)?;
    let mut tally = Tally::default();
    for pace in PACES {
        for &text in questions {
            // As the pipeline has it at the end of a turn: pre-roll, the speech, the pause.
            let mut pcm = silence(cfg.vad.pre_roll_ms);
            pcm.extend(speak.say_at(text, pace)?);
            pcm.extend(silence(cfg.turn.pause_ms));
            let t = Instant::now();
            let heard = plain_text(&recogniser.transcribe(&pcm, 0.0)?);
            tally.ms.push(t.elapsed().as_secs_f64() * 1000.0);
            tally.add(text, &heard, pace);
        }
    }
    let recordings = PACES.len() * questions.len();
    Ok(tally.report(cfg, voice, questions.len(), recordings))
}

impl Tally {
    fn add(&mut self, said: &str, heard: &str, pace: f32) {
        let (said_words, got) = (words_of(said), words_of(heard));
        let wrong = edit_distance(&said_words, &got);
        self.words += said_words.len();
        self.errors += wrong;
        self.exact += usize::from(wrong == 0);
        if wrong > 0 {
            let pace = (pace as f64 * 100.0).round() / 100.0;
            let m = serde_json::json!({"said": said, "heard": heard, "pace": pace});
            self.misheard.push(m);
        }
    }

    /// Prints the figures and each mishearing; the same as JSON.
    fn report(
        mut self,
        cfg: &Config,
        voice: &str,
        questions: usize,
        recordings: usize,
    ) -> serde_json::Value {
        let rate = self.errors as f64 / self.words.max(1) as f64;
        let (median_ms, p95_ms) = (median(&mut self.ms), p95(&mut self.ms));
        eprintln!(
            "hearing ({voice} voice): {} of {recordings} recordings heard word for word, {} \
             word errors in {} words ({:.1} %); transcription median {median_ms:.0} ms, p95 \
             {p95_ms:.0} ms",
            self.exact,
            self.errors,
            self.words,
            100.0 * rate
        );
        for m in &self.misheard {
            eprintln!("  {} -> {} (pace {})", m["said"], m["heard"], m["pace"]);
        }
        serde_json::json!({
            "voice": voice,
            "model": cfg.asr.model,
            "beam_size": cfg.asr.beam_size,
            "temperature_fallback": cfg.asr.temperature_fallback,
            "questions": questions,
            "recordings": recordings,
            "heard_exactly": self.exact,
            "words": self.words,
            "word_errors": self.errors,
            "word_error_rate": rate,
            "transcribe_ms": {"median": median_ms, "p95": p95_ms},
            "misheard": self.misheard,
        })
    }
}

/// The words of a text, lower case, without punctuation; "colour" counts as "color" (a
/// spelling is not a mishearing).
fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace("colour", "color"))
        .collect()
}

/// Word-level Levenshtein distance: substitutions, insertions and deletions.
fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diagonal + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, words_of};

    #[test]
    fn word_errors_count_substitutions_insertions_and_deletions() {
        let said = words_of("What is the opposite of cold?");
        assert_eq!(edit_distance(&said, &said), 0);
        assert_eq!(
            edit_distance(&said, &words_of("What is the opposite on cold")),
            1
        );
        assert_eq!(
            edit_distance(&said, &words_of("What's the opposite of cold?")),
            2
        );
        assert_eq!(
            edit_distance(&said, &words_of("What is the the opposite of cold")),
            1
        );
        assert_eq!(edit_distance(&said, &[]), 6);
        assert_eq!(
            words_of("Why do leaves change colour?"),
            words_of("why do leaves change color")
        );
    }
}
