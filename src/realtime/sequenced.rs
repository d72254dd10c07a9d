//! A broadcast of numbered items that a subscriber joins without a gap: it learns the seq of
//! the last item sent before it joined, and its receiver holds every item sent after. Rooms
//! (events per project) and shared executions (payloads per group) both hand out live
//! streams this way.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

/// A broadcast that knows the seq of its last item.
pub struct Sequenced<T> {
    sender: broadcast::Sender<T>,
    position: Mutex<Position>,
    /// Becomes true once the starting point is known, or once closed.
    settled: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    last: Option<i64>,
    closed: bool,
}

/// A subscriber's place: items after `last_seq` arrive on `receiver`.
pub struct Joined<T> {
    /// Every item sent after `last_seq`.
    pub receiver: broadcast::Receiver<T>,
    /// The seq of the last item sent before joining (the starting point when none was).
    pub last_seq: i64,
}

impl<T: Clone> Sequenced<T> {
    /// A broadcast keeping `capacity` items for subscribers that fall behind; nobody can join
    /// until [`start`](Self::start) sets the starting point.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            sender: broadcast::channel(capacity).0,
            position: Mutex::new(Position {
                last: None,
                closed: false,
            }),
            settled: watch::channel(false).0,
        })
    }

    fn position(&self) -> MutexGuard<'_, Position> {
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the starting point: joiners from now on start after `seq`.
    pub fn start(&self, seq: i64) {
        self.position().last = Some(seq);
        self.settled.send_replace(true);
    }

    /// Sends item `seq` (which must follow the last one) to every subscriber; returns how
    /// many receive it.
    pub fn send(&self, seq: i64, item: T) -> usize {
        let mut position = self.position();
        position.last = Some(seq);
        self.sender.send(item).unwrap_or(0)
    }

    /// Stops accepting joiners (they get `None` and start afresh elsewhere).
    pub fn close(&self) {
        self.position().closed = true;
        self.settled.send_replace(true);
    }

    /// The seq of the last item sent, or the starting point; `None` before the start.
    pub fn last(&self) -> Option<i64> {
        self.position().last
    }

    /// How many subscribers hold a receiver.
    pub fn receiver_count(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Joins once the starting point is known; `None` when the broadcast closed first.
    pub async fn join(&self) -> Option<Joined<T>> {
        self.settled().await;
        let position = self.position();
        let last_seq = open_last(*position)?;
        Some(Joined {
            receiver: self.sender.subscribe(),
            last_seq,
        })
    }

    /// Waits until the starting point is known or the broadcast closed.
    pub async fn settled(&self) {
        let mut settled = self.settled.subscribe();
        // The sender lives in `self`, so this waits until start or close.
        let _ = settled.wait_for(|settled| *settled).await;
    }

    /// The seq a joiner would start after; `None` before the start and once closed.
    pub fn joinable(&self) -> Option<i64> {
        open_last(*self.position())
    }
}

fn open_last(position: Position) -> Option<i64> {
    match position {
        Position {
            closed: false,
            last: Some(last),
        } => Some(last),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_joiner_receives_exactly_what_is_sent_after_its_seq() {
        let broadcast = Sequenced::new(8);
        broadcast.start(3);
        broadcast.send(4, 4);
        let mut joined = broadcast.join().await.expect("open");
        assert_eq!(joined.last_seq, 4);
        broadcast.send(5, 5);
        assert_eq!(joined.receiver.recv().await.ok(), Some(5));
    }

    #[tokio::test]
    async fn a_joiner_waits_for_the_start_and_a_closed_broadcast_turns_it_away() {
        let broadcast = Sequenced::<i64>::new(8);
        let waiting = {
            let broadcast = broadcast.clone();
            tokio::spawn(async move { broadcast.join().await.map(|j| j.last_seq) })
        };
        tokio::task::yield_now().await;
        broadcast.start(7);
        assert_eq!(waiting.await.ok().flatten(), Some(7));
        broadcast.close();
        assert!(broadcast.join().await.is_none());
    }
}
