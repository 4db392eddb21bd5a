//! Range scans: an event log keyed by `sensor/timestamp`, read back in key
//! order by range, by prefix and from a cursor, in pages, with the lazy
//! iterator and the lending `range_prefix_cursor`; the same in a namespace.
//!
//! cargo run --release --example range_scans

use emdb::Emdb;

fn key(sensor: &str, t: u64) -> String {
    // Zero-padded, so byte order is time order.
    format!("{sensor}/{t:010}")
}

fn main() -> emdb::Result<()> {
    let tmp = tempfile::tempdir().map_err(emdb::Error::Io)?;
    let path = tmp.path().join("events.emdb");
    let db = Emdb::builder()
        .path(&path)
        .enable_range_scans(true)
        .build()?;
    for t in 0..1000u64 {
        for sensor in ["boiler", "door", "pump"] {
            db.insert(key(sensor, t * 10), format!("{sensor} reading at {t}"))?;
        }
    }
    db.flush()?;

    // Everything from one sensor, in time order.
    let door = db.range_prefix("door/")?;
    println!("door: {} events, first {:?}", door.len(), text(&door[0]));

    // A time window of one sensor: [100, 200).
    let window = db.range(key("pump", 100).into_bytes()..key("pump", 200).into_bytes())?;
    println!("pump in [100, 200): {} events", window.len());

    // Paging with a cursor: 250 at a time, each page starting after the
    // last key of the one before.
    let mut pages = 0;
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page: Vec<_> = match &cursor {
            None => db.iter_from("boiler/")?.take(250).collect(),
            Some(last) => db.iter_after(last)?.take(250).collect(),
        };
        match page.last() {
            Some((k, _)) if k.starts_with(b"boiler/") => cursor = Some(k.clone()),
            _ => break,
        }
        pages += 1;
    }
    println!("boiler read in {pages} pages of up to 250");

    // The lazy iterator reads 128 keys at a time: a large range costs
    // little memory, and writers are held only for a chunk at a time.
    let latest_per_sensor =
        db.range_iter(..)?
            .fold(std::collections::BTreeMap::new(), |mut m, (k, _)| {
                let k = String::from_utf8_lossy(&k).into_owned();
                let (sensor, _) = k.split_once('/').unwrap_or((&k, ""));
                m.insert(sensor.to_string(), k.clone());
                m
            });
    println!("latest per sensor: {latest_per_sensor:?}");

    // A cursor reads the same way but lends each record until the next
    // one, with no allocation per record: the fastest way to aggregate.
    let mut cursor = db.range_prefix_cursor("pump/")?;
    let (mut events, mut bytes) = (0, 0);
    while let Some((_key, value)) = cursor.next_record() {
        events += 1;
        bytes += value.len();
    }
    println!("pump: {events} events, {bytes} value bytes, nothing copied");

    // Each namespace has its own order.
    let alerts = db.namespace("alerts")?;
    alerts.insert("2026-12-06T10:00 pump", "pressure low")?;
    alerts.insert("2026-12-06T09:00 door", "left open")?;
    for (k, v) in alerts.range_iter(..)? {
        println!("alert {} -> {}", text_of(&k), text_of(&v));
    }

    // The ordered index lives in memory and is rebuilt at open.
    drop(alerts);
    db.close()?;
    let db = Emdb::builder()
        .path(&path)
        .enable_range_scans(true)
        .build()?;
    let st = db.stats()?;
    println!(
        "reopened: {} keys in all namespaces, ordered index {} bytes ({:.1} per key)",
        st.live_records,
        st.ordered_index_bytes,
        st.ordered_index_bytes as f64 / st.live_records as f64
    );
    assert_eq!(db.range_prefix("door/")?.len(), 1000);
    Ok(())
}

fn text(kv: &(Vec<u8>, Vec<u8>)) -> (String, String) {
    (text_of(&kv.0), text_of(&kv.1))
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
