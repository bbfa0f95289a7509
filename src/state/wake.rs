//! A wake-up signal for the one task of a client session (router drain and
//! shutdown), cheaper on the per-request path than `tokio::sync::Notify`:
//! waiting registers the task's waker in an [`AtomicWaker`] (no lock, no
//! waiter list), so a session that waits for its client's next message
//! and is woken by that message pays two atomic operations instead of a
//! mutex round trip to enter and to leave a waiter list.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// A wake-up for one waiting task at a time. A [`WakeSignal::wake`] while
/// nobody waits is remembered and ends the next wait at once, like
/// `Notify::notify_one`'s stored permit.
#[derive(Default)]
pub struct WakeSignal {
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl WakeSignal {
    /// Wakes the waiting task, or the next one to wait.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes at the next [`WakeSignal::wake`] (or at once if one came
    /// since the last wait ended). Only one task may wait at a time: a
    /// second waiter replaces the first one's registration.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.take() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A wake between the check and the registration.
            if self.take() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn take(&self) -> bool {
        self.woken.load(Ordering::Acquire) && self.woken.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let s = WakeSignal::default();
        s.wake();
        tokio::time::timeout(Duration::from_secs(1), s.wait())
            .await
            .expect("stored wake ends the wait");
        // Taken: the next wait blocks.
        assert!(tokio::time::timeout(Duration::from_millis(20), s.wait())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn wakes_a_waiting_task() {
        let s = Arc::new(WakeSignal::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.wake();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("task ok");
    }
}
