//! A model test of namespaces, TTL and nested groups with reopens: random
//! operations run against the database and a `BTreeMap` model, compared
//! after every step. Expiry runs on the test clock (`advance_clock`), moved
//! in steps of 30 s against TTLs of whole minutes, so the model decides
//! every expiry exactly (real time passing during the test is far below
//! 30 s and only ever moves the engine's clock forward).
//!
//! Odd cases run with range scans on: every check then also compares
//! ordered range reads (`range`, `range_prefix`, `range_iter`, `iter_from`,
//! `iter_after`, `group` as a seek) against the model, and some steps are
//! transactions. Even cases check that the range calls are refused.
//!
//! The test clock is process-wide: this file holds one test.

#![cfg(all(feature = "ttl", feature = "nested", feature = "fault-injection"))]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::time::Duration;

use emdb::{advance_clock, Emdb, Error, Namespace, Ttl};

const NAMES: [&str; 3] = ["", "alpha", "beta"];

#[derive(Clone, Debug)]
struct Rec {
    value: Vec<u8>,
    /// Expires when the model clock reaches this (ms); `None`: never.
    expires: Option<u64>,
}

struct Model {
    /// Namespace name -> key -> record. "" is the default namespace.
    spaces: BTreeMap<String, BTreeMap<Vec<u8>, Rec>>,
    clock: u64,
}

