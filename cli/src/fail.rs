//! Failures and their exit codes. Every message names what failed and what
//! to do.

use std::path::Path;

/// Exit code: `verify` found damage.
pub const DAMAGE_FOUND: u8 = 1;
/// Exit code: no database, key or namespace.
pub const NOT_FOUND: u8 = 3;
/// Exit code: another process holds the database.
pub const LOCKED: u8 = 4;
/// Exit code: a key is needed, or the key is wrong.
pub const ENCRYPTION: u8 = 5;
/// Exit code: the open refused a damaged database.
pub const DAMAGED: u8 = 6;
/// Exit code: anything else.
pub const OTHER: u8 = 7;

/// A failed command: its exit code and message.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A library error met while working on the database at `path`.
    pub fn emdb(e: emdb::Error, path: &Path) -> Failure {
        use emdb::Error as E;
        let p = path.display();
        match e {
            E::LockBusy { .. } => Failure::new(LOCKED, locked_message(path)),
            E::EncryptionKeyMismatch => Failure::new(
                ENCRYPTION,
                format!("{p}: the key or passphrase is wrong; nothing was read or changed"),
            ),
            E::Encryption(why) => Failure::new(ENCRYPTION, format!("{p}: {why}")),
            E::Corrupted { .. } | E::MagicMismatch | E::VersionMismatch { .. } => Failure::new(
                DAMAGED,
                format!("{p}: {e}\n(run `emdb verify {p}` to list every problem)"),
            ),
            E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                Failure::new(NOT_FOUND, format!("{p}: {io}"))
            }
            E::InvalidConfig(_) => Failure::new(2, format!("{p}: {e}")),
            other => Failure::new(OTHER, format!("{p}: {other}")),
        }
    }

    /// An I/O error of the command itself (stdout, an input file).
    pub fn io(what: &str, e: std::io::Error) -> Failure {
        Failure::new(OTHER, format!("{what}: {e}"))
    }
}

/// What to say when the database at `path` is held: who holds it, and
/// what to do.
pub fn locked_message(path: &Path) -> String {
    let p = path.display();
    match emdb::Emdb::lock_holder(path) {
        Ok(Some(h)) => {
            let alive = crate::fmt::pid_alive(h.pid);
            format!(
                "{p} is in use by process {} ({}, emdb {}, since {}); stop it first{}",
                h.pid,
                if alive {
                    "running"
                } else {
                    "no longer running"
                },
                h.crate_version.as_deref().unwrap_or("?"),
                crate::fmt::time(h.acquired_at_unix_millis),
                if alive {
                    ""
                } else {
                    ", or remove its stale lock with `emdb lock --break`"
                }
            )
        }
        _ => format!(
            "{p} is in use by read-only handles (another `emdb` command, or a program that \
             opened it read-only); wait for them to finish"
        ),
    }
}
