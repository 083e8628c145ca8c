//! Per-seat input jitter buffer: inputs wait here, keyed by their intended
//! tick, until the world steps to that tick.

use rally_protocol::{Input, Tick};

/// Slots in the ring; inputs more than this many ticks ahead are refused.
pub(crate) const WINDOW: usize = 128;

/// A ring of future inputs. The first value received for a tick wins, so
/// redundant copies in later datagrams are harmless.
#[derive(Debug, Clone)]
pub(crate) struct InputBuffer {
    slots: Box<[Option<(Tick, Input)>; WINDOW]>,
    newest: Option<Tick>,
}

impl Default for InputBuffer {
    fn default() -> Self {
        Self { slots: Box::new([None; WINDOW]), newest: None }
    }
}

/// What happened to one received input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Stored for a future tick.
    New,
    /// Already held (a redundant copy).
    Duplicate,
    /// Its tick was already simulated.
    Late,
    /// Too far in the future.
    TooEarly,
}

impl InputBuffer {
    /// Offers the input for `tick`, given the last simulated tick `current`.
    pub(crate) fn offer(&mut self, current: Tick, max_lead: Tick, tick: Tick, input: Input) -> Accepted {
        if tick <= current {
            return Accepted::Late;
        }
        if tick - current > max_lead.min(WINDOW as Tick - 1) {
            return Accepted::TooEarly;
        }
        let slot = &mut self.slots[tick as usize % WINDOW];
        match slot {
            Some((held, _)) if *held == tick => Accepted::Duplicate,
            _ => {
                *slot = Some((tick, input));
                self.newest = Some(self.newest.map_or(tick, |newest| newest.max(tick)));
                Accepted::New
            }
        }
    }

    /// Removes and returns the input for `tick`, if it arrived in time.
    pub(crate) fn take(&mut self, tick: Tick) -> Option<Input> {
        let slot = &mut self.slots[tick as usize % WINDOW];
        match *slot {
            Some((held, input)) if held == tick => {
                *slot = None;
                Some(input)
            }
            _ => None,
        }
    }

    /// Newest tick any input has been received for.
    pub(crate) fn newest(&self) -> Option<Tick> {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_copy_wins_and_late_inputs_are_refused() {
        let mut buffer = InputBuffer::default();
        assert_eq!(buffer.offer(10, 60, 12, 1), Accepted::New);
        assert_eq!(buffer.offer(10, 60, 12, 2), Accepted::Duplicate);
        assert_eq!(buffer.offer(10, 60, 10, 2), Accepted::Late);
        assert_eq!(buffer.offer(10, 60, 71, 2), Accepted::TooEarly);
        assert_eq!(buffer.take(11), None);
        assert_eq!(buffer.take(12), Some(1));
        assert_eq!(buffer.take(12), None);
        assert_eq!(buffer.newest(), Some(12));
    }

    #[test]
    fn stale_slots_from_a_lap_ago_are_not_returned() {
        let mut buffer = InputBuffer::default();
        assert_eq!(buffer.offer(0, 127, 5, 1), Accepted::New);
        // Tick 5 was never taken; tick 5 + WINDOW maps to the same slot.
        assert_eq!(buffer.take(5 + WINDOW as Tick), None);
        assert_eq!(buffer.offer(5 + WINDOW as Tick - 1, 10, 5 + WINDOW as Tick, 2), Accepted::New);
        assert_eq!(buffer.take(5 + WINDOW as Tick), Some(2));
    }
}
