//! Pacing of one target's requests: a requests-per-second limit, a pause that every
//! worker honours while the target has asked us (with `Retry-After`) to wait, and how
//! many requests may be in flight at once, adapting to the target's answers.
//!
//! Time is tokio's, so tests run it paused. Slots are handed out in order, one every
//! `1 / rate` seconds (no bursts), so the rate is never exceeded even at the start.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// Time between two requests; zero without a rate limit.
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The earliest time the next request may start.
    next_slot: Instant,
    /// No request starts before this (the latest `Retry-After`).
    paused_until: Option<Instant>,
}

impl Pacer {
    pub fn new(rate_limit: Option<f64>) -> Pacer {
        let interval = rate_limit.map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
        Pacer {
            interval,
            state: Mutex::new(State {
                next_slot: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Waits until this request may start.
    pub async fn wait_turn(&self) {
        loop {
            let slot = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Err(until),
                    _ => {
                        let slot = s.next_slot.max(now);
                        s.next_slot = slot + self.interval;
                        Ok(slot)
                    }
                }
            };
            match slot {
                Err(until) => tokio::time::sleep_until(until).await,
                // A slot that is already due is taken at once: tokio rounds every
                // deadline up to its next millisecond tick, so sleeping "until now"
                // cost each request about a millisecond (5% of the push rate at
                // 20 ms per request and no rate limit).
                Ok(slot) if slot <= Instant::now() => return,
                Ok(slot) => {
                    tokio::time::sleep_until(slot).await;
                    // A pause asked for while this request waited for its slot wins.
                    let s = self.state.lock().await;
                    if s.paused_until.is_none_or(|until| until <= Instant::now()) {
                        return;
                    }
                }
            }
        }
    }

    /// Holds every request to this target for `wait`.
    pub async fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut s = self.state.lock().await;
        s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
    }
}

/// How many requests may be in flight at once (AIMD): halved, down to 1, on every
/// 429 or 503 answer; one more after every `increase_after` successes in a row, up to
/// the configured concurrency. A throttled target is not hit again at full width the
/// moment its `Retry-After` has passed.
#[derive(Debug)]
pub struct Window {
    max: usize,
    increase_after: usize,
    state: std::sync::Mutex<WindowState>,
    freed: tokio::sync::Notify,
}

#[derive(Debug)]
struct WindowState {
    limit: usize,
    in_flight: usize,
    streak: usize,
}

/// A place in the window; dropping it frees the place.
#[derive(Debug)]
pub struct Slot<'a> {
    window: &'a Window,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.window.change(|s| s.in_flight -= 1);
    }
}

impl Window {
    pub fn new(max: usize, increase_after: usize) -> Window {
        Window {
            max,
            increase_after: increase_after.max(1),
            state: std::sync::Mutex::new(WindowState {
                limit: max,
                in_flight: 0,
                streak: 0,
            }),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Waits for a place in the window.
    pub async fn enter(&self) -> Slot<'_> {
        loop {
            // Registered before the check, so a place freed in between wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Slot { window: self };
                }
            }
            freed.await;
        }
    }

    /// The target answered 429 or 503.
    pub fn throttled(&self) {
        self.change(|s| {
            s.limit = (s.limit / 2).max(1);
            s.streak = 0;
        });
    }

    /// The target confirmed a request.
    pub fn succeeded(&self) {
        let (max, after) = (self.max, self.increase_after);
        self.change(|s| {
            s.streak += 1;
            if s.streak >= after && s.limit < max {
                s.limit += 1;
                s.streak = 0;
            }
        });
    }

    /// Any other failure: the streak of successes starts again.
    pub fn failed(&self) {
        self.change(|s| s.streak = 0);
    }

    /// The requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    fn change(&self, f: impl FnOnce(&mut WindowState)) {
        f(&mut self.lock());
        self.freed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        // The state is a few counters, consistent after every change: a panic
        // elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Start times, relative to the test's start, of `n` requests from `workers` tasks.
    async fn starts(pacer: Arc<Pacer>, n: usize, workers: usize, pause_at: Option<(usize, u64)>) -> Vec<u64> {
        let t0 = Instant::now();
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (pacer, times, next) = (Arc::clone(&pacer), Arc::clone(&times), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    pacer.wait_turn().await;
                    times.lock().expect("lock").push(t0.elapsed().as_millis() as u64);
                    if let Some((at, secs)) = pause_at
                        && i == at
                    {
                        pacer.pause(Duration::from_secs(secs)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut v = times.lock().expect("lock").clone();
        v.sort_unstable();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn rate_is_never_exceeded() {
        let got = starts(Arc::new(Pacer::new(Some(4.0))), 6, 3, None).await;
        assert_eq!(got, [0, 250, 500, 750, 1000, 1250]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_starts_during_a_pause() {
        let got = starts(Arc::new(Pacer::new(None)), 4, 2, Some((1, 2))).await;
        assert_eq!(got, [0, 0, 2000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_slot_does_not_wait_for_the_next_timer_tick() {
        // Between ticks of tokio's millisecond timer, as real requests are.
        let pacer = Pacer::new(None);
        let t0 = Instant::now();
        for _ in 0..10 {
            tokio::time::advance(Duration::from_micros(100)).await;
            pacer.wait_turn().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_halves_on_throttling_and_grows_back_by_one() {
        let w = Window::new(8, 3);
        for expected in [4, 2, 1, 1] {
            w.throttled();
            assert_eq!(w.limit(), expected);
        }
        // Three successes in a row for each step; a failure starts the count again.
        w.succeeded();
        w.succeeded();
        w.failed();
        w.succeeded();
        w.succeeded();
        assert_eq!(w.limit(), 1);
        w.succeeded();
        assert_eq!(w.limit(), 2);
        for _ in 0..30 {
            w.succeeded();
        }
        assert_eq!(w.limit(), 8, "never above the configured concurrency");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_holds_requests_beyond_its_limit() {
        let w = Arc::new(Window::new(2, 1));
        let a = w.enter().await;
        let _b = w.enter().await;
        let w2 = Arc::clone(&w);
        let third = tokio::spawn(async move {
            let _c = w2.enter().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished(), "a third request waits");
        drop(a);
        third.await.expect("entered once a place was freed");
        // Lowered to 1 while 1 is in flight: the next one waits for it.
        w.throttled();
        let w3 = Arc::clone(&w);
        let next = tokio::spawn(async move {
            let _d = w3.enter().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!next.is_finished());
        drop(_b);
        next.await.expect("entered");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_without_a_rate() {
        let got = starts(Arc::new(Pacer::new(None)), 3, 3, None).await;
        assert_eq!(got, [0, 0, 0]);
    }
}
