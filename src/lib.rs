//! claimfab: bulk AWS IoT fleet-provisioning claim certificates for Greengrass factories.
//!
//! Layers, top to bottom:
//! - `cli` (argument syntax) and `commands` (one thin module per subcommand: arguments into
//!   a plain request, the domain below, a report); `settings` resolves what commands share,
//!   `batch_inputs` what `batch` and `prepare` make a new batch from.
//! - The domain and its services: `pipeline` (a batch run: prepare -> register -> package
//!   -> publish), `rotation`, `retirement` (revoke, close, retire-provisioned),
//!   `account_setup`, `floor` (the flashing stations' shared files: hand-out, delivery),
//!   `batch_dir` (the batch directory: spec, journal, atomic files), `trust` (key and
//!   signature files), `aws` (the only module that names the AWS SDK) behind the `cloud`
//!   traits, `progress` and `output`.
//! - `core`: pure (no network, no filesystem, no clock).

#![forbid(unsafe_code)]

pub mod account_setup;
pub mod air_gap;
pub mod aws;
pub mod batch_dir;
pub mod batch_inputs;
pub mod cli;
pub mod cloud;
pub mod commands;
pub mod core;
pub mod error;
pub mod floor;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod retirement;
pub mod rotation;
pub mod settings;
pub mod trust;
