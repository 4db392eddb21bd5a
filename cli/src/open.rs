//! Opening a database: read-only for the commands that only look, and the
//! key of an encrypted one from the environment or a prompt, never from an
//! argument.

use std::path::Path;

use emdb::{Emdb, EmdbBuilder, EncryptionInput};

use crate::fail::{Failure, ENCRYPTION, NOT_FOUND};

/// The file that marks an encrypted database (its wrapped key).
const KEYRING: &str = "KEYRING";

/// Which key to read.
#[derive(Clone, Copy)]
pub enum Which {
    /// The database's key: `EMDB_KEY` or `EMDB_PASSPHRASE`.
    Current,
    /// The key a command sets: `EMDB_NEW_KEY` or `EMDB_NEW_PASSPHRASE`.
    New,
}

/// The key or passphrase for `path`, from the environment or, on a
/// terminal, a prompt (a new one is asked twice).
pub fn input(path: &Path, which: Which) -> Result<EncryptionInput, Failure> {
    let (key_var, pass_var, label) = match which {
        Which::Current => ("EMDB_KEY", "EMDB_PASSPHRASE", "Passphrase"),
        Which::New => ("EMDB_NEW_KEY", "EMDB_NEW_PASSPHRASE", "New passphrase"),
    };
    if let Ok(hex) = std::env::var(key_var) {
        let bytes = crate::fmt::unhex(&hex)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                Failure::new(
                    ENCRYPTION,
                    format!("{key_var} must be 64 hex digits (a 32-byte key)"),
                )
            })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        return Ok(EncryptionInput::Key(key));
    }
    if let Ok(p) = std::env::var(pass_var) {
        if p.is_empty() {
            return Err(Failure::new(ENCRYPTION, format!("{pass_var} is empty")));
        }
        return Ok(EncryptionInput::Passphrase(p));
    }
    let no_terminal = |e: std::io::Error| {
        Failure::new(
            ENCRYPTION,
            format!(
                "{}: a key is needed and there is no terminal to ask on ({e}); set {pass_var} \
                 or {key_var} (64 hex digits)",
                path.display()
            ),
        )
    };
    let p = rpassword::prompt_password(format!("{label} for {}: ", path.display()))
        .map_err(no_terminal)?;
    if matches!(which, Which::New) {
        let again = rpassword::prompt_password("Repeat it: ").map_err(no_terminal)?;
        if again != p {
            return Err(Failure::new(
                ENCRYPTION,
                "the two passphrases differ; nothing changed",
            ));
        }
    }
    if p.is_empty() {
        return Err(Failure::new(
            ENCRYPTION,
            "an empty passphrase; nothing changed",
        ));
    }
    Ok(EncryptionInput::Passphrase(p))
}

/// Whether the database at `path` is encrypted.
pub fn encrypted(path: &Path) -> bool {
    path.join(KEYRING).exists()
}

/// A builder for `path` with its key, if it is encrypted. A path that is
/// not a directory is "not found" at once, so no command creates one.
pub fn builder(path: &Path) -> Result<EmdbBuilder, Failure> {
    if !path.is_dir() {
        return Err(Failure::new(
            NOT_FOUND,
            format!("{}: no database directory there", path.display()),
        ));
    }
    let b = Emdb::builder().path(path);
    Ok(if encrypted(path) {
        match input(path, Which::Current)? {
            EncryptionInput::Key(k) => b.encryption_key(k),
            EncryptionInput::Passphrase(p) => b.encryption_passphrase(p),
        }
    } else {
        b
    })
}

/// Opens `path` read-only: no byte of it changes.
pub fn read_only(path: &Path) -> Result<Emdb, Failure> {
    builder(path)?
        .read_only(true)
        .build()
        .map_err(|e| Failure::emdb(e, path))
}

/// Opens `path` for writing (it must exist: no command creates one).
pub fn writable(path: &Path, b: impl FnOnce(EmdbBuilder) -> EmdbBuilder) -> Result<Emdb, Failure> {
    if !path.join("MANIFEST").exists() {
        return Err(Failure::new(
            NOT_FOUND,
            format!("{}: no emdb database there (no MANIFEST)", path.display()),
        ));
    }
    b(builder(path)?)
        .background_compaction(false)
        .build()
        .map_err(|e| Failure::emdb(e, path))
}
