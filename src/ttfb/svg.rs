//! The picture of a run (plotters, SVG backend): latency percentile curves
//! per target × PoP on a "nines" axis, and a stacked bar per group of the
//! mean time in each phase.

use super::sample::Phases;
use super::summary::Report;
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 1000;
const CURVES_HEIGHT: u32 = 420;
const BAR_HEIGHT: u32 = 40;
/// queue, dns, connect, tls, ttfb, transfer.
const PHASE_COLORS: [RGBColor; 6] = [
    RGBColor(150, 150, 150),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(214, 182, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

/// Where a percentile sits on the x axis: 90 → 1, 99 → 2, 99.9 → 3; the
/// maximum at 5.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        5.0
    } else {
        (-(1.0 - p / 100.0).log10()).min(4.5)
    }
}

fn nines_label(x: f64) -> String {
    match x.round() as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        3 => "99.9%".into(),
        4 => "99.99%".into(),
        _ => "max".into(),
    }
}

/// The SVG document.
pub fn render(r: &Report) -> Result<String, String> {
    let mut out = String::new();
    let height = CURVES_HEIGHT + (120 + BAR_HEIGHT * r.groups.len() as u32).max(300);
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(CURVES_HEIGHT);
        curves(r, &top).map_err(|e| e.to_string())?;
        phases(r, &bottom).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `[1] ams1`: the target's index (as in the table) and the route.
fn series_name(r: &Report, target: usize, pop: &str) -> String {
    if r.targets.len() > 1 {
        format!("[{target}] {pop}")
    } else {
        pop.to_string()
    }
}

/// In the legend of the curves, with the target's URL as the key.
fn curve_name(r: &Report, target: usize, pop: &str) -> String {
    match r.targets.get(target) {
        Some(t) if r.targets.len() > 1 => format!("{}  {}", series_name(r, target, pop), t.name),
        _ => series_name(r, target, pop),
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

fn curves(r: &Report, area: &Area) -> Drawn {
    let floor = 0.001;
    let top = r
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p[1]))
        .fold(1.0f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency by percentile, per PoP (ms, log scale)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5.0, (floor..top).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .label_style(("sans-serif", 14))
        .y_desc("ms")
        .draw()?;
    for (i, c) in r.curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = c.points.iter().map(|p| (nines(p[0]), p[1].max(floor)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(curve_name(r, c.target, &c.pop))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn phases(r: &Report, area: &Area) -> Drawn {
    let n = r.groups.len().max(1);
    let longest = r
        .groups
        .iter()
        .map(|g| g.latency.mean_ms)
        .fold(0.001f64, f64::max)
        * 1.1;
    let labels: Vec<String> = r
        .groups
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                series_name(r, g.target, &g.pop),
                g.cache,
                g.status
            )
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Mean time per phase, per PoP and cache status (ms)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(230)
        .build_cartesian_2d(0f64..longest, (0..n.max(2) - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .label_style(("sans-serif", 14))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (p, name) in Phases::NAMES.iter().enumerate() {
        let color = PHASE_COLORS[p];
        let bars = r.groups.iter().enumerate().map(|(i, g)| {
            let before: f64 = Phases::NAMES[..p]
                .iter()
                .map(|n| g.phases[*n].mean_ms)
                .sum();
            let mut bar = Rectangle::new(
                [
                    (before, SegmentValue::Exact(i)),
                    (before + g.phases[*name].mean_ms, SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
