//! Session deadlines: a min-heap of (deadline, session) with lazy invalidation. A session
//! stores its current deadline; heap entries that no longer match it are skipped. Only
//! sessions whose deadline passed are polled on a timer tick.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Min-heap of session deadlines.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, slot: usize) {
        self.heap.push(Reverse((at, slot)));
    }

    /// Earliest scheduled deadline (possibly stale).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pop one entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drop stale entries when the heap grows much larger than the live set.
    pub(crate) fn compact(&mut self, live: impl Fn(Instant, usize) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((t, s))| live(*t, *s))
            .collect();
    }
}
