//! `emdb`: the operator's command line for an emdb database.
//!
//! Read-only commands (`stats`, `verify`, `dump`, `get`, `backup`, `lock`)
//! open the database read-only and change no byte of it. The rest open it
//! for writing. The exit codes are in [`fail`] and in `emdb --help`.

mod bench;
mod cmds;
mod fail;
mod fmt;
mod maint;
mod open;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Encrypted databases: the key comes from EMDB_KEY (64 hex digits) or
EMDB_PASSPHRASE, else from a prompt on the terminal; never from an argument.
The new key of `encrypt` and `rotate-key` comes from EMDB_NEW_KEY or
EMDB_NEW_PASSPHRASE, else from a prompt (asked twice).

Exit codes:
  0  success
  1  `verify` found damage
  2  bad arguments, or a setting out of range
  3  not found: no database at PATH, no such key or namespace
  4  the database is locked by another process (the message names it)
  5  encryption: a key is needed, or the key or passphrase is wrong
  6  the database is damaged: the open refused it, or `dump` skipped
     damaged records (run `emdb verify`)
  7  any other error (I/O, a full disk, a value over a limit)";

/// Inspect, verify, dump, maintain and benchmark an emdb database.
#[derive(Parser)]
#[command(name = "emdb", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Records, namespaces, sizes, dead bytes, shards and backend.
    Stats {
        /// The database directory.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every segment, frame checksum, manifest and hint file,
    /// changing nothing; exit 1 if anything is damaged.
    Verify {
        /// The database directory.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write records to stdout, streaming (memory stays bounded).
    Dump(DumpArgs),
    /// Print the value of KEY (exactly its bytes; exit 3 if absent).
    Get {
        /// The database directory.
        path: PathBuf,
        /// The key.
        key: String,
        #[command(flatten)]
        at: KeyArgs,
    },
    /// Store VALUE (or the bytes of --file, or stdin) under KEY, durably.
    Put {
        /// The database directory.
        path: PathBuf,
        /// The key.
        key: String,
        /// The value; without it (and without --file) stdin is read.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Expire the record after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Create the database (and the --namespace) if there is none.
        #[arg(long)]
        create: bool,
        #[command(flatten)]
        at: KeyArgs,
    },
    /// Remove KEY, durably (exit 3 if it was absent).
    Remove {
        /// The database directory.
        path: PathBuf,
        /// The key.
        key: String,
        #[command(flatten)]
        at: KeyArgs,
    },
    /// Reclaim the space of dead records, with a progress bar.
    Compact {
        /// The database directory.
        path: PathBuf,
        /// Compact segments at least this dead: a fraction above 0 and at
        /// most 1 (default 0.4; 0.01 takes nearly every segment).
        #[arg(long)]
        threshold: Option<f64>,
    },
    /// Copy the database to DEST (a new directory), with a progress bar.
    Backup {
        /// The database directory.
        path: PathBuf,
        /// Where the copy goes: must not exist, or be empty.
        dest: PathBuf,
    },
    /// Write hint files so the next open is fast, with a progress bar.
    Checkpoint {
        /// The database directory.
        path: PathBuf,
    },
    /// Show who holds the database's lock; --break removes a stale one.
    Lock {
        /// The database directory.
        path: PathBuf,
        /// Remove the lock; refused while a live process holds it.
        #[arg(long = "break")]
        break_it: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Concurrent durable writers (insert + flush) on this disk: live
    /// records/s and records per device flush.
    Bench(bench::BenchArgs),
    /// Encrypt a closed plaintext database in place (atomically).
    Encrypt {
        /// The database directory.
        path: PathBuf,
    },
    /// Decrypt a closed encrypted database in place (atomically).
    Decrypt {
        /// The database directory.
        path: PathBuf,
    },
    /// Change the key or passphrase of a closed encrypted database.
    RotateKey {
        /// The database directory.
        path: PathBuf,
    },
}

/// Where a key lives and how it is spelled.
#[derive(Args, Clone, Default)]
struct KeyArgs {
    /// The namespace (default: the database's default namespace).
    #[arg(short, long)]
    namespace: Option<String>,
    /// KEY (and --prefix) are hex digits, for keys that are not text.
    #[arg(long)]
    hex_key: bool,
}

#[derive(Args)]
struct DumpArgs {
    /// The database directory.
    path: PathBuf,
    /// Only this namespace (default: every namespace, the default first).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Only keys that start with these bytes.
    #[arg(long)]
    prefix: Option<String>,
    /// --prefix is hex digits.
    #[arg(long)]
    hex_key: bool,
    /// At most this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// tsv: namespace, key, value, escaped (\t \n \r \\ \xNN); json: one
    /// object per line (key_hex/value_hex where not UTF-8); hex: the
    /// namespace, then key and value as hex digits.
    #[arg(long, value_enum, default_value_t = Format::Tsv)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Tsv,
    Json,
    Hex,
}

fn main() -> ExitCode {
    // Like other Unix tools: a reader that closes the pipe early
    // (`emdb dump db | head`) ends this process quietly by SIGPIPE,
    // instead of a panic in println!.
    // SAFETY: setting a signal's disposition to its default, before any
    // thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("emdb: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(command: Command) -> Result<u8, fail::Failure> {
    match command {
        Command::Stats { path, json } => cmds::stats(&path, json),
        Command::Verify { path, json } => cmds::verify(&path, json),
        Command::Dump(a) => cmds::dump(&a),
        Command::Get { path, key, at } => cmds::get(&path, &key, &at),
        Command::Put {
            path,
            key,
            value,
            file,
            ttl,
            create,
            at,
        } => cmds::put(&path, &key, (value, file), ttl, create, &at),
        Command::Remove { path, key, at } => cmds::remove(&path, &key, &at),
        Command::Compact { path, threshold } => maint::compact(&path, threshold),
        Command::Backup { path, dest } => maint::backup(&path, &dest),
        Command::Checkpoint { path } => maint::checkpoint(&path),
        Command::Lock {
            path,
            break_it,
            json,
        } => cmds::lock(&path, break_it, json),
        Command::Bench(a) => bench::run(&a),
        Command::Encrypt { path } => cmds::encrypt(&path),
        Command::Decrypt { path } => cmds::decrypt(&path),
        Command::RotateKey { path } => cmds::rotate_key(&path),
    }
}
