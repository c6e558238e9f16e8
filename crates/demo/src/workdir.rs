//! The demo's scratch directory: certificates and the control plane's store, removed when
//! the demo ends.

use crate::DemoError;
use std::os::unix::fs::DirBuilderExt;
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
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` by writing a sibling and renaming it over, so a sidecar polling the file
    /// never reads half of it.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, DemoError> {
        let path = self.path.join(name);
        let partial = self.path.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|source| DemoError::File {
                what: "writing a demo file",
                path: path.clone(),
                source,
            })?;
        Ok(path)
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
        let path = dir.write("mesh.yaml", "first").unwrap();
        dir.write("mesh.yaml", "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mesh.yaml"], "no partial file is left behind");
        drop(dir);
        assert!(!root.exists());
    }
}
