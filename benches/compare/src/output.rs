//! Results: the markdown table (best store per row in bold), the CSV and the
//! plot of the concurrent durable writers phase.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

pub enum Cell {
    Val(f64),
    Na(String),
}

impl Cell {
    pub fn ms(d: Duration) -> Cell {
        Cell::Val(d.as_secs_f64() * 1e3)
    }
}

/// Phases whose rows measure durable writes.
const DURABLE_PHASES: [&str; 5] = ["1", "2", "3", "8", "13"];

struct Row {
    id: String,
    phase: String,
    label: String,
    unit: &'static str,
    higher_better: bool,
}

#[derive(Default)]
pub struct Env {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub disk: String,
    pub filesystem: String,
    pub command: String,
    pub records: usize,
    pub phases: Vec<u32>,
}

pub struct Results {
    rows: Vec<Row>,
    cells: BTreeMap<(String, String), Cell>,
    notes: Vec<(String, String)>,
    /// (name, settings) in run order.
    pub stores: Vec<(String, String)>,
    /// Raw-device reference: (threads, ops/s, ops, device flushes).
    pub raw: Vec<(usize, f64, u64, u64)>,
    pub env: Env,
    pub total_secs: f64,
    /// Device flushes per second measured while this process idled.
    pub idle_flushes_per_sec: Option<f64>,
    threads: Vec<usize>,
}

fn row(id: &str, phase: &str, label: String, unit: &'static str, higher_better: bool) -> Row {
    Row {
        id: id.into(),
        phase: phase.into(),
        label,
        unit,
        higher_better,
    }
}

impl Results {
    pub fn new(threads: &[usize], read_threads: &[usize], _raw: &[usize]) -> Results {
        let mut rows = vec![
            row(
                "1",
                "1",
                "bulk load N (chunks of 50,000) + durable sync".into(),
                "ms",
                false,
            ),
            row(
                "2",
                "2",
                "1,000 individual writes, each durable".into(),
                "ms",
                false,
            ),
            row(
                "3",
                "3",
                "100 batches x 1,000, each durable".into(),
                "ms",
                false,
            ),
            row("4", "4", "50,000 writes without sync".into(), "ms", false),
            row("5", "5", "len".into(), "ms", false),
            row("6", "6", "random reads, 1 thread".into(), "ms", false),
        ];
        for t in read_threads {
            rows.push(row(
                &format!("7/{t}"),
                "7",
                format!("random reads, {t} threads"),
                "ms",
                false,
            ));
        }
        rows.extend([
            row("8", "8", "remove N/2 + durable sync".into(), "ms", false),
            row("9", "9", "size on disk after removals".into(), "MiB", false),
            row("10", "10", "compaction".into(), "ms", false),
            row(
                "10s",
                "10",
                "size on disk after compaction".into(),
                "MiB",
                false,
            ),
            row(
                "11",
                "11",
                "reopen (after checkpoint where the store has one)".into(),
                "ms",
                false,
            ),
            row(
                "12",
                "12",
                "process memory per key after bulk load (RSS growth / N)".into(),
                "bytes",
                false,
            ),
        ]);
        for t in threads {
            rows.push(row(
                &format!("13/{t}"),
                "13",
                format!("durable writers T={t}"),
                "records/s",
                true,
            ));
        }
        for t in threads {
            rows.push(row(
                &format!("13f/{t}"),
                "13",
                format!("records per device flush, T={t}"),
                "records",
                true,
            ));
        }
        Results {
            rows,
            cells: BTreeMap::new(),
            notes: Vec::new(),
            stores: Vec::new(),
            raw: Vec::new(),
            env: Env::default(),
            total_secs: 0.0,
            idle_flushes_per_sec: None,
            threads: threads.to_vec(),
        }
    }

    pub fn set(&mut self, id: &str, store: &str, cell: Cell) {
        self.cells.insert((id.to_string(), store.to_string()), cell);
    }

    pub fn note(&mut self, store: &str, note: String) {
        self.notes.push((store.to_string(), note));
    }

    /// Marks every row the store has not filled as failed.
    pub fn fail(&mut self, store: &str, reason: &str) {
        for r in &self.rows {
            let key = (r.id.clone(), store.to_string());
            self.cells
                .entry(key)
                .or_insert_with(|| Cell::Na(reason.to_string()));
        }
        self.note(store, reason.to_string());
    }

    fn get(&self, id: &str, store: &str) -> Option<&Cell> {
        self.cells.get(&(id.to_string(), store.to_string()))
    }

    fn raw_for(&self, id: &str) -> Option<f64> {
        let (kind, t) = id.split_once('/')?;
        let t: usize = t.parse().ok()?;
        let r = self.raw.iter().find(|r| r.0 == t)?;
        match kind {
            "13" => Some(r.1),
            "13f" if r.3 > 0 => Some(r.2 as f64 / r.3 as f64),
            _ => None,
        }
    }

