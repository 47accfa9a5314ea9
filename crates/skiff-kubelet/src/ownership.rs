//! A pod's `fsGroup` applied to its volumes, as upstream does: every file
//! and directory is given the group, group read (and write unless the
//! volume is read-only), and directories the setgid bit so that new files
//! inherit the group. Symbolic links are never followed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const READ_WRITE: u32 = 0o660;
const READ_ONLY: u32 = 0o440;
const SEARCH: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Gives everything under `dir` (itself included) to group `gid`.
pub fn apply(dir: &Path, gid: u32, read_only: bool) -> Result<(), String> {
    let fail = |p: &Path, e: std::io::Error| format!("setting the fsGroup of {}: {e}", p.display());
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(dir, e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(gid)).map_err(|e| fail(dir, e))?;
    let mut mask = if read_only { READ_ONLY } else { READ_WRITE };
    if meta.is_dir() {
        mask |= SETGID | SEARCH;
    }
    let mode = meta.permissions().mode() | mask;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(dir, e))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
            let entry = entry.map_err(|e| fail(dir, e))?;
            apply(&entry.path(), gid, read_only)?;
        }
    }
    Ok(())
}

/// Whether `dir` already has the group and its bits: upstream's
/// `fsGroupChangePolicy: OnRootMismatch` then leaves the volume alone.
pub fn root_matches(dir: &Path, gid: u32, read_only: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mask = if read_only { READ_ONLY } else { READ_WRITE } | SETGID | SEARCH;
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.gid() == gid && m.permissions().mode() & mask == mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn is_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn group_bits_and_setgid_without_following_links() {
        if !is_root() {
            eprintln!("skipped: changing a file's group needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("skiff-ownership-{}", std::process::id()));
        let outside = dir.with_extension("outside");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(&outside, "host").unwrap();
        std::fs::write(dir.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(dir.join("sub/f"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        assert!(!root_matches(&dir, 2345, true));
        apply(&dir, 2345, true).unwrap();
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(meta(&dir.join("sub/f")).gid(), 2345);
        assert_eq!(meta(&dir.join("sub/f")).mode() & 0o7777, 0o440);
        assert_eq!(meta(&dir.join("sub")).mode() & 0o2000, 0o2000);
        assert_ne!(meta(&outside).gid(), 2345, "a link is not followed");
        assert!(root_matches(&dir, 2345, true));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&outside);
    }
}
