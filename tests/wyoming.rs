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
from wyoming.tts import Synthesize

async def main(port, jfk):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await c.read_event())
        print("ASR:", info.asr[0].name, "TTS:", info.tts[0].voices[0].name)
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
}
