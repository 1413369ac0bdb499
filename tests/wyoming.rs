//! `seesay serve`'s Wyoming port with the `wyoming` Python package (Home Assistant's own client
//! library) as the client.

mod common;

use common::server::*;
use common::*;

const WYOMING_CLIENT: &str = r#"
import asyncio, sys, wave
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioStart, AudioChunk, AudioStop
from wyoming.tts import Synthesize, SynthesizeStart, SynthesizeChunk, SynthesizeStop, SynthesizeStopped
from wyoming.handle import Handled, NotHandled, HandledChunk
from wyoming.asr import Transcript as Said

async def main(port, jfk):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await c.read_event())
        print("ASR:", info.asr[0].name, "TTS:", info.tts[0].voices[0].name)
        print("STREAMING:", info.asr[0].supports_transcript_streaming, info.tts[0].supports_synthesize_streaming)
        print("HANDLE:", info.handle[0].name, info.handle[0].supports_handled_streaming, info.handle[0].models[0].languages)
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language="en").event())
        with wave.open(jfk, "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            while True:
                data = w.readframes(1024)
                if not data:
                    break
                await c.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=data).event())
        await c.write_event(AudioStop().event())
        while True:
            ev = await c.read_event()
            if Transcript.is_type(ev.type):
                print("TRANSCRIPT:", Transcript.from_event(ev).text)
                break
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Synthesize(text="Good morning. The garden lights are on.").event())
        audio, rate = b"", 0
        while True:
            ev = await c.read_event()
            if AudioStart.is_type(ev.type):
                rate = AudioStart.from_event(ev).rate
            elif AudioChunk.is_type(ev.type):
                audio += AudioChunk.from_event(ev).audio
            elif AudioStop.is_type(ev.type):
                break
        with wave.open(sys.argv[3], "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(audio)
        print("AUDIO:", len(audio))
    # Streamed synthesis, as Home Assistant sends a streamed answer: one audio group a sentence,
    # one format throughout, then synthesize-stopped.
    async with AsyncTcpClient("127.0.0.1", port) as c:
        text = "The oven is hot. Please wait a minute. Then the bread goes in."
        await c.write_event(SynthesizeStart().event())
        for i in range(0, len(text), 7):
            await c.write_event(SynthesizeChunk(text=text[i:i + 7]).event())
        await c.write_event(Synthesize(text=text).event())
        await c.write_event(SynthesizeStop().event())
        groups, formats, sizes = 0, set(), []
        while True:
            ev = await c.read_event()
            if AudioStart.is_type(ev.type):
                a = AudioStart.from_event(ev)
                groups += 1; formats.add((a.rate, a.width, a.channels)); sizes.append(0)
            elif AudioChunk.is_type(ev.type):
                sizes[-1] += len(AudioChunk.from_event(ev).audio)
            elif SynthesizeStopped.is_type(ev.type):
                break
        print("GROUPS:", groups, len(formats), min(sizes))
    # The conversation agent: a transcript in, the answer out.
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Said(text="What is the capital of France?").event())
        chunks = []
        while True:
            ev = await c.read_event()
            if HandledChunk.is_type(ev.type):
                chunks.append(HandledChunk.from_event(ev).text)
            elif Handled.is_type(ev.type):
                print("HANDLED:", Handled.from_event(ev).text, "| CHUNKS:", len(chunks), "".join(chunks).strip())
                break
            elif NotHandled.is_type(ev.type):
                print("NOT HANDLED:", NotHandled.from_event(ev).text)
                break

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"#;

#[test]
fn the_wyoming_python_client_transcribes_and_synthesizes() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    let out = python(
        WYOMING_CLIENT,
        &[
            &s.wyoming.to_string(),
            model_path("sample-jfk").to_str().unwrap(),
            said.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("ASR: seesay-whisper TTS: piper-joe-medium"),
        "{out}"
    );
    let transcript = out
        .lines()
        .find_map(|l| l.strip_prefix("TRANSCRIPT:"))
        .unwrap();
    assert!(
        word_errors(&words(JFK), &words(transcript)) <= 1,
        "{transcript}"
    );
    let heard = words(&ok(seesay(&["transcribe", said.to_str().unwrap()])));
    for w in ["morning", "garden", "lights"] {
        assert!(heard.contains(&w.into()), "{heard:?}");
    }
    assert!(out.contains("STREAMING: True True"), "{out}");
    assert!(out.contains("HANDLE: seesay-chat True ['en']"), "{out}");
    let groups = out
        .lines()
        .find_map(|l| l.strip_prefix("GROUPS: "))
        .unwrap();
    let g: Vec<usize> = groups.split(' ').map(|n| n.parse().unwrap()).collect();
    assert_eq!(g[..2], [3, 1], "three sentences, one format: {out}");
    assert!(g[2] > 10_000, "every group holds speech: {out}");
    let handled = out
        .lines()
        .find_map(|l| l.strip_prefix("HANDLED: "))
        .unwrap();
    let (answer, streamed) = handled.split_once(" | CHUNKS: ").unwrap();
    assert!(answer.contains("Paris"), "{out}");
    let (n, joined) = streamed.split_once(' ').unwrap();
    assert!(
        n.parse::<usize>().unwrap() > 1,
        "the answer came in pieces: {out}"
    );
    assert_eq!(joined, answer, "the pieces make the answer: {out}");
}

const WYOMING_WAKE: &str = r#"
import asyncio, sys, wave
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection, NotDetected
from wyoming.audio import AudioStart, AudioChunk, AudioStop

async def listen(port, path, names):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Detect(names=names).event())
        with wave.open(path, "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            while data := w.readframes(1024):
                await c.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=data).event())
        await c.write_event(AudioStop().event())
        while True:
            ev = await c.read_event()
            if Detection.is_type(ev.type):
                d = Detection.from_event(ev)
                print("DETECTION:", d.name, d.timestamp)
                return
            elif NotDetected.is_type(ev.type):
                print("NOT DETECTED")
                return

async def main(port, wake, other):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await c.read_event())
        print("WAKE:", " ".join(m.name for m in info.wake[0].models))
    await listen(port, wake, ["hey_jarvis"])
    await listen(port, other, None)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"#;

/// Home Assistant's wake-word flow: `detect`, then audio; "Hey Jarvis" (in Piper's voice, at
/// 22.05 kHz as `say` writes it) is detected, a question without it is not.
#[test]
fn the_wyoming_python_client_hears_the_wake_word() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (wake, other) = (dir.path().join("wake.wav"), dir.path().join("other.wav"));
    ok(seesay(&[
        "say",
        "Hey Jarvis.",
        "-o",
        wake.to_str().unwrap(),
    ]));
    ok(seesay(&[
        "say",
        "What is the weather like today?",
        "-o",
        other.to_str().unwrap(),
    ]));
    let out = python(
        WYOMING_WAKE,
        &[
            &s.wyoming.to_string(),
            wake.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    assert!(out.contains("WAKE: alexa hey_jarvis"), "{out}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("DETECTION: hey_jarvis")
            && lines[1] == "NOT DETECTED",
        "{out}"
    );
}
