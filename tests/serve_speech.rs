//! `seesay serve`'s speech formats, translations and word timestamps, through the official
//! `openai` Python package (in $SEESAY_TEST_PYTHON); compressed speech is decoded by ffmpeg.

mod common;

use std::path::Path;
use std::process::Command;

use common::server::*;

const SPEECH_CLIENT: &str = r#"
import sys, openai
from openai import OpenAI
base, out = sys.argv[1:3]
client = OpenAI(base_url=base, api_key="unused")
for fmt in ["wav", "mp3", "opus", "flac"]:
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy",
            input="The weather is sunny today. Tomorrow it will rain.", response_format=fmt) as r:
        print("TYPE:", fmt, r.headers["content-type"])
        r.stream_to_file(f"{out}/speech.{fmt}")
try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="aac")
except openai.BadRequestError as e:
    print("AAC:", e.status_code, str(e))
"#;

/// The duration ffprobe finds in a file, in seconds.
fn duration(file: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe (ffmpeg) is installed by scripts/setup --test");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text} {}", file.display(), stderr_of(&out)))
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into()
}

/// ffmpeg decodes the whole file to 16 kHz PCM without an error; the samples' duration.
fn decoded_seconds(file: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-f", "s16le", "-ac", "1", "-ar", "16000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        stderr_of(&out)
    );
    out.stdout.len() as f64 / 2.0 / 16_000.0
}

#[test]
fn speech_comes_in_mp3_opus_and_flac_as_long_as_the_wav() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = python(
        SPEECH_CLIENT,
        &[&s.url("/v1"), dir.path().to_str().unwrap()],
    );
    for (fmt, mime) in [
        ("wav", "audio/wav"),
        ("mp3", "audio/mpeg"),
        ("opus", "audio/ogg"),
        ("flac", "audio/flac"),
    ] {
        assert!(out.contains(&format!("TYPE: {fmt} {mime}\n")), "{out}");
    }
    // The streamed WAV's header cannot say how long it is: its length is in the file's size.
    let wav = std::fs::read(dir.path().join("speech.wav")).unwrap();
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    let wav = (wav.len() - 44) as f64 / 2.0 / rate as f64;
    assert!(wav > 2.0, "{wav} s");
    for fmt in ["mp3", "opus", "flac"] {
        let file = dir.path().join(format!("speech.{fmt}"));
        for seconds in [decoded_seconds(&file), duration(&file)] {
            let ratio = seconds / wav;
            assert!(
                (0.85..=1.15).contains(&ratio),
                "{fmt}: {seconds} s, wav {wav} s"
            );
        }
    }
    let aac = out.lines().find(|l| l.starts_with("AAC:")).unwrap_or(&out);
    assert!(
        aac.starts_with("AAC: 400") && aac.contains("wav, pcm, mp3, opus, flac"),
        "{aac}"
    );
}

const TRANSLATE_CLIENT: &str = r#"
import sys, openai
from openai import OpenAI
base, german = sys.argv[1:3]
client = OpenAI(base_url=base, api_key="unused")
with open(german, "rb") as f:
    print("TRANSLATION:", client.audio.translations.create(model="whisper-1", file=f).text)
with open(german, "rb") as f:
    r = client.audio.translations.create(model="whisper-1", file=f, response_format="verbose_json")
    print("VERBOSE:", r.task, len(r.segments), r.text)
"#;

const ENGLISH_ONLY_CLIENT: &str = r#"
import sys, openai
from openai import OpenAI
base, german = sys.argv[1:3]
client = OpenAI(base_url=base, api_key="unused")
try:
    with open(german, "rb") as f:
        client.audio.translations.create(model="whisper-1", file=f)
except openai.BadRequestError as e:
    print("REFUSED:", e.status_code, str(e))
"#;

