//! The `async_tokio` service inside `tokio_uring::start`: the same emdb
//! futures on tokio-uring's current-thread runtime, with the records
//! streamed over a tokio-uring TCP socket (owned buffers).
//!
//! cargo run --release --features async --example async_tokio_uring [tasks]

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::Instant;

    use emdb::AsyncEmdb;
    use futures::StreamExt;

    let tasks: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 2000,
    };
    tokio_uring::start(async move {
        let tmp = tempfile::tempdir()?;
        let db = AsyncEmdb::open(tmp.path().join("events.emdb")).await?;
        let before = db.stats().await?.device_flushes;

        let t = Instant::now();
        let writers: Vec<_> = (0..tasks)
            .map(|i| {
                let db = db.clone();
                tokio_uring::spawn(async move {
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

        let listener = tokio_uring::net::TcpListener::bind("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let server_db = db.clone();
        let server = tokio_uring::spawn(async move {
            let (socket, _) = listener.accept().await?;
            let mut records = server_db.iter_stream().await?;
            let mut sent = 0usize;
            while let Some((key, value)) = records.next().await {
                let mut line = key;
                line.push(b' ');
                line.extend_from_slice(&value);
                line.push(b'\n');
                // tokio-uring owns the buffer while the kernel writes it.
                let (res, _) = socket.write_all(line).await;
                res?;
                sent += 1;
            }
            Ok::<usize, Box<dyn std::error::Error>>(sent)
        });

        let client = tokio_uring::net::TcpStream::connect(addr).await?;
        let mut lines = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let (res, b) = client.read(buf).await;
            let n = res?;
            if n == 0 {
                break;
            }
            lines += b[..n].iter().filter(|c| **c == b'\n').count();
            buf = b;
            if lines == tasks {
                break;
            }
        }
        let sent = server.await??;
        println!("streamed {sent} records over TCP; the client read {lines} lines");
        assert_eq!(lines, tasks);
        db.close().await?;
        Ok(())
    })
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("tokio-uring runs on Linux only");
}
