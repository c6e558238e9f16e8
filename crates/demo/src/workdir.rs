//! The demo's scratch directory: certificates and the control plane's store, removed when
//! the demo ends, or by the next demo if this one was killed before it could clean up.

use crate::DemoError;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<Self, DemoError> {
        // The pid and clock make the name unique even next to a directory left behind by a
        // demo that was killed with SIGKILL (which runs no cleanup).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("weft-demo-{}-{nanos:08x}", std::process::id()));
        // Private: it holds every workload's private key.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| DemoError::File {
                what: "creating the demo's temporary directory",
                path: path.clone(),
                source,
            })?;
        if let (Some(parent), Ok(ours)) = (path.parent(), path.symlink_metadata()) {
            sweep_stale(parent, ours.uid());
        }
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` (readable by its owner only: `owner`, or the demo's user) by writing a
    /// sibling and renaming it over, so a sidecar polling the file never reads half of it.
    pub fn write(
        &self,
        name: &str,
        contents: &str,
        owner: Option<u32>,
    ) -> Result<PathBuf, DemoError> {
        let path = self.path.join(name);
        let partial = self.path.join(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|mut file| file.write_all(contents.as_bytes()))
            .and_then(|()| match owner {
                Some(uid) => std::os::unix::fs::chown(&partial, Some(uid), Some(uid)),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|source| DemoError::File {
                what: "writing a demo file",
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Lets sidecars run as another user reach their own files here (the directory can be
    /// entered, not listed; each file is its owner's), and copies `weft_bin` in for them to
    /// run, since its own directory may be closed to them (`/root/...`).
    pub fn share_with_sidecars(&self, weft_bin: &Path) -> Result<PathBuf, DemoError> {
        let failed = |what, path: &Path| {
            let path = path.to_owned();
            move |source| DemoError::File { what, path, source }
        };
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o711)).map_err(
            failed("opening the demo's directory to the sidecars", &self.path),
        )?;
        let copy = self.path.join("weft");
        std::fs::copy(weft_bin, &copy)
            .and_then(|_| std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)))
            .map_err(failed("copying the weft binary for the sidecars", &copy))?;
        Ok(copy)
    }
}

/// Removes what demos killed with SIGKILL left behind: `weft-demo-PID-*` directories of
/// this user whose process is gone.
fn sweep_stale(parent: &Path, uid: u32) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|name| name.strip_prefix("weft-demo-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let Ok(metadata) = path.symlink_metadata() else {
            continue;
        };
        if metadata.is_dir() && metadata.uid() == uid && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed the directory of a demo that was killed");
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the demo's temporary directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_and_removed_with_the_directory() {
        let dir = WorkDir::create().unwrap();
        let root = dir.path.clone();
        let path = dir.write("mesh.yaml", "first", None).unwrap();
        dir.write("mesh.yaml", "second", None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let mode = path.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the demo's user reads it");
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mesh.yaml"], "no partial file is left behind");
        drop(dir);
        assert!(!root.exists());
    }

    #[test]
    fn directories_of_killed_demos_are_swept() {
        // A pid that was just reaped belongs to no process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let stale = std::env::temp_dir().join(format!("weft-demo-{gone}-0badc0de"));
        std::fs::create_dir_all(stale.join("data")).unwrap();
        let alive = std::env::temp_dir().join(format!("weft-demo-{}-1badc0de", std::process::id()));
        std::fs::create_dir_all(&alive).unwrap();

        let dir = WorkDir::create().unwrap();
        assert!(!stale.exists(), "the killed demo's directory is removed");
        assert!(alive.exists(), "a live demo's directory stays");
        std::fs::remove_dir_all(&alive).unwrap();
        drop(dir);
    }
}
