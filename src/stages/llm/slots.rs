//! llama-server's slots, handed to its clients: one of its own while one is free, so that a
//! conversation's cached prompt (system prompt, history) is not overwritten by a request that
//! came along; past the free ones, shared in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::stages::lock;

pub struct Slots {
    free: Mutex<Vec<usize>>,
    next: AtomicUsize,
    n: usize,
}

/// A client's slot: `own` when no other client is given it until it is put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub id: usize,
    pub own: bool,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        let n = n.max(1);
        Slots {
            free: Mutex::new((0..n).rev().collect()),
            next: AtomicUsize::new(0),
            n,
        }
    }

    pub fn count(&self) -> usize {
        self.n
    }

    pub fn take(&self) -> Slot {
        match lock(&self.free).pop() {
            Some(id) => Slot { id, own: true },
            None => Slot {
                id: self.next.fetch_add(1, Ordering::Relaxed) % self.n,
                own: false,
            },
        }
    }

    /// A free slot, if there is one (never a shared one).
    pub fn take_free(&self) -> Option<Slot> {
        lock(&self.free).pop().map(|id| Slot { id, own: true })
    }

    /// Gives a slot back (a shared one was never taken from the free ones).
    pub fn put_back(&self, slot: Slot) {
        if slot.own {
            lock(&self.free).push(slot.id);
        }
    }
}

/// Which system prompt each of a client's two slots holds: a prompt goes to the slot that
/// holds it, else to the one used least recently (whose cache it replaces).
#[derive(Debug, Clone, Copy)]
pub struct Prompts {
    held: [Option<u64>; 2],
    recent: usize,
}

impl Default for Prompts {
    fn default() -> Self {
        // The first prompt goes to the first slot.
        Prompts {
            held: [None; 2],
            recent: 1,
        }
    }
}

impl Prompts {
    /// The slot (0 or 1) for the prompt `key`.
    pub fn pick(&mut self, key: u64) -> usize {
        let i = match self.held.iter().position(|p| *p == Some(key)) {
            Some(i) => i,
            None => {
                let i = 1 - self.recent;
                self.held[i] = Some(key);
                i
            }
        };
        self.recent = i;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_system_prompt_keeps_its_slot_and_a_third_replaces_the_least_recent() {
        let mut p = Prompts::default();
        let (plain, tools, scene) = (1, 2, 3);
        assert_eq!(p.pick(plain), 0);
        assert_eq!(p.pick(plain), 0);
        assert_eq!(p.pick(tools), 1);
        assert_eq!(p.pick(plain), 0);
        assert_eq!(p.pick(tools), 1);
        // A new one (the camera saw something else): the slot not used last, the plain one.
        assert_eq!(p.pick(scene), 0);
        assert_eq!(p.pick(tools), 1);
        assert_eq!(p.pick(plain), 0);
    }

    #[test]
    fn each_client_has_a_slot_of_its_own_while_one_is_free() {
        let slots = Slots::new(3);
        let (a, b, c) = (slots.take(), slots.take(), slots.take());
        let mut ids = vec![a.id, b.id, c.id];
        ids.sort();
        assert_eq!(ids, [0, 1, 2]);
        assert!(a.own && b.own && c.own);
        // None free: shared, and giving a shared one back frees nothing.
        let d = slots.take();
        assert!(!d.own);
        slots.put_back(d);
        assert!(!slots.take().own);
        // A conversation that ends gives its slot to the next client, alone.
        slots.put_back(b);
        assert_eq!(
            slots.take(),
            Slot {
                id: b.id,
                own: true
            }
        );
    }
}
