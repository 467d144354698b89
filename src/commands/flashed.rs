//! The `flashed` command: what became of a bundle a station holds (flashed, or spoiled with
//! `--spoiled`), recorded once in the station's own log by `floor::handout`.

use anyhow::Result;

use crate::cli::FlashedArgs;
use crate::core::floor_records::FloorEvent;
use crate::floor::handout::{self, check_serial, FlashedRequest};
use crate::settings::station_id;

/// Runs `claimfab flashed`.
pub fn run(args: FlashedArgs) -> Result<()> {
    let (station_id, pinned_keys) = station_id(&args.station)?;
    check_serial("SERIAL", &args.serial)?;
    let event = if args.spoiled {
        FloorEvent::Spoiled
    } else {
        FloorEvent::Flashed
    };
    handout::flashed(FlashedRequest {
        dir: args.dir,
        station_id,
        pinned_keys,
        serial: args.serial,
        event,
    })
}