impl Model {
    fn live(&self, ns: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.spaces
            .get(ns)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r.expires.is_none_or(|t| t > self.clock))
                    .map(|(k, r)| (k.clone(), r.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn open(path: &Path, ranges: bool) -> Emdb {
    Emdb::builder()
        .path(path)
        .enable_range_scans(ranges)
        .shards(2)
        .segment_size(32 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .background_compaction(false)
        .build()
        .expect("open")
}

/// A random key bound over the test's key space (and beyond it).
fn bound(rng: &mut fastrand::Rng) -> Bound<Vec<u8>> {
    let k = match rng.u8(..3) {
        0 => format!("g{}", rng.u8(..4)),
        1 => format!("k{}", rng.u8(..13)),
        _ => format!("g{}.k{}", rng.u8(..3), rng.u8(..7)),
    }
    .into_bytes();
    match rng.u8(..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(k),
        _ => Bound::Excluded(k),
    }
}

fn model_range(
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
    from: &Bound<Vec<u8>>,
    to: &Bound<Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let key_in = |k: &Vec<u8>| {
        (match from {
            Bound::Unbounded => true,
            Bound::Included(f) => k >= f,
            Bound::Excluded(f) => k > f,
        }) && (match to {
            Bound::Unbounded => true,
            Bound::Included(t) => k <= t,
            Bound::Excluded(t) => k < t,
        })
    };
    want.iter()
        .filter(|(k, _)| key_in(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every record a cursor lends, copied.
fn drain(mut c: emdb::EmdbRangeCursor) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((k, v)) = c.next_record() {
        out.push((k.to_vec(), v.to_vec()));
    }
    out
}

/// Ordered reads of namespace `name` against the model's `want`.
fn check_ranges(
    db: &Emdb,
    ns: Option<&Namespace>,
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
    rng: &mut fastrand::Rng,
    at: &str,
) {
    let all: Vec<(Vec<u8>, Vec<u8>)> = want.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (full, lazy) = match ns {
        Some(ns) => (
            ns.range(..).unwrap(),
            ns.range_iter(..).unwrap().collect::<Vec<_>>(),
        ),
        None => (db.range(..).unwrap(), db.range_iter(..).unwrap().collect()),
    };
    assert_eq!(full, all, "{at}: range(..)");
    assert_eq!(lazy, all, "{at}: range_iter(..)");
    let lent = match ns {
        Some(ns) => drain(ns.range_cursor(..).unwrap()),
        None => drain(db.range_cursor(..).unwrap()),
    };
    assert_eq!(lent, all, "{at}: range_cursor(..)");
    for _ in 0..4 {
        let (from, to) = (bound(rng), bound(rng));
        let expect = model_range(want, &from, &to);
        let got = match ns {
            Some(ns) => ns.range((from.clone(), to.clone())).unwrap(),
            None => db.range((from.clone(), to.clone())).unwrap(),
        };
        assert_eq!(got, expect, "{at}: range {from:?}..{to:?}");
        let got: Vec<_> = match ns {
            Some(ns) => ns.range_iter((from.clone(), to.clone())).unwrap().collect(),
            None => db.range_iter((from.clone(), to.clone())).unwrap().collect(),
        };
        assert_eq!(got, expect, "{at}: range_iter {from:?}..{to:?}");
        let got = match ns {
            Some(ns) => drain(ns.range_cursor((from.clone(), to.clone())).unwrap()),
            None => drain(db.range_cursor((from.clone(), to.clone())).unwrap()),
        };
        assert_eq!(got, expect, "{at}: range_cursor {from:?}..{to:?}");
        let start = match (bound(rng), rng.bool()) {
            (Bound::Included(k) | Bound::Excluded(k), _) => k,
            (Bound::Unbounded, _) => b"g".to_vec(),
        };
        let from_incl = model_range(want, &Bound::Included(start.clone()), &Bound::Unbounded);
        let after = model_range(want, &Bound::Excluded(start.clone()), &Bound::Unbounded);
        let (got_from, got_after): (Vec<_>, Vec<_>) = match ns {
            Some(ns) => (
                ns.iter_from(&start).unwrap().collect(),
                ns.iter_after(&start).unwrap().collect(),
            ),
            None => (
                db.iter_from(&start).unwrap().collect(),
                db.iter_after(&start).unwrap().collect(),
            ),
        };
        assert_eq!(got_from, from_incl, "{at}: iter_from {start:?}");
        assert_eq!(got_after, after, "{at}: iter_after {start:?}");
        let prefix = &start[..rng.usize(..=start.len())];
        let expect: Vec<_> = all
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .cloned()
            .collect();
        let (eager, lazy): (Vec<_>, Vec<_>) = match ns {
            Some(ns) => (
                ns.range_prefix(prefix).unwrap(),
                ns.range_prefix_iter(prefix).unwrap().collect(),
            ),
            None => (
                db.range_prefix(prefix).unwrap(),
                db.range_prefix_iter(prefix).unwrap().collect(),
            ),
        };
        assert_eq!(eager, expect, "{at}: range_prefix {prefix:?}");
        assert_eq!(lazy, expect, "{at}: range_prefix_iter {prefix:?}");
        let lent = match ns {
            Some(ns) => drain(ns.range_prefix_cursor(prefix).unwrap()),
            None => drain(db.range_prefix_cursor(prefix).unwrap()),
        };
        assert_eq!(lent, expect, "{at}: range_prefix_cursor {prefix:?}");
    }
    if ns.is_none() {
        for g in 0..3 {
            let prefix = format!("g{g}.").into_bytes();
            let expect: Vec<_> = all
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .cloned()
                .collect();
            let got: Vec<_> = db.group(format!("g{g}")).unwrap().collect();
            assert_eq!(got, expect, "{at}: group g{g} (a seek, in key order)");
        }
    }
}

fn refused<T>(r: emdb::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidConfig(_)))
}

fn check(db: &Emdb, m: &Model, step: usize, ranges: bool) {
    let mut rng = fastrand::Rng::with_seed(step as u64);
    if !ranges {
        assert!(refused(db.range(..)), "range without range scans");
        assert!(refused(db.range_prefix("k")), "range_prefix without them");
        assert!(refused(db.range_iter(..)), "range_iter without them");
        assert!(refused(db.iter_from("k")), "iter_from without them");
        assert!(refused(db.iter_after("k")), "iter_after without them");
        assert!(
            refused(db.range_prefix_iter("k")),
            "range_prefix_iter without them"
        );
        assert!(refused(db.range_cursor(..)), "range_cursor without them");
        assert!(
            refused(db.range_prefix_cursor("k")),
            "range_prefix_cursor without them"
        );
    }
    let mut listed = db.list_namespaces().unwrap();
    listed.sort();
    let mut want: Vec<String> = m.spaces.keys().cloned().collect();
    if !want.contains(&String::new()) {
        want.push(String::new());
    }
    want.sort();
    assert_eq!(listed, want, "step {step}: namespaces");
    for name in m.spaces.keys() {
        let want = m.live(name);
        let got: BTreeMap<Vec<u8>, Vec<u8>> = if name.is_empty() {
            db.iter().unwrap().collect()
        } else {
            db.namespace(name).unwrap().iter().unwrap().collect()
        };
        assert_eq!(got, want, "step {step}: contents of {name:?}");
        let len = if name.is_empty() {
            db.len().unwrap()
        } else {
            db.namespace(name).unwrap().len().unwrap()
        };
        assert_eq!(len, want.len(), "step {step}: len of {name:?}");
        for (k, v) in &want {
            let got = if name.is_empty() {
                db.get(k).unwrap()
            } else {
                db.namespace(name).unwrap().get(k).unwrap()
            };
            assert_eq!(got.as_ref(), Some(v), "step {step}: get {name:?} {k:?}");
        }
        if ranges {
            let ns = (!name.is_empty()).then(|| db.namespace(name).unwrap());
            check_ranges(
                db,
                ns.as_ref(),
                &want,
                &mut rng,
                &format!("step {step} {name:?}"),
            );
        }
    }
}

#[test]
fn namespaces_ttl_and_groups_match_a_model_across_reopens() {
    let cases: u64 = std::env::var("EMDB_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for case in 0..cases {
        let ranges = case % 2 == 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut rng = fastrand::Rng::with_seed(0xace0 + case);
        let mut m = Model {
            spaces: BTreeMap::from([(String::new(), BTreeMap::new())]),
            clock: 0,
        };
        let mut db = open(&path, ranges);
        for step in 0..300 {
            let name = NAMES[rng.usize(..NAMES.len())];
            let key = if rng.bool() {
                format!("g{}.k{}", rng.u8(..3), rng.u8(..6)).into_bytes()
            } else {
                format!("k{}", rng.u8(..12)).into_bytes()
            };
            let handle = |db: &Emdb| (!name.is_empty()).then(|| db.namespace(name).unwrap());
            let op = rng.u32(..100);
            // Calls through a namespace handle create the namespace.
            let through_handle = matches!(op, 0..=49 | 60..=73 | 90..);
            let mut key2 = key.clone();
            key2.push(b'x');
            if through_handle && !name.is_empty() {
                m.spaces.entry(name.to_string()).or_default();
            }
            match op {
                0..=34 => {
                    let value = format!("v{case}-{step}").into_bytes();
                    let ttl_min = rng.u64(..4);
                    let (ttl, expires) = if ttl_min == 0 {
                        (Ttl::Never, None)
                    } else {
                        (
                            Ttl::After(Duration::from_secs(60 * ttl_min)),
                            Some(m.clock + 60_000 * ttl_min),
                        )
                    };
                    match handle(&db) {
                        Some(ns) => ns.insert_with_ttl(key.clone(), value.clone(), ttl).unwrap(),
                        None => db.insert_with_ttl(key.clone(), value.clone(), ttl).unwrap(),
                    }
                    m.spaces
                        .entry(name.to_string())
                        .or_default()
                        .insert(key, Rec { value, expires });
                }
                35..=49 => {
                    let got = match handle(&db) {
                        Some(ns) => ns.remove(&key).unwrap(),
                        None => db.remove(&key).unwrap(),
                    };
                    let want = m.live(name).get(&key).cloned();
                    assert_eq!(got, want, "step {step}: remove's prior value");
                    if let Some(space) = m.spaces.get_mut(name) {
                        space.remove(&key);
                    }
                }
                50..=59 => {
                    let step_ms = if rng.bool() { 30_000 } else { 90_000 };
                    advance_clock(Duration::from_millis(step_ms));
                    m.clock += step_ms;
                }
                60..=64 => {
                    let swept = match handle(&db) {
                        Some(ns) => ns.sweep_expired(),
                        None => db.sweep_expired(),
                    };
                    let clock = m.clock;
                    let space = m.spaces.entry(name.to_string()).or_default();
                    let before = space.len();
                    space.retain(|_, r| r.expires.is_none_or(|t| t > clock));
                    assert_eq!(swept, before - space.len(), "step {step}: swept");
                }
                65..=69 => {
                    let had = match handle(&db) {
                        Some(ns) => ns.persist(&key).unwrap(),
                        None => db.persist(&key).unwrap(),
                    };
                    let clock = m.clock;
                    let rec = m
                        .spaces
                        .get_mut(name)
                        .and_then(|s| s.get_mut(&key))
                        .filter(|r| r.expires.is_some_and(|t| t > clock));
                    assert_eq!(had, rec.is_some(), "step {step}: persist");
                    if let Some(r) = rec {
                        r.expires = None;
                    }
                }
                70..=73 => {
                    match handle(&db) {
                        Some(ns) => ns.clear().unwrap(),
                        None => db.clear().unwrap(),
                    }
                    if let Some(space) = m.spaces.get_mut(name) {
                        space.clear();
                    }
                }
                74..=76 if !name.is_empty() => {
                    let existed = db.drop_namespace(name).unwrap();
                    assert_eq!(
                        existed,
                        m.spaces.remove(name).is_some(),
                        "step {step}: drop"
                    );
                }
                77..=81 => {
                    let g = format!("g{}", rng.u8(..3));
                    let removed = db.delete_group(&g).unwrap();
                    let live = m.live("");
                    let prefix = format!("{g}.").into_bytes();
                    let want = live.keys().filter(|k| k.starts_with(&prefix)).count();
                    assert_eq!(removed, want, "step {step}: delete_group");
                    // Visible records go; expired ones stay for a sweep.
                    let clock = m.clock;
                    if let Some(space) = m.spaces.get_mut("") {
                        space.retain(|k, r| {
                            !k.starts_with(&prefix) || r.expires.is_some_and(|t| t <= clock)
                        });
                    }
                    let left = db.group(&g).unwrap().count();
                    assert_eq!(left, 0, "step {step}: group after delete_group");
                }
                82..=86 => {
                    db.flush().unwrap();
                    if rng.bool() {
                        db.checkpoint().unwrap();
                    }
                    drop(db);
                    if rng.u8(..3) == 0 {
                        // A reopen by full replay.
                        for e in std::fs::read_dir(&path).unwrap() {
                            let p = e.unwrap().path();
                            if p.extension().is_some_and(|x| x == "hint") {
                                std::fs::remove_file(p).unwrap();
                            }
                        }
                    }
                    db = open(&path, ranges);
                }
                87..=89 => {
                    // Compaction sweeps every namespace first.
                    db.compact().unwrap();
                    let clock = m.clock;
                    for space in m.spaces.values_mut() {
                        space.retain(|_, r| r.expires.is_none_or(|t| t > clock));
                    }
                }
                90..=94 => {
                    // A transaction: two writes and a remove, one batch.
                    let value = format!("t{case}-{step}").into_bytes();
                    let gone = format!("k{}", rng.u8(..12)).into_bytes();
                    let body = |tx: &mut emdb::Transaction<'_>| {
                        tx.insert(key.clone(), value.clone())?;
                        tx.insert(key2.clone(), value.clone())?;
                        tx.remove(&gone)
                    };
                    match handle(&db) {
                        Some(ns) => ns.transaction(body).unwrap(),
                        None => db.transaction(body).unwrap(),
                    };
                    let space = m.spaces.entry(name.to_string()).or_default();
                    for k in [&key, &key2] {
                        let rec = Rec {
                            value: value.clone(),
                            expires: None,
                        };
                        space.insert(k.clone(), rec);
                    }
                    space.remove(&gone);
                }
                _ => {
                    // A namespace comes into being on first use.
                    if !name.is_empty() {
                        db.namespace(name).unwrap();
                        m.spaces.entry(name.to_string()).or_default();
                    }
                }
            }
            check(&db, &m, step, ranges);
        }
    }
}
