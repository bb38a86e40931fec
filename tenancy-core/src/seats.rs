//! [`Seats`]: how many seats a tenant may fill, asked by the
//! [`crate::Directory`] before it sends an invitation, and told when its
//! members change (so a subscription's quantity can follow).
//!
//! tenancy-core knows members, not plans: the host (tenancy-http's
//! builder, from a module such as billing) wires a limit over whatever
//! decides it. A seat is an active membership or a pending, unexpired
//! invitation: counting invitations keeps a tenant from inviting past its
//! limit and filling the seats later.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::id::TenantId;
use crate::invitation::InvitationStatus;
use crate::membership::MembershipStatus;
use crate::page::{PageRequest, PageSize};
use crate::store::{MembershipStore, Transaction};

/// The hard seat limit of a tenant, and what follows its member count.
#[async_trait]
pub trait Seats: Send + Sync {
    /// The most seats `tenant_id` may fill, or `None` for no limit. Called
    /// before the directory opens its transaction, so it may read other
    /// stores freely.
    async fn seat_limit(&self, tenant_id: TenantId) -> Result<Option<u64>, StoreError>;

    /// The tenant's active members may have changed (an acceptance, a
    /// removal, a suspension or reactivation), called once the change is
    /// committed. A hint: read the count when acting on it. Must not block.
    fn members_changed(&self, tenant_id: TenantId) {
        let _ = tenant_id;
    }
}

/// Active members of `tenant_id` in `store` (a backend, or a transaction
/// for a count under the tenant's lock), counted up to `stop_at`: past it
/// the exact number does not matter.
pub async fn active_members<S: MembershipStore + ?Sized>(
    store: &S,
    tenant_id: TenantId,
    stop_at: u64,
) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut page = PageRequest::first(PageSize::MAX);
    loop {
        let members = store.list_members(tenant_id, &page).await?;
        count += members
            .items
            .iter()
            .filter(|m| m.membership.status == MembershipStatus::Active)
            .count() as u64;
        match members.next {
            Some(cursor) if count < stop_at => page = page.after(cursor),
            _ => return Ok(count),
        }
    }
}

/// Seats `tenant_id` fills in `tx` (active members and pending invitations
/// unexpired at `now`), counted up to `stop_at`.
pub(crate) async fn seats_used(
    tx: &dyn Transaction,
    tenant_id: TenantId,
    now: time::OffsetDateTime,
    stop_at: u64,
) -> Result<u64, StoreError> {
    let mut used = active_members(tx, tenant_id, stop_at).await?;
    let mut page = PageRequest::first(PageSize::MAX);
    while used < stop_at {
        let invitations = tx.list_invitations(tenant_id, &page).await?;
        used += invitations
            .items
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending && !i.is_expired_at(now))
            .count() as u64;
        match invitations.next {
            Some(cursor) => page = page.after(cursor),
            None => break,
        }
    }
    Ok(used)
}
