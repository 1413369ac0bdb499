//! Who gets a conversation's place when one frees: clients refused earlier before those who
//! came later. Without it, a client whose conversation ends calls again at once and takes the
//! place it just left, while one that waits out `Retry-After` as told is refused every time (in
//! a 10-minute soak, one client of three was never admitted).
//!
//! A refused client is given a ticket (the `Seesay-Ticket` header, and in the message). Coming
//! back with `?ticket=N`, it is in line: a place that frees is held for the clients in line, in
//! the order of their tickets, before anyone who came later or without one. A ticket lapses
//! when its holder has not come back within `LAPSE` of its last refusal (it gave up), so a
//! place is never held for long for nobody. A client that never shows its ticket (a browser's
//! WebSocket cannot read it) is served first come, first served, as before, and holds no place.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stages::lock;

/// How long after its last refusal a ticket stays in line: `Retry-After` (2 s) and the time a
/// client may take to come back.
pub const LAPSE: Duration = Duration::from_secs(5);

/// The line of refused clients waiting for a conversation's place.
#[derive(Debug, Default)]
pub struct Line {
    inner: Mutex<Tickets>,
}

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    /// Ticket → (when it lapses, whether its holder has come back with it: only then does it
    /// hold a place).
    issued: BTreeMap<u64, (Instant, bool)>,
}

impl Line {
    /// May the client with `ticket` (None: without one) take a place now, when `free` places
    /// (its own among them) are free? Yes, unless as many clients ahead of it in line are due.
    pub fn may_enter(&self, ticket: Option<u64>, free: usize, now: Instant) -> bool {
        let mut t = lock(&self.inner);
        t.lapse(now);
        let ahead = t
            .issued
            .iter()
            .filter(|(&n, &(_, back))| back && ticket.is_none_or(|mine| n < mine))
            .count();
        ahead < free
    }

    /// The client with `ticket` was admitted: its ticket is used up.
    pub fn admitted(&self, ticket: Option<u64>) {
        if let Some(n) = ticket {
            lock(&self.inner).issued.remove(&n);
        }
    }

    /// The client with `ticket` was refused: the ticket to come back with (its own, still in
    /// line, or a new one at the end of the line).
    pub fn refused(&self, ticket: Option<u64>, now: Instant) -> u64 {
        let mut t = lock(&self.inner);
        t.lapse(now);
        if let Some(n) = ticket {
            if let Some(entry) = t.issued.get_mut(&n) {
                *entry = (now + LAPSE, true);
                return n;
            }
        }
        let n = t.next;
        t.next += 1;
        t.issued.insert(n, (now + LAPSE, false));
        n
    }

    /// Tickets in line (held by clients who came back with them).
    pub fn waiting(&self) -> usize {
        lock(&self.inner)
            .issued
            .values()
            .filter(|&&(_, back)| back)
            .count()
    }
}

impl Tickets {
    fn lapse(&mut self, now: Instant) {
        self.issued.retain(|_, &mut (until, _)| until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_refused_earlier_gets_the_place_before_one_that_calls_again_at_once() {
        let line = Line::default();
        let t0 = Instant::now();
        // B is refused, is given a ticket, comes back with it and is refused again: in line.
        let b = line.refused(None, t0);
        assert_eq!(line.refused(Some(b), t0 + Duration::from_secs(2)), b);
        assert_eq!(line.waiting(), 1);
        // A's conversation ended; A calls again at once, without a ticket: the place is B's.
        let t1 = t0 + Duration::from_secs(3);
        assert!(!line.may_enter(None, 1, t1));
        let a = line.refused(None, t1);
        assert!(a > b);
        // A comes back with its ticket before B: still behind B.
        assert!(!line.may_enter(Some(a), 1, t1));
        assert_eq!(line.refused(Some(a), t1), a);
        // B comes back: admitted, its ticket used up; then A is first.
        assert!(line.may_enter(Some(b), 1, t1));
        line.admitted(Some(b));
        assert!(line.may_enter(Some(a), 1, t1));
        // Two places free: the one in line and one more newcomer fit.
        assert!(line.may_enter(None, 2, t1));
    }

    #[test]
    fn a_ticket_never_shown_holds_no_place_and_one_given_up_lapses() {
        let line = Line::default();
        let t0 = Instant::now();
        // A client that retries without its ticket (a browser) is never kept out by its own
        // earlier refusals.
        for i in 0..20 {
            line.refused(None, t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(line.waiting(), 0);
        assert!(line.may_enter(None, 1, t0 + Duration::from_secs(2)));
        // A client in line that gives up holds the place only until its ticket lapses.
        let b = line.refused(None, t0);
        line.refused(Some(b), t0);
        assert!(!line.may_enter(None, 1, t0 + LAPSE - Duration::from_millis(1)));
        assert!(line.may_enter(None, 1, t0 + LAPSE));
        assert_eq!(line.waiting(), 0);
        // A lapsed (or made-up) ticket is a newcomer's: a new one, at the end of the line.
        let c = line.refused(Some(b), t0 + LAPSE);
        assert_ne!(c, b);
    }
}
