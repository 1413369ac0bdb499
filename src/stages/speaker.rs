//! Playback: mono f32 PCM in, sound out of the default (or a named) output device through cpal.
//! `play` plays one buffer and returns; `LiveSpeaker` streams the live pipeline's answers and
//! goes quiet the moment their turn is over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::device::{self, DeviceError, Direction};
use super::echo::EchoReference;
use super::TurnClock;
use crate::media::audio::{resample, AudioError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("{0} (use `-o FILE.wav` to write the speech to a file instead)")]
    Stalled(String),
    #[error(transparent)]
    Resample(#[from] AudioError),
}

/// Plays `samples` (mono, `rate` Hz) on the output device and returns when playback is done.
/// `device` empty means the system default.
pub fn play(samples: &[f32], rate: u32, device: &str) -> Result<(), SpeakerError> {
    if samples.is_empty() {
        return Ok(());
    }
    let dev = device::pick(Direction::Output, device)?;
    // Resampled before the stream opens: a device that pulls faster than real time (ALSA's null
    // device) would otherwise be fed silence meanwhile.
    let pcm = resample(samples, rate, device::output_rate(&dev)?)?;
    let (tx_done, rx_done) = crossbeam_channel::bounded::<Result<(), String>>(2);
    let tx_err = tx_done.clone();
    let total = pcm.len();
    let mut pos = 0usize;
    let next = move || -> f32 {
        let v = pcm.get(pos).copied().unwrap_or(0.0);
        pos += 1;
        if pos == total {
            let _ = tx_done.try_send(Ok(()));
        }
        v
    };
    let on_err = device::on_error(Direction::Output, move |e| {
        let _ = tx_err.try_send(Err(e));
    });
    let stream = device::output_stream(&dev, next, on_err)?;
    let secs = total as f64 / stream.rate as f64;
    // A device that never pulls data must not hang us: allow the audio's length plus slack.
    match rx_done.recv_timeout(Duration::from_secs_f64(secs + 2.0)) {
        Ok(Ok(())) => {
            // Let the device drain its own buffer.
            std::thread::sleep(Duration::from_millis(150));
            Ok(())
        }
        Ok(Err(e)) => Err(Direction::Output.failed(e).into()),
        Err(_) => Err(SpeakerError::Stalled(
            "the output device stopped taking audio".into(),
        )),
    }
}

/// A piece of speech for the live output, tagged with its turn.
pub struct Chunk {
    pub turn: u64,
    pub samples: Vec<f32>,
}

/// Streaming playback for the live pipeline: chunks go in through a bounded channel; the device
/// callback drops chunks of turns the clock says are over (barge-in, stop), plays silence while
/// the clock holds playback (and then goes on where it paused), and reports each
/// turn's first sample, with when it was played, on `started` (one message: the pair cannot tear).
pub struct LiveSpeaker {
    pub tx: crossbeam_channel::Sender<Chunk>,
    /// Device rate: chunks must already be at this rate.
    pub rate: u32,
    /// (turn, when its first sample was played), once per turn.
    pub started: crossbeam_channel::Receiver<(u64, Instant)>,
    /// Samples still buffered in the callback (not yet played).
    pub queued: Arc<AtomicU64>,
    pub errors: crossbeam_channel::Receiver<String>,
    _stream: device::Stream,
}

impl LiveSpeaker {
    /// Opens the device; with `echo`, everything it plays (silence included) is also handed
    /// to the echo canceller as its reference.
    pub fn open(
        device: &str,
        clock: Arc<TurnClock>,
        echo: Option<Arc<EchoReference>>,
    ) -> Result<LiveSpeaker, SpeakerError> {
        let dev = device::pick(Direction::Output, device)?;
        let rate = device::output_rate(&dev)?;
        let mut tap: Vec<f32> = Vec::with_capacity(256);
        let (tx, rx) = crossbeam_channel::bounded::<Chunk>(64);
        let (tx_err, errors) = crossbeam_channel::bounded::<String>(4);
        let (tx_started, started) = crossbeam_channel::bounded::<(u64, Instant)>(64);
        let queued = Arc::new(AtomicU64::new(0));
        let q = queued.clone();
        let mut cur: Option<Chunk> = None;
        let mut pos = 0usize;
        let mut last_started = 0u64;
        let mut sample = move || -> f32 {
            if clock.on_hold() {
                // The user may be interrupting: the answer waits where it is.
                return 0.0;
            }
            loop {
                if let Some(c) = &cur {
                    if !clock.is_stale(c.turn) && pos < c.samples.len() {
                        if pos == 0 && last_started < c.turn {
                            last_started = c.turn;
                            let _ = tx_started.try_send((c.turn, Instant::now()));
                        }
                        pos += 1;
                        q.fetch_sub(1, Ordering::Relaxed);
                        return c.samples[pos - 1];
                    }
                    let left = c.samples.len().saturating_sub(pos) as u64;
                    q.fetch_sub(left, Ordering::Relaxed);
                }
                match rx.try_recv() {
                    Ok(c) => {
                        cur = Some(c);
                        pos = 0;
                    }
                    Err(_) => {
                        cur = None;
                        return 0.0;
                    }
                }
            }
        };
        let next = move || -> f32 {
            let v = sample();
            if let Some(r) = &echo {
                tap.push(v);
                if tap.len() == tap.capacity() {
                    r.played(rate, &tap);
                    tap.clear();
                }
            }
            v
        };
        let on_err = device::on_error(Direction::Output, move |e| {
            let _ = tx_err.try_send(e);
        });
        let stream = device::output_stream(&dev, next, on_err)?;
        Ok(LiveSpeaker {
            tx,
            rate: stream.rate,
            started,
            queued,
            errors,
            _stream: stream,
        })
    }
}
