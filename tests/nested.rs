//! Nested groups (feature `nested`): dotted prefixes in the default
//! namespace, `group` and `delete_group` (one atomic batch).

#![cfg(feature = "nested")]

use emdb::{Emdb, Error};

#[cfg(feature = "fault-injection")]
#[path = "support/power_cut.rs"]
mod power_cut;

fn sorted(it: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = it
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn focus_stores_dotted_keys_and_groups_find_them() {
    let db = Emdb::open_in_memory();
    let user = db.focus("user");
    let ada = user.focus("42");
    assert_eq!(ada.prefix(), "user.42");
    ada.set("name", "ada").unwrap();
    ada.set("lang", "en").unwrap();
    user.focus("7").set("name", "bob").unwrap();
    db.insert("users.x", "not in the group").unwrap();
    db.insert("user", "the bare key").unwrap();
    assert_eq!(db.get("user.42.name").unwrap(), Some(b"ada".to_vec()));
    assert_eq!(ada.get("name").unwrap(), Some(b"ada".to_vec()));
    assert!(ada.contains_key("lang").unwrap());
    assert_eq!(
        sorted(ada.iter().unwrap()),
        vec![
            ("user.42.lang".into(), "en".into()),
            ("user.42.name".into(), "ada".into())
        ]
    );
    assert_eq!(sorted(db.group("user").unwrap()).len(), 3);
    assert_eq!(ada.remove("lang").unwrap(), Some(b"en".to_vec()));
    assert_eq!(db.delete_group("user").unwrap(), 2);
    assert_eq!(sorted(db.group("user").unwrap()), vec![]);
    assert_eq!(db.get("user").unwrap(), Some(b"the bare key".to_vec()));
    assert_eq!(
        db.get("users.x").unwrap(),
        Some(b"not in the group".to_vec())
    );
    assert_eq!(db.delete_group("user").unwrap(), 0);
    // The root focus is the plain key space.
    let root = db.focus("");
    assert_eq!(root.get("user").unwrap(), Some(b"the bare key".to_vec()));
    assert_eq!(root.iter().unwrap().count(), 2);
    assert!(matches!(root.delete_all(), Err(Error::InvalidPath)));
}

#[test]
fn empty_and_malformed_prefixes_are_invalid_paths() {
    let db = Emdb::open_in_memory();
    for bad in ["", ".", ".a", "a.", "a..b"] {
        assert!(matches!(db.group(bad), Err(Error::InvalidPath)), "{bad:?}");
        assert!(
            matches!(db.delete_group(bad), Err(Error::InvalidPath)),
            "{bad:?}"
        );
    }
    assert!(db.group("a.b").is_ok());
}

#[cfg(feature = "ttl")]
#[test]
fn set_with_ttl_expires_inside_a_group() {
    let db = Emdb::open_in_memory();
    let s = db.focus("session");
    s.set_with_ttl(
        "a",
        "1",
        emdb::Ttl::After(std::time::Duration::from_millis(5)),
    )
    .unwrap();
    s.set_with_ttl(
        "b",
        "1",
        emdb::Ttl::After(std::time::Duration::from_secs(3600)),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.iter().unwrap().count(), 1);
}

/// `delete_group` is one batch: with the power cut while it runs (or just
/// after it returned), the group is whole or gone after recovery, never
/// partly there; once it returned and a flush followed, it is gone.
#[cfg(feature = "fault-injection")]
#[test]
fn delete_group_is_all_or_nothing_across_power_cuts() {
    use power_cut::{image_policy, reopen_image, tracked};
    let mut outcomes = [0usize; 2];
    for cycle in 0..10u64 {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(2)
                .segment_size(64 << 10)
                .max_key_len(64)
                .max_value_len(2048),
        );
        let g = db.focus("group");
        for i in 0..300u32 {
            g.set(format!("k{i:03}"), vec![b'g'; 100]).unwrap();
            db.insert(format!("other{i:03}"), "o").unwrap();
        }
        db.flush().unwrap();
        if cycle < 5 {
            // The power goes off at the n-th write or sync after this.
            plan.power_off_after(cycle);
            let _ = db.delete_group("group");
            let _ = db.flush();
        } else {
            assert_eq!(db.delete_group("group").unwrap(), 300);
            db.flush().unwrap();
        }
        plan.power_off();
        drop(db);
        let policy = image_policy(cycle % 2 == 0);
        let (db, report) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        let left = db.group("group").unwrap().count();
        assert!(
            left == 0 || left == 300,
            "cycle {cycle}: {left} of 300 records of a deleted group survive ({report})"
        );
        if cycle >= 5 {
            assert_eq!(
                left, 0,
                "cycle {cycle}: an acknowledged delete_group was lost"
            );
        }
        outcomes[usize::from(left == 0)] += 1;
        let others = (0..300u32)
            .filter(|i| db.get(format!("other{i:03}")).unwrap().is_some())
            .count();
        assert_eq!(others, 300, "cycle {cycle}");
    }
    eprintln!("whole: {}, gone: {}", outcomes[0], outcomes[1]);
}
