//! The floor report as one self-contained HTML page: inline CSS and inline SVG charts, no
//! script, no font, no network. Every text that comes from a batch directory (serials, thing
//! names, stations: files on a shared drive) is escaped. Numbers carry `data-metric`
//! attributes so a browser test, or a script, can read them from the DOM.

use std::fmt::Write;

use time::OffsetDateTime;

use super::{BatchReport, Bucket, Funnel};

/// Overdue boards listed per batch; the rest are counted.
const OVERDUE_ROWS: usize = 1000;
/// A station whose spoil rate is at least this is marked.
const HIGH_SPOIL_RATE: f64 = 0.05;

/// The page's header: when it was made and the overdue deadline, as the user gave it.
pub struct Page<'a> {
    pub generated: OffsetDateTime,
    pub provision_within: &'a str,
}

/// Text safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn rfc3339(t: OffsetDateTime) -> String {
    crate::core::floor_records::rfc3339(t)
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.high{color:#b00;font-weight:bold}\
.unknown{color:#888;font-style:italic}svg text{font:11px system-ui,sans-serif}\
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}";

/// The whole page.
pub fn render(page: &Page, batches: &[BatchReport]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>claimfab floor report</title><style>{STYLE}</style></head><body>\
         <h1>claimfab floor report</h1><p>Generated {} UTC; a board is overdue when flashed \
         over {} ago and not provisioned.</p>",
        escape(&rfc3339(page.generated)),
        escape(page.provision_within)
    );
    for batch in batches {
        section(&mut out, batch);
    }
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, batch: &BatchReport) {
    let _ = write!(
        out,
        "<section class=\"batch\" data-batch=\"{0}\"><h2>Batch {0}: {1} devices</h2>",
        escape(&batch.batch),
        batch.devices
    );
    funnel(out, &batch.funnel, batch.devices);
    chart(out, &batch.buckets, batch.daily);
    if batch.undrawn > 0 {
        let _ = write!(
            out,
            "<p class=\"high\" data-metric=\"undrawn\">{} flash(es) or provisioning(s) dated outside the batch's life are counted but not drawn: check the stations' clocks.</p>",
            batch.undrawn
        );
    }
    stations(out, batch);
    overdue(out, batch);
    out.push_str("</section>");
}

/// The funnel: a table of counts beside a bar per stage.
fn funnel(out: &mut String, f: &Funnel, devices: usize) {
    let stages: [(&str, &str, Option<usize>); 6] = [
        ("made", "made (claim and bundle)", Some(f.made)),
        ("handed_out", "handed out", Some(f.handed_out)),
        ("flashed", "flashed", Some(f.flashed)),
        ("provisioned", "provisioned", f.provisioned),
        ("spoiled", "spoiled", Some(f.spoiled)),
        ("retired", "retired", Some(f.retired)),
    ];
    let scale = devices.max(1) as f64;
    out.push_str("<h3>Status</h3><table class=\"funnel\">");
    for (key, label, count) in stages {
        let (value, bar) = match count {
            Some(n) => (
                n.to_string(),
                format!(
                    "<svg width=\"300\" height=\"14\" role=\"img\" aria-label=\"{label} {n}\">\
                     <rect width=\"{:.1}\" height=\"14\" fill=\"#3b76c4\"/></svg>",
                    300.0 * n as f64 / scale
                ),
            ),
            None => ("unknown".into(), String::new()),
        };
        let class = if count.is_some() { "n" } else { "n unknown" };
        let _ = write!(
            out,
            "<tr><th>{label}</th><td class=\"{class}\" data-metric=\"{key}\">{value}</td><td>{bar}</td></tr>"
        );
    }
    out.push_str("</table>");
}

