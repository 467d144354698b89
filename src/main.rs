//! The binary: parse arguments, run the command, map the result to an exit code
//! (0 all done, 1 some devices failed or a run-time fault, 2 bad input or setup, 3 nothing
//! left to take, 4 a bundle handed back, 130 interrupted). Errors print once, on one line. A command that holds a
//! private key runs with core dumps off (harden.rs).

mod harden;
mod wipe_alloc;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use claimfab::cli::{Cli, Command, FlashedArgs, TakeArgs};
use claimfab::commands::{
    audit, batch, close, flashed, keys, manual, package, prepare, register, report,
    retire_provisioned, revoke, rotate, setup, take, verify,
};
use claimfab::error::UserError;
use claimfab::floor::handout::TakeResult;
use claimfab::pipeline::execution::BatchResult;

/// Wipes what it frees while `claimfab::core::wiping` says so (every free, in the commands
/// that hold keys).
#[global_allocator]
static ALLOCATOR: wipe_alloc::WipingAllocator<std::alloc::System> =
    wipe_alloc::WipingAllocator(std::alloc::System);

fn success_or_1(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    claimfab::output::set_format(cli.output, matches.subcommand_name().unwrap_or_default());
    if holds_keys(&cli.command) {
        // Keys pass through third-party buffers freed unwiped (age's chunk buffer, zip's).
        claimfab::core::wiping::wipe_every_free();
        if let Err(e) = harden::no_core_dumps() {
            eprintln!("claimfab: cannot turn core dumps off ({e}), and this command holds private keys; run it where setrlimit and prctl(PR_SET_DUMPABLE) are allowed");
            return ExitCode::from(1);
        }
    }
    // The station commands do no AWS call: no runtime to start, so a take stays quick.
    let result = match cli.command {
        Command::Take(args) => run_take(args),
        Command::Flashed(args) => run_flashed(args),
        // Offline by design: no runtime, no AWS client.
        Command::Prepare(args) => prepare::run(args).map(|()| ExitCode::SUCCESS),
        Command::Package(args) => package::run(args).map(success_or_1),
        Command::Completions(args) => manual::completions(&args).map(|()| ExitCode::SUCCESS),
        Command::Man(args) => manual::man(&args).map(|()| ExitCode::SUCCESS),
        command => run_with_runtime(command),
    };
    exit_code(result)
}

/// Whether a command may hold a private key in memory: claim keys (made, or read from a
/// plain bundle or a decrypted one), a station's identity, a signing key. `verify` reads
/// the keys of plain bundles even without --identity; `flashed` reads a plain bundle.
fn holds_keys(command: &Command) -> bool {
    match command {
        Command::Batch(_)
        | Command::Prepare(_)
        | Command::Package(_)
        | Command::Rotate(_)
        | Command::Verify(_)
        | Command::StationKey(_)
        | Command::BatchKey(_)
        | Command::Take(_)
        | Command::Flashed(_) => true,
        Command::Setup(_)
        | Command::Register(_)
        | Command::Audit(_)
        | Command::Revoke(_)
        | Command::Close(_)
        | Command::RetireProvisioned(_)
        | Command::Report(_)
        | Command::Completions(_)
        | Command::Man(_) => false,
    }
}

fn batch_exit(result: BatchResult) -> ExitCode {
    match result {
        BatchResult::Done => ExitCode::SUCCESS,
        BatchResult::SomeFailed => ExitCode::from(1),
        BatchResult::Interrupted => ExitCode::from(130),
    }
}

fn run_take(args: TakeArgs) -> anyhow::Result<ExitCode> {
    take::run(args).map(|result| match result {
        TakeResult::HandedOut => ExitCode::SUCCESS,
        TakeResult::NothingLeft => ExitCode::from(3),
        TakeResult::HandedBack => ExitCode::from(4),
    })
}

fn run_flashed(args: FlashedArgs) -> anyhow::Result<ExitCode> {
    flashed::run(args).map(|()| ExitCode::SUCCESS)
}

fn run_with_runtime(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Packaging and journal fsyncs block; a few threads suffice, and each extra thread
        // gets its own malloc arena, which made a large batch's memory grow with its size.
        .max_blocking_threads(4)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        match command {
            Command::Batch(args) => batch::run(args).await.map(batch_exit),
            Command::Register(args) => register::run(args).await.map(batch_exit),
            Command::Setup(args) => setup::run(args).await.map(success_or_1),
            Command::Verify(args) => verify::run(args).map(success_or_1),
            Command::Audit(args) => audit::run(args).await.map(success_or_1),
            Command::Revoke(args) => revoke::run(args).await.map(success_or_1),
            Command::Rotate(args) => rotate::run(args).await.map(success_or_1),
            Command::Close(args) => close::run(args).await.map(success_or_1),
            Command::RetireProvisioned(args) => {
                retire_provisioned::run(args).await.map(success_or_1)
            }
            Command::Report(args) => report::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::StationKey(args) => keys::station_key(&args).map(|()| ExitCode::SUCCESS),
            Command::BatchKey(args) => keys::batch_key(&args).map(|()| ExitCode::SUCCESS),
            Command::Take(args) => run_take(args),
            Command::Flashed(args) => run_flashed(args),
            Command::Prepare(args) => prepare::run(args).map(|()| ExitCode::SUCCESS),
            Command::Package(args) => package::run(args).map(success_or_1),
            Command::Completions(args) => manual::completions(&args).map(|()| ExitCode::SUCCESS),
            Command::Man(args) => manual::man(&args).map(|()| ExitCode::SUCCESS),
        }
    })
}

fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("claimfab: {error:#}");
            if error.downcast_ref::<UserError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
