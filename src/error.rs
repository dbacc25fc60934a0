//! One error type; its variant decides the exit code (CONTRACT.md "Exit codes").

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flag, env value, config file or manifest: exit 2, nothing sent to the kernel.
    #[error("invalid {what} {value:?}: {expected}")]
    Invalid {
        what: String,
        value: String,
        expected: String,
    },
    /// A usage problem that is not about one value (missing argument, conflicting flags).
    #[error("{0}")]
    Usage(String),
    /// A runtime dependency (a tool, a file, the API server) failed: exit 1.
    #[error("{0}")]
    Runtime(String),
    /// The kernel refused or failed operation `op`: exit 1. `errno` is the kernel's
    /// answer when it gave one (EPERM: missing CAP_NET_ADMIN; ENOENT: gone meanwhile).
    #[error("{op}: {message}")]
    Kernel {
        op: String,
        errno: Option<i32>,
        message: String,
    },
    /// The backend cannot express part of the desired state (iptables has no equivalent):
    /// exit 1, found before anything is sent; retrying or re-applying cannot help.
    #[error("backend {backend} cannot express {what}; use --backend nftables")]
    Unsupported { backend: String, what: String },
    /// `verify` found the kernel different from the desired state: exit 3.
    #[error("drift in table {table}:\n{diff}")]
    Drift { table: String, diff: String },
    /// Several steps of one task failed, each still tried (a cleanup keeps going past a
    /// failure, as netavark's teardown does); the highest exit code among them wins.
    #[error("{what}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several { what: String, errors: Vec<Error> },
}

impl Error {
    pub fn invalid(
        what: impl fmt::Display,
        value: impl fmt::Display,
        expected: impl fmt::Display,
    ) -> Self {
        Error::Invalid {
            what: what.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    pub fn runtime(msg: impl fmt::Display) -> Self {
        Error::Runtime(msg.to_string())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } | Error::Usage(_) => 2,
            Error::Runtime(_) | Error::Kernel { .. } | Error::Unsupported { .. } => 1,
            Error::Drift { .. } => 3,
            Error::Several { errors, .. } => errors.iter().map(Error::exit_code).max().unwrap_or(1),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a command that did not fail ended. Only a question answered "no" differs from
/// done: `netpol explain` for a denied flow (exit 4) is an answer, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// `netpol explain`: the flow is denied. Exit 4.
    Denied,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Done => 0,
            Outcome::Denied => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_errors_keep_each_and_the_highest_exit_code() {
        let e = Error::Several {
            what: "cleanup".into(),
            errors: vec![
                Error::runtime("address: EPERM"),
                Error::runtime("table: EBUSY"),
            ],
        };
        assert_eq!(e.to_string(), "cleanup: address: EPERM; table: EBUSY");
        assert_eq!(e.exit_code(), 1);
    }
}
