//! Environment variables read from a file another container wrote into an
//! emptyDir volume (`valueFrom.fileKeyRef`), in upstream's format: `NAME='value'`
//! lines, values single-quoted and taken literally (newlines included),
//! `#` comments and blank lines skipped.
//!
//! The file is the pod's to write, so it is read without following a
//! symbolic link or blocking on anything but a regular file, and at most
//! [`LIMIT`] of it.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest env file read, as upstream's.
pub const LIMIT: u64 = 64 * 1024;

/// The value of `key` in the env file at `relative` inside `volume`:
/// `None` if the file or the key is not there.
pub fn lookup(volume: &Path, relative: &str, key: &str) -> Result<Option<String>, String> {
    let Some(text) = read(volume, relative)? else {
        return Ok(None);
    };
    value_of(&text, key)
}

/// The file's text, `None` if it does not exist.
fn read(volume: &Path, relative: &str) -> Result<Option<String>, String> {
    if let Some(why) = skiff_core::validate::local_path_problem(relative) {
        return Err(format!("path {relative:?} {why}"));
    }
    let mut at = volume.to_path_buf();
    let parts: Vec<_> = Path::new(relative).components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "env file {relative:?} leads through a symbolic link"
                ))
            }
            Ok(meta) if !last && !meta.is_dir() => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("env file {relative:?}: {e}")),
        }
    }
    // Swapped for a link or a pipe since: refused, never followed or
    // waited on.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&at)
        .map_err(|e| format!("env file {relative:?}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("env file {relative:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("env file {relative:?} is not a regular file"));
    }
    if meta.len() > LIMIT {
        return Err(format!(
            "env file {relative:?} is larger than {LIMIT} bytes"
        ));
    }
    let mut bytes = Vec::new();
    file.take(LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("env file {relative:?}: {e}"))?;
    if bytes.len() as u64 > LIMIT {
        return Err(format!(
            "env file {relative:?} is larger than {LIMIT} bytes"
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("env file {relative:?} is not UTF-8"))
}

/// The value of `key` in an env file's text; the first definition wins, as
/// upstream's parser stops at it. An error names the line at fault, never
/// the file's content.
pub fn value_of(text: &str, key: &str) -> Result<Option<String>, String> {
    let invalid = |n: usize, why: &str| {
        Err(format!(
            "invalid environment variable format at line {n}: {why}"
        ))
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, line)) = lines.next() {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return invalid(n, "missing '='");
        };
        if name.is_empty() {
            return invalid(n, "empty variable name");
        }
        if name.ends_with([' ', '\t']) {
            return invalid(n, "whitespace before '=' is not allowed");
        }
        // As a shell: `NAME= 'x'` sets NAME empty.
        if value.starts_with([' ', '\t']) {
            if name == key {
                return Ok(Some(String::new()));
            }
            continue;
        }
        let Some(mut rest) = value.strip_prefix('\'') else {
            return invalid(n, "value must be enclosed in single quotes");
        };
        let mut found = String::new();
        loop {
            if let Some(end) = rest.find('\'') {
                found.push_str(&rest[..end]);
                let after = rest[end + 1..].trim_start_matches([' ', '\t']);
                if !after.is_empty() && !after.starts_with('#') {
                    return invalid(n, "unexpected content after closing quote");
                }
                break;
            }
            found.push_str(rest);
            found.push('\n');
            match lines.next() {
                Some((_, next)) => rest = next,
                None => {
                    return Err(format!(
                        "invalid environment variable format starting at line {n}: unclosed single quote"
                    ))
                }
            }
        }
        if name == key {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_single_quoted_and_literal() {
        let text = "# settings\n\n  DB='db:5432'\nEMPTY=''\nMULTI='a\nb'\nLATE= 'x'\nRAW='$HOME \\n' # note\nDB='second'\n";
        let cases = [
            ("DB", Some("db:5432")),
            ("EMPTY", Some("")),
            ("MULTI", Some("a\nb")),
            ("LATE", Some("")),
            ("RAW", Some("$HOME \\n")),
            ("MISSING", None),
        ];
        for (key, want) in cases {
            let got = value_of(text, key).unwrap();
            assert_eq!(got.as_deref(), want, "{key}");
        }
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_line() {
        let cases = [
            (
                "A=unquoted\n",
                "line 1: value must be enclosed in single quotes",
            ),
            ("\nA ='x'\n", "line 2: whitespace before '=' is not allowed"),
            ("A\n", "line 1: missing '='"),
            (
                "A='x' y\n",
                "line 1: unexpected content after closing quote",
            ),
            ("A='open\n", "starting at line 1: unclosed single quote"),
        ];
        for (text, want) in cases {
            let err = value_of(text, "A").unwrap_err();
            assert!(err.ends_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_file_is_read_only_inside_the_volume_and_without_links() {
        let dir = std::env::temp_dir().join(format!("skiff-env-file-{}", std::process::id()));
        let volume = dir.join("volume");
        std::fs::create_dir_all(volume.join("sub")).unwrap();
        std::fs::write(dir.join("secret"), "A='host'\n").unwrap();
        std::fs::write(volume.join("sub/config.env"), "A='pod'\n").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), volume.join("link.env")).unwrap();
        std::os::unix::fs::symlink(dir.as_path(), volume.join("up")).unwrap();
        let got = |path: &str| lookup(&volume, path, "A");
        assert_eq!(got("sub/config.env"), Ok(Some("pod".into())));
        assert_eq!(got("missing.env"), Ok(None));
        assert_eq!(got("sub/config.env/x"), Ok(None));
        assert!(got("link.env").unwrap_err().contains("symbolic link"));
        assert!(got("up/secret").unwrap_err().contains("symbolic link"));
        assert!(got("../secret").unwrap_err().contains(".."));
        std::fs::write(volume.join("big.env"), vec![b'#'; LIMIT as usize + 1]).unwrap();
        assert!(got("big.env").unwrap_err().contains("larger than"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
