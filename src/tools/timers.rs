//! Timers: a length (seconds or words like "five minutes") and a label in; when a timer ends,
//! its text ("Your 5 second timer is done.") out to a callback that decides where it goes.
//! One sleeping thread per timer; cancelling a timer wakes and ends its thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use serde_json::{json, Value};

use super::tool::{text_arg, Tool, ToolError};
use crate::stages::lock;

/// Longest timer: a day.
const LONGEST_S: f64 = 86_400.0;

/// The running timers, and what to do with the text of one that ends.
#[derive(Clone)]
pub struct Timers {
    inner: Arc<Inner>,
}

struct Inner {
    running: Mutex<Vec<Running>>,
    next_id: AtomicU64,
    on_end: Box<dyn Fn(String) + Send + Sync>,
}

struct Running {
    id: u64,
    label: String,
    seconds: f64,
    ends: Instant,
    /// Dropped to cancel: the timer's thread wakes and ends without a word.
    _stop: Sender<()>,
}

/// A running timer as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerInfo {
    pub id: u64,
    pub label: String,
    pub seconds: f64,
    pub left_s: f64,
}

impl Timers {
    /// Timers whose end text goes to `on_end` (called on the timer's own thread).
    pub fn new(on_end: impl Fn(String) + Send + Sync + 'static) -> Timers {
        Timers {
            inner: Arc::new(Inner {
                running: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                on_end: Box::new(on_end),
            }),
        }
    }