/// German speech made by espeak-ng.
fn german(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("german.wav");
    let out = Command::new("espeak-ng")
        .args(["-v", "de", "-s", "140", "-w"])
        .arg(&file)
        .arg("Guten Morgen. Ich trinke jeden Tag Kaffee. Mein Bruder wohnt in Berlin.")
        .output()
        .expect("espeak-ng is installed by scripts/setup --test");
    assert!(out.status.success(), "{}", stderr_of(&out));
    file
}

#[test]
fn german_speech_is_translated_to_english_by_the_multilingual_model() {
    let dir = tempfile::tempdir().unwrap();
    let file = german(dir.path());
    let s = Server::start(&[]);
    let out = python(TRANSLATE_CLIENT, &[&s.url("/v1"), file.to_str().unwrap()]);
    let line = out.lines().find(|l| l.starts_with("TRANSLATION:")).unwrap();
    let heard = common::words(line);
    assert!(
        heard.contains(&"morning".into())
            && heard.contains(&"coffee".into())
            && !heard.contains(&"ich".into())
            && !heard.contains(&"kaffee".into()),
        "{out}"
    );
    // The second translation is as good as the first (a reused whisper.cpp state gave nothing).
    let verbose = out.lines().find(|l| l.starts_with("VERBOSE:")).unwrap();
    let segments: usize = verbose.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(
        verbose.starts_with("VERBOSE: translate ") && segments >= 1,
        "{out}"
    );
    assert!(common::words(verbose).contains(&"coffee".into()), "{out}");
    assert!(s.log().contains("translation model loaded"), "{}", s.log());
    drop(s);
    // An English-only model cannot translate: a 400 that says what to set.
    let s = Server::start_with(&[], "[asr]\ntranslate_model = \"whisper-tiny.en\"\n");
    let out = python(
        ENGLISH_ONLY_CLIENT,
        &[&s.url("/v1"), file.to_str().unwrap()],
    );
    assert!(
        out.contains("REFUSED: 400")
            && out.contains("English-only")
            && out.contains("whisper-base"),
        "{out}"
    );
}

const WORDS_CLIENT: &str = r#"
import sys, json
from openai import OpenAI
base, jfk = sys.argv[1:3]
client = OpenAI(base_url=base, api_key="unused")
with open(jfk, "rb") as f:
    r = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
print("DURATION:", r.duration)
print("SEGMENTS:", len(r.segments))
print("TEXT:", r.text)
for w in r.words:
    print("WORD:", json.dumps([w.word, w.start, w.end]))
"#;

#[test]
fn verbose_json_times_each_word_in_order_inside_the_audio() {
    let s = Server::start(&[]);
    let out = python(
        WORDS_CLIENT,
        &[
            &s.url("/v1"),
            common::model_path("sample-jfk").to_str().unwrap(),
        ],
    );
    let value = |p: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("{out}"))
            .trim()
            .to_string()
    };
    let duration: f64 = value("DURATION:").parse().unwrap();
    assert!(value("SEGMENTS:").parse::<usize>().unwrap() >= 1, "{out}");
    let words: Vec<(String, f64, f64)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("WORD: "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spoken: Vec<String> = words.iter().map(|w| w.0.clone()).collect();
    let jfk = common::words(common::JFK);
    assert!(
        common::word_errors(&jfk, &common::words(&spoken.join(" "))) <= 1,
        "{out}"
    );
    // Each word's own text is one word of the transcript.
    assert_eq!(common::words(&spoken.join(" ")).len(), words.len(), "{out}");
    let mut last_end = 0.0;
    for (w, start, end) in &words {
        assert!(
            *start >= last_end - 1e-6 && end >= start && *end <= duration + 1e-6,
            "{w} {start}-{end} after {last_end}, audio {duration} s: {out}"
        );
        last_end = *end;
    }
    // The words spread over the speech, not bunched at one instant.
    assert!(
        words[words.len() - 1].1 - words[0].1 > duration / 2.0,
        "{out}"
    );
}
