//! A lease held by one program: granted (or resumed after a reconnect), kept alive one round
//! trip at a time, revoked on shutdown, and the options that bind a put to it.
//!
//! It never decides what an expired lease means (an OSD stops serving, a monitor stops being
//! master): [`Lease::keep_alive`] only says whether the lease still lives.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::time::Instant;

use crate::call::{bounded, CallError};

/// A live lease and its keepalive stream.
pub struct Lease {
    id: i64,
    expires: Instant,
    timeout: Duration,
    keeper: LeaseKeeper,
    replies: LeaseKeepAliveStream,
}

impl Lease {
    /// Grants a lease of `ttl` (at least one second: etcd counts whole seconds). Every call
    /// of the lease is bounded by `timeout`.
    pub async fn grant(
        client: &mut Client,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Lease, CallError> {
        let sent = Instant::now();
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let granted = bounded(timeout, "lease grant", client.lease_grant(ttl_secs, None)).await?;
        let (keeper, replies) = bounded(
            timeout,
            "lease keepalive",
            client.lease_keep_alive(granted.id()),
        )
        .await?;
        Ok(Lease {
            id: granted.id(),
            expires: expiry(sent, granted.ttl()),
            timeout,
            keeper,
            replies,
        })
    }

    /// Takes up lease `id` again on a new connection, if etcd still has it: a short etcd
    /// outage then changes nothing for the keys bound to it. `None` if it is gone.
    pub async fn resume(
        client: &mut Client,
        id: i64,
        timeout: Duration,
    ) -> Result<Option<Lease>, CallError> {
        // The client's first keepalive round trip reports a lease etcd no longer has as
        // this error, not as a TTL of 0.
        let opened = bounded(timeout, "lease keepalive", client.lease_keep_alive(id)).await;
        let (keeper, replies) = match opened {
            Err(CallError::Failed { source, .. }) if matches!(&*source, etcd_client::Error::LeaseKeepAliveError(m) if m == "lease not found") => {
                return Ok(None)
            }
            other => other?,
        };
        let mut lease = Lease {
            id,
            expires: Instant::now(),
            timeout,
            keeper,
            replies,
        };
        Ok(lease.keep_alive().await?.then_some(lease))
    }

    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// When etcd drops the lease if no keepalive gets through: the time the last successful
    /// keepalive was *sent* plus the TTL etcd answered, so never later than etcd's own view.
    pub fn expires(&self) -> Instant {
        self.expires
    }

    /// One keepalive round trip: true if the lease lives on (and [`Self::expires`] moved),
    /// false if etcd says it is gone.
    pub async fn keep_alive(&mut self) -> Result<bool, CallError> {
        let sent = Instant::now();
        bounded(self.timeout, "lease keepalive", self.keeper.keep_alive()).await?;
        let reply = bounded(self.timeout, "lease keepalive", self.replies.message())
            .await?
            .ok_or(CallError::Ended {
                call: "lease keepalive",
                reason: "stream ended".to_string(),
            })?;
        if reply.ttl() <= 0 {
            return Ok(false);
        }
        self.expires = expiry(sent, reply.ttl());
        Ok(true)
    }

    /// Revokes the lease, deleting every key bound to it at once (others see this program
    /// gone without waiting for the TTL).
    pub async fn revoke(&self, client: &mut Client) -> Result<(), CallError> {
        bounded(self.timeout, "lease revoke", client.lease_revoke(self.id)).await?;
        Ok(())
    }

    /// Options for a put bound to this lease.
    pub fn put_options(&self) -> PutOptions {
        PutOptions::new().with_lease(self.id)
    }
}

fn expiry(sent: Instant, ttl_secs: i64) -> Instant {
    sent + Duration::from_secs(ttl_secs.max(0) as u64)
}
