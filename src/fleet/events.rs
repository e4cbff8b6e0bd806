//! What replicas tell each other: one pub/sub channel, `{prefix}events`,
//! carrying short text messages `{replica} {kind} {fingerprint} [{id}]`
//! (`invalidated` carries the token's id, `reset` the reset's).
//! They name only fingerprints and random ids, never a token or a name.
//! Messages a replica sent itself are not handed back to it.
//!
//! Pub/sub delivers at most once: a replica that was disconnected misses
//! what was said meanwhile. So events only hurry things up; waiting falls
//! back to polling, and [`FleetEvent::Rejoined`] tells the token store to
//! re-check what it holds.

use redis::{PushInfo, PushKind, Value};
use tokio::sync::broadcast;

use super::crypt::Fingerprint;
use super::link::Pushes;

/// Something another replica did (or, for `Rejoined`, this one's link).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// The token `id` under `key` failed upstream and was dropped fleet-wide:
    /// drop the local copy if it is that token.
    Invalidated { key: Fingerprint, id: u64 },
    /// A fresh token was stored under `key`.
    TokenStored { key: Fingerprint },
    /// The lease on `key` was released (with or without a new token).
    LeaseReleased { key: Fingerprint },
    /// The verdict of `credential` changed (parked, backoff, relogin time).
    VerdictChanged { credential: Fingerprint },
    /// An operator reset `credential`: un-park it locally. `id` names the
    /// reset (its marker in Redis); `None` from a replica that sends none.
    Reset { credential: Fingerprint, id: Option<u64> },
    /// This replica's connection came (back) up; events may have been missed.
    Rejoined,
}

impl FleetEvent {
    /// The message text, as `replica` publishes it.
    pub(super) fn encode(&self, replica: &str) -> String {
        match self {
            FleetEvent::Invalidated { key, id } => format!("{replica} invalidated {key} {id}"),
            FleetEvent::TokenStored { key } => format!("{replica} stored {key}"),
            FleetEvent::LeaseReleased { key } => format!("{replica} released {key}"),
            FleetEvent::VerdictChanged { credential } => format!("{replica} verdict {credential}"),
            FleetEvent::Reset { credential, id: None } => format!("{replica} reset {credential}"),
            FleetEvent::Reset {
                credential,
                id: Some(id),
            } => format!("{replica} reset {credential} {id}"),
            FleetEvent::Rejoined => format!("{replica} rejoined"),
        }
    }

    /// The sender and the event of a message; `None` for anything else.
    pub(super) fn decode(text: &str) -> Option<(&str, FleetEvent)> {
        let mut words = text.split(' ');
        let (from, kind) = (words.next()?, words.next()?);
        let fp = words.next().and_then(Fingerprint::parse);
        let event = match (kind, fp) {
            ("invalidated", Some(key)) => FleetEvent::Invalidated {
                key,
                id: words.next()?.parse().ok()?,
            },
            ("stored", Some(key)) => FleetEvent::TokenStored { key },
            ("released", Some(key)) => FleetEvent::LeaseReleased { key },
            ("verdict", Some(credential)) => FleetEvent::VerdictChanged { credential },
            ("reset", Some(credential)) => FleetEvent::Reset {
                credential,
                id: words.next().and_then(|w| w.parse().ok()),
            },
            _ => return None,
        };
        Some((from, event))
    }
}

/// Hands the channel's messages to every local listener.
pub(super) struct Hub {
    pub channel: String,
    /// This replica's id: its own messages are skipped.
    pub replica: String,
    pub tx: broadcast::Sender<FleetEvent>,
}

impl Pushes for Hub {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn message(&self, push: PushInfo) {
        if push.kind != PushKind::Message {
            return;
        }
        let [Value::BulkString(channel), Value::BulkString(payload)] = &push.data[..] else {
            return;
        };
        if channel.as_slice() != self.channel.as_bytes() {
            return;
        }
        let Ok(text) = std::str::from_utf8(payload) else { return };
        match FleetEvent::decode(text) {
            Some((from, event)) if from != self.replica => {
                // No listener is not an error.
                let _ = self.tx.send(event);
            }
            Some(_) => {}
            None => tracing::debug!(message = %text, "fleet cache: ignored an unknown event"),
        }
    }

    fn connected(&self) {
        let _ = self.tx.send(FleetEvent::Rejoined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_junk_is_ignored() {
        let key = Fingerprint::parse(&"ab".repeat(32)).expect("fp");
        for e in [
            FleetEvent::Invalidated {
                key: key.clone(),
                id: u64::MAX,
            },
            FleetEvent::TokenStored { key: key.clone() },
            FleetEvent::LeaseReleased { key: key.clone() },
            FleetEvent::VerdictChanged {
                credential: key.clone(),
            },
            FleetEvent::Reset {
                credential: key.clone(),
                id: Some(7),
            },
            FleetEvent::Reset {
                credential: key,
                id: None,
            },
        ] {
            let text = e.encode("r1");
            assert_eq!(FleetEvent::decode(&text), Some(("r1", e)), "{text}");
        }
        for junk in [
            "",
            "r1",
            "r1 stored",
            "r1 stored nothex",
            "r1 invalidated abab",
            "r1 rejoined",
            "r1 bogus x",
        ] {
            assert_eq!(FleetEvent::decode(junk), None, "{junk}");
        }
    }
}
