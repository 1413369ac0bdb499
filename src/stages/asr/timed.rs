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
