//! Polling a branch of a connection's loop only when it was woken.
//!
//! A connection's task wakes for every result of an operation of its own (shared results are
//! written by their group without waking it), and `select!` polls every branch on every
//! wake. Some branches cost something to poll for nothing: the shutdown token's waiters sit
//! behind one mutex that every connection shares, and reading the socket runs tungstenite's
//! read path. Behind a gate, a branch is polled again only once its own waker fired,
//! or when its last poll was ready (a stream may have more ready without a new wake-up).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Whether a branch has something to look at, and the task to wake when it has.
pub(super) struct Gate {
    shared: Arc<Shared>,
    /// This gate's bit in `Shared::open`.
    bit: u8,
    /// The waker the branch is polled with: it opens the gate, then wakes the task.
    waker: Waker,
}

/// What the gates of one task share: one cache line that a poll of all of them touches,
/// rather than one line per gate (each a likely cache miss, once per delivery).
struct Shared {
    /// One bit per gate: set when its branch was woken (or must be looked at).
    open: AtomicU8,
    task: AtomicWaker,
}

/// The waker of one gate.
struct GateWaker {
    shared: Arc<Shared>,
    bit: u8,
}

impl Wake for GateWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.open.fetch_or(self.bit, Ordering::Release);
        self.shared.task.wake();
    }
}

impl Gate {
    /// `N` open gates for the branches of one task (at most 8).
    pub(super) fn set<const N: usize>() -> [Gate; N] {
        const { assert!(N <= 8, "one bit per gate") };
        let shared = Arc::new(Shared {
            open: AtomicU8::new(u8::MAX),
            task: AtomicWaker::new(),
        });
        std::array::from_fn(|i| {
            let bit = 1 << i;
            let waker = Waker::from(Arc::new(GateWaker {
                shared: shared.clone(),
                bit,
            }));
            Gate {
                shared: shared.clone(),
                bit,
                waker,
            }
        })
    }

    /// Opens the gate without a wake-up, for a branch that changed under the task (an
    /// operation added, a timer moved): it has registered nothing for its new state yet.
    pub(super) fn open(&self) {
        self.shared.open.fetch_or(self.bit, Ordering::Release);
    }

    /// Runs `poll` with the gate's waker if the gate is open; `Pending` otherwise.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.shared.task.register(cx.waker());
        // A load first: a closed gate, the common case, then costs no write.
        if self.shared.open.load(Ordering::Acquire) & self.bit == 0 {
            return Poll::Pending;
        }
        // Closed before polling, so that a wake-up during the poll leaves it open.
        self.shared.open.fetch_and(!self.bit, Ordering::AcqRel);
        let result = poll(&mut Context::from_waker(&self.waker));
        if result.is_ready() {
            self.open();
        }
        result
    }

    /// `future` behind this gate. The future may be made anew for every poll as long as
    /// what it waits on keeps its waker when it is dropped (a socket does; a broadcast
    /// receiver's `recv` does not, so such a future must be kept).
    pub(super) fn guard<F: Future + Unpin>(&self, future: F) -> Gated<'_, F> {
        Gated { gate: self, future }
    }
}

/// A future polled only through its gate.
pub(super) struct Gated<'a, F> {
    gate: &'a Gate,
    future: F,
}

impl<F: Future + Unpin> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.gate.poll(cx, |cx| Pin::new(&mut this.future).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// Counts its polls; ready once `ready` is set.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                let _ = cx;
                Poll::Pending
            }
        }
    }

    fn poll_once(gate: &Gate, probe: &mut Probe, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut gate.guard(probe)).poll(cx)
    }

    #[test]
    fn a_gated_future_is_polled_again_only_after_its_waker_fired() {
        let [gate] = Gate::set();
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let mut probe = Probe {
            polls: polls.clone(),
            ready: ready.clone(),
        };
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);

        assert!(poll_once(&gate, &mut probe, &mut cx).is_pending());
        assert!(poll_once(&gate, &mut probe, &mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the second poll was skipped"
        );

        ready.store(true, Ordering::SeqCst);
        gate.waker.wake_by_ref();
        assert!(poll_once(&gate, &mut probe, &mut cx).is_ready());
        assert!(
            poll_once(&gate, &mut probe, &mut cx).is_ready(),
            "a ready branch is looked at again without a wake-up"
        );
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn opening_the_gate_polls_the_branch_without_a_wake_up() {
        let [gate] = Gate::set();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut probe = Probe {
            polls: polls.clone(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let mut cx = Context::from_waker(Waker::noop());
        let _ = poll_once(&gate, &mut probe, &mut cx);
        gate.open();
        let _ = poll_once(&gate, &mut probe, &mut cx);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn gates_of_one_set_open_and_close_each_on_its_own() {
        let [a, b, c] = Gate::set();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut probes: Vec<Probe> = (0..3)
            .map(|_| Probe {
                polls: polls.clone(),
                ready: Arc::new(AtomicBool::new(false)),
            })
            .collect();
        let mut cx = Context::from_waker(Waker::noop());
        let gates = [&a, &b, &c];
        let mut poll_all = |probes: &mut Vec<Probe>| {
            for (gate, probe) in gates.iter().zip(probes.iter_mut()) {
                let _ = poll_once(gate, probe, &mut cx);
            }
        };
        poll_all(&mut probes);
        assert_eq!(polls.load(Ordering::SeqCst), 3, "all start open");
        b.waker.wake_by_ref();
        poll_all(&mut probes);
        assert_eq!(polls.load(Ordering::SeqCst), 4, "only b was woken");
        c.open();
        a.waker.wake_by_ref();
        poll_all(&mut probes);
        assert_eq!(polls.load(Ordering::SeqCst), 6, "a and c");
        poll_all(&mut probes);
        assert_eq!(polls.load(Ordering::SeqCst), 6, "none");
    }

    #[tokio::test]
    async fn a_wake_up_of_the_branch_wakes_the_task() {
        let [gate] = Gate::set();
        let gate = Arc::new(gate);
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut rx = rx;
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.guard(&mut rx).await })
        };
        tokio::task::yield_now().await;
        tx.send(7).expect("receiver alive");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got.ok(), Some(7));
    }
}
