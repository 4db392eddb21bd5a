//! An async service on tokio: many concurrent tasks write events durably
//! (`insert` then `flush().await`: they share device flushes), then a
//! server task streams every record to a client over a loopback TCP
//! socket, reading from the database only as fast as the socket drains.
//!
//! cargo run --release --features async --example async_tokio [tasks]

use std::time::Instant;

use emdb::AsyncEmdb;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let tasks: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 2000,
    };
    let tmp = tempfile::tempdir()?;
    let db = AsyncEmdb::open(tmp.path().join("events.emdb")).await?;
    let before = db.stats().await?.device_flushes;

    // Writers: each task records one event and waits until it is durable.
    let t = Instant::now();
    let writers: Vec<_> = (0..tasks)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let key = format!("event:{i:06}");
                let value = format!("{{\"id\":{i},\"kind\":\"signup\"}}");
                db.insert(key, value).await?;
                db.flush().await
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    let elapsed = t.elapsed();
    let flushes = db.stats().await?.device_flushes - before;
    println!(
        "{tasks} tasks wrote durably in {elapsed:.2?}: {:.0} records/s, {flushes} device flushes ({:.1} records each)",
        tasks as f64 / elapsed.as_secs_f64(),
        tasks as f64 / flushes.max(1) as f64
    );

    // A server streams the database to whoever connects: one line per
    // record. The stream reads a record only when the socket takes the
    // previous one, so memory stays bounded whatever the database's size.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_db = db.clone();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut records = server_db.iter_stream().await?;
        let mut sent = 0usize;
        while let Some((key, value)) = records.next().await {
            socket.write_all(&key).await?;
            socket.write_all(b" ").await?;
            socket.write_all(&value).await?;
            socket.write_all(b"\n").await?;
            sent += 1;
        }
        socket.shutdown().await?;
        Res::Ok(sent)
    });

    let mut client = TcpStream::connect(addr).await?;
    let mut received = String::new();
    client.read_to_string(&mut received).await?;
    let sent = server.await??;
    let lines = received.lines().count();
    println!("streamed {sent} records over TCP; the client read {lines} lines");
    assert_eq!(lines, tasks);

    // close() flushes, checkpoints and releases the lock, off this task's
    // thread, and reports errors a drop would hide.
    db.close().await?;
    Ok(())
}
