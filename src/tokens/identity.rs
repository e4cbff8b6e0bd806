//! Who a token and a login belong to: the API user (the integration token
//! every principal carries) or one user principal (its user token), and
//! [`PerIdentity`], the table that holds one value for each.

use std::ops::{Index, IndexMut};

use crate::config::{Config, PrincipalId, PrincipalKind};

/// A login identity: what a token is cached under, and whose logins pass
/// one lockout gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The API user: the integration token, shared by every principal.
    ApiUser,
    /// A console or web user principal: its user token.
    User(PrincipalId),
}

impl Identity {
    /// The identity principal `p` logs in as: its own for a user
    /// principal, the API user's for one that carries only the
    /// integration token (anonymous, bearer).
    pub fn of(config: &Config, p: PrincipalId) -> Self {
        match config.principals[p].kind {
            PrincipalKind::User { .. } => Identity::User(p),
            PrincipalKind::Anonymous | PrincipalKind::Bearer => Identity::ApiUser,
        }
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
}
