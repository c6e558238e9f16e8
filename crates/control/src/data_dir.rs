//! The data directory holds the mesh's secrets (the CA key inside the store, the admin
//! token), so only its owner may read it: the directory is 0700 and every file in it 0600.
//!
//! A directory made by an older version, or by hand, with looser modes is tightened on
//! start (and said so in the log); one that cannot be tightened (another user owns it) is
//! refused, so a control plane never runs with its secrets readable by others.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Only the owner may list, enter or change the directory.
pub const DIR_MODE: u32 = 0o700;
/// Only the owner may read or write a file.
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {path}: {source}; choose another --data-dir")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}) and cannot be made private: {source}; run `chmod {want:o} {path}` as its owner, or choose another --data-dir")]
    Loose {
        path: PathBuf,
        mode: u32,
        want: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {path}: {source}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}; check the disk under --data-dir")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates `dir` (0700) if needed, and makes it and every file directly in it private.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| DataDirError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    make_private(dir, DIR_MODE)?;
    let entries = fs::read_dir(dir).map_err(|source| DataDirError::Inspect {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| DataDirError::Inspect {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.is_file() {
            make_private(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

/// Creates `path` (empty, 0600) unless it exists, so a file another library then opens is
/// private from its first byte.
pub fn create_private_file(path: &Path) -> Result<(), DataDirError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => make_private(path, FILE_MODE),
        Err(source) => Err(DataDirError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `contents` to `path` as a new 0600 file, atomically: a reader sees the old file
/// or the whole new one, and the secret is never in a file others can read.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    let write_error = |source| DataDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    fs::rename(&temporary, path).map_err(write_error)
}

/// Clears the group and other bits of `path`, saying so when it changed anything.
fn make_private(path: &Path, want: u32) -> Result<(), DataDirError> {
    let metadata = fs::metadata(path).map_err(|source| DataDirError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = mode & !0o077 | want & 0o700;
    fs::set_permissions(path, Permissions::from_mode(private)).map_err(|source| {
        DataDirError::Loose {
            path: path.to_path_buf(),
            mode,
            want,
            source,
        }
    })?;
    tracing::warn!(
        path = %path.display(),
        was = format!("{mode:o}"),
        now = format!("{private:o}"),
        "made a data-directory entry private: it was readable by other users"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::ScratchDir;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_directory_and_its_files_are_private() {
        let scratch = ScratchDir::new("data-dir-new");
        let dir = scratch.path().join("nested/data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let store = dir.join("store");
        create_private_file(&store).unwrap();
        assert_eq!(mode(&store), FILE_MODE);
        let secret = dir.join("secret");
        write_private(&secret, b"one").unwrap();
        write_private(&secret, b"two").unwrap();
        assert_eq!(mode(&secret), FILE_MODE);
        assert_eq!(fs::read(&secret).unwrap(), b"two");
        assert!(!dir.join("secret.tmp").exists());
    }

    #[test]
    fn an_existing_loose_directory_is_tightened() {
        let scratch = ScratchDir::new("data-dir-loose");
        let dir = scratch.path().to_path_buf();
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let store = dir.join("weft.redb");
        fs::write(&store, b"").unwrap();
        fs::set_permissions(&store, Permissions::from_mode(0o644)).unwrap();
        // An existing file is tightened, not truncated.
        fs::write(dir.join("kept"), b"data").unwrap();
        fs::set_permissions(dir.join("kept"), Permissions::from_mode(0o664)).unwrap();
        create_private_file(&dir.join("kept")).unwrap();
        assert_eq!(fs::read(dir.join("kept")).unwrap(), b"data");

        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store), 0o600);
        assert_eq!(mode(&dir.join("kept")), 0o600);
    }
}
