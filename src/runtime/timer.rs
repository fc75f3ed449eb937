//! The sleep between two polls, as one kernel timer that wakes the process once, at its
//! deadline: a Linux timerfd, waited on by the runtime's reactor.
//!
//! tokio's timer wheel wakes the runtime early to move a long sleep down its coarser levels
//! (about 4 s before a one-minute deadline; up to minutes before a longer one), so an idle
//! sidecar would wake between polls for nothing. Elsewhere than Linux, or if the timer cannot
//! be made, this is `tokio::time::sleep`.

use std::time::Duration;

/// Sleep for `duration` (cancel by dropping the future).
pub async fn sleep(duration: Duration) {
    #[cfg(target_os = "linux")]
    if let Ok(timer) = linux::Timer::new(duration) {
        timer.expired().await;
        return;
    }
    tokio::time::sleep(duration).await
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A one-shot CLOCK_MONOTONIC timerfd (the clock `Instant` uses), armed at creation.
    pub struct Timer(AsyncFd<OwnedFd>);

    impl Timer {
        pub fn new(duration: Duration) -> io::Result<Timer> {
            let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
            // An all-zero value would disarm the timer instead of firing at once.
            let duration = duration.max(Duration::from_nanos(1));
            let value = Timespec {
                tv_sec: duration.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: duration.subsec_nanos().into(),
            };
            let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
            timerfd_settime(&fd, TimerfdTimerFlags::empty(), &Itimerspec { it_interval: zero, it_value: value })?;
            // SAFETY: the descriptor is an `OwnedFd` moved into the `AsyncFd`, so it stays open,
            // and the same descriptor, for as long as the `AsyncFd` lives.
            #[allow(unsafe_code)] // the crate's one unsafe block (workspace lint: unsafe_code = deny)
            let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            Ok(Timer(registered?))
        }

        /// Resolves once the timer has fired.
        pub async fn expired(&self) {
            loop {
                let Ok(mut ready) = self.0.readable().await else { return };
                // Readable = fired: reading the expiry count resets it.
                match rustix::io::read(self.0.get_ref(), &mut [0u8; 8]) {
                    Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                    _ => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::sleep;

    #[tokio::test]
    async fn sleeps_about_as_long_as_asked() {
        for ms in [0, 30, 120] {
            let started = Instant::now();
            sleep(Duration::from_millis(ms)).await;
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(ms), "{ms} ms took {took:?}");
            assert!(took < Duration::from_millis(ms + 500), "{ms} ms took {took:?}");
        }
    }

    #[tokio::test]
    async fn dropping_the_sleep_cancels_it() {
        let started = Instant::now();
        tokio::select! {
            _ = sleep(Duration::from_secs(3600)) => panic!("an hour passed"),
            _ = tokio::task::yield_now() => {}
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
