//! A model test of namespaces, TTL and nested groups with reopens: random
//! operations run against the database and a `BTreeMap` model, compared
//! after every step. Expiry runs on the test clock (`advance_clock`), moved
//! in steps of 30 s against TTLs of whole minutes, so the model decides
//! every expiry exactly (real time passing during the test is far below
//! 30 s and only ever moves the engine's clock forward).
//!
//! The test clock is process-wide: this file holds one test.

#![cfg(all(feature = "ttl", feature = "nested", feature = "fault-injection"))]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use emdb::{advance_clock, Emdb, Ttl};

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

fn open(path: &Path) -> Emdb {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(32 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .background_compaction(false)
        .build()
        .expect("open")
}

fn check(db: &Emdb, m: &Model, step: usize) {
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
    }
}

#[test]
fn namespaces_ttl_and_groups_match_a_model_across_reopens() {
    let cases: u64 = std::env::var("EMDB_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for case in 0..cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut rng = fastrand::Rng::with_seed(0xace0 + case);
        let mut m = Model {
            spaces: BTreeMap::from([(String::new(), BTreeMap::new())]),
            clock: 0,
        };
        let mut db = open(&path);
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
                    db = open(&path);
                }
                87..=89 => {
                    // Compaction sweeps every namespace first.
                    db.compact().unwrap();
                    let clock = m.clock;
                    for space in m.spaces.values_mut() {
                        space.retain(|_, r| r.expires.is_none_or(|t| t > clock));
                    }
                }
                _ => {
                    // A namespace comes into being on first use.
                    if !name.is_empty() {
                        db.namespace(name).unwrap();
                        m.spaces.entry(name.to_string()).or_default();
                    }
                }
            }
            check(&db, &m, step);
        }
    }
}
