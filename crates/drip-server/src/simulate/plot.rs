//! The plot of a run: fill level against time with the capacity line,
//! admitted and denied packets marked, and in shape mode the queue length on a
//! second axis. PNG or SVG by the file's extension; text is drawn with the
//! DejaVu Sans font embedded in the binary (no system font libraries).

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::model::Run;

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1100, 560);

/// What is drawn besides the run.
pub struct Labels {
    /// Bucket capacity, bytes (the red line).
    pub capacity: u64,
    /// The title: mode, capacity, rate, seed.
    pub title: String,
    /// Shape mode: draw the queue length too.
    pub shape: bool,
}

/// Writes the plot to `path`: `.png` or `.svg`.
pub fn write(path: &Path, run: &Run, labels: &Labels) -> Result<()> {
    register_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw(&root, run, labels)?;
            root.present()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Some("svg") => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw(&root, run, labels)?;
            root.present()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        _ => bail!("--plot: {} must end in .png or .svg", path.display()),
    }
    Ok(())
}

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| anyhow::anyhow!("the embedded font could not be read"));
    });
    result
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &Run, labels: &Labels) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let secs = |t: u64| t as f64 / 1e9;
    let end = run.level.last().map_or(1.0, |&(t, _)| secs(t)).max(1e-3);
    let top = labels.capacity as f64 * 1.1;
    let max_queue = run.queue.iter().map(|q| q.1).max().unwrap_or(0).max(1) as f64 * 1.1;

    let mut chart = ChartBuilder::on(root)
        .caption(&labels.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(if labels.shape { 60 } else { 0 })
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(err)?
        .set_secondary_coord(0f64..end, 0f64..max_queue);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("fill level (bytes)")
        .label_style((FAMILY, 14))
        .draw()
        .map_err(err)?;
    if labels.shape {
        chart
            .configure_secondary_axes()
            .y_desc("queue length (packets)")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
    }

    let cap = labels.capacity as f64;
    chart
        .draw_series(LineSeries::new(
            [(0.0, cap), (end, cap)],
            RED.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("capacity ({} bytes)", labels.capacity))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            run.level.iter().map(|&(t, l)| (secs(t), l)),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("fill level")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));

    let green = RGBColor(0, 150, 0);
    chart
        .draw_series(
            run.packets
                .iter()
                .filter(|p| p.allowed)
                .map(|p| Circle::new((secs(p.at), p.level_after), 4, green.filled())),
        )
        .map_err(err)?
        .label("admitted packet")
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, green.filled()));
    chart
        .draw_series(
            run.packets
                .iter()
                .filter(|p| !p.allowed)
                .map(|p| Cross::new((secs(p.at), p.level_after), 5, RED.stroke_width(2))),
        )
        .map_err(err)?
        .label("denied packet")
        .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));

    if labels.shape {
        // A step line: the queue holds its length until the next change.
        let mut steps = Vec::with_capacity(run.queue.len() * 2);
        let mut last = 0u64;
        for &(t, q) in &run.queue {
            steps.push((secs(t), last as f64));
            steps.push((secs(t), q as f64));
            last = q;
        }
        let orange = RGBColor(230, 120, 0);
        chart
            .draw_secondary_series(LineSeries::new(steps, orange.stroke_width(2)))
            .map_err(err)?
            .label("queue length (packets, right axis)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .draw()
        .map_err(err)?;
    Ok(())
}
