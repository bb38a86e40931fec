//! A circuit breaker: fail fast while the provider is failing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::provider::ProviderError;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls (after their retries) that open it.
    pub failures: u32,
    /// How long it stays open before one trial call is let through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

/// Closed → (failures in a row) → open → (cool-down) → half-open: one
/// trial call; its success closes, its failure opens again.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a call through, or refuses it while open.
    pub(crate) fn admit(&self) -> Result<(), ProviderError> {
        let mut state = self.state();
        match state.open_until {
            None => Ok(()),
            Some(until) if Instant::now() < until => Err(ProviderError::CircuitOpen),
            Some(_) if state.trial_in_flight => Err(ProviderError::CircuitOpen),
            Some(_) => {
                state.trial_in_flight = true;
                Ok(())
            }
        }
    }

    pub(crate) fn succeeded(&self) {
        *self.state() = State::default();
    }

    pub(crate) fn failed(&self) {
        let mut state = self.state();
        state.consecutive = state.consecutive.saturating_add(1);
        state.trial_in_flight = false;
        if state.consecutive >= self.config.failures.max(1) {
            state.open_until = Some(Instant::now() + self.config.cool_down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_fails_fast_and_closes_after_a_good_trial() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failures: 2,
            cool_down: Duration::from_millis(30),
        });
        breaker.admit().unwrap();
        breaker.failed();
        breaker.admit().unwrap();
        breaker.failed();
        assert!(matches!(breaker.admit(), Err(ProviderError::CircuitOpen)));
        std::thread::sleep(Duration::from_millis(40));
        breaker.admit().unwrap();
        assert!(
            matches!(breaker.admit(), Err(ProviderError::CircuitOpen)),
            "one trial at a time"
        );
        breaker.failed();
        assert!(matches!(breaker.admit(), Err(ProviderError::CircuitOpen)));
        std::thread::sleep(Duration::from_millis(40));
        breaker.admit().unwrap();
        breaker.succeeded();
        breaker.admit().unwrap();
        breaker.admit().unwrap();
    }
}
