//! The server's counters and latency histograms, rendered in Prometheus' text format for
//! `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters and latency histograms, rendered in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    stages: Mutex<std::collections::BTreeMap<&'static str, Histogram>>,
    /// Conversations' turns by how they ended, and speech let go by what it was taken for.
    counts: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    pub active: AtomicU64,
    /// WebSocket conversations open now.
    pub conversations: AtomicU64,
}

const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Counts one `what` (`turns`, `speech_ignored`) of kind `kind`.
    pub fn count(&self, what: &'static str, kind: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((what, kind)).or_default() += 1;
    }

    pub fn observe(&self, stage: &'static str, secs: f64) {
        let mut s = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let h = s.entry(stage).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.n += 1;
    }

    /// `seesay_turns_total{outcome}`, `seesay_speech_ignored_total{why}`,
    /// `seesay_turn_endings_total{by}` and
    /// `seesay_wyoming_connections_total{outcome}`.
    fn render_counts(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP seesay_turns_total Conversations' turns by how they ended (answered, cut by the user while spoken, failed, or why one was dropped: no words, interrupted before its first word, ...).\n# TYPE seesay_turns_total counter\n");
        out.push_str("# HELP seesay_speech_ignored_total Speech during an answer let go, by what it was taken for.\n# TYPE seesay_speech_ignored_total counter\n");
        out.push_str("# HELP seesay_turn_endings_total Answered turns by what ended the user's turn: the end-of-turn model at a pause, a pause it doubted lasting turn::patience_ms (unsure), the silence limit (turn.max_silence_ms), the length limit, a typed question, the end of the input.\n# TYPE seesay_turn_endings_total counter\n");
        out.push_str("# HELP seesay_wyoming_connections_total Wyoming connections admitted, or refused past server.wyoming_max_connections.\n# TYPE seesay_wyoming_connections_total counter\n");
        for ((what, kind), n) in self.counts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let label = match *what {
                "turns" | "wyoming_connections" => "outcome",
                "turn_endings" => "by",
                _ => "why",
            };
            let kind = kind.replace('"', "'");
            let _ = writeln!(out, "seesay_{what}_total{{{label}=\"{kind}\"}} {n}");
        }
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out += "# HELP seesay_requests_total HTTP requests by route and status.\n# TYPE seesay_requests_total counter\n";
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "seesay_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out += "# HELP seesay_errors_total HTTP requests that failed (status 400 or above).\n# TYPE seesay_errors_total counter\n";
        let errors: u64 = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((_, s), _)| *s >= 400)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "seesay_errors_total {errors}");
        out += "# HELP seesay_active_sessions Requests and connections being served now.\n# TYPE seesay_active_sessions gauge\n";
        let _ = writeln!(
            out,
            "seesay_active_sessions {}",
            self.active.load(Ordering::Relaxed)
        );
        out += "# HELP seesay_conversations Conversations (WebSockets) open now.\n# TYPE seesay_conversations gauge\n";
        let _ = writeln!(
            out,
            "seesay_conversations {}",
            self.conversations.load(Ordering::Relaxed)
        );
        self.render_counts(&mut out);
        out += "# HELP seesay_stage_seconds Time spent in each model stage.\n# TYPE seesay_stage_seconds histogram\n";
        for (stage, h) in self.stages.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "seesay_stage_seconds_bucket{{stage=\"{stage}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "seesay_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
                h.n
            );
            let _ = writeln!(
                out,
                "seesay_stage_seconds_sum{{stage=\"{stage}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "seesay_stage_seconds_count{{stage=\"{stage}\"}} {}",
                h.n
            );
        }
        out
    }
}
