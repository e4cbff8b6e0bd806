//! Secrets from the configuration: a literal string, `{ env = "NAME" }` or
//! `{ file = "/path" }`, resolved when the config is loaded and re-read on
//! reload. The value lives in a [`SecretString`], so `Debug` never shows it;
//! only the code that writes a login body calls [`Secret::expose`].

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Where a secret comes from; shown in `check` output instead of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config file itself.
    Literal,
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (trailing newline removed).
    File(PathBuf),
}

/// A resolved secret and where it came from.
#[derive(Clone)]
pub struct Secret {
    source: SecretSource,
    value: SecretString,
}

impl Secret {
    /// Parses the TOML form of a secret and resolves it now.
    pub fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) => Self::resolve(SecretSource::Literal, Some(s.clone())),
            toml::Value::Table(t) => {
                let mut keys = t.keys();
                let (Some(key), None) = (keys.next(), keys.next()) else {
                    return Err("expected exactly one of `env` or `file`".into());
                };
                let Some(arg) = t[key].as_str() else {
                    return Err(format!("`{key}` must be a string"));
                };
                match key.as_str() {
                    "env" => Self::resolve(SecretSource::Env(arg.to_owned()), None),
                    "file" => Self::resolve(SecretSource::File(PathBuf::from(arg)), None),
                    other => Err(format!("unknown key `{other}` (expected `env` or `file`)")),
                }
            }
            _ => Err("expected a string, { env = \"NAME\" } or { file = \"PATH\" }".into()),
        }
    }

    /// Reads the secret from its source again (for reloads).
    pub fn reread(&self) -> Result<Self, String> {
        match &self.source {
            SecretSource::Literal => Ok(self.clone()),
            other => Self::resolve(other.clone(), None),
        }
    }

    /// A literal secret, for code that builds configs (the demo, tests).
    pub fn literal(value: impl Into<String>) -> Self {
        Self {
            source: SecretSource::Literal,
            value: SecretString::from(value.into()),
        }
    }

    fn resolve(source: SecretSource, literal: Option<String>) -> Result<Self, String> {
        let raw = match (&source, literal) {
            (SecretSource::Literal, Some(v)) => v,
            (SecretSource::Env(name), _) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
            }
            (SecretSource::File(path), _) => read_file(path)?.trim_end_matches(['\r', '\n']).to_owned(),
            (SecretSource::Literal, None) => String::new(),
        };
        if raw.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self {
            source,
            value: SecretString::from(raw),
        })
    }

    /// True when `presented` is the secret's value. Both sides are hashed
    /// first and the digests compared in constant time, so the time taken
    /// tells neither the value nor its length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let expected = sha2::Sha256::digest(self.expose().as_bytes());
        let presented = sha2::Sha256::digest(presented);
        expected.as_slice().ct_eq(presented.as_slice()).into()
    }

    /// Where the secret comes from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The secret value, for writing it to the wire.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// True when both hold the same value (used to tell whether a reload
    /// changed a credential).
    pub fn same_value(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().as_bytes().ct_eq(other.expose().as_bytes()).into()
    }
}

/// Largest secret file read.
const MAX_FILE: u64 = 64 * 1024;

/// Reads a secret file: a regular file (a FIFO or a device would stall or
/// flood a load or a reload) of at most [`MAX_FILE`] bytes.
fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{shown}` is not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("`{shown}` is larger than {} KiB", MAX_FILE / 1024));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("`{shown}` is larger than {} KiB", MAX_FILE / 1024));
    }
    Ok(text)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self)
    }
}

impl fmt::Display for Secret {
    /// Shows where the secret comes from, never its value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Literal => f.write_str("<literal, redacted>"),
            SecretSource::Env(name) => write!(f, "<from env {name}>"),
            SecretSource::File(path) => write!(f, "<from file {}>", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::literal("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let v = toml::Value::Table(toml::toml! { file = (path.to_string_lossy().to_string()) });
        let s = Secret::from_toml(&v).expect("resolves");
        assert_eq!(s.expose(), "s3cret");
    }

    #[test]
    fn matches_compares_the_whole_value() {
        let s = Secret::literal("admin-token");
        assert!(s.matches(b"admin-token"));
        for wrong in [&b"admin-toke"[..], b"admin-token ", b"", b"ADMIN-TOKEN"] {
            assert!(!s.matches(wrong), "{wrong:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let as_secret = |p: &Path| {
            Secret::from_toml(&toml::Value::Table(
                toml::toml! { file = (p.to_string_lossy().to_string()) },
            ))
        };
        // A FIFO would block the load (and a reload) until someone writes.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        assert!(as_secret(&fifo).unwrap_err().contains("not a regular file"));
        assert!(as_secret(Path::new("/dev/zero"))
            .unwrap_err()
            .contains("not a regular file"));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 65 * 1024]).expect("write");
        assert!(as_secret(&big).unwrap_err().contains("larger than 64 KiB"));
        assert!(as_secret(dir.path()).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn bad_shapes_are_explained() {
        let v: toml::Value = toml::toml! { vault = "x" }.into();
        assert!(Secret::from_toml(&v).unwrap_err().contains("unknown key `vault`"));
        let missing: toml::Value = toml::toml! { env = "KMPROXY_TEST_SURELY_UNSET" }.into();
        assert!(Secret::from_toml(&missing).unwrap_err().contains("is not set"));
        assert!(Secret::from_toml(&toml::Value::Integer(3)).is_err());
    }
}