    /// Starts a timer of `seconds`; returns its id.
    pub fn set(&self, seconds: f64, label: &str) -> Result<u64, ToolError> {
        if !(seconds > 0.0 && seconds <= LONGEST_S) {
            return Err(ToolError::arguments(
                "set_timer",
                format!("a timer runs from 1 second to 24 hours, not {seconds} seconds"),
            ));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let length = Duration::from_secs_f64(seconds);
        lock(&self.inner.running).push(Running {
            id,
            label: label.trim().to_string(),
            seconds,
            ends: Instant::now() + length,
            _stop: stop,
        });
        let inner = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name(format!("timer {id}"))
            .spawn(move || {
                if stopped.recv_timeout(length) != Err(RecvTimeoutError::Timeout) {
                    return; // cancelled
                }
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let ended = {
                    let mut running = lock(&inner.running);
                    let i = running.iter().position(|r| r.id == id);
                    i.map(|i| running.remove(i))
                };
                if let Some(r) = ended {
                    (inner.on_end)(end_text(r.seconds, &r.label));
                }
            })
            .map_err(|e| ToolError::Failed(format!("cannot start the timer's thread: {e}")))?;
        Ok(id)
    }

    /// The running timers, soonest first.
    pub fn list(&self) -> Vec<TimerInfo> {
        let now = Instant::now();
        let mut list: Vec<TimerInfo> = lock(&self.inner.running)
            .iter()
            .map(|r| TimerInfo {
                id: r.id,
                label: r.label.clone(),
                seconds: r.seconds,
                left_s: r.ends.saturating_duration_since(now).as_secs_f64(),
            })
            .collect();
        list.sort_by(|a, b| a.left_s.total_cmp(&b.left_s));
        list
    }

    /// Cancels the timers `what` names: an id, a label, "all", or (empty) the only one running.
    pub fn cancel(&self, what: &str) -> Vec<TimerInfo> {
        let what = what.trim().trim_start_matches('#').to_lowercase();
        let listed = self.list();
        let chosen: Vec<TimerInfo> = match what.as_str() {
            "all" | "every" | "everything" => listed,
            "" if listed.len() == 1 => listed,
            w => listed
                .into_iter()
                .filter(|t| {
                    t.id.to_string() == w || (!t.label.is_empty() && t.label.to_lowercase() == w)
                })
                .collect(),
        };
        lock(&self.inner.running).retain(|r| !chosen.iter().any(|c| c.id == r.id));
        chosen
    }
}

/// What is said when a timer ends.
pub fn end_text(seconds: f64, label: &str) -> String {
    match label.trim() {
        "" => format!("Your {} timer is done.", length_words(seconds)),
        l => format!("Your {} timer for {l} is done.", length_words(seconds)),
    }
}

/// "5 second", "2 minute", "1 hour 30 minute": a length as it stands before "timer".
fn length_words(seconds: f64) -> String {
    let s = seconds.round() as u64;
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let parts: Vec<String> = [(h, "hour"), (m, "minute"), (sec, "second")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    match parts.is_empty() {
        true => format!("{seconds} second"),
        false => parts.join(" "),
    }
}

/// Seconds in a length written in words or digits: "90", "5 minutes", "an hour and a half",
/// "1 h 30 min", "five seconds", "1:30" (minutes:seconds), "1:00:00".
pub fn parse_duration(text: &str) -> Option<f64> {
    let t = text.trim().to_lowercase();
    if let Ok(n) = t.parse::<f64>() {
        return Some(n);
    }
    if t.contains(':') {
        let parts: Option<Vec<f64>> = t.split(':').map(|p| p.trim().parse().ok()).collect();
        return parts.map(|p| p.iter().fold(0.0, |acc, x| acc * 60.0 + x));
    }
    let spaced = t.replace(['-', ','], " ");
    let mut total = 0.0;
    let mut pending: Option<f64> = None;
    let mut any = false;
    for word in spaced.split_whitespace() {
        let (num, unit) = split_number(word);
        let article = matches!(word, "a" | "an");
        if let Some(n) = num
            .and_then(number)
            .filter(|_| !(article && pending.is_some()))
        {
            pending = Some(pending.unwrap_or(0.0) + n);
        }
        let Some(unit) = unit_seconds(unit) else {
            continue;
        };
        total += pending.take().unwrap_or(1.0) * unit;
        any = true;
        // "an hour and a half": the half is of the unit before it.
        if spaced.contains(&format!("{word} and a half")) {
            total += unit / 2.0;
        }
    }
    match (any, pending) {
        (true, _) => Some(total),
        (false, Some(n)) => Some(n),
        (false, None) => None,
    }
}

/// "5min" → ("5", "min"); "five" → ("five", "five").
fn split_number(word: &str) -> (Option<&str>, &str) {
    let digits = word.find(|c: char| !(c.is_ascii_digit() || c == '.'));
    match digits {
        Some(0) => (Some(word), word),
        Some(i) => (Some(&word[..i]), &word[i..]),
        None => (Some(word), ""),
    }
}

fn number(word: &str) -> Option<f64> {
    if let Ok(n) = word.parse::<f64>() {
        return Some(n);
    }
    const SMALL: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = SMALL.iter().position(|w| *w == word) {
        return Some(i as f64);
    }
    if let Some(i) = TENS.iter().position(|w| *w == word) {
        return Some(20.0 + 10.0 * i as f64);
    }
    match word {
        "a" | "an" => Some(1.0),
        "half" => Some(0.5),
        "quarter" => Some(0.25),
        _ => None,
    }
}

fn unit_seconds(unit: &str) -> Option<f64> {
    match unit.trim_end_matches('.') {
        "s" | "sec" | "secs" | "second" | "seconds" => Some(1.0),
        "m" | "min" | "mins" | "minute" | "minutes" => Some(60.0),
        "h" | "hr" | "hrs" | "hour" | "hours" => Some(3600.0),
        _ => None,
    }
}

/// The length a `set_timer` call asks for, from whichever argument the model used.
fn requested_seconds(args: &Value) -> Result<f64, ToolError> {
    let mut total = 0.0;
    let mut found = false;
    for (key, unit) in [
        ("seconds", 1.0),
        ("minutes", 60.0),
        ("hours", 3600.0),
        ("duration", 1.0),
    ] {
        let n = match args.get(key) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => parse_duration(s),
            _ => continue,
        };
        let n = n.ok_or_else(|| {
            ToolError::arguments(
                "set_timer",
                format!("cannot read a length from {key}={}", args[key]),
            )
        })?;
        total += n * unit;
        found = true;
    }
    match found {
        true => Ok(total),
        false => Err(ToolError::arguments(
            "set_timer",
            "give the length as seconds (a number) or duration (words such as \"5 minutes\")",
        )),
    }
}

/// `set_timer`: starts a timer.
pub struct SetTimer(pub Timers);
/// `list_timers`: the running timers and the time left on each.
pub struct ListTimers(pub Timers);
/// `cancel_timer`: stops a timer before it ends.
pub struct CancelTimer(pub Timers);

impl Tool for SetTimer {
    fn name(&self) -> &str {
        "set_timer"
    }
    fn description(&self) -> &str {
        "Start a timer; its end is announced aloud."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "seconds": {"type": "number", "description": "The timer's length in seconds, e.g. 300 for five minutes."},
            "label": {"type": "string", "description": "Optional: what the timer is for, e.g. tea."}
        }, "required": ["seconds"]})
    }
    fn call(&self, args: Value) -> Result<String, ToolError> {
        let seconds = requested_seconds(&args)?;
        let label = text_arg(&args, "label").unwrap_or("");
        let id = self.0.set(seconds, label)?;
        let what = match label {
            "" => String::new(),
            l => format!(" for {l}"),
        };
        Ok(format!(
            "Timer {id} set: {} timer{what}, it ends in {} seconds.",
            length_words(seconds),
            seconds.round()
        ))
    }
}

