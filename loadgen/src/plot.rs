//! `--plot`: an SVG of latency by percentile, drawn like HdrHistogram's plots: the x axis is
//! 1/(1 - p) on a log scale, so 90%, 99%, 99.9% and 99.99% get equal room and the tail shows.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// The x axis ends at the 99.999th percentile (1/(1 - 0.99999)).
const MAX_X: f64 = 1e5;
/// Ticks at 50%, 90%, 99%, 99.9%, 99.99% and 99.999%.
const TICKS: [f64; 6] = [2.0, 10.0, 100.0, 1e3, 1e4, 1e5];

/// Writes one line per (name, histogram of microseconds) to an SVG file.
pub fn write_svg(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> anyhow::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|&(name, h)| (name, percentile_curve(h)))
        .collect();
    let top_ms = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, ms)| ms))
        .fold(0.0, f64::max);

    // The SVG backend writes text as <text> elements, so labels need no font files.
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        // Room for the last tick label, which is centred on the right edge.
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0..MAX_X).log_scale().with_key_points(TICKS.to_vec()),
            0.0..(top_ms * 1.05).max(0.001),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// (1/(1 - p), latency in ms) points, five per halving of the distance to 100%, as
/// HdrHistogram's percentile distribution output has them.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| {
            (
                x_of_quantile(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

/// 1/(1 - q), capped at the axis end (q = 1 would be infinite).
fn x_of_quantile(quantile: f64) -> f64 {
    let tail = 1.0 - quantile;
    if tail <= 1.0 / MAX_X {
        MAX_X
    } else {
        1.0 / tail
    }
}

/// "99.9%" for x = 1000: the percentile p with 1/(1 - p) = x, without trailing zeros.
fn percentile_label(x: f64) -> String {
    let percent = format!("{:.4}", 100.0 * (1.0 - 1.0 / x));
    let percent = percent.trim_end_matches('0').trim_end_matches('.');
    format!("{percent}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_percentiles() {
        let labels: Vec<String> = TICKS.iter().map(|&x| percentile_label(x)).collect();
        assert_eq!(labels, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn quantiles_map_to_a_capped_log_axis() {
        assert_eq!(x_of_quantile(0.0), 1.0);
        assert!((x_of_quantile(0.99) - 100.0).abs() < 1e-6);
        assert_eq!(x_of_quantile(1.0), MAX_X);
    }

    #[test]
    fn the_curve_rises_to_the_max() {
        let mut h = crate::shard::histogram();
        for us in 1..=10_000 {
            h.record(us).expect("record");
        }
        let curve = percentile_curve(&h);
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let &(x, ms) = curve.last().expect("points");
        assert_eq!(x, MAX_X);
        assert!((ms - 10.0).abs() < 0.01, "{ms}");
    }

    #[test]
    fn the_plot_is_an_svg_with_one_line_per_series() {
        let mut delivery = crate::shard::histogram();
        let mut ack = crate::shard::histogram();
        for us in 1..=5_000 {
            delivery.record(us * 2).expect("record");
            ack.record(us).expect("record");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.svg");
        write_svg(&path, "test", &[("delivery", &delivery), ("ack", &ack)]).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        // Two curves and their two legend samples (the axes' ticks are thinner polylines).
        let thick_lines = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(r#"stroke-width="2""#))
            .count();
        assert_eq!(thick_lines, 4, "{svg}");
        // The SVG backend writes each label's text on a line of its own.
        for text in ["delivery", "ack", "99.9%", "latency (ms)", "percentile"] {
            assert!(svg.lines().any(|l| l == text), "no {text} in the plot");
        }
    }
}
