//! File helpers shared by the governance code: SHA-256 of files and package trees, and atomic
//! replacement of small state files (manifest, signature, sink cursor).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::GovernanceError;

/// Size and SHA-256 of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub bytes: u64,
    pub sha256: String,
}

/// Streams `path` through SHA-256 (1 MiB at a time: model weights can be gigabytes).
pub fn sha256_file(path: &Path) -> Result<FileFacts, GovernanceError> {
    let mut file = std::fs::File::open(path).map_err(|e| GovernanceError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| GovernanceError::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(FileFacts {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every regular file under `dir`, as `/`-separated paths relative to it, sorted, except the
/// top-level names in `skip`. Symlinks and other special files are refused: a signed package
/// must not be able to point outside itself.
pub fn package_files(dir: &Path, skip: &[&str]) -> Result<Vec<String>, GovernanceError> {
    let mut out = Vec::new();
    walk(dir, dir, skip, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &[&str],
    out: &mut Vec<String>,
) -> Result<(), GovernanceError> {
    let entries = std::fs::read_dir(dir).map_err(|e| GovernanceError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GovernanceError::io(dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| GovernanceError::io(&path, e))?;
        let rel = relative_name(root, &path)?;
        if dir == root && skip.contains(&rel.as_str()) {
            continue;
        }
        if kind.is_symlink() {
            return Err(GovernanceError::manifest(
                &path,
                "symbolic links are not allowed in a governed model package",
            ));
        }
        if kind.is_dir() {
            walk(root, &path, skip, out)?;
        } else if kind.is_file() {
            out.push(rel);
        } else {
            return Err(GovernanceError::manifest(
                &path,
                "not a regular file or directory",
            ));
        }
    }
    Ok(())
}

fn relative_name(root: &Path, path: &Path) -> Result<String, GovernanceError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| GovernanceError::manifest(path, "outside the package directory"))?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(GovernanceError::manifest(path, "unexpected path component"));
        };
        let Some(name) = name.to_str() else {
            return Err(GovernanceError::manifest(path, "file name is not UTF-8"));
        };
        parts.push(name);
    }
    Ok(parts.join("/"))
}

/// Resolves a manifest's relative file name inside `dir`, refusing absolute paths and `..`
/// (a hand-edited manifest must not make the gateway read files outside the package).
pub fn resolve_in(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\\') {
        return None;
    }
    let rel = Path::new(name);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

/// Size and digest of every file of the package in `dir` (see [`package_files`]).
pub fn digest_package(
    dir: &Path,
    skip: &[&str],
) -> Result<BTreeMap<String, FileFacts>, GovernanceError> {
    package_files(dir, skip)?
        .into_iter()
        .map(|name| {
            let facts = sha256_file(&dir.join(&name))?;
            Ok((name, facts))
        })
        .collect()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, fsync,
/// rename, fsync of the directory. A crash leaves the old content or the new, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GovernanceError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        GovernanceError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escapes() {
        let dir = Path::new("/pkg");
        assert_eq!(
            resolve_in(dir, "a/b.onnx"),
            Some(PathBuf::from("/pkg/a/b.onnx"))
        );
        for bad in ["", "../x", "/etc/passwd", "a/../../x", "./a", "a\\b"] {
            assert_eq!(resolve_in(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn sha256_of_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
