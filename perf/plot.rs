//! `petrel-plot`: SVG plots of a `perf/compare.py` result (plotters).
//!
//! ```text
//! petrel-plot perf/results/latest.json perf/results
//! ```
//! Writes `ratios.svg` (petrel / nats-server per shape: msgs/s, CPU per
//! message, RSS), `rates.svg` (delivered msgs/s of both servers, log
//! scale), `rss.svg` (peak RSS per shape) and, with a request/reply shape,
//! `latency.svg` (percentiles).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const PETREL: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const NATS: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const CPU: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RSS: RGBColor = RGBColor(0x94, 0x67, 0xbd);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn median(rows: &Value, key: &str) -> Option<f64> {
    let mut v: Vec<f64> = rows.as_array()?.iter().filter_map(|r| r.get(key)?.as_f64()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

struct Row {
    shape: String,
    petrel: Value,
    nats: Value,
}

impl Row {
    fn both(&self, key: &str) -> Option<(f64, f64)> {
        Some((median(&self.petrel, key)?, median(&self.nats, key)?))
    }
}

/// Grouped bars: one group per label, one bar per series.
fn bars(
    path: &str,
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(&str, RGBColor, Vec<Option<f64>>)],
    log: bool,
    guide: Option<f64>,
) -> Res<()> {
    let width = (160 + 70 * labels.len() as u32).max(640);
    if labels.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let vals: Vec<f64> = series.iter().flat_map(|s| s.2.iter().flatten().copied()).collect();
    if labels.is_empty() || vals.iter().all(|v| *v <= 0.0) {
        return Ok(()); // nothing to draw
    }
    let max = vals.iter().copied().fold(guide.unwrap_or(0.0), f64::max) * 1.35;
    let min = vals.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let n = labels.len() as f64;
    let k = series.len() as f64;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(80);
    macro_rules! body {
        ($chart:expr, $conv:expr) => {{
            let chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .x_label_formatter(&|_| String::new())
                .y_label_formatter(&|y: &f64| human(*y))
                .y_desc(y_desc)
                .draw()?;
            for (si, (name, color, vs)) in series.iter().enumerate() {
                let c = *color;
                chart
                    .draw_series(vs.iter().enumerate().filter_map(|(i, v)| {
                        let v = (*v)?;
                        let x0 = i as f64 + 0.1 + 0.8 * si as f64 / k;
                        let x1 = x0 + 0.8 / k;
                        Some(Rectangle::new([(x0, $conv(0.0)), (x1, v)], c.filled()))
                    }))?
                    .label(*name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
            }
            if let Some(g) = guide {
                chart.draw_series(LineSeries::new([(0.0, g), (n, g)], BLACK.stroke_width(1)))?;
            }
            // Shape names under their groups.
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
            for (i, l) in labels.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64 + 0.5, $conv(0.0)));
                root.draw(&Text::new(l.clone(), (px, py + 8), style.clone()))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }};
    }
    if log {
        let lo = (min / 2.0).max(1e-3);
        let mut chart = b.build_cartesian_2d(0.0..n, (lo..max * 8.0).log_scale())?;
        body!(&mut chart, |_z: f64| lo);
    } else {
        let mut chart = b.build_cartesian_2d(0.0..n, 0.0..max.max(1e-9))?;
        body!(&mut chart, |z: f64| z);
    }
    root.present()?;
    Ok(())
}

/// `12M`, `350k`, `2.5`, `0.40`
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!("usage: petrel-plot RESULTS.json OUTDIR");
        std::process::exit(2);
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&args[0])?)?;
    let out = &args[1];
    std::fs::create_dir_all(out)?;
    let results = doc["results"].as_object().ok_or("no results")?;
    // serde_json maps are sorted by key: compare.py's run order is in `order`.
    let order: Vec<String> = match doc["order"].as_array() {
        Some(a) => a.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
        None => results.keys().cloned().collect(),
    };
    let rows: Vec<Row> = order
        .iter()
        .filter_map(|k| {
            let v = results.get(k)?;
            Some(Row {
                shape: k.clone(),
                petrel: v["petrel"].clone(),
                nats: v["nats-server"].clone(),
            })
        })
        .collect();
    let version = doc["meta"]["nats_version"].as_str().unwrap_or("nats-server");

    let ratio = |r: &Row, key: &str| r.both(key).filter(|(_, n)| *n > 0.0).map(|(p, n)| p / n);
    let labels: Vec<String> = rows.iter().map(|r| r.shape.clone()).collect();
    bars(
        &format!("{out}/ratios.svg"),
        &format!("petrel / {version} (msgs/s: higher is better; CPU, RSS: lower is better)"),
        "ratio",
        &labels,
        &[
            ("msgs/s", PETREL, rows.iter().map(|r| ratio(r, "rate")).collect()),
            (
                "CPU per message",
                CPU,
                rows.iter().map(|r| ratio(r, "cpu_per_msg_ns")).collect(),
            ),
            ("peak RSS", RSS, rows.iter().map(|r| ratio(r, "rss_kib")).collect()),
        ],
        false,
        Some(1.0),
    )?;
    let rated: Vec<&Row> = rows.iter().filter(|r| r.both("rate").is_some()).collect();
    bars(
        &format!("{out}/rates.svg"),
        "delivered messages per second (log scale)",
        "msgs/s",
        &rated.iter().map(|r| r.shape.clone()).collect::<Vec<_>>(),
        &[
            (
                "petrel",
                PETREL,
                rated.iter().map(|r| median(&r.petrel, "rate")).collect(),
            ),
            (version, NATS, rated.iter().map(|r| median(&r.nats, "rate")).collect()),
        ],
        true,
        None,
    )?;
    bars(
        &format!("{out}/rss.svg"),
        "peak server RSS per shape (MiB)",
        "MiB",
        &labels,
        &[
            (
                "petrel",
                PETREL,
                rows.iter()
                    .map(|r| median(&r.petrel, "rss_kib").map(|k| k / 1024.0))
                    .collect(),
            ),
            (
                version,
                NATS,
                rows.iter()
                    .map(|r| median(&r.nats, "rss_kib").map(|k| k / 1024.0))
                    .collect(),
            ),
        ],
        false,
        None,
    )?;
    if let Some(rr) = rows.iter().find(|r| r.shape == "reqrep") {
        let keys = [
            ("p50", "p50_us"),
            ("p90", "p90_us"),
            ("p99", "p99_us"),
            ("p99.9", "p999_us"),
            ("max", "max_us"),
        ];
        let present: Vec<_> = keys.iter().filter(|(_, k)| rr.both(k).is_some()).collect();
        bars(
            &format!("{out}/latency.svg"),
            "request/reply latency (us, one requester, one responder, 16 B)",
            "us",
            &present.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>(),
            &[
                (
                    "petrel",
                    PETREL,
                    present.iter().map(|(_, k)| median(&rr.petrel, k)).collect(),
                ),
                (
                    version,
                    NATS,
                    present.iter().map(|(_, k)| median(&rr.nats, k)).collect(),
                ),
            ],
            false,
            None,
        )?;
    }
    println!("plots written to {out}");
    Ok(())
}
