//! A shard's write cycle under load: which connections to write when.
//!
//! A shard that wrote a pass to N connections for which events had queued up writes each of
//! them at most once per *hold* from then on (N × `websocket.write_pacing`, at most
//! `max_write_delay`), so the events of a burst share one write per socket. The hold is not
//! spent waiting and then written in one pass: the connections are split by slab slot into
//! slices, and one slice is written every hold / slices. An event is queued on its recipients as
//! it arrives (at the next step), and each recipient's write comes at its own slice's next turn:
//! on average half a hold after the event, where a pass after the hold would add the hold's
//! remainder and the connection's place in a pass of thousands of writes. The work is spread
//! evenly, too, so the readers sharing the machine get the CPU between steps rather than after
//! a wall of writes (BENCHMARKS.md, "The rolling write cycle").
//!
//! This module holds the bookkeeping, free of sockets; the shard's run loop drives it.

use std::rc::Rc;
use std::time::{Duration, Instant};

/// The shortest step between two slices. Tokio's timer counts in milliseconds, so a shorter
/// step would be rounded up and stretch the cycle past its hold.
pub(crate) const MIN_STEP: Duration = Duration::from_millis(2);

/// The most slices a cycle is cut into. Past 16, measured at 5,000 connections a shard, the
/// steps' own wake-ups cost more than the smoother spread saves (BENCHMARKS.md).
pub(crate) const MAX_SLICES: usize = 16;

/// How many slices a cycle of `hold` is cut into: one per [`MIN_STEP`], at most [`MAX_SLICES`],
/// at least one (a hold of a few milliseconds is one wait and one pass).
pub(crate) fn slices_for(hold: Duration) -> usize {
    let steps = hold.as_nanos() / MIN_STEP.as_nanos();
    usize::try_from(steps).unwrap_or(MAX_SLICES).clamp(1, MAX_SLICES)
}

/// The pause a pass that wrote to `written` connections earns before each connection is
/// written again.
pub(crate) fn write_hold(per_connection: Duration, max: Duration, written: usize) -> Duration {
    per_connection.saturating_mul(u32::try_from(written).unwrap_or(u32::MAX)).min(max)
}

/// Connections with frames waiting for a deferred write, by slice (slab slot modulo the slice
/// count). Outside a cycle there is one slice, written at the end of each batch.
pub(crate) struct Dirty<T> {
    slices: Vec<Vec<Rc<T>>>,
    /// A drained slice's allocation, kept for the next one.
    spare: Vec<Rc<T>>,
}

impl<T> Default for Dirty<T> {
    fn default() -> Self {
        Dirty { slices: vec![Vec::new()], spare: Vec::new() }
    }
}

impl<T> Dirty<T> {
    /// Remembers `connection` (in slab slot `slot`) for its slice's next write.
    pub(crate) fn mark(&mut self, slot: usize, connection: &Rc<T>) {
        let count = self.slices.len();
        self.slices[slot % count].push(connection.clone());
    }

    /// How many slices there are.
    pub(crate) fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// Whether no connection waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.slices.iter().all(Vec::is_empty)
    }

    /// Takes slice `index`'s connections (none for an index past the count).
    pub(crate) fn take_slice(&mut self, index: usize) -> Vec<Rc<T>> {
        match self.slices.get_mut(index) {
            Some(slice) => std::mem::replace(slice, std::mem::take(&mut self.spare)),
            None => Vec::new(),
        }
    }

    /// Takes every waiting connection.
    pub(crate) fn take_all(&mut self) -> Vec<Rc<T>> {
        if self.slices.len() == 1 {
            return self.take_slice(0);
        }
        let mut all = std::mem::take(&mut self.spare);
        for slice in &mut self.slices {
            all.append(slice);
        }
        all
    }

    /// Hands back a drained slice's allocation (cleared), unless it has grown unusually large.
    pub(crate) fn recycle(&mut self, mut drained: Vec<Rc<T>>) {
        drained.clear();
        if drained.capacity() <= 4096 && drained.capacity() > self.spare.capacity() {
            self.spare = drained;
        }
    }

    /// Cuts into `count` slices, moving the waiting connections to their new slices.
    pub(crate) fn reslice(&mut self, count: usize, slot_of: impl Fn(&T) -> usize) {
        let count = count.max(1);
        if count == self.slices.len() {
            return;
        }
        let waiting = self.take_all();
        self.slices = (0..count).map(|_| Vec::new()).collect();
        for connection in &waiting {
            self.mark(slot_of(connection), connection);
        }
        self.recycle(waiting);
    }
}

