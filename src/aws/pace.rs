//! The adaptive pace of one AWS API. AWS answers 429 when the account's quota for an API is
//! exceeded, by whoever exceeds it, so several claimfab processes (or other tools) sharing an
//! account cannot each send at the whole quota. [`RateController`] adapts a rate by additive
//! increase and multiplicative decrease (AIMD, as TCP shares a link): it slows down on a
//! throttle and probes back up while requests succeed, never above the station's rate (the
//! ceiling, and where it starts) nor below a floor. It is pure: no clock, no I/O.
//!
//! [`Pace`] sends at the controller's rate through a token bucket of burst one (the pace
//! stays even, so AWS's own bucket never sees a burst). The bucket is the `ratelimit` crate's,
//! whose rate can be changed while tasks wait on it; `governor`'s quota is fixed once built
//! (boinkor-net/governor#273), and rebuilding one loses its state.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ratelimit::{Ratelimiter, TryWaitError};

/// What a throttle leaves of the rate: AWS's 429 says the account is over its quota, so
/// back off by enough that several processes together fall below it at once.
const DECREASE: f64 = 0.7;

/// What successes give back, per second, as a share of the ceiling: from 0.7 of the ceiling
/// to all of it in about 4 seconds for one process, faster for several together, so AWS's
/// bucket (about a second of quota) never fills and goes unused while they climb back.
const PROBE_PER_SECOND: f64 = 0.07;

/// The lowest rate, as a share of the ceiling: a run of throttles cannot park a station at
/// a crawl it would take minutes to climb back from.
const FLOOR: f64 = 0.05;

/// The rate of one API, adapted to AWS's answers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RateController {
    rate: f64,
    ceiling: f64,
    /// How many times the rate was decreased. An attempt is sent in an epoch, and only a
    /// throttle of an attempt sent in the current epoch decreases the rate: the throttles of
    /// attempts already in flight when it was decreased belong to the same excess, which the
    /// decrease already answered (TCP's once per round trip).
    epoch: u64,
}

impl RateController {
    /// Starts at the ceiling, the station's rate: a station alone on its account loses
    /// nothing to the adaptation.
    pub(super) fn new(ceiling: f64) -> Self {
        Self {
            rate: ceiling,
            ceiling,
            epoch: 0,
        }
    }

    /// Requests per second now.
    pub(super) fn rate(&self) -> f64 {
        self.rate
    }

    /// The epoch an attempt sent now is sent in.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn floor(&self) -> f64 {
        self.ceiling * FLOOR
    }

    /// A request sent in `epoch` was throttled: decreases the rate unless it was already
    /// decreased since that request was sent. Returns whether it was.
    pub(super) fn throttled(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.rate = (self.rate * DECREASE).max(self.floor());
        self.epoch += 1;
        true
    }

    /// A request succeeded: the rate grows by its share of [`PROBE_PER_SECOND`], so that at
    /// `rate` successes a second it gains that share of the ceiling each second.
    pub(super) fn succeeded(&mut self) {
        let per_second = self.ceiling * PROBE_PER_SECOND;
        self.rate = (self.rate + per_second / self.rate).min(self.ceiling);
    }
}

/// The bucket's rate is a whole number of tokens per period: thousandths of a request per
/// second.
const PERIOD: Duration = Duration::from_secs(1000);

/// One API's pace: its controller and the token bucket that sends at its rate.
pub(super) struct Pace {
    bucket: Ratelimiter,
    control: Mutex<RateController>,
}

impl Pace {
    /// A pace starting at (and never above) `per_second`.
    pub(super) fn new(per_second: u32) -> Self {
        let control = RateController::new(f64::from(per_second.max(1)));
        let bucket = Ratelimiter::builder(per_period(control.rate()))
            .period(PERIOD)
            .max_tokens(1)
            .initial_available(1)
            .build()
            .expect("a non-zero period and one token of burst are valid");
        Self {
            bucket,
            control: Mutex::new(control),
        }
    }

    /// Waits for the next slot; returns the epoch the attempt is sent in.
    pub(super) async fn admit(&self) -> u64 {
        loop {
            match self.bucket.try_wait() {
                Ok(()) => return self.with(|c| c.epoch()),
                Err(TryWaitError::Insufficient(wait)) => tokio::time::sleep(wait).await,
                // The bucket always holds one token: its rate is never zero.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// An attempt sent in `epoch` was throttled.
    pub(super) fn throttled(&self, epoch: u64) {
        self.with(|c| c.throttled(epoch));
    }

    /// An attempt succeeded.
    pub(super) fn succeeded(&self) {
        self.with(RateController::succeeded);
    }

    /// Requests per second now.
    #[cfg(test)]
    pub(super) fn rate(&self) -> f64 {
        self.with(|c| c.rate())
    }

    /// Changes the controller and sets the bucket to its rate, under the one lock, so the
    /// bucket never runs at a rate the controller has left.
    fn with<T>(&self, change: impl FnOnce(&mut RateController) -> T) -> T {
        let mut control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let before = control.rate();
        let result = change(&mut control);
        if control.rate() != before {
            self.bucket.set_rate_per(per_period(control.rate()), PERIOD);
        }
        result
    }
}

fn per_period(per_second: f64) -> u64 {
    (per_second * PERIOD.as_secs_f64()).round().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_slows_the_rate_once_per_excess_down_to_a_floor() {
        let mut rate = RateController::new(15.0);
        assert_eq!(rate.rate(), 15.0, "starts at the station's rate");
        let sent = rate.epoch();
        assert!(rate.throttled(sent));
        assert!((rate.rate() - 10.5).abs() < 1e-9, "{}", rate.rate());
        // Requests sent before the decrease come back throttled too: one excess, one decrease.
        assert!(!rate.throttled(sent));
        assert!((rate.rate() - 10.5).abs() < 1e-9);
        for _ in 0..100 {
            let epoch = rate.epoch();
            rate.throttled(epoch);
        }
        assert!(
            (rate.rate() - 0.75).abs() < 1e-9,
            "the floor: {}",
            rate.rate()
        );
    }

    #[test]
    fn successes_climb_back_by_a_share_of_the_ceiling_a_second_and_stop_at_it() {
        let mut rate = RateController::new(20.0);
        let epoch = rate.epoch();
        rate.throttled(epoch);
        assert!((rate.rate() - 14.0).abs() < 1e-9);
        // One second's successes at about 14/s give back about 7% of the ceiling (1.4/s).
        for _ in 0..14 {
            rate.succeeded();
        }
        assert!(rate.rate() > 15.3 && rate.rate() <= 15.4, "{}", rate.rate());
        for _ in 0..1000 {
            rate.succeeded();
        }
        assert_eq!(rate.rate(), 20.0, "never above the station's rate");
    }

    #[tokio::test]
    async fn the_pace_follows_its_controller() {
        let pace = Pace::new(10);
        let epoch = pace.admit().await;
        pace.throttled(epoch);
        assert!((pace.rate() - 7.0).abs() < 1e-9);
        assert_eq!(pace.bucket.rate(), 7000, "thousandths per second");
        pace.succeeded();
        assert!(pace.rate() > 7.0);
        assert_eq!(pace.bucket.rate(), per_period(pace.rate()));
        assert_eq!(per_period(0.0), 1, "a rate the bucket can hold");
    }
}
