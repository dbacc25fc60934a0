//! The counters a reconcile loop keeps and what readiness means: applied with a valid
//! config, the kernel accepting our applies, the table ours. The loops (`runner`, netpol
//! live) update them; `metrics` publishes them.

use std::time::{Duration, SystemTime};

/// Consecutive failed apply or verify (read-back) attempts after which a daemon reports
/// not ready (`/readyz` 503, `nftkit_ready 0`). Three, so that one refused batch or one
/// failed dump (EBUSY, a concurrent replace) does not flap readiness, while a kernel that
/// keeps refusing shows within three intervals. The next success makes it ready again.
pub const NOT_READY_AFTER_FAILURES: u32 = 3;

/// Counters for logs, status and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoopStats {
    pub applies: u64,
    pub drift_repairs: u64,
    pub errors: u64,
    /// Config side of readiness: true once a table was applied and the last config read
    /// was valid. The daemon's readiness also needs the kernel side: [`Self::is_ready`].
    pub ready: bool,
    pub last_apply: Option<Duration>,
    /// Apply or verify (read-back) attempts that failed in a row; a success resets it.
    pub failed_attempts: u32,
    /// The last apply failed on a table of our name without nftkit's ownership comment
    /// (someone else's; replaced only with `--force`).
    pub table_not_ours: bool,
    /// When an apply last succeeded or the kernel was last found in sync.
    pub last_success: Option<SystemTime>,
}

impl LoopStats {
    /// Ready for `/readyz` and `nftkit_ready`: applied with a valid config ([`Self::ready`]),
    /// fewer than [`NOT_READY_AFTER_FAILURES`] failed attempts in a row, and the table ours.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why [`Self::is_ready`] is false, for `/readyz`'s body; None when ready.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.table_not_ours {
            Some("the table of our name is not managed by nftkit".into())
        } else if self.failed_attempts >= NOT_READY_AFTER_FAILURES {
            Some(format!(
                "the last {} apply or verify attempts failed",
                self.failed_attempts
            ))
        } else if !self.ready {
            Some("not applied yet, or the last configuration was invalid".into())
        } else {
            None
        }
    }

    /// An apply was committed and checked, or the kernel was found equal to the desired
    /// table: resets the failure streak and stamps `nftkit_last_success_timestamp_seconds`.
    /// Loops of their own (netpol live) call this after each successful apply.
    pub fn record_success(&mut self) {
        self.failed_attempts = 0;
        self.table_not_ours = false;
        self.last_success = Some(SystemTime::now());
    }

    /// An apply or a read-back failed (count the error in `errors` as well). Loops of their
    /// own (netpol live) call this after each failed apply.
    pub fn record_failure(&mut self) {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
    }
}
