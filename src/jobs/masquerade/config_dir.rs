//! Finding and reading the `ip-masq*` entries of `--config-dir`: ConfigMap symlinks
//! followed only inside the directory, regular files only, [`MAX_FILE_BYTES`] at most,
//! retried when a ConfigMap update swaps the files underneath.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{FILE_PREFIX, MAX_FILE_BYTES, file_error};
use crate::error::{Error, Result};

/// A config file's path (as listed in the config dir) and content.
pub type RawFile = (PathBuf, Vec<u8>);

/// A listed entry vanished or dangles while being read (a ConfigMap update swaps `..data`
/// and removes stale links afterwards): retry; the error is reported if it persists.
struct Vanished(Error);

/// The `ip-masq*` entries of `dir` with their content, sorted by name; `None` if `dir`
/// does not exist. Symlinks are followed only while they stay inside `dir` (the
/// ConfigMap layout `ip-masq-agent -> ..data/ip-masq-agent`, `..data -> ..2024_...`);
/// anything but a regular file, or a file over [`MAX_FILE_BYTES`], is an error.
pub fn read_config_dir(dir: &Path) -> Result<Option<Vec<RawFile>>> {
    let mut retries = 2;
    loop {
        match read_config_dir_once(dir) {
            Ok(r) => return Ok(r),
            Err(Err(e)) | Err(Ok(Vanished(e))) if retries == 0 => return Err(e),
            Err(Err(e)) => return Err(e),
            Err(Ok(Vanished(_))) => {
                retries -= 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

type ReadResult<T> = std::result::Result<T, std::result::Result<Vanished, Error>>;

fn read_config_dir_once(dir: &Path) -> ReadResult<Option<Vec<RawFile>>> {
    let bad_dir = |e: std::io::Error| {
        Err(Error::invalid(
            "--config-dir",
            dir.display(),
            format!("cannot read the directory: {e}"),
        ))
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad_dir(e)),
    };
    let root = std::fs::canonicalize(dir).map_err(bad_dir)?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(bad_dir)?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(FILE_PREFIX.as_bytes()) {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes = read_entry(&root, &path)?;
        out.push((path, bytes));
    }
    Ok(Some(out))
}

fn read_entry(root: &Path, path: &Path) -> ReadResult<Vec<u8>> {
    let vanished_or = |e: std::io::Error, why: &str| {
        let err = file_error(path, format!("{why}: {e}"));
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(Vanished(err))
        } else {
            Err(err)
        }
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| vanished_or(e, "cannot stat"))?;
    let target = if meta.file_type().is_symlink() {
        let target = match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Ok(Vanished(file_error(
                    path,
                    "symlink points to nothing (dangling)",
                ))));
            }
            Err(e) => return Err(vanished_or(e, "cannot resolve symlink")),
        };
        if !target.starts_with(root) || target == root {
            return Err(Err(file_error(
                path,
                format!(
                    "symlink leads to {} outside {}; only symlinks inside the config dir (a ConfigMap's ..data layout) are followed",
                    target.display(),
                    root.display()
                ),
            )));
        }
        target
    } else {
        path.to_path_buf()
    };
    // O_NONBLOCK: a FIFO planted here must not hang the daemon; fstat decides.
    // O_NOFOLLOW: the checked (canonical) path must not turn into a symlink meanwhile.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&target)
        .map_err(|e| vanished_or(e, "cannot open"))?;
    let fmeta = file
        .metadata()
        .map_err(|e| Err(file_error(path, format!("cannot stat: {e}"))))?;
    if fmeta.is_dir() {
        return Err(Err(file_error(
            path,
            "is a directory; expected a YAML or JSON file",
        )));
    }
    if !fmeta.is_file() {
        return Err(Err(file_error(
            path,
            "is not a regular file; expected a YAML or JSON file",
        )));
    }
    let too_big = |n: u64| {
        Err(Err(file_error(
            path,
            format!(
                "is {n} bytes; config files are limited to {} MiB",
                MAX_FILE_BYTES >> 20
            ),
        )))
    };
    if fmeta.size() > MAX_FILE_BYTES {
        return too_big(fmeta.size());
    }
    let mut bytes = Vec::with_capacity(fmeta.size() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Err(file_error(path, format!("cannot read: {e}"))))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return too_big(bytes.len() as u64);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::masquerade::load;
    use crate::jobs::masquerade::testutil::*;

    #[test]
    fn configmap_symlinks_followed_but_not_out_of_the_dir() {
        use std::os::unix::fs::symlink;
        let d = Dir::new();
        let data = d.0.join("..2024_01_01_00_00_00.123");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            data.join("ip-masq-agent"),
            "nonMasqueradeCIDRs: [198.51.100.0/24]",
        )
        .unwrap();
        symlink("..2024_01_01_00_00_00.123", d.0.join("..data")).unwrap();
        symlink("..data/ip-masq-agent", d.0.join("ip-masq-agent")).unwrap();
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(nets4(&l.config), ["198.51.100.0/24"]);

        // Out of the directory: refused, naming the file.
        let outside = Dir::new();
        outside.write("secret", "nonMasqueradeCIDRs: [0.0.0.0/0]");
        symlink(outside.0.join("secret"), d.0.join("ip-masq-evil")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(
            e.to_string().contains("ip-masq-evil") && e.to_string().contains("outside"),
            "{e}"
        );
        std::fs::remove_file(d.0.join("ip-masq-evil")).unwrap();

        // Dangling symlink, directory, FIFO: errors, never a hang.
        symlink("..data/missing", d.0.join("ip-masq-dangling")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        std::fs::remove_file(d.0.join("ip-masq-dangling")).unwrap();
        std::fs::create_dir(d.0.join("ip-masq-dir")).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir(d.0.join("ip-masq-dir")).unwrap();
        let fifo = d.0.join("ip-masq-fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let d = Dir::new();
        let f = std::fs::File::create(d.0.join("ip-masq-big")).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert!(e.to_string().contains("limited to 16 MiB"), "{e}");
    }
}
