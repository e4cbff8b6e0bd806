//! How a Java servlet container (Tomcat, which Knowledge Advanced runs in)
//! reads a request path before routing it, for the simulator's opt-in
//! servlet-path mode ([`super::Simulator::set_servlet_paths`]).
//!
//! Tomcat's order, followed here: strip `;parameters` from every segment of
//! the raw path, percent-decode, then normalise (merge empty segments,
//! resolve `.` and `..`). So `/km/api/latest/content/..;/auth/authorize`
//! reads as `/km/api/latest/auth/authorize`, and `%2e%2e` is `..`. What
//! Tomcat refuses with 400 by default is refused here too: a malformed
//! `%` escape, an encoded `/` or `\`, a NUL, a raw `\`, a `..` above the
//! root, and a decoded path that is not UTF-8.

/// Why a path has no servlet reading (Tomcat answers these 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServletPathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: Tomcat rejects encoded separators by default.
    EncodedSeparator,
    /// A NUL byte or a raw backslash.
    ForbiddenByte,
    /// Decoded bytes that are not UTF-8.
    NotUtf8,
    /// Not starting with `/`, or `..` above the root.
    OutsideRoot,
}

impl ServletPathError {
    /// A short explanation for the error body.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::BadEscape => "the path has a malformed percent escape",
            Self::EncodedSeparator => "the path has an encoded separator (%2F or %5C)",
            Self::ForbiddenByte => "the path has a NUL or a backslash",
            Self::NotUtf8 => "the decoded path is not UTF-8",
            Self::OutsideRoot => "the path leaves the root",
        }
    }
}

/// The path as the servlet container routes it.
pub(crate) fn normalise(raw: &str) -> Result<String, ServletPathError> {
    let stripped = strip_path_parameters(raw);
    let decoded = percent_decode(stripped.as_bytes(), true)?;
    if decoded.iter().any(|b| *b == 0 || *b == b'\\') {
        return Err(ServletPathError::ForbiddenByte);
    }
    let text = String::from_utf8(decoded).map_err(|_| ServletPathError::NotUtf8)?;
    resolve(&text)
}

/// Drop `;...` up to the end of each segment.
fn strip_path_parameters(raw: &str) -> String {
    raw.split('/')
        .map(|segment| segment.split_once(';').map_or(segment, |(keep, _)| keep))
        .collect::<Vec<_>>()
        .join("/")
}

/// Decode `%XX` escapes (`+` stays `+`); with `strict_separators`, an
/// encoded `/` or `\` is an error.
pub(crate) fn percent_decode(raw: &[u8], strict_separators: bool) -> Result<Vec<u8>, ServletPathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| raw.get(j).and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(ServletPathError::BadEscape);
        };
        // Two hex digits make at most 0xff.
        let byte = u8::try_from(hi * 16 + lo).map_err(|_| ServletPathError::BadEscape)?;
        if strict_separators && (byte == b'/' || byte == b'\\') {
            return Err(ServletPathError::EncodedSeparator);
        }
        out.push(byte);
        i += 3;
    }
    Ok(out)
}

/// Merge empty segments and resolve `.` and `..`; a path ending in a
/// separator, `.` or `..` keeps a trailing `/`, as Tomcat's does.
fn resolve(path: &str) -> Result<String, ServletPathError> {
    let rest = path.strip_prefix('/').ok_or(ServletPathError::OutsideRoot)?;
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in rest.split('/') {
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop().ok_or(ServletPathError::OutsideRoot)?;
            }
            s => kept.push(s),
        }
    }
    let mut out = format!("/{}", kept.join("/"));
    if trailing && !kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_paths_as_tomcat_does() {
        for (raw, read) in [
            ("/km/api/latest/content", "/km/api/latest/content"),
            (
                "/km/api/latest/content/..;/auth/authorize",
                "/km/api/latest/auth/authorize",
            ),
            ("/km/api/v1/content/%2e%2e/auth/authorize", "/km/api/v1/auth/authorize"),
            ("/km/api/v1/content/.%2E/auth/authorize", "/km/api/v1/auth/authorize"),
            (
                "/km;x=1/api;y/v1/./auth//integration/authorize;jsessionid=2",
                "/km/api/v1/auth/integration/authorize",
            ),
            (
                "/km/api/v1/content/..;a=b/..;/v1/auth/authorize",
                "/km/api/v1/auth/authorize",
            ),
            ("/km/api/v1/a%3Bb", "/km/api/v1/a;b"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
            ("//", "/"),
            ("/a+b", "/a+b"),
        ] {
            assert_eq!(normalise(raw).as_deref(), Ok(read), "{raw}");
        }
    }

    #[test]
    fn refuses_what_tomcat_refuses() {
        for (raw, err) in [
            ("/..", ServletPathError::OutsideRoot),
            ("/a/../..;/b", ServletPathError::OutsideRoot),
            ("relative", ServletPathError::OutsideRoot),
            ("/a%2Fb", ServletPathError::EncodedSeparator),
            ("/a%5cb", ServletPathError::EncodedSeparator),
            ("/a%zz", ServletPathError::BadEscape),
            ("/a%2", ServletPathError::BadEscape),
            ("/a%00", ServletPathError::ForbiddenByte),
            ("/a\\b", ServletPathError::ForbiddenByte),
            ("/a%ff", ServletPathError::NotUtf8),
        ] {
            assert_eq!(normalise(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn decoding_keeps_plus_and_multibyte_text() {
        assert_eq!(percent_decode(b"a+%C3%A9%2F", false), Ok("a+é/".as_bytes().to_vec()));
    }
}
