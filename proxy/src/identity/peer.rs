//! Who is on the other end of an inbound connection.
//!
//! [`Peer::Authenticated`] holds a [`Verified`] identity, and a `Verified`
//! can only be made by the TLS layer after the client's certificate chain
//! was checked against the trust anchors: authorization cannot be handed an
//! identity that was merely claimed (e.g. read from a header).

use super::SpiffeId;

/// An identity proven by a verified TLS client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified(SpiffeId);

impl Verified {
    /// Only the TLS acceptor calls this, after the handshake verified the
    /// chain (see `transport::tls::accept`).
    pub(crate) fn from_tls_handshake(id: SpiffeId) -> Self {
        Self(id)
    }

    pub fn id(&self) -> &SpiffeId {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Authenticated(Verified),
    /// Plaintext: a client outside the mesh (or a meshed one without mTLS).
    Unauthenticated,
}

impl Peer {
    pub fn identity(&self) -> Option<&SpiffeId> {
        match self {
            Peer::Authenticated(v) => Some(v.id()),
            Peer::Unauthenticated => None,
        }
    }
}
