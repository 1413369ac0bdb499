//! The sinks: audio of the answers in, played out. A WAV timeline that advances with the input
//! (recordings), a speaker (cpal), or a client that plays what it is sent (WebSocket). Each drops
//! audio of turns that are over and reports when each turn's first sample was heard.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::error::PipelineError;
use super::messages::{Play, What};
use super::turns::Context;
use crate::media::audio::{resample, SAMPLE_RATE};
use crate::media::wav::WavWriter;
use crate::stages::device::Direction;
use crate::stages::echo::EchoReference;
use crate::stages::speaker::{Chunk, LiveSpeaker, SpeakerError};

/// A turn's audio waiting to be played.
pub(crate) struct Queued {
    turn: u64,
    pcm: Vec<f32>,
    pos: usize,
}

/// Sink bookkeeping common to the WAV timeline and the speaker.
pub(crate) struct TurnAudio {
    queue: VecDeque<Queued>,
    /// Turns whose audio is complete (End received).
    ended: Vec<u64>,
    /// Samples played per turn, and whether its first sample went out.
    played: HashMap<u64, usize>,
    answered: usize,
}

impl TurnAudio {
    fn new() -> TurnAudio {
        TurnAudio {
            queue: VecDeque::new(),
            ended: Vec::new(),
            played: HashMap::new(),
            answered: 0,
        }
    }

    fn take(&mut self, msg: Play) {
        match msg {
            Play::Audio { turn, pcm } => self.queue.push_back(Queued { turn, pcm, pos: 0 }),
            Play::End { turn } => self.ended.push(turn),
        }
    }

    /// Drops audio of stale turns; reports interrupted turns as done.
    fn drop_stale(&mut self, cx: &Context, rate: u32) {
        while self
            .queue
            .front()
            .is_some_and(|q| cx.turns.is_stale(q.turn))
        {
            self.queue.pop_front();
        }
        let stale: Vec<u64> = self
            .ended
            .iter()
            .copied()
            .filter(|&t| cx.turns.is_stale(t))
            .collect();
        for t in stale {
            self.close(t, true, cx, rate);
        }
    }

    /// Turns whose audio has all been played are done.
    fn finish_played(&mut self, cx: &Context, rate: u32) {
        let done: Vec<u64> = self
            .ended
            .iter()
            .copied()
            .filter(|&t| !self.queue.iter().any(|q| q.turn == t))
            .collect();
        for t in done {
            self.close(t, false, cx, rate);
        }
    }

    fn close(&mut self, turn: u64, interrupted: bool, cx: &Context, rate: u32) {
        self.ended.retain(|&t| t != turn);
        let samples = self.played.remove(&turn).unwrap_or(0);
        cx.turns.finish(turn);
        if samples > 0 {
            self.answered += 1;
            cx.event(
                turn,
                What::Done {
                    interrupted,
                    audio_s: samples as f64 / rate as f64,
                },
            );
        } else {
            // Nothing was said (interrupted before the first word, or no answer).
            let why = match interrupted {
                true => "interrupted",
                false => "nothing to say",
            };
            cx.event(turn, What::Dropped(why));
        }
    }

    /// The next sample to play, or `None` when nothing is queued (or playback is `held`).
    fn next_sample_unless(
        &mut self,
        held: bool,
        cx: &Context,
        at: impl FnOnce() -> Instant,
    ) -> Option<f32> {
        let q = self.queue.front_mut().filter(|_| !held)?;
        let v = q.pcm[q.pos];
        let n = self.played.entry(q.turn).or_insert(0);
        if *n == 0 {
            cx.event(q.turn, What::FirstAudio(at()));
        }
        *n += 1;
        q.pos += 1;
        if q.pos >= q.pcm.len() {
            self.queue.pop_front();
        }
        Some(v)
    }
}

