//! Results: the markdown table (best store per row in bold), the table of
//! the async durable writers phase, the CSV and the plots of the concurrent
//! durable writers phases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::async_writers::AsyncFigures;

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

/// One phase-14 row.
pub struct AsyncRow {
    pub config: &'static str,
    pub n: usize,
    /// The figures, or why the row failed.
    pub outcome: Result<AsyncFigures, String>,
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
    /// Phase 14: (configuration, settings) in run order, and the rows.
    pub async_configs: Vec<(String, String)>,
    pub async_rows: Vec<AsyncRow>,
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
        rows.extend([
            row(
                "15",
                "15",
                "full ordered scan (every live key, ascending; after phase 7)".into(),
                "ms",
                false,
            ),
            row(
                "16",
                "16",
                "10,000 prefix scans, one per 2-byte group (~N/10,000 keys each; after phase 7)"
                    .into(),
                "ms",
                false,
            ),
        ]);
        Results {
            rows,
            cells: BTreeMap::new(),
            notes: Vec::new(),
            stores: Vec::new(),
            raw: Vec::new(),
            env: Env::default(),
            total_secs: 0.0,
            idle_flushes_per_sec: None,
            async_configs: Vec::new(),
            async_rows: Vec::new(),
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

    /// The table of phases 1-13, 15 and 16: a row per measurement, a column
    /// per store.
    fn store_table(&self, o: &mut String) {
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
    }

    /// Records/s of `config` at `n` writers, if that row ran and succeeded.
    fn async_rate(&self, config: &str, n: usize) -> Option<f64> {
        self.async_rows
            .iter()
            .find(|r| r.config == config && r.n == n)?
            .outcome
            .as_ref()
            .ok()
            .map(AsyncFigures::records_per_sec)
    }

    /// The configuration with the most records/s at `n` writers.
    fn async_best(&self, n: usize) -> Option<&'static str> {
        self.async_rows
            .iter()
            .filter(|r| r.n == n)
            .filter_map(|r| Some((r.config, r.outcome.as_ref().ok()?.records_per_sec())))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c)
    }

    /// The phase-14 table: a row per (N, configuration), the most records/s
    /// of each N in bold, and each row's records/s as a multiple of emdb
    /// 1.0.3's at the same N; then the configurations' settings.
    fn async_table(&self, o: &mut String) {
        let base = crate::async_writers::Config::UpstreamMultiThread.name();
        let _ = writeln!(o, "\n### Async durable writers (phase 14)\n");
        let _ = writeln!(
            o,
            "N writers each loop {{insert one record; flush}} for --writer-secs, on a fresh database \
             (and runtime) per row. Latency: one insert + flush as its writer sees it. CPU: \
             getrusage(RUSAGE_SELF), every thread of the process, over the window, per record.\n"
        );
        let _ = writeln!(
            o,
            "| N | configuration | records/s | x {base} | records per device flush | records per fdatasync (store's count) | p50 µs | p99 µs | CPU µs/record |"
        );
        let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.async_rows {
            let n = thousands(r.n as u64);
            let f = match &r.outcome {
                Ok(f) => f,
                Err(why) => {
                    let _ = writeln!(o, "| {n} | {} | failed: {why} | | | | | | |", r.config);
                    continue;
                }
            };
            let mut rate = fmt(f.records_per_sec(), "records/s");
            if self.async_best(r.n) == Some(r.config) {
                rate = format!("**{rate}**");
            }
            let ratio = self
                .async_rate(base, r.n)
                .map(|b| format!("{:.2}", f.records_per_sec() / b))
                .unwrap_or_else(|| "-".into());
            let per = |v: Option<f64>| v.map(|v| fmt(v, "records")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "| {n} | {} | {rate} | {ratio} | {} | {} | {} | {} | {} |",
                r.config,
                per(f.records_per_flush()),
                per(f.records_per_fdatasync()),
                fmt(f.p50_us, "µs"),
                fmt(f.p99_us, "µs"),
                fmt(f.cpu_us_per_record, "µs"),
            );
        }
        let _ = writeln!(o);
        for (c, set) in &self.async_configs {
            let _ = writeln!(o, "- **{c}**: {set}");
        }
    }

    /// Phase 14 in the CSV's shape: six measurements per row, the
    /// configuration in the store column.
    fn async_csv(&self, o: &mut String) {
        for r in &self.async_rows {
            let n = r.n;
            let f = r.outcome.as_ref().ok();
            let measurements = [
                (
                    "14",
                    format!("async durable writers N={n}"),
                    "records/s",
                    f.map(AsyncFigures::records_per_sec),
                ),
                (
                    "14f",
                    format!("records per device flush, N={n}"),
                    "records",
                    f.and_then(AsyncFigures::records_per_flush),
                ),
                (
                    "14s",
                    format!("records per fdatasync (store's count), N={n}"),
                    "records",
                    f.and_then(AsyncFigures::records_per_fdatasync),
                ),
                (
                    "14p50",
                    format!("insert + flush latency p50, N={n}"),
                    "µs",
                    f.map(|f| f.p50_us),
                ),
                (
                    "14p99",
                    format!("insert + flush latency p99, N={n}"),
                    "µs",
                    f.map(|f| f.p99_us),
                ),
                (
                    "14cpu",
                    format!("CPU time per record, N={n}"),
                    "µs",
                    f.map(|f| f.cpu_us_per_record),
                ),
            ];
            for (id, label, unit, v) in measurements {
                let best = id == "14" && self.async_best(n) == Some(r.config);
                let (v, note) = match (&r.outcome, v) {
                    (Err(why), _) => (String::new(), format!("N/A: {why}")),
                    (Ok(_), Some(v)) => (format!("{v:.3}"), String::new()),
                    (Ok(_), None) => (String::new(), "N/A: not counted".into()),
                };
                let _ = writeln!(
                    o,
                    "{id}/{n},14,\"{label}\",{unit},{},{v},{best},\"{}\"",
                    r.config,
                    note.replace('"', "'")
                );
            }
        }
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
            "- workload: N = {} records, 24-byte random keys (the bulk load's first 2 bytes a big-endian group number in 0..10,000, fastrand seed 4), 150-byte random values, fastrand seed 3, generated before any store runs; phases {:?}",
            e.records, e.phases
        );
        let _ = writeln!(o, "- total run time: {:.1} s\n", self.total_secs);

        if self.visible_rows().next().is_some() {
            self.store_table(&mut o);
        }
        if let Some(idle) = self.idle_flushes_per_sec {
            let _ = writeln!(
                o,
                "\nNoise floor: {idle:.0} device flushes/s were counted over 2 s while this process idled \
                 (other work on the machine); flush counts include it."
            );
        }
        if !self.async_rows.is_empty() {
            self.async_table(&mut o);
        }
        if !self.raw.is_empty() {
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
        self.async_csv(&mut o);
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
        "µs" if v < 100.0 => format!("{v:.1}"),
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

/// Line colours of the plots, one per store or configuration.
const COLORS: [plotters::style::RGBColor; 7] = [
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(140, 86, 75),
    plotters::style::RGBColor(227, 119, 194),
];

/// Named series of (x, y) points.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Two panels against T (log-log): records/s, and records per device flush.
pub fn plot(res: &Results, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let series = |prefix: &str| -> Series {
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
    let x_desc = "writer threads T";
    panel(
        &left,
        "durable writers: records/s",
        x_desc,
        max_t,
        "records/s",
        &series("13"),
        &raw_rate,
    )?;
    panel(
        &right,
        "records per device flush",
        x_desc,
        max_t,
        "records / device flush",
        &series("13f"),
        &raw_per,
    )?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Phase 14, two panels against N (log-log): records/s, and records per
/// device flush; a line per configuration.
pub fn plot_async(res: &Results, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let series = |figure: fn(&AsyncFigures) -> Option<f64>| -> Series {
        res.async_configs
            .iter()
            .map(|(c, _)| {
                let pts = res
                    .async_rows
                    .iter()
                    .filter(|r| r.config == c)
                    .filter_map(|r| {
                        let v = figure(r.outcome.as_ref().ok()?)?;
                        (v > 0.0).then_some((r.n as f64, v))
                    })
                    .collect();
                (c.clone(), pts)
            })
            .collect()
    };
    let max_n = res.async_rows.iter().map(|r| r.n).max().unwrap_or(1).max(2) as f64;

    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(700);
    let x_desc = "writers N (tasks, or threads for the sync rows)";
    panel(
        &left,
        "async durable writers: records/s",
        x_desc,
        max_n,
        "records/s",
        &series(|f| Some(f.records_per_sec())),
        &[],
    )?;
    panel(
        &right,
        "records per device flush",
        x_desc,
        max_n,
        "records / device flush",
        &series(AsyncFigures::records_per_flush),
        &[],
    )?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// One log-log panel, x from 1 to `max_x`: a line per series and, unless
/// `raw` is empty, the raw-device reference as crosses.
fn panel(
    area: &plotters::prelude::DrawingArea<
        plotters::prelude::SVGBackend<'_>,
        plotters::coord::Shift,
    >,
    title: &str,
    x_desc: &str,
    max_x: f64,
    y_desc: &str,
    data: &Series,
    raw: &[(f64, f64)],
) -> Result<(), String> {
    use plotters::prelude::*;
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
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..max_x * 1.2).log_scale(), (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in data.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
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
    Ok(())
}

/// A tick label with three significant digits, so that distinct ticks of a
/// log axis never print alike (rounding 9.6 and 10.4 both to "10" did).
fn tick(v: f64) -> String {
    if v >= 1e6 {
        return format!("{}M", tick(v / 1e6));
    }
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
        assert_eq!(tick(1_000_000.0), "1M");
        assert_eq!(tick(2_500_000.0), "2.5M");
    }
}
