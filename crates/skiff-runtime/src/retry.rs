//! Doubling pauses between failed attempts: for watches (as kube's
//! `Backoff`) and for calls retried until they succeed.

use std::future::Future;
use std::time::Duration;

use kube::runtime::utils::Backoff;

/// Pauses that double from `first` up to `max`, then stay there.
pub struct Doubling {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Doubling {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt.
    pub fn pause(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.pause())
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Runs `attempt` until it succeeds; each failure is logged as `what`,
/// then waited after with pauses doubling from `first` up to `max`.
pub async fn until_ok<T, E, F, Fut>(what: &str, first: Duration, max: Duration, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pauses = Doubling::new(first, max);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) => {
                tracing::warn!(error = %e, "{what}; retrying");
                tokio::time::sleep(pauses.pause()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(8);

    #[test]
    fn the_pauses_double_to_their_ceiling_and_reset() {
        let mut retry = Doubling::new(FIRST, MAX);
        let waits: Vec<_> = (&mut retry).take(8).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert_eq!(*waits.last().unwrap(), MAX);
        retry.reset();
        assert_eq!(retry.next(), Some(FIRST));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_tried_until_it_succeeds_with_growing_pauses() {
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let done = until_ok("counting", FIRST, MAX, || {
            tries += 1;
            let result = if tries < 3 { Err("not yet") } else { Ok(tries) };
            async move { result }
        })
        .await;
        assert_eq!(done, 3);
        assert_eq!(start.elapsed(), FIRST + FIRST * 2);
    }
}
