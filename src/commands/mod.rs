//! One module per subcommand, each thin: its arguments (`cli`) resolved into a plain typed
//! request, handed to the domain below (`pipeline`, `retirement`, `rotation`, `floor`,
//! `account_setup`, `batch_dir`, `trust`), and the result reported. No command imports
//! another; what two commands share lives below them.

pub mod audit;
pub mod batch;
pub mod close;
pub mod flashed;
pub mod keys;
pub mod manual;
pub mod package;
pub mod prepare;
pub mod register;
pub mod report;
pub mod retire_provisioned;
pub mod revoke;
pub mod rotate;
pub mod setup;
pub mod take;
pub mod verify;
