//! The pure core: devices and names, keys and CSRs, certificates, Greengrass config
//! rendering, bundle layout and manifest rows, bundles sealed for stations. No network, no
//! filesystem, no clock.

pub mod audit;
pub mod bundle;
pub mod certificate;
pub mod devices;
pub mod floor;
pub mod greengrass;
pub mod iot_policy;
pub mod keys;
pub mod ledger;
pub mod manifest;
pub mod names;
pub mod preflight;
pub mod sealed;
pub mod setup;
pub mod signing;
pub mod station;
pub mod verify;
