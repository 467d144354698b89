//! Taking claim certificates out of service: the journaled, resumable revocation engine
//! (`revoke`: INACTIVE or REVOKED, policy detached, deleted), and which claims a finished
//! batch or a provisioned device no longer needs (`close`). Used by the `revoke`, `close`,
//! `retire-provisioned` and `rotate` commands.

pub mod close;
pub mod provisioned;
pub mod revoke;
