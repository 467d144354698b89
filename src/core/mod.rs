//! The pure core: devices and names, keys and CSRs, certificates, Greengrass config
//! rendering, bundle layout and manifest rows, bundles sealed for stations. No network, no
//! filesystem, no clock.

pub mod account_documents;
pub mod bundle;
pub mod bundle_check;
pub mod carried;
pub mod certificate;
pub mod devices;
pub mod floor_records;
pub mod floor_report;
pub mod greengrass;
pub mod interned;
pub mod iot_policy;
pub mod key_store;
pub mod keys;
pub mod ledger;
pub mod manifest;
pub mod names;
pub mod preflight;
pub mod reconcile;
pub mod sealed;
pub mod signing;
pub mod station_config;
pub mod wiping;