    fn visible_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| {
            self.stores
                .iter()
                .any(|(s, _)| self.get(&r.id, s).is_some())
        })
    }

    fn best(&self, r: &Row) -> Option<Vec<String>> {
        let mut best: Option<(&str, f64)> = None;
        for (s, _) in &self.stores {
            if DURABLE_PHASES.contains(&r.phase.as_str())
                && crate::stores::NOT_DEVICE_DURABLE.contains(&s.as_str())
            {
                continue;
            }
            if let Some(Cell::Val(v)) = self.get(&r.id, s) {
                let better = match best {
                    None => true,
                    Some((_, b)) => {
                        if r.higher_better {
                            *v > b
                        } else {
                            *v < b
                        }
                    }
                };
                if better {
                    best = Some((s, *v));
                }
            }
        }
        // Every store that ties the best value (as printed) is best.
        let (_, b) = best?;
        let shown = fmt(b, r.unit);
        Some(
            self.stores
                .iter()
                .filter(|(s, _)| {
                    !(DURABLE_PHASES.contains(&r.phase.as_str())
                        && crate::stores::NOT_DEVICE_DURABLE.contains(&s.as_str()))
                })
                .filter(|(s, _)| matches!(self.get(&r.id, s), Some(Cell::Val(v)) if fmt(*v, r.unit) == shown))
                .map(|(s, _)| s.clone())
                .collect(),
        )
    }

    pub fn markdown(&self) -> String {
        let e = &self.env;
        let mut o = String::new();
        let _ = writeln!(o, "## emdb-compare results\n");
        let _ = writeln!(o, "- date: {}", e.date);
        let _ = writeln!(o, "- kernel: {}", e.kernel);
        let _ = writeln!(o, "- CPU: {}", e.cpu);
        let _ = writeln!(o, "- disk: {}", e.disk);
        let _ = writeln!(o, "- filesystem: {}", e.filesystem);
        let _ = writeln!(o, "- command: `{}`", e.command);
        let _ = writeln!(
            o,
            "- workload: N = {} records, 24-byte random keys, 150-byte random values, fastrand seed 3, generated before any store runs; phases {:?}",
            e.records, e.phases
        );
        let _ = writeln!(o, "- total run time: {:.1} s\n", self.total_secs);

        let has_raw = !self.raw.is_empty();
        let _ = write!(o, "| # | operation | unit |");
        for (s, _) in &self.stores {
            let _ = write!(o, " {s} |");
        }
        if has_raw {
            let _ = write!(o, " raw device (reference) |");
        }
        let _ = writeln!(o);
        let _ = write!(o, "|---|---|---|");
        for _ in &self.stores {
            let _ = write!(o, "---:|");
        }
        if has_raw {
            let _ = write!(o, "---:|");
        }
        let _ = writeln!(o);
        for r in self.visible_rows() {
            let best = self.best(r);
            let _ = write!(o, "| {} | {} | {} |", r.phase, r.label, r.unit);
            for (s, _) in &self.stores {
                let txt = match self.get(&r.id, s) {
                    None => "-".to_string(),
                    Some(Cell::Na(why)) => format!("N/A ({why})"),
                    Some(Cell::Val(v)) => {
                        let f = fmt(*v, r.unit);
                        if best.as_ref().is_some_and(|b| b.contains(s)) {
                            format!("**{f}**")
                        } else {
                            f
                        }
                    }
                };
                let _ = write!(o, " {txt} |");
            }
            if has_raw {
                let txt = self
                    .raw_for(&r.id)
                    .map(|v| fmt(v, r.unit))
                    .unwrap_or_default();
                let _ = write!(o, " {txt} |");
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(
            o,
            "\nBold: best store on the row (the raw-device column is a reference, not a contender). \
             Device flushes are field 16 of /sys/block/<dev>/stat, counted over the whole device."
        );
        let skipped: Vec<&str> = self
            .stores
            .iter()
            .map(|(s, _)| s.as_str())
            .filter(|s| crate::stores::NOT_DEVICE_DURABLE.contains(s))
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(
                o,
                "\nNot bolded on the rows of durable phases ({}): {}, whose durable call does not \
                 flush the device's write cache (see its settings and its device-flush counts).",
                DURABLE_PHASES.join(", "),
                skipped.join(", ")
            );
        }
        if let Some(idle) = self.idle_flushes_per_sec {
            let _ = writeln!(
                o,
                "\nNoise floor: {idle:.0} device flushes/s were counted over 2 s while this process idled \
                 (other work on the machine); flush counts include it."
            );
        }
        let _ = writeln!(
            o,
            "\nAsync writers (1,000 and 10,000 tokio tasks on emdb): left out until emdb's async API exists."
        );
        if has_raw {
            let _ = writeln!(o, "\nRaw-device reference, a loop of {{pwrite 4 KiB; fdatasync}} per thread on one preallocated file:\n");
            for (t, rate, ops, fl) in &self.raw {
                let _ = writeln!(
                    o,
                    "- {t} thread(s): {} ops/s, {ops} ops, {fl} device flushes",
                    fmt(*rate, "records/s")
                );
            }
        }
        let _ = writeln!(o, "\n### Settings\n");
        for (s, set) in &self.stores {
            let _ = writeln!(o, "- **{s}**: {set}");
        }
        let _ = writeln!(o, "\n### Notes\n");
        for (s, _) in &self.stores {
            let notes: Vec<&str> = self
                .notes
                .iter()
                .filter(|(n, _)| n == s)
                .map(|(_, t)| t.as_str())
                .collect();
            if !notes.is_empty() {
                let _ = writeln!(o, "- **{s}**: {}", notes.join("; "));
            }
        }
        o
    }

    pub fn csv(&self) -> String {
        let mut o = String::from("row_id,phase,operation,unit,store,value,best,note\n");
        for r in self.visible_rows() {
            let best = self.best(r);
            for (s, _) in &self.stores {
                let (v, note) = match self.get(&r.id, s) {
                    None => continue,
                    Some(Cell::Val(v)) => (format!("{v:.3}"), String::new()),
                    Some(Cell::Na(why)) => (String::new(), format!("N/A: {why}")),
                };
                let b = best.as_ref().is_some_and(|b| b.contains(s));
                let _ = writeln!(
                    o,
                    "{},{},\"{}\",{},{},{},{},\"{}\"",
                    r.id,
                    r.phase,
                    r.label,
                    r.unit,
                    s,
                    v,
                    b,
                    note.replace('"', "'")
                );
            }
            if let Some(v) = self.raw_for(&r.id) {
                let _ = writeln!(
                    o,
                    "{},{},\"{}\",{},raw device,{v:.3},false,\"reference\"",
                    r.id, r.phase, r.label, r.unit
                );
            }
        }
        o
    }
}

fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2}"),
        "ms" if v < 1000.0 => format!("{v:.1}"),
        "MiB" => format!("{v:.1}"),
        "records" if v < 10.0 => format!("{v:.2}"),
        "records" => format!("{v:.1}"),
        _ => thousands(v.round() as u64),
    }
}

/// Today's UTC date as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Two panels against T (log-log): records/s, and records per device flush.
pub fn plot(res: &Results, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    let series = |prefix: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        res.stores
            .iter()
            .map(|(s, _)| {
                let pts = res
                    .threads
                    .iter()
                    .filter_map(|t| match res.get(&format!("{prefix}/{t}"), s) {
                        Some(Cell::Val(v)) if *v > 0.0 => Some((*t as f64, *v)),
                        _ => None,
                    })
                    .collect();
                (s.clone(), pts)
            })
            .collect()
    };
    let raw_rate: Vec<(f64, f64)> = res.raw.iter().map(|r| (r.0 as f64, r.1)).collect();
    let raw_per: Vec<(f64, f64)> = res
        .raw
        .iter()
        .filter(|r| r.3 > 0)
        .map(|r| (r.0 as f64, r.2 as f64 / r.3 as f64))
        .collect();
    let max_t = res.threads.iter().copied().max().unwrap_or(1).max(2) as f64;

    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(700);
    let panels = [
        (
            left,
            "durable writers: records/s",
            "records/s",
            series("13"),
            raw_rate,
        ),
        (
            right,
            "records per device flush",
            "records / device flush",
            series("13f"),
            raw_per,
        ),
    ];
    for (area, title, ydesc, data, raw) in panels {
        let all: Vec<f64> = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .chain(raw.iter().map(|q| q.1))
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if all.is_empty() {
            (0.1, 10.0)
        } else {
            (lo / 1.5, hi * 1.5)
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((1f64..max_t * 1.2).log_scale(), (lo..hi).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("writer threads T")
            .y_desc(ydesc)
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, pts)) in data.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let c = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        if !raw.is_empty() {
            chart
                .draw_series(raw.iter().map(|p| Cross::new(*p, 6, BLACK.stroke_width(2))))
                .map_err(|e| e.to_string())?
                .label("raw device {pwrite 4K; fdatasync}")
                .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// A tick label with three significant digits, so that distinct ticks of a
/// log axis never print alike (rounding 9.6 and 10.4 both to "10" did).
fn tick(v: f64) -> String {
    if v >= 1000.0 {
        return format!("{}k", tick(v / 1000.0));
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_distinct_and_short() {
        use super::tick;
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(9.6), "9.6");
        assert_eq!(tick(10.4), "10.4");
        assert_eq!(tick(2000.0), "2k");
        assert_eq!(tick(25_500.0), "25.5k");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(64.0), "64");
    }
}