impl Tool for ListTimers {
    fn name(&self) -> &str {
        "list_timers"
    }
    fn description(&self) -> &str {
        "List the running timers and the time left on each."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "required": []})
    }
    fn call(&self, _args: Value) -> Result<String, ToolError> {
        let list = self.0.list();
        if list.is_empty() {
            return Ok("No timers are running.".into());
        }
        let lines: Vec<String> = list
            .iter()
            .map(|t| {
                let label = match t.label.as_str() {
                    "" => String::new(),
                    l => format!(" for {l}"),
                };
                format!(
                    "Timer {}: {} timer{label}, {} seconds left.",
                    t.id,
                    length_words(t.seconds),
                    t.left_s.round()
                )
            })
            .collect();
        Ok(lines.join("\n"))
    }
}

impl Tool for CancelTimer {
    fn name(&self) -> &str {
        "cancel_timer"
    }
    fn description(&self) -> &str {
        "Cancel a running timer, named by its number or label, or all of them."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "timer": {"type": "string", "description": "The timer's number or label, or \"all\"; may be left out when only one runs."}
        }, "required": []})
    }
    fn call(&self, args: Value) -> Result<String, ToolError> {
        let what = match args
            .get("timer")
            .or_else(|| args.get("id"))
            .or_else(|| args.get("label"))
        {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let gone = self.0.cancel(&what);
        if gone.is_empty() {
            return Err(ToolError::Failed(match self.0.list().len() {
                0 => "no timers are running".into(),
                n => format!(
                    "no timer is called '{what}'; {n} are running: name one by number or label"
                ),
            }));
        }
        let names: Vec<String> = gone
            .iter()
            .map(|t| format!("the {} timer", length_words(t.seconds)))
            .collect();
        Ok(format!("Cancelled {}.", names.join(" and ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_read_from_words_and_digits() {
        for (text, secs) in [
            ("90", 90.0),
            ("5 minutes", 300.0),
            ("five seconds", 5.0),
            ("an hour and a half", 5400.0),
            ("1 h 30 min", 5400.0),
            ("10min", 600.0),
            ("twenty five minutes", 1500.0),
            ("half an hour", 1800.0),
            ("1:30", 90.0),
            ("1:00:00", 3600.0),
            ("a minute", 60.0),
        ] {
            assert_eq!(parse_duration(text), Some(secs), "{text}");
        }
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(requested_seconds(&json!({"seconds": 5})).unwrap(), 5.0);
        assert_eq!(
            requested_seconds(&json!({"duration": "2 minutes"})).unwrap(),
            120.0
        );
        assert_eq!(requested_seconds(&json!({"minutes": 3})).unwrap(), 180.0);
        assert!(requested_seconds(&json!({"label": "tea"})).is_err());
        assert!(requested_seconds(&json!({"seconds": "whenever"})).is_err());
    }

    #[test]
    fn a_timer_ends_with_its_text_and_a_cancelled_one_stays_quiet() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let timers = Timers::new(move |text| {
            let _ = tx.send((Instant::now(), text));
        });
        let began = Instant::now();
        let set = SetTimer(timers.clone());
        assert!(set
            .call(json!({"seconds": 0.3}))
            .unwrap()
            .contains("ends in 0 seconds"));
        set.call(json!({"duration": "0:01", "label": "tea"}))
            .unwrap();
        let listed = ListTimers(timers.clone()).call(json!({})).unwrap();
        assert!(listed.contains("for tea"), "{listed}");
        let cancel = CancelTimer(timers.clone());
        assert!(cancel.call(json!({"timer": "coffee"})).is_err());
        assert!(cancel
            .call(json!({"timer": "tea"}))
            .unwrap()
            .contains("1 second timer"));
        let (at, text) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(text, "Your 0.3 second timer is done.");
        assert!(at - began >= Duration::from_millis(300));
        // The cancelled one never speaks.
        assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err());
        assert_eq!(
            ListTimers(timers).call(json!({})).unwrap(),
            "No timers are running."
        );
        assert_eq!(
            end_text(300.0, "eggs"),
            "Your 5 minute timer for eggs is done."
        );
        assert_eq!(end_text(5.0, ""), "Your 5 second timer is done.");
    }

    #[test]
    fn impossible_lengths_are_refused() {
        let timers = Timers::new(|_| {});
        assert!(timers.set(0.0, "").is_err());
        assert!(timers.set(2.0 * LONGEST_S, "").is_err());
        assert!(timers.set(f64::NAN, "").is_err());
    }
}
