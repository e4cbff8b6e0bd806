//! How the human-readable log writes an event's fields when it is not on a
//! terminal (a container's log, a file, a pipe: where kmproxy runs):
//! exactly as tracing-subscriber's default does with colours off (the
//! message, then `name=value` with each value in its `Debug` form, one
//! space between), without the styling machinery the default runs even
//! with colours off. At the default level, `info`, every call writes an
//! access line; this takes 5.0k of the 20.4k instructions the line and its
//! span cost per call (`bench/profile --log info`: 60,534 -> 55,507).
//!
//! The message is escaped as the default escapes it, so that no message
//! can drive a terminal that later shows the log: ESC, BEL, BS, FF, DEL
//! and the C1 controls are written as escapes. (Other values are written
//! in their `Debug` form, which escapes control characters in strings.)

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::FormatFields;

/// The plain field formatter (see the module doc).
pub fn plain_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(write_field).delimited(" ")
}

fn write_field(w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug) -> fmt::Result {
    match field.name() {
        "message" => write!(Escaping(w), "{value:?}"),
        name => write!(w, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
    }
}

/// Writes through to `W`, escaping terminal control characters.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(is_control) {
            self.0.write_str(&rest[..at])?;
            let ch = rest[at..].chars().next().unwrap_or_default();
            match ch {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => write!(self.0, "\\x{:02x}", ch as u32)?,
            }
            rest = &rest[at + ch.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn is_control(ch: char) -> bool {
    matches!(ch, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}')
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes under tracing-subscriber's default fields (colours
    /// off) and under [`plain_fields`].
    fn both(log: impl Fn()) -> (String, String) {
        let default = Captured::default();
        let plain = Captured::default();
        let d = default.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || d.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(sub, &log);
        let p = plain.clone();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(plain_fields())
            .with_writer(move || p.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(sub, &log);
        let text = |c: Captured| String::from_utf8(c.0.lock().expect("lock").clone()).expect("utf-8");
        (text(default), text(plain))
    }

    #[test]
    fn lines_are_the_defaults_with_colours_off() {
        let (default, plain) = both(|| {
            let span = tracing::info_span!("request", id = %"0a1b");
            let _in = span.enter();
            let path = "/km/api/latest/content\\x\"q\"\n";
            tracing::info!(
                target: "kmproxy::access",
                caller = %"helpdesk",
                principal = "agent",
                path,
                status = 200u16,
                upstream_ms = Some(1.25f64),
                replayed = false,
                total_ms = 2.5f64,
                "call"
            );
            tracing::warn!(error = %"refused: \x1b[2J", r#type = 3, "call failed \x1b[31m\u{9b}\x07 é");
        });
        assert!(
            default.contains("principal=\"agent\"") && default.contains("call failed \\x1b"),
            "{default}"
        );
        assert_eq!(plain, default);
    }

    #[test]
    fn control_characters_in_a_message_are_escaped_and_the_rest_kept() {
        let mut out = String::new();
        write!(Escaping(&mut out), "a\x1b[31mred\u{9b}\x07\x08\x0c\x7f é ✓").expect("write");
        assert_eq!(out, "a\\x1b[31mred\\u{9b}\\x07\\x08\\x0c\\x7f é ✓");
    }
}
