//! The commands that inspect a database or change one record, the lock
//! command and the encryption admin calls.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use emdb::{Emdb, Namespace};
use serde_json::{json, Value};

use crate::fail::{Failure, DAMAGED, DAMAGE_FOUND, LOCKED, NOT_FOUND, OTHER};
use crate::fmt::{count, escape, hex, size};
use crate::open::{self, Which};
use crate::{DumpArgs, Format, KeyArgs};

/// A key space: the database's default namespace or a named one.
enum Space<'a> {
    Default(&'a Emdb),
    Named(Namespace),
}

impl Space<'_> {
    /// `name` in `db`; a named namespace must exist (no command creates
    /// one by reading it).
    fn of<'a>(db: &'a Emdb, name: Option<&str>, path: &Path) -> Result<Space<'a>, Failure> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(Space::Default(db));
        };
        let names = db.list_namespaces().map_err(|e| Failure::emdb(e, path))?;
        if !names.iter().any(|n| n == name) {
            return Err(Failure::new(
                NOT_FOUND,
                format!(
                    "{}: no namespace {name:?} (there are: {})",
                    path.display(),
                    names
                        .iter()
                        .filter(|n| !n.is_empty())
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(Space::Named(
            db.namespace(name).map_err(|e| Failure::emdb(e, path))?,
        ))
    }

    fn iter(&self) -> emdb::Result<emdb::EmdbIter> {
        match self {
            Space::Default(db) => db.iter(),
            Space::Named(ns) => ns.iter(),
        }
    }

    fn len(&self) -> emdb::Result<usize> {
        match self {
            Space::Default(db) => db.len(),
            Space::Named(ns) => ns.len(),
        }
    }

    fn get(&self, key: &[u8]) -> emdb::Result<Option<Vec<u8>>> {
        match self {
            Space::Default(db) => db.get(key),
            Space::Named(ns) => ns.get(key),
        }
    }

    fn remove(&self, key: &[u8]) -> emdb::Result<Option<Vec<u8>>> {
        match self {
            Space::Default(db) => db.remove(key),
            Space::Named(ns) => ns.remove(key),
        }
    }

    fn insert(&self, key: Vec<u8>, value: Vec<u8>, ttl: Option<u64>) -> emdb::Result<()> {
        let ttl = match ttl {
            Some(s) => emdb::Ttl::After(std::time::Duration::from_secs(s)),
            None => emdb::Ttl::Default,
        };
        match self {
            Space::Default(db) => db.insert_with_ttl(key, value, ttl),
            Space::Named(ns) => ns.insert_with_ttl(key, value, ttl),
        }
    }
}

/// The bytes of a key given on the command line.
fn key_bytes(key: &str, hex_key: bool) -> Result<Vec<u8>, Failure> {
    if hex_key {
        crate::fmt::unhex(key).ok_or_else(|| {
            Failure::new(
                2,
                format!("{key:?} is not hex digits (an even number of 0-9a-f)"),
            )
        })
    } else {
        Ok(key.as_bytes().to_vec())
    }
}

/// "No such key", saying where it was looked for and how to list keys.
fn no_key(path: &Path, k: &[u8], at: &KeyArgs) -> String {
    let ns = match at.namespace.as_deref() {
        Some(n) if !n.is_empty() => format!("namespace {n:?}"),
        _ => "the default namespace".to_string(),
    };
    format!(
        "{}: no key {:?} in {ns} (`emdb dump {} --prefix ...` lists keys)",
        path.display(),
        escape(k),
        path.display()
    )
}

/// Prints `v` as pretty JSON.
fn print_json(v: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::new(OTHER, e.to_string()))?;
    println!("{text}");
    Ok(())
}

pub fn stats(path: &Path, json: bool) -> Result<u8, Failure> {
    let db = open::read_only(path)?;
    let fail = |e| Failure::emdb(e, path);
    let st = db.stats().map_err(fail)?;
    let mut spaces = Vec::new();
    for name in db.list_namespaces().map_err(fail)? {
        let n = Space::of(&db, Some(&name), path)?.len().map_err(fail)?;
        spaces.push((name, n as u64));
    }
    let dead_fraction = if st.logical_size_bytes == 0 {
        0.0
    } else {
        st.dead_bytes as f64 / st.logical_size_bytes as f64
    };
    let backend = format!("{:?}", st.io_backend).to_lowercase();
    if json {
        return print_json(&json!({
            "path": path,
            "live_records": st.live_records,
            "namespace_count": st.namespace_count,
            "namespaces": spaces.iter().map(|(n, r)| json!({"name": n, "records": r})).collect::<Vec<_>>(),
            "logical_size_bytes": st.logical_size_bytes,
            "file_size_bytes": st.file_size_bytes,
            "preallocated_bytes": st.preallocated_bytes,
            "live_bytes": st.live_bytes,
            "dead_bytes": st.dead_bytes,
            "dead_fraction": dead_fraction,
            "segments": st.segments,
            "shards": st.shards,
            "io_backend": backend,
            "encrypted": st.encrypted,
            "index_bytes": st.index_bytes,
        }))
        .map(|()| 0);
    }
    let rows: Vec<(&str, String)> = vec![
        ("path", path.display().to_string()),
        ("records", count(st.live_records)),
        ("namespaces", st.namespace_count.to_string()),
        ("log data", size(st.logical_size_bytes)),
        ("files on disk", size(st.file_size_bytes)),
        ("preallocated", size(st.preallocated_bytes)),
        ("live bytes", size(st.live_bytes)),
        (
            "dead bytes",
            format!(
                "{} ({:.1}%; `emdb compact` reclaims them)",
                size(st.dead_bytes),
                dead_fraction * 100.0
            ),
        ),
        ("segments", st.segments.to_string()),
        ("shards", st.shards.to_string()),
        ("backend", backend),
        (
            "encrypted",
            if st.encrypted { "yes" } else { "no" }.to_string(),
        ),
        ("index memory", size(st.index_bytes)),
    ];
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
    println!();
    println!("{:<24} {:>12}", "namespace", "records");
    for (name, n) in &spaces {
        let shown = if name.is_empty() {
            "(default)".to_string()
        } else {
            escape(name.as_bytes())
        };
        println!("{shown:<24} {:>12}", count(*n));
    }
    Ok(0)
}

pub fn verify(path: &Path, json: bool) -> Result<u8, Failure> {
    let report = open::builder(path)?.verify().map_err(|e| {
        // Not "run emdb verify": this is it.
        let mut f = Failure::emdb(e, path);
        if let Some(i) = f.message.find("\n(run `emdb verify") {
            f.message.truncate(i);
        }
        f
    })?;
    let name = |p: &PathBuf| {
        p.strip_prefix(path)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    if json {
        print_json(&json!({
            "path": path,
            "damaged": report.is_damaged(),
            "segments": report.segments,
            "frames": report.frames,
            "frame_bytes": report.frame_bytes,
            "hint_files": report.hint_files,
            "encrypted": report.encrypted,
            "live_records": report.live_records,
            "findings": report.findings.iter().map(|f| json!({
                "file": name(&f.file),
                "offset": f.offset,
                "damage": f.damage,
                "what": f.what,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "verified {}: {} segments, {} frames ({}), {} hint files{}",
            path.display(),
            report.segments,
            count(report.frames),
            size(report.frame_bytes),
            report.hint_files,
            if report.encrypted {
                ", every record authenticated"
            } else {
                ""
            }
        );
        for f in &report.findings {
            println!(
                "{} {} at offset {}: {}",
                if f.damage { "DAMAGE" } else { "notice" },
                name(&f.file),
                f.offset,
                f.what
            );
        }
        let damage = report.findings.iter().filter(|f| f.damage).count();
        if damage > 0 {
            println!(
                "result: DAMAGED ({damage} problem{}); restore from a backup, or move the damaged \
                 file aside",
                if damage == 1 { "" } else { "s" }
            );
        } else {
            match report.live_records {
                Some(n) => println!("result: OK, {} records readable", count(n)),
                None => println!("result: OK"),
            }
        }
    }
    Ok(if report.is_damaged() { DAMAGE_FOUND } else { 0 })
}

/// One dumped record, as a line of `format`.
fn dump_line(format: Format, ns: &str, k: &[u8], v: &[u8], expires: Option<u64>) -> String {
    match format {
        Format::Tsv => format!("{}\t{}\t{}\n", escape(ns.as_bytes()), escape(k), escape(v)),
        Format::Hex => format!("{}\t{}\t{}\n", escape(ns.as_bytes()), hex(k), hex(v)),
        Format::Json => {
            let mut o = serde_json::Map::new();
            o.insert("namespace".into(), json!(ns));
            for (name, b) in [("key", k), ("value", v)] {
                match std::str::from_utf8(b) {
                    Ok(s) => o.insert(name.into(), json!(s)),
                    Err(_) => o.insert(format!("{name}_hex"), json!(hex(b))),
                };
            }
            if let Some(t) = expires {
                o.insert("expires_at_unix_ms".into(), json!(t));
            }
            format!("{}\n", Value::Object(o))
        }
    }
}

pub fn dump(a: &DumpArgs) -> Result<u8, Failure> {
    let path = &a.path;
    let db = open::read_only(path)?;
    let fail = |e| Failure::emdb(e, path);
    let names = match &a.namespace {
        Some(n) => vec![n.clone()],
        None => db.list_namespaces().map_err(fail)?,
    };
    let prefix = match &a.prefix {
        Some(p) => key_bytes(p, a.hex_key)?,
        None => Vec::new(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut left = a.limit.unwrap_or(u64::MAX);
    let mut damaged = 0;
    'spaces: for name in names {
        let space = Space::of(&db, Some(&name), path)?;
        let mut it = space.iter().map_err(fail)?;
        while left > 0 {
            let Some((k, v, e)) = it.next_expiring() else {
                break;
            };
            if !k.starts_with(&prefix) {
                continue;
            }
            let line = dump_line(a.format, &name, &k, &v, e);
            match out.write_all(line.as_bytes()) {
                Ok(()) => {}
                // `emdb dump ... | head`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                Err(e) => return Err(Failure::io("writing to stdout", e)),
            }
            left -= 1;
        }
        damaged += it.damaged();
        if left == 0 {
            break 'spaces;
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(Failure::io("writing to stdout", e))
        }
        _ => {}
    }
    if damaged > 0 {
        return Err(Failure::new(
            DAMAGED,
            format!(
                "{}: {damaged} damaged record(s) were skipped; run `emdb verify {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(0)
}

pub fn get(path: &Path, key: &str, at: &KeyArgs) -> Result<u8, Failure> {
    let k = key_bytes(key, at.hex_key)?;
    let db = open::read_only(path)?;
    let space = Space::of(&db, at.namespace.as_deref(), path)?;
    match space.get(&k).map_err(|e| Failure::emdb(e, path))? {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            let mut write = || -> std::io::Result<()> {
                out.write_all(&v)?;
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    out.write_all(b"\n")?;
                }
                out.flush()
            };
            write().map_err(|e| Failure::io("writing to stdout", e))?;
            Ok(0)
        }
        None => Err(Failure::new(NOT_FOUND, no_key(path, &k, at))),
    }
}

pub fn put(
    path: &Path,
    key: &str,
    (value, file): (Option<String>, Option<PathBuf>),
    ttl: Option<u64>,
    create: bool,
    at: &KeyArgs,
) -> Result<u8, Failure> {
    let k = key_bytes(key, at.hex_key)?;
    let v = match (value, file) {
        (Some(v), _) => v.into_bytes(),
        (None, Some(f)) => {
            std::fs::read(&f).map_err(|e| Failure::io(&format!("reading {}", f.display()), e))?
        }
        (None, None) => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| Failure::io("reading the value from stdin", e))?;
            b
        }
    };
    let db = if create && !path.join("MANIFEST").exists() {
        emdb::Emdb::open(path).map_err(|e| Failure::emdb(e, path))?
    } else {
        open::writable(path, |b| b)?
    };
    let fail = |e| Failure::emdb(e, path);
    let space = match (&at.namespace, create) {
        // --create makes the namespace too.
        (Some(n), true) => Space::Named(db.namespace(n).map_err(fail)?),
        _ => Space::of(&db, at.namespace.as_deref(), path)?,
    };
    space.insert(k, v.clone(), ttl).map_err(fail)?;
    db.flush().map_err(fail)?;
    db.close().map_err(fail)?;
    eprintln!("stored {} bytes (durable)", count(v.len() as u64));
    Ok(0)
}

pub fn remove(path: &Path, key: &str, at: &KeyArgs) -> Result<u8, Failure> {
    let k = key_bytes(key, at.hex_key)?;
    let db = open::writable(path, |b| b)?;
    let fail = |e| Failure::emdb(e, path);
    let space = Space::of(&db, at.namespace.as_deref(), path)?;
    let old = space.remove(&k).map_err(fail)?;
    db.flush().map_err(fail)?;
    db.close().map_err(fail)?;
    match old {
        Some(v) => {
            eprintln!("removed (it held {} bytes; durable)", count(v.len() as u64));
            Ok(0)
        }
        None => Err(Failure::new(NOT_FOUND, no_key(path, &k, at))),
    }
}

pub fn lock(path: &Path, break_it: bool, json: bool) -> Result<u8, Failure> {
    if !path.is_dir() {
        return Err(Failure::new(
            NOT_FOUND,
            format!("{}: no database directory there", path.display()),
        ));
    }
    let holder = Emdb::lock_holder(path).map_err(|e| Failure::emdb(e, path))?;
    if break_it {
        return match Emdb::break_lock(path) {
            Ok(()) => {
                match &holder {
                    Some(h) => println!(
                        "removed the stale lock of process {} (no longer running)",
                        h.pid
                    ),
                    None => println!("nobody holds the lock; nothing to break"),
                }
                Ok(0)
            }
            Err(emdb::Error::LockBusy { .. }) => Err(Failure::new(
                LOCKED,
                format!(
                    "refusing to break the lock: {}",
                    crate::fail::locked_message(path)
                ),
            )),
            Err(e) => Err(Failure::emdb(e, path)),
        };
    }
    if json {
        let v = match &holder {
            Some(h) => json!({
                "held": true,
                "pid": h.pid,
                "running": crate::fmt::pid_alive(h.pid),
                "acquired_at_unix_millis": h.acquired_at_unix_millis,
                "crate_version": h.crate_version,
            }),
            None => json!({"held": false}),
        };
        return print_json(&v).map(|()| 0);
    }
    match holder {
        Some(h) => println!(
            "held by process {} ({}), since {}, emdb {}",
            h.pid,
            if crate::fmt::pid_alive(h.pid) {
                "running"
            } else {
                "no longer running: `emdb lock --break` removes it"
            },
            crate::fmt::time(h.acquired_at_unix_millis),
            h.crate_version.as_deref().unwrap_or("?")
        ),
        None => println!("not held by a writer"),
    }
    Ok(0)
}

/// The database must exist for an admin call (they do not create one).
fn existing(path: &Path) -> Result<(), Failure> {
    if path.join("MANIFEST").exists() {
        Ok(())
    } else {
        Err(Failure::new(
            NOT_FOUND,
            format!("{}: no emdb database there (no MANIFEST)", path.display()),
        ))
    }
}

pub fn encrypt(path: &Path) -> Result<u8, Failure> {
    existing(path)?;
    if open::encrypted(path) {
        return Err(Failure::new(
            crate::fail::ENCRYPTION,
            format!(
                "{} is encrypted already; `emdb rotate-key` changes its key",
                path.display()
            ),
        ));
    }
    let input = open::input(path, Which::New)?;
    Emdb::enable_encryption(path, input).map_err(|e| Failure::emdb(e, path))?;
    println!(
        "encrypted {} (AES-256-GCM); every record was rewritten",
        path.display()
    );
    Ok(0)
}

pub fn decrypt(path: &Path) -> Result<u8, Failure> {
    existing(path)?;
    if !open::encrypted(path) {
        return Err(Failure::new(
            crate::fail::ENCRYPTION,
            format!("{} is not encrypted", path.display()),
        ));
    }
    let input = open::input(path, Which::Current)?;
    Emdb::disable_encryption(path, input).map_err(|e| Failure::emdb(e, path))?;
    println!(
        "decrypted {}; every record was rewritten in plaintext",
        path.display()
    );
    Ok(0)
}

pub fn rotate_key(path: &Path) -> Result<u8, Failure> {
    existing(path)?;
    if !open::encrypted(path) {
        return Err(Failure::new(
            crate::fail::ENCRYPTION,
            format!(
                "{} is not encrypted; `emdb encrypt` encrypts it",
                path.display()
            ),
        ));
    }
    let current = open::input(path, Which::Current)?;
    let new = open::input(path, Which::New)?;
    Emdb::rotate_encryption_key(path, current, new).map_err(|e| Failure::emdb(e, path))?;
    println!(
        "rotated the key of {}; no record was rewritten",
        path.display()
    );
    Ok(0)
}