/// A cycle in progress: which slice is next, when, and what the cycle has written so far.
#[derive(Debug)]
pub(crate) struct Cycle {
    /// The hold: how long a whole cycle takes.
    pub hold: Duration,
    /// The slice the next step writes.
    pub next_slice: usize,
    /// When the next step runs.
    pub next_step: Instant,
    /// Steps in a row at which nothing arrived; a whole cycle of them, with nothing waiting,
    /// ends the cycle.
    pub quiet_steps: usize,
    /// Connections written in this cycle so far (the next hold is counted from them).
    pub written: usize,
}

impl Cycle {
    /// A cycle of `hold` starting after a pass that began at `pass_start`.
    pub(crate) fn start(hold: Duration, slices: usize, pass_start: Instant) -> Cycle {
        Cycle { hold, next_slice: 0, next_step: pass_start + step(hold, slices), quiet_steps: 0, written: 0 }
    }
}

/// The time between two steps of a cycle of `hold` in `slices` slices.
pub(crate) fn step(hold: Duration, slices: usize) -> Duration {
    hold / u32::try_from(slices.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_grows_with_the_connections_written_up_to_its_cap() {
        let (per, cap) = (Duration::from_micros(24), Duration::from_millis(100));
        assert_eq!(write_hold(per, cap, 1), Duration::from_micros(24), "a lone write barely waits");
        assert_eq!(write_hold(per, cap, 500), Duration::from_millis(12));
        assert_eq!(write_hold(per, cap, 10_000), cap, "a burst to thousands waits the cap");
        assert_eq!(write_hold(per, cap, usize::MAX), cap, "no overflow");
        assert_eq!(write_hold(Duration::ZERO, cap, 10_000), Duration::ZERO, "0 turns pacing off");
    }

    #[test]
    fn a_cycle_takes_one_slice_per_two_milliseconds_up_to_sixteen() {
        assert_eq!(slices_for(Duration::ZERO), 1);
        assert_eq!(slices_for(Duration::from_micros(24)), 1, "a tiny hold is one wait and one pass");
        assert_eq!(slices_for(Duration::from_millis(12)), 6);
        assert_eq!(slices_for(Duration::from_millis(130)), MAX_SLICES);
        assert_eq!(slices_for(Duration::MAX), MAX_SLICES, "no overflow");
        assert_eq!(step(Duration::from_millis(128), 16), Duration::from_millis(8));
        assert_eq!(step(Duration::from_millis(5), 0), Duration::from_millis(5), "never a division by zero");
    }

    #[test]
    fn connections_wait_in_their_slot_s_slice_and_move_when_resliced() {
        let mut dirty = Dirty::<usize>::default();
        let connections: Vec<Rc<usize>> = (0..10).map(Rc::new).collect();
        dirty.reslice(4, |slot| *slot);
        for c in &connections {
            dirty.mark(**c, c);
        }
        let first: Vec<usize> = dirty.take_slice(1).iter().map(|c| **c).collect();
        assert_eq!(first, [1, 5, 9]);
        assert!(dirty.take_slice(7).is_empty(), "a slice past the count is empty");
        dirty.reslice(3, |slot| *slot);
        assert_eq!(dirty.slice_count(), 3);
        let mut third: Vec<usize> = dirty.take_slice(2).iter().map(|c| **c).collect();
        third.sort_unstable();
        assert_eq!(third, [2, 8], "1, 5 and 9 were written already");
        let mut rest: Vec<usize> = dirty.take_all().iter().map(|c| **c).collect();
        rest.sort_unstable();
        assert_eq!(rest, [0, 3, 4, 6, 7]);
        assert!(dirty.is_empty());
    }
}
