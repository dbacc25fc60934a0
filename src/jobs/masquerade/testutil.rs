//! Helpers shared by the unit tests of the masquerade modules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::report::state_path;
use super::{FileConfig, MasqConfig, MasqJob, Settings, parse_file};
use crate::error::Result;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) use crate::testutil::xorshift;

/// A temporary directory removed on drop.
pub(super) struct Dir(pub(super) PathBuf);
impl Dir {
    pub(super) fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nftkit-masq-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    pub(super) fn write(&self, name: &str, content: &str) -> &Self {
        std::fs::write(self.0.join(name), content).unwrap();
        self
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn st(dir: &Path, ipv6: bool, reserved: bool) -> Settings {
    Settings {
        masq_chain: "IP-MASQ-AGENT".into(),
        all_reserved: reserved,
        enable_ipv6: ipv6,
        interval: Duration::from_secs(60),
        config_dir: dir.to_path_buf(),
        random_fully: false,
    }
}

pub(super) fn nets4(c: &MasqConfig) -> Vec<String> {
    c.v4.iter().map(|n| n.to_string()).collect()
}

pub(super) fn parse_str(s: &str, ipv6: bool) -> Result<FileConfig> {
    parse_file(Path::new("/etc/config/ip-masq-agent"), s.as_bytes(), ipv6)
}

/// The environment of a process whose NFTKIT_STATE_DIR is `state`.
pub(super) fn state_env(state: &Dir) -> impl Fn(&str) -> Option<String> + use<> {
    let sdir = state.0.display().to_string();
    move |k: &str| (k == "NFTKIT_STATE_DIR").then(|| sdir.clone())
}

/// A daemon's job over config dir `d` keeping its status report in `state`.
pub(super) fn job_with_report(d: &Dir, state: &Dir) -> MasqJob {
    let env = state_env(state);
    MasqJob::new(
        st(&d.0, false, false),
        "nftkit-masquerade",
        state_path("nftkit-masquerade", &env),
        false,
    )
}
