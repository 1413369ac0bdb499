//! Transcripts: timed segments in, text / JSON / SRT / WebVTT out.

use std::fmt::Write as _;

use serde::Serialize;

/// One piece of transcript, times in seconds from the start of the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// Output formats of `seesay transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text, one line per file.
    Text,
    /// JSON: file, text, duration and segments with start/end seconds.
    Json,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

/// The whole text of a transcript, segments joined by spaces.
pub fn plain_text(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn timestamp(secs: f64, decimal: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{decimal}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(s.start, ','),
            timestamp(s.end, ','),
            s.text.trim()
        );
    }
    out
}

pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            timestamp(s.start, '.'),
            timestamp(s.end, '.'),
            s.text.trim()
        );
    }
    out
}

pub fn json(file: &str, duration: f64, segments: &[Segment]) -> String {
    serde_json::json!({
        "file": file,
        "text": plain_text(segments),
        "duration": duration,
        "segments": segments,
    })
    .to_string()
}

/// Renders one file's transcript in `format`.
pub fn render(format: Format, file: &str, duration: f64, segments: &[Segment]) -> String {
    match format {
        Format::Text => plain_text(segments) + "\n",
        Format::Json => json(file, duration, segments) + "\n",
        Format::Srt => srt(segments),
        Format::Vtt => vtt(segments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<Segment> {
        vec![
            Segment {
                start: 0.0,
                end: 1.5,
                text: " Hello there.".into(),
            },
            Segment {
                start: 3661.25,
                end: 3662.0,
                text: "Bye.".into(),
            },
        ]
    }

    #[test]
    fn subtitle_formats() {
        assert_eq!(
            srt(&segs()),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        assert!(vtt(&segs()).starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"));
    }

    #[test]
    fn json_carries_segments() {
        let v: serde_json::Value = serde_json::from_str(&json("a.wav", 4000.0, &segs())).unwrap();
        assert_eq!(v["text"], "Hello there. Bye.");
        assert_eq!(v["segments"][1]["start"], 3661.25);
    }
}
