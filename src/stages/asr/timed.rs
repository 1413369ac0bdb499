//! Word timestamps and translation for Whisper: what to decode (`Decode`) in, segments with their
//! words (`Timed`) out; whisper.cpp's sub-word tokens with their times are joined into words.

use serde::Serialize;
use whisper_rs::WhisperSegment;

use crate::text::transcript::Segment;

/// How a window is decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decode {
    /// Whisper's translate task: the speech, in any language, comes back as English text.
    pub translate: bool,
    /// Time each word (whisper.cpp's token timestamps).
    pub words: bool,
}

/// A spoken word and when it was said, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// A segment and, when they were asked for, its words.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub segment: Segment,
    pub words: Vec<Word>,
}

impl Timed {
    /// Times past `end` are moved back to it.
    pub fn clamped(mut self, end: f64) -> Timed {
        self.segment.start = self.segment.start.min(end);
        self.segment.end = self.segment.end.min(end);
        for w in &mut self.words {
            w.start = w.start.min(end);
            w.end = w.end.min(end);
        }
        self
    }
}

/// A segment whose words repeat one phrase over and over (a decode that ran into a loop and was
/// cut at its token limit), kept to the phrase once; any other segment as it is.
pub fn without_loop(mut t: Timed) -> Timed {
    let words: Vec<&str> = t.segment.text.split_whitespace().collect();
    let Some(n) = loop_period(&words) else {
        return t;
    };
    t.segment.text = words[..n].join(" ");
    t.words.truncate(n);
    t
}

/// The number of words of the phrase that `words` repeat from their start (twice in full at
/// least, the last time perhaps cut short), compared without case and punctuation.
fn loop_period(words: &[&str]) -> Option<usize> {
    let key = |w: &&str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let keys: Vec<String> = words.iter().map(key).collect();
    (1..=keys.len() / 2).find(|&n| (n..keys.len()).all(|i| keys[i] == keys[i % n]))
}

/// The words of one of whisper.cpp's segments: its text tokens (ids below `eot`; the others are
/// timestamps and control tokens), a token that starts with a space beginning a new word and
/// the rest (sub-words, punctuation) joining the word before. Times are offset by `offset` s.
pub fn words_of(seg: &WhisperSegment<'_>, eot: i32, offset: f64) -> Vec<Word> {
    let mut pieces = Vec::new();
    for i in 0..seg.n_tokens() {
        let Some(token) = seg.get_token(i) else {
            continue;
        };
        if token.token_id() >= eot {
            continue;
        }
        let data = token.token_data();
        let Ok(bytes) = token.to_bytes() else {
            continue;
        };
        pieces.push((bytes.to_vec(), data.t0, data.t1));
    }
    join_pieces(pieces, offset)
}

/// Joins (bytes, t0, t1) pieces, times in hundredths of a second, into words.
fn join_pieces(pieces: Vec<(Vec<u8>, i64, i64)>, offset: f64) -> Vec<Word> {
    let mut words: Vec<(Vec<u8>, i64, i64)> = Vec::new();
    for (bytes, t0, t1) in pieces {
        let starts_word = bytes.first() == Some(&b' ');
        match words.last_mut() {
            Some(w) if !starts_word => {
                w.0.extend(&bytes);
                w.2 = w.2.max(t1);
            }
            _ => words.push((bytes, t0, t1.max(t0))),
        }
    }
    let mut out: Vec<Word> = Vec::new();
    for (bytes, t0, t1) in words {
        let word = String::from_utf8_lossy(&bytes).trim().to_string();
        if word.is_empty() {
            continue;
        }
        // Times never go back: a word starts no earlier than the one before it ended.
        let floor = out.last().map_or(0.0, |w| w.end - offset);
        let start = (t0 as f64 / 100.0).max(floor);
        let end = (t1 as f64 / 100.0).max(start);
        out.push(Word {
            word,
            start: offset + start,
            end: offset + end,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(s: &str, t0: i64, t1: i64) -> (Vec<u8>, i64, i64) {
        (s.as_bytes().to_vec(), t0, t1)
    }

    #[test]
    fn a_loop_is_kept_once_and_other_text_as_it_is() {
        let timed = |text: &str| Timed {
            segment: Segment {
                start: 0.0,
                end: 1.0,
                text: text.into(),
            },
            words: Vec::new(),
        };
        let kept = |text: &str| without_loop(timed(text)).segment.text;
        assert_eq!(
            kept("What is two plus three? What is two plus three? what is two"),
            "What is two plus three?"
        );
        assert_eq!(kept("Go. Go. Go. Go"), "Go.");
        // Not a loop: a phrase said once, or repeats that do not start it.
        for text in [
            "What is two plus three?",
            "I said go, go, go.",
            "Bye bye now.",
            "",
        ] {
            assert_eq!(kept(text), text);
        }
        assert_eq!(kept("Bye bye"), "Bye");
    }

    #[test]
    fn sub_words_and_punctuation_join_the_word_before() {
        let words = join_pieces(
            vec![
                piece(" And", 0, 20),
                piece(" so", 20, 40),
                piece(" my", 40, 55),
                piece(" fell", 55, 70),
                piece("ow", 70, 90),
                piece(",", 90, 91),
                piece(" Americans", 95, 150),
                piece(".", 150, 150),
            ],
            10.0,
        );
        let text: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(text, ["And", "so", "my", "fellow,", "Americans."]);
        assert_eq!((words[3].start, words[3].end), (10.55, 10.91));
        assert_eq!(words[0].start, 10.0);
    }

    #[test]
    fn times_never_go_back_and_multibyte_pieces_make_whole_letters() {
        let e_acute = "é".as_bytes();
        let words = join_pieces(
            vec![
                piece(" caf", 100, 120),
                (vec![e_acute[0]], 120, 125),
                (vec![e_acute[1]], 125, 130),
                piece(" noir", 110, 105),
            ],
            0.0,
        );
        assert_eq!(words[0].word, "café");
        assert_eq!(words[1].word, "noir");
        assert!(words[1].start >= words[0].end && words[1].end >= words[1].start);
    }
}
