//! claimfab: bulk AWS IoT fleet-provisioning claim certificates for Greengrass factories.
//! `core` is pure; `aws`, `outdir`, `journal`, `progress` and `pipeline` are the shell around
//! it; `batch` and `cli` are the commands; `floor`, `station` and `deliver` are the flashing
//! stations' side (take, flashed).

#![forbid(unsafe_code)]

pub mod audit;
pub mod aws;
pub mod batch;
pub mod cli;
pub mod cloud;
pub mod core;
pub mod deliver;
pub mod error;
pub mod floor;
pub mod journal;
pub mod outdir;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod retire;
pub mod revoke;
pub mod rotate;
pub mod sealed;
pub mod settings;
pub mod setup;
pub mod signing;
pub mod station;
pub mod verify;
