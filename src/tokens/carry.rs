//! What a reload keeps of the old store's tokens: a pure function of the
//! old config and the new one; [`TokenStore::succeed`](super::TokenStore::succeed)
//! applies it. (Lockout verdicts need no carrying: they are kept by
//! credential in a table every store of the process shares.)
//!
//! A user identity keeps its token while its credential (user kind, user,
//! password), the site and the API user are unchanged, whatever its
//! principal is now called: a user token is tied to the integration token
//! it was issued with.

use crate::config::{Config, PrincipalKind};

use super::identity::Identity;

/// What moves from the old store to the new one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Carry {
    /// `(old, new)`: the new identity takes over the old one's token.
    pub tokens: Vec<(Identity, Identity)>,
    /// Names of the identities that start afresh (`api_user` for the API
    /// user), for the reload's log line.
    pub restarted: Vec<String>,
}

/// What a reload from `old` to `new` keeps.
pub fn carry(old: &Config, new: &Config) -> Carry {
    let same_api_user = same_site(old, new) && same_api_user(old, new);
    let mut carry = Carry::default();
    if same_api_user {
        carry.tokens.push((Identity::ApiUser, Identity::ApiUser));
    } else {
        carry.restarted.push("api_user".to_owned());
    }
    for (p, principal) in new.principals.iter().enumerate() {
        let to = Identity::of(new, p);
        if to != Identity::User(p) {
            continue; // not a user, or shares the identity of an earlier principal
        }
        match same_user(old, &principal.kind) {
            Some(from) if same_api_user => carry.tokens.push((from, to)),
            _ => carry.restarted.push(principal.name.clone()),
        }
    }
    carry
}

/// Logins go to the same site, the same way.
fn same_site(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.upstream, &new.upstream);
    a.base_url == b.base_url && a.site_name == b.site_name && a.api_version == b.api_version
}

fn same_api_user(old: &Config, new: &Config) -> bool {
    old.api_user.login == new.api_user.login && old.api_user.password.same_value(&new.api_user.password)
}

/// The identity of `old` that logs in with the user credential of `kind`.
fn same_user(old: &Config, kind: &PrincipalKind) -> Option<Identity> {
    let PrincipalKind::User {
        external_type,
        user,
        password,
    } = kind
    else {
        return None;
    };
    let q = old.principals.iter().position(|q| {
        matches!(&q.kind, PrincipalKind::User { external_type: t, user: u, password: pw }
            if t == external_type && u == user && pw.same_value(password))
    })?;
    Some(Identity::of(old, q))
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
        let expected = Carry {
            tokens: pairs(&[ApiUser, User(1), User(2)]),
            restarted: vec![],
        };
        assert_eq!(reloaded(|_| {}), expected);
    }

    #[test]
    fn a_renamed_principal_keeps_its_token() {
        let c = reloaded(|c| c.principals[1].name = "agent2".into());
        assert_eq!(c.tokens, pairs(&[ApiUser, User(1), User(2)]));
        assert_eq!(c.restarted, Vec::<String>::new());
    }

    #[test]
    fn a_second_principal_for_one_user_shares_the_first_ones_token() {
        let c = reloaded(|c| {
            let mut twin = c.principals[1].clone();
            twin.name = "agent-twin".into();
            c.principals.push(twin);
        });
        assert_eq!(c.tokens, pairs(&[ApiUser, User(1), User(2)]), "no slot of its own");
        assert_eq!(c.restarted, Vec::<String>::new());
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
            assert_eq!(c.tokens, pairs(&[ApiUser, User(2)]));
            assert_eq!(c.restarted, ["agent"]);
        }
    }

    #[test]
    fn a_changed_api_user_keeps_no_token() {
        let changes: [fn(&mut Config); 2] = [
            |c| c.api_user.password = Secret::literal("apipass2"),
            |c| c.api_user.login = "apiuser2".into(),
        ];
        for change in changes {
            let c = reloaded(change);
            assert_eq!(c.tokens, Vec::new());
            assert_eq!(c.restarted, ["api_user", "agent", "web"]);
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
            assert_eq!(c.tokens, vec![]);
            assert_eq!(c.restarted, ["api_user", "agent", "web"]);
        }
    }

    #[test]
    fn a_removed_principal_moves_the_others_to_their_new_places() {
        let c = reloaded(|c| {
            c.principals.remove(0);
        });
        let moved = vec![(ApiUser, ApiUser), (User(1), User(0)), (User(2), User(1))];
        assert_eq!(c.tokens, moved);
        assert_eq!(c.restarted, Vec::<String>::new());
        let c = reloaded(|c| {
            c.principals.remove(1);
        });
        assert_eq!(c.tokens, [(ApiUser, ApiUser), (User(2), User(1))]);
    }
}
