//! The CSV form of a run: one row per packet, for people who plot elsewhere.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::model::Run;

/// The header row.
pub const HEADER: &str = "t_s,size_bytes,outcome,level_after_bytes,queue_after_packets";

/// Writes `run` to `path`: the header, then one row per packet.
pub fn write(path: &Path, run: &Run) -> Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("--csv: cannot create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{HEADER}")?;
    for p in &run.packets {
        writeln!(
            w,
            "{:.9},{},{},{:.3},{}",
            p.at as f64 / 1e9,
            p.size,
            if p.allowed { "allowed" } else { "denied" },
            p.level_after,
            p.queue_after
        )?;
    }
    w.flush()
        .with_context(|| format!("--csv: writing {}", path.display()))
}