/// The sink for files: a timeline at the voice's rate that advances with the input, so the
/// output shows when each answer would have been heard. Written as it goes (a long recording's
/// answer never sits in memory whole); returns its length in samples and the file, to be
/// finished if the run succeeds.
pub(crate) fn timeline_loop(
    rate: u32,
    max_turns: Option<usize>,
    mut file: WavWriter,
    rx: Receiver<Play>,
    cx: Arc<Context>,
) -> Result<(usize, WavWriter), PipelineError> {
    let mut written = 0usize;
    let mut chunk: Vec<f32> = Vec::new();
    let mut audio = TurnAudio::new();
    let time_of = |pos: usize| cx.t0 + Duration::from_secs_f64(pos as f64 / rate as f64);
    let mut open = true;
    let mut aborted = false;
    while open {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(msg) => audio.take(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if !aborted && cx.aborted() {
            // Ctrl-C: cancel the turn in flight everywhere and stop playing.
            aborted = true;
            cx.shut_down();
        }
        audio.drop_stale(&cx, rate);
        let target = if open {
            (cx.input_pos.load(Ordering::Acquire) as f64 * rate as f64 / SAMPLE_RATE as f64)
                as usize
        } else if cx.aborted() {
            written
        } else {
            usize::MAX // end of input: play out what is left
        };
        while written < target {
            let pos = written;
            // On hold (the user may be interrupting), the timeline goes on in silence.
            let held = open && cx.turns.clock.on_hold();
            match audio.next_sample_unless(held, &cx, || time_of(pos)) {
                Some(v) => chunk.push(v),
                None if open => chunk.push(0.0),
                None => break,
            }
            written += 1;
        }
        file.write(&chunk)?;
        chunk.clear();
        audio.finish_played(&cx, rate);
        if max_turns.is_some_and(|n| audio.answered >= n) {
            cx.stop.store(true, Ordering::Release);
        }
    }
    audio.queue.clear();
    for t in audio.ended.clone() {
        audio.close(t, true, &cx, rate);
    }
    Ok((written, file))
}

/// The sink for a speaker: audio goes to the device as it comes; the device callback drops
/// audio of older turns the moment a new turn starts.
pub(crate) fn speaker_loop(
    voice_rate: u32,
    device: String,
    echo: Option<Arc<EchoReference>>,
    max_turns: Option<usize>,
    rx: Receiver<Play>,
    cx: Arc<Context>,
) -> Result<usize, PipelineError> {
    let mut spk = LiveSpeaker::open(&device, cx.turns.clock.clone(), echo.clone())?;
    let mut reopening = Reopening::default();
    let mut audio = TurnAudio::new();
    let mut open = true;
    while open || !audio.queue.is_empty() || !audio.ended.is_empty() {
        if let Ok(e) = spk.errors.try_recv() {
            drop(spk);
            spk = reopen(&device, &echo, &mut reopening, e, &cx)?;
        }
        if open {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(msg) => audio.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if cx.aborted() {
            cx.shut_down();
            break;
        }
        audio.drop_stale(&cx, voice_rate);
        // Hand whole sentences to the device, resampled to its rate.
        while let Some(q) = audio.queue.pop_front() {
            let pcm = resample(&q.pcm, voice_rate, spk.rate)?;
            *audio.played.entry(q.turn).or_insert(0) += q.pcm.len();
            spk.queued.fetch_add(pcm.len() as u64, Ordering::Relaxed);
            for piece in pcm.chunks(1024) {
                let chunk = Chunk {
                    turn: q.turn,
                    samples: piece.to_vec(),
                };
                if spk.tx.send(chunk).is_err() {
                    return Err(PipelineError::Speaker(SpeakerError::Device(
                        Direction::Output.failed("the speaker stream ended"),
                    )));
                }
            }
        }
        for (turn, at) in spk.started.try_iter() {
            cx.event(turn, What::FirstAudio(at));
        }
        if spk.queued.load(Ordering::Relaxed) == 0 {
            audio.finish_played(&cx, voice_rate);
        }
        if max_turns.is_some_and(|n| audio.answered >= n) {
            cx.stop.store(true, Ordering::Release);
        }
    }
    Ok(0)
}

/// How many times in a row a broken speaker is opened again before the run fails.
const REOPENS_IN_A_ROW: u32 = 6;

/// A broken speaker is opened again after a pause that doubles with each failure in a row (0.1 s
/// to 3.2 s, so a sound server that restarts has time to come back); the run fails at the
/// seventh failure in a row. Failures a minute apart are not in a row: a kiosk that runs for
/// months survives a glitch a day.
#[derive(Default)]
struct Reopening {
    failures: u32,
    last: Option<Instant>,
}

impl Reopening {
    /// After the speaker failed with `e`: the pause before it is opened again, or the run's error.
    fn after_failure(&mut self, e: String) -> Result<Duration, PipelineError> {
        if self
            .last
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.failures = 0;
        }
        self.last = Some(Instant::now());
        self.failures += 1;
        if self.failures > REOPENS_IN_A_ROW {
            return Err(PipelineError::Speaker(SpeakerError::Device(
                Direction::Output.failed(e),
            )));
        }
        Ok(Duration::from_millis(100 << (self.failures - 1)))
    }
}

/// Opens the speaker again after it broke with `e`, pausing before each try (the pause ends
/// early when the run is aborted); the run's error once it failed too often in a row.
fn reopen(
    device: &str,
    echo: &Option<Arc<EchoReference>>,
    reopening: &mut Reopening,
    e: String,
    cx: &Context,
) -> Result<LiveSpeaker, PipelineError> {
    let mut why = e;
    loop {
        let pause = reopening.after_failure(why.clone())?;
        tracing::warn!(
            pause_ms = pause.as_millis() as u64,
            "the speaker failed ({why}); opening it again"
        );
        let until = Instant::now() + pause;
        while Instant::now() < until && !cx.aborted() {
            std::thread::sleep(Duration::from_millis(20));
        }
        match LiveSpeaker::open(device, cx.turns.clock.clone(), echo.clone()) {
            Ok(spk) => return Ok(spk),
            Err(e) => why = e.to_string(),
        }
    }
}

/// The sink for a client (a WebSocket): audio goes out as soon as it is synthesised and the client
/// plays it in order. The client's playback is modelled: each piece plays after the one before,
/// or at once if that one is over. A turn counts as playing until its last piece has, which is
/// what keeps a half-duplex conversation deaf to its own answer; an interruption counts only the
/// audio that had time to play.
pub(crate) fn client_loop(
    rate: u32,
    max_turns: Option<usize>,
    rx: Receiver<Play>,
    cx: Arc<Context>,
) -> Result<usize, PipelineError> {
    let mut audio = TurnAudio::new();
    // When each turn's audio sent so far will have been played.
    let mut play_end: HashMap<u64, Instant> = HashMap::new();
    let secs = |samples: usize| Duration::from_secs_f64(samples as f64 / rate as f64);
    // Samples of `turn` played by now, of `sent`.
    let heard = |play_end: &HashMap<u64, Instant>, turn: u64, sent: usize| {
        let left = play_end.get(&turn).map_or(0.0, |e| {
            e.saturating_duration_since(Instant::now()).as_secs_f64()
        });
        sent.saturating_sub((left * rate as f64) as usize)
    };
    let mut gone = false;
    // The input ended and every answer was sent: what is left is the client's playback, waited
    // out so the last answer counts as heard whole.
    let mut sent_all = false;
    while !(gone || sent_all && audio.ended.is_empty()) {
        if sent_all {
            std::thread::sleep(Duration::from_millis(5));
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(Play::Audio { turn, pcm }) if !cx.turns.is_stale(turn) => {
                let now = Instant::now();
                let start = match play_end.get(&turn) {
                    Some(e) => (*e).max(now),
                    None => {
                        cx.event(turn, What::FirstAudio(now));
                        now
                    }
                };
                play_end.insert(turn, start + secs(pcm.len()));
                *audio.played.entry(turn).or_insert(0) += pcm.len();
                if !cx.publish_audio(turn, pcm) {
                    // The client is gone: nothing more to play to.
                    cx.shut_down();
                    gone = true;
                }
            }
            Ok(Play::Audio { .. }) => {}
            Ok(Play::End { turn }) => audio.ended.push(turn),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => sent_all = true,
        }
        if cx.aborted() {
            cx.shut_down();
        }
        for turn in audio.ended.clone() {
            let sent = audio.played.get(&turn).copied().unwrap_or(0);
            let played = heard(&play_end, turn, sent);
            // Over when all of it has played, or cut short by a newer turn (or the client
            // leaving): then what had not played by now never will.
            if played >= sent || cx.turns.is_stale(turn) || gone {
                audio.played.insert(turn, played);
                play_end.remove(&turn);
                // A turn superseded before any of it was sent was interrupted, not silent.
                let cut = played < sent || sent == 0 && cx.turns.is_stale(turn);
                audio.close(turn, cut, &cx, rate);
            }
        }
        if max_turns.is_some_and(|n| audio.answered >= n) {
            cx.stop.store(true, Ordering::Release);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Mutex;

    use super::*;
    use crate::pipeline::turns::Turns;

    fn context() -> Context {
        Context {
            turns: Turns::default(),
            input_pos: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            abort: Arc::new(AtomicBool::new(false)),
            scene: Mutex::new(None),
            picture: Mutex::new(None),
            speaking: Mutex::new(String::new()),
            t0: Instant::now(),
            events: crossbeam_channel::unbounded().0,
            updates: None,
            failure: Mutex::new(None),
            order: Mutex::new(()),
            memory: None,
            ahead: Mutex::new(None),
        }
    }

    #[test]
    fn a_broken_speaker_is_opened_again_with_growing_pauses_then_the_run_fails() {
        let mut r = Reopening::default();
        let pauses: Vec<u128> = (0..REOPENS_IN_A_ROW)
            .map(|_| r.after_failure("gone".into()).unwrap().as_millis())
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200]);
        assert!(
            r.after_failure("gone".into()).is_err(),
            "the seventh in a row"
        );
        // A failure a minute after the last is the first of a new row.
        let mut r = Reopening::default();
        for _ in 0..REOPENS_IN_A_ROW {
            r.after_failure("gone".into()).unwrap();
        }
        r.last = Instant::now().checked_sub(Duration::from_secs(61));
        assert_eq!(r.after_failure("gone".into()).unwrap().as_millis(), 100);
    }

    #[test]
    fn a_held_answer_goes_on_where_it_paused() {
        let cx = context();
        let turn = cx.turns.begin();
        let mut audio = TurnAudio::new();
        audio.take(Play::Audio {
            turn,
            pcm: vec![0.1, 0.2, 0.3],
        });
        let mut next = |held| audio.next_sample_unless(held, &cx, Instant::now);
        assert_eq!(next(false), Some(0.1));
        assert_eq!(next(true), None);
        assert_eq!(next(true), None);
        assert_eq!(next(false), Some(0.2));
        assert_eq!(next(false), Some(0.3));
        assert_eq!(next(false), None);
    }
}
