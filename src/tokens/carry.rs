//! What a reload keeps: from the old config and the new one, which
//! identities keep their login gate (lockout state), which keep their
//! token, and which start afresh. A pure function of the two configs;
//! [`TokenStore::succeed`](super::TokenStore::succeed) applies it.
//!
//! An identity keeps its gate (a parked login stays parked) while its own
//! credentials and the site are unchanged; it keeps its token only if the
//! API user's are unchanged too, since a user token is tied to the
//! integration token it was issued with.

use crate::config::{Config, PrincipalId, PrincipalKind};

use super::identity::Identity;

/// What moves from the old store to the new one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Carry {
    /// `(old, new)`: the new identity takes over the old one's gate.
    pub gates: Vec<(Identity, Identity)>,
    /// `(old, new)`: the new identity takes over the old one's token.
    pub tokens: Vec<(Identity, Identity)>,
    /// Names of the identities that start afresh (`api_user` for the API
    /// user), for the reload's log line.
    pub restarted: Vec<String>,
}

/// What a reload from `old` to `new` keeps.
pub fn carry(old: &Config, new: &Config) -> Carry {
    let same_site = same_site(old, new);
    let same_api_user = same_site && same_api_user(old, new);
    let mut carry = Carry::default();
    if same_api_user {
        carry.gates.push((Identity::ApiUser, Identity::ApiUser));
        carry.tokens.push((Identity::ApiUser, Identity::ApiUser));
    } else {
        carry.restarted.push("api_user".to_owned());
    }
    for (p, principal) in new.principals.iter().enumerate() {
        if !matches!(principal.kind, PrincipalKind::User { .. }) {
            continue;
        }
        match same_user(old, &principal.name, &principal.kind) {
            Some(q) if same_site => {
                carry.gates.push((Identity::User(q), Identity::User(p)));
                if same_api_user {
                    carry.tokens.push((Identity::User(q), Identity::User(p)));
                }
            }
            _ => carry.restarted.push(principal.name.clone()),
        }
    }
    carry
}

/// Logins go to the same site, so lockout state still applies.
fn same_site(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.upstream, &new.upstream);
    a.base_url == b.base_url && a.site_name == b.site_name && a.api_version == b.api_version
}

fn same_api_user(old: &Config, new: &Config) -> bool {
    old.api_user.login == new.api_user.login && old.api_user.password.same_value(&new.api_user.password)
}

/// The principal of `old` named `name` with the same user credentials as `kind`.
fn same_user(old: &Config, name: &str, kind: &PrincipalKind) -> Option<PrincipalId> {
    let PrincipalKind::User {
        external_type,
        user,
        password,
    } = kind
    else {
        return None;
    };
    old.principal_id(name).filter(|&q| {
        matches!(&old.principals[q].kind, PrincipalKind::User { external_type: t, user: u, password: pw }
            if t == external_type && u == user && pw.same_value(password))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ExternalType;
    use crate::secret::Secret;
    use Identity::{ApiUser, User};

    /// Principals: `public` (anonymous), `agent` (account), `web` (contact).
    fn config() -> Config {
        let text = r#"
            [upstream]
            base_url = "http://127.0.0.1:7002/"
            site_name = "ORACLE_KNOWLEDGE"
            [api_user]
            login = "apiuser"
            password = "apipass1"
            [[principals]]
            name = "public"
            kind = "anonymous"
            [[principals]]
            name = "agent"
            kind = "account"
            user = "okcsuser"
            password = "Password1"
            [[principals]]
            name = "web"
            kind = "contact"
            user = "webuser"
            password = "Password2"
            [[callers]]
            name = "helpdesk"
            key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            principal = "agent"
        "#;
        Config::parse(text, Path::new("k.toml")).expect("valid")
    }

    /// The `agent` principal's user credentials, to change one of them.
    fn agent(c: &mut Config) -> (&mut ExternalType, &mut String, &mut Secret) {
        match &mut c.principals[1].kind {
            PrincipalKind::User {
                external_type,
                user,
                password,
            } => (external_type, user, password),
            _ => unreachable!("agent is a user principal"),
        }
    }

    fn reloaded(change: impl FnOnce(&mut Config)) -> Carry {
        let mut new = config();
        change(&mut new);
        carry(&config(), &new)
    }

    fn pairs(ids: &[Identity]) -> Vec<(Identity, Identity)> {
        ids.iter().map(|&i| (i, i)).collect()
    }

    #[test]
    fn an_unchanged_config_keeps_everything() {
        let all = pairs(&[ApiUser, User(1), User(2)]);
        let expected = Carry {
            gates: all.clone(),
            tokens: all,
            restarted: vec![],
        };
        assert_eq!(reloaded(|_| {}), expected);
    }

    #[test]
    fn a_renamed_principal_restarts() {
        let c = reloaded(|c| c.principals[1].name = "agent2".into());
        assert_eq!(c.gates, pairs(&[ApiUser, User(2)]));
        assert_eq!(c.tokens, pairs(&[ApiUser, User(2)]));
        assert_eq!(c.restarted, ["agent2"]);
    }

    #[test]
    fn a_changed_user_credential_restarts_only_that_principal() {
        let changes: [fn(&mut Config); 3] = [
            |c| *agent(c).2 = Secret::literal("Password9"),
            |c| *agent(c).1 = "otheruser".into(),
            |c| *agent(c).0 = ExternalType::Contact,
        ];
        for change in changes {
            let c = reloaded(change);
            assert_eq!(c.gates, pairs(&[ApiUser, User(2)]));
            assert_eq!(c.tokens, pairs(&[ApiUser, User(2)]));
            assert_eq!(c.restarted, ["agent"]);
        }
    }

    #[test]
    fn a_changed_api_user_keeps_the_user_gates_but_no_token() {
        let changes: [fn(&mut Config); 2] = [
            |c| c.api_user.password = Secret::literal("apipass2"),
            |c| c.api_user.login = "apiuser2".into(),
        ];
        for change in changes {
            let c = reloaded(change);
            assert_eq!(c.gates, pairs(&[User(1), User(2)]));
            assert_eq!(c.tokens, Vec::new());
            assert_eq!(c.restarted, ["api_user"]);
        }
    }

    #[test]
    fn another_site_restarts_everyone() {
        let changes: [fn(&mut Config); 3] = [
            |c| c.upstream.site_name = "OTHER_SITE".into(),
            |c| c.upstream.api_version = "v2".into(),
            |c| c.upstream.base_url = "http://127.0.0.1:7003".into(),
        ];
        for change in changes {
            let c = reloaded(change);
            assert_eq!((c.gates, c.tokens), (vec![], vec![]));
            assert_eq!(c.restarted, ["api_user", "agent", "web"]);
        }
    }

    #[test]
    fn a_removed_principal_moves_the_others_to_their_new_places() {
        let c = reloaded(|c| {
            c.principals.remove(0);
        });
        let moved = vec![(ApiUser, ApiUser), (User(1), User(0)), (User(2), User(1))];
        assert_eq!(c.gates, moved);
        assert_eq!(c.tokens, moved);
        assert_eq!(c.restarted, Vec::<String>::new());
        let c = reloaded(|c| {
            c.principals.remove(1);
        });
        assert_eq!(c.gates, [(ApiUser, ApiUser), (User(2), User(1))]);
    }
}
