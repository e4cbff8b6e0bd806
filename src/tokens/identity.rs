//! Who a token and a login belong to: the API user (the integration token
//! every principal carries) or one user credential (its user token), and
//! [`PerIdentity`], the table that holds one value for each. Principals
//! that log in as the same user with the same password share one identity,
//! so one login and one token.

use std::ops::{Index, IndexMut};

use crate::config::{Config, PrincipalId, PrincipalKind};

/// A login identity: what a token is cached under, and whose logins pass
/// one lockout gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The API user: the integration token, shared by every principal.
    ApiUser,
    /// A console or web user: its user token. The principal named is the
    /// first one in the config with this credential.
    User(PrincipalId),
}

impl Identity {
    /// The identity principal `p` logs in as: for a user principal, that
    /// of the first principal with the same user kind, user and password
    /// (itself, usually); the API user's for one that carries only the
    /// integration token (anonymous, bearer).
    pub fn of(config: &Config, p: PrincipalId) -> Self {
        let PrincipalKind::User {
            external_type,
            user,
            password,
        } = &config.principals[p].kind
        else {
            return Identity::ApiUser;
        };
        let same = |q: &crate::config::Principal| {
            matches!(&q.kind, PrincipalKind::User { external_type: t, user: u, password: pw }
                if t == external_type && u == user && pw.same_value(password))
        };
        Identity::User(config.principals[..p].iter().position(same).unwrap_or(p))
    }

    /// Its slot in a [`PerIdentity`] table: the only place that maps
    /// identities to numbers.
    fn index(self) -> usize {
        match self {
            Identity::ApiUser => 0,
            Identity::User(p) => 1 + p,
        }
    }
}

/// One `T` for the API user and one for each principal of a config (a
/// principal that is no user has a slot it never uses).
#[derive(Debug)]
pub struct PerIdentity<T>(Box<[T]>);

impl<T> PerIdentity<T> {
    /// A table for `principals` principals, each slot made by `make`.
    pub fn new(principals: usize, mut make: impl FnMut(Identity) -> T) -> Self {
        let all = std::iter::once(Identity::ApiUser).chain((0..principals).map(Identity::User));
        Self(all.map(&mut make).collect())
    }

    /// Every slot, the API user's first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> Index<Identity> for PerIdentity<T> {
    type Output = T;

    fn index(&self, who: Identity) -> &T {
        &self.0[who.index()]
    }
}

impl<T> IndexMut<Identity> for PerIdentity<T> {
    fn index_mut(&mut self, who: Identity) -> &mut T {
        &mut self.0[who.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_identity_api_user_first() {
        let t = PerIdentity::new(2, |who| who);
        assert_eq!(
            t.iter().copied().collect::<Vec<_>>(),
            [Identity::ApiUser, Identity::User(0), Identity::User(1)]
        );
        assert_eq!(t[Identity::User(1)], Identity::User(1));
        assert_eq!(t[Identity::ApiUser], Identity::ApiUser);
    }

    #[test]
    fn principals_with_one_credential_share_an_identity() {
        use crate::config::sample::ConfigToml;
        let config = ConfigToml::new("http://127.0.0.1:9")
            .principal("public", "anonymous")
            .user_principal("agent", "account", "okcsuser", "Password1")
            .user_principal("agent2", "account", "okcsuser", "Password1")
            .user_principal("agent3", "account", "okcsuser", "Other")
            .user_principal("web", "contact", "okcsuser", "Password1")
            .caller("helpdesk", "k", "agent", &[])
            .parse()
            .expect("valid");
        let ids: Vec<_> = (0..5).map(|p| Identity::of(&config, p)).collect();
        use Identity::{ApiUser, User};
        assert_eq!(ids, [ApiUser, User(1), User(1), User(3), User(4)]);
    }
}