/// Flashed and provisioned per hour (or day) as paired bars.
fn chart(out: &mut String, buckets: &[Bucket], daily: bool) {
    let unit = if daily { "day" } else { "hour" };
    let _ = write!(out, "<h3>Flashed and provisioned per {unit}</h3>");
    if buckets.is_empty() {
        out.push_str("<p class=\"unknown\">No board flashed yet.</p>");
        return;
    }
    let (slot, height, top) = (14.0, 160.0, 10.0);
    let width = (buckets.len() as f64 * slot + 60.0).max(320.0);
    let max = (buckets.iter())
        .map(|b| b.flashed.max(b.provisioned.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let _ = write!(
        out,
        "<div class=\"legend\"><span style=\"background:#3b76c4\"></span>flashed\
         <span style=\"background:#2e9e5b\"></span>provisioned</div>\
         <svg class=\"chart\" width=\"{width:.0}\" height=\"{:.0}\" role=\"img\" \
         aria-label=\"flashed and provisioned per {unit}\">\
         <text x=\"2\" y=\"{:.0}\">{max}</text><line x1=\"40\" y1=\"{top}\" x2=\"40\" y2=\"{:.0}\" stroke=\"#999\"/>",
        height + top + 30.0,
        top + 8.0,
        height + top,
    );
    let label_every = (buckets.len() / 12).max(1);
    for (i, bucket) in buckets.iter().enumerate() {
        let x = 44.0 + i as f64 * slot;
        let when = bucket_label(bucket.start, daily);
        bar(
            out,
            x,
            bucket.flashed,
            max,
            (height, top),
            "#3b76c4",
            &when,
            "flashed",
        );
        if let Some(provisioned) = bucket.provisioned {
            bar(
                out,
                x + 6.0,
                provisioned,
                max,
                (height, top),
                "#2e9e5b",
                &when,
                "provisioned",
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.0}\" y=\"{:.0}\">{}</text>",
                height + top + 24.0,
                escape(&when)
            );
        }
    }
    out.push_str("</svg>");
}

#[allow(clippy::too_many_arguments)]
fn bar(
    out: &mut String,
    x: f64,
    count: usize,
    max: f64,
    (height, top): (f64, f64),
    color: &str,
    when: &str,
    series: &str,
) {
    let h = height * count as f64 / max;
    let _ = write!(
        out,
        "<rect class=\"{series}\" data-count=\"{count}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"5\" height=\"{h:.1}\" fill=\"{color}\">\
         <title>{} {series}: {count}</title></rect>",
        top + height - h,
        escape(when)
    );
}

fn bucket_label(start: OffsetDateTime, daily: bool) -> String {
    let (date, hour) = (start.date(), start.hour());
    if daily {
        format!("{date}")
    } else {
        format!("{} {hour:02}:00", &date.to_string()[5..])
    }
}

/// Per-station counts; a spoil rate of 5% or more is marked.
fn stations(out: &mut String, batch: &BatchReport) {
    out.push_str("<h3>Stations</h3>");
    if batch.stations.is_empty() {
        out.push_str("<p class=\"unknown\">No station has taken a bundle.</p>");
        return;
    }
    out.push_str(
        "<table class=\"stations\"><tr><th>station</th><th>handed out</th><th>flashed</th>\
         <th>spoiled</th><th>spoil rate</th></tr>",
    );
    for s in &batch.stations {
        let high = if s.spoil_rate >= HIGH_SPOIL_RATE {
            " high"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr data-station=\"{0}\"><td>{0}</td><td class=\"n\" data-metric=\"handed_out\">{1}</td>\
             <td class=\"n\" data-metric=\"flashed\">{2}</td><td class=\"n\" data-metric=\"spoiled\">{3}</td>\
             <td class=\"n{high}\" data-metric=\"spoil_rate\">{4:.1}%</td></tr>",
            escape(&s.station),
            s.handed_out,
            s.flashed,
            s.spoiled,
            s.spoil_rate * 100.0
        );
    }
    out.push_str("</table>");
}

/// The boards flashed too long ago and not provisioned.
fn overdue(out: &mut String, batch: &BatchReport) {
    out.push_str("<h3>Flashed and not provisioned</h3>");
    let Some(overdue) = &batch.overdue else {
        out.push_str(
            "<p class=\"unknown\" data-metric=\"overdue\" data-unknown=\"true\">Provisioning \
             unknown: the report was made from the batch directories alone.</p>",
        );
        return;
    };
    let _ = write!(
        out,
        "<p><span data-metric=\"overdue\">{}</span> board(s) overdue.</p>",
        overdue.len()
    );
    if overdue.is_empty() {
        return;
    }
    out.push_str(
        "<table class=\"overdue\"><tr><th>serial</th><th>thing</th><th>station</th><th>flashed at</th></tr>",
    );
    for o in overdue.iter().take(OVERDUE_ROWS) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&o.serial),
            escape(&o.thing_name),
            escape(&o.station),
            escape(&rfc3339(o.flashed_at))
        );
    }
    out.push_str("</table>");
    if overdue.len() > OVERDUE_ROWS {
        let _ = write!(out, "<p>and {} more.</p>", overdue.len() - OVERDUE_ROWS);
    }
}
