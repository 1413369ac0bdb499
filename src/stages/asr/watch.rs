//! A watch over one whisper.cpp decode: given up when its result is no longer needed (a
//! `Cancel`), or when a short audio context has sent it into a loop (more tokens than the audio
//! could hold: "What is 2 plus 3?" repeated until the token limit cost 0.6 s of a 1.28 s
//! question's 0.75 s, before the retry).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use whisper_rs::whisper_rs_sys::{whisper_context, whisper_state, whisper_token_data};
use whisper_rs::FullParams;

use crate::stages::Cancel;

/// Tokens (text and timestamps) a segment may take per second of audio, above `BASE_TOKENS`:
/// fast speech is 4-5 tokens a second; a loop fills the decoder's 220.
const TOKENS_PER_S: f64 = 10.0;
const BASE_TOKENS: f64 = 16.0;

thread_local! {
    /// Set on this thread when its decode ran away and was given up (whisper.cpp then logs
    /// "failed to decode": no error of ours).
    static RAN_AWAY: Cell<bool> = const { Cell::new(false) };
}

/// What whisper.cpp's callbacks look at while one `full` runs.
pub(super) struct Watch {
    stop: Option<Cancel>,
    max_tokens: i32,
    /// Give the decode up past `max_tokens` (a short context); else only note that it reached
    /// them (the full context, where whisper.cpp itself ends the segment there).
    give_up_past: bool,
    reached: AtomicBool,
    runaway: AtomicBool,
}

impl Watch {
    /// A watch on a decode of `secs` of audio: stopped by `stop`, and with `limit` given up past
    /// the tokens such audio could hold (without it, only noted when it reaches them).
    pub(super) fn new(stop: Option<Cancel>, secs: f64, limit: bool) -> Watch {
        RAN_AWAY.with(|r| r.set(false));
        Watch {
            stop,
            max_tokens: most_tokens(secs),
            give_up_past: limit,
            reached: AtomicBool::new(false),
            runaway: AtomicBool::new(false),
        }
    }

    /// Hands whisper.cpp the callbacks, pointing at this watch, and without `limit` the token
    /// limit itself.
    ///
    /// # Safety
    /// The watch must outlive every `full` run with `params`, and not move meanwhile.
    pub(super) unsafe fn install(&self, params: &mut FullParams) {
        let data = self as *const Watch as *mut c_void;
        // SAFETY: both callbacks only read the watch (and set its atomic flag), which the
        // caller keeps alive and in place while whisper.cpp may call them.
        unsafe {
            params.set_abort_callback(Some(give_up));
            params.set_abort_callback_user_data(data);
            params.set_filter_logits_callback(Some(count_tokens));
            params.set_filter_logits_callback_user_data(data);
        }
        if !self.give_up_past {
            // Where the decode is not given up (the full context), whisper.cpp ends a segment at
            // the limit: a loop there ran to the decoder's 220 tokens and failed, then again at
            // each of five warmer temperatures, seconds of work while every conversation waited
            // for the recogniser (a soak turn waited 5-9 s for its transcript). Cut there, a loop
            // counts as done (whisper.cpp falls back only on low entropy or confidence), so the
            // caller keeps it once (`reached_limit`).
            params.set_max_tokens(self.max_tokens);
        }
    }

    /// Did a decode reach the tokens its audio could hold (a loop, cut there)?
    pub(super) fn reached_limit(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }

    pub(super) fn ran_away(&self) -> bool {
        self.runaway.load(Ordering::Acquire)
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(Cancel::is_cancelled)
    }
}

/// The most tokens (text and timestamps) one decode of `secs` of speech could need.
fn most_tokens(secs: f64) -> i32 {
    (BASE_TOKENS + TOKENS_PER_S * secs).ceil() as i32
}

/// Did the decode under way on this thread run away (its "failed to decode" is expected)?
pub(super) fn ran_away_here() -> bool {
    RAN_AWAY.with(Cell::get)
}

/// whisper.cpp's abort callback, between the steps of its computation.
unsafe extern "C" fn give_up(data: *mut c_void) -> bool {
    // SAFETY: `install` passed a pointer to a `Watch` that outlives the run.
    let w = unsafe { &*(data as *const Watch) };
    w.stopped() || w.ran_away()
}

/// whisper.cpp's logits filter, before each token is chosen: counts the segment's tokens.
unsafe extern "C" fn count_tokens(
    _: *mut whisper_context,
    _: *mut whisper_state,
    _: *const whisper_token_data,
    n_tokens: std::os::raw::c_int,
    _: *mut f32,
    data: *mut c_void,
) {
    // SAFETY: `install` passed a pointer to a `Watch` that outlives the run.
    let w = unsafe { &*(data as *const Watch) };
    if n_tokens >= w.max_tokens {
        w.reached.store(true, Ordering::Release);
    }
    if w.give_up_past && n_tokens > w.max_tokens && !w.ran_away() {
        w.runaway.store(true, Ordering::Release);
        RAN_AWAY.with(|r| r.set(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_is_given_up_past_the_tokens_its_audio_could_hold() {
        let w = Watch::new(None, 1.28, true);
        let data = &w as *const Watch as *mut c_void;
        let count = |n, data| {
            let null = std::ptr::null_mut();
            // SAFETY: `data` points at a watch that lives through the call; the pointers the
            // callback ignores may be null.
            unsafe { count_tokens(null, null.cast(), std::ptr::null(), n, null.cast(), data) }
        };
        count(28, data);
        assert!(!w.reached_limit());
        count(29, data);
        // SAFETY: `w` lives through the calls.
        assert!(unsafe { !give_up(data) }, "29 tokens fit 1.28 s");
        assert!(w.reached_limit(), "29 reach the limit");
        count(30, data);
        assert!(unsafe { give_up(data) }, "30 do not");
        assert!(w.ran_away() && ran_away_here());
        // A new watch starts afresh; one without a limit never runs away.
        let w = Watch::new(None, 1.28, false);
        assert!(!ran_away_here());
        let data = &w as *const Watch as *mut c_void;
        count(500, data);
        // SAFETY: as above.
        assert!(unsafe { !give_up(data) });
        assert!(w.reached_limit(), "noted all the same");
        let stop = Cancel::new();
        let w = Watch::new(Some(stop.clone()), 1.0, true);
        let data = &w as *const Watch as *mut c_void;
        stop.cancel();
        // SAFETY: as above.
        assert!(unsafe { give_up(data) });
    }
}
