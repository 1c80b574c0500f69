//! Records by key, with unique names pointing at them, in one SQLite
//! database file that several hako processes use at once: the image
//! store's images (`hako.db`) and the engine's containers, pods and
//! volumes (`engine.db`).
//!
//! ```text
//! records (kind, key)  → value      a JSON document, opaque here
//! names   (kind, name) → key        unique per kind
//! ```
//!
//! Why SQLite in WAL mode: every `hako` command opens the database, does
//! one or two transactions and exits, so what an open, a read and a
//! commit cost is what a user waits for. In WAL mode an open and a read
//! write nothing, and with `synchronous=NORMAL` a commit appends to the
//! log without an fsync; the log is fsynced when it is checkpointed into
//! the database (every ~4 MB of commits). A process killed at any moment
//! leaves the database consistent (a commit is there whole or not at
//! all, and the next opener recovers the log); a crash of the whole
//! machine may lose the last commits but never corrupts the file.
//!
//! Checkpoints: by default SQLite checkpoints when the last connection
//! closes (two fsyncs and a directory fsync per `hako` command) or at
//! 1000 log pages. Neither suits processes that each open the database
//! for one transaction: the first costs every command, and with the
//! second, each opener rebuilds the log index from the whole log (the
//! shared-memory index dies with the last connection) and then counts
//! every frame as not yet checkpointed, so once the log is past 1000
//! pages *every* commit checkpoints it all again. So connections do not
//! checkpoint on close, and a writer that leaves more than
//! [`CHECKPOINT_AT`] bytes of log checkpoints and truncates it: the log
//! stays small, the fsyncs come once per few dozen commits.
//!
//! Writers take an flock on `<file>.lock` before `BEGIN IMMEDIATE`, so
//! concurrent writers queue in the kernel instead of sleeping in
//! SQLite's busy handler; readers take no lock (WAL lets them read
//! beside a writer). The busy timeout stays as a safety net for the
//! moments SQLite itself holds a lock (recovery, checkpoints).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

/// The schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_key ON names (kind, key);
";

/// How long a reader or writer waits on a lock SQLite holds itself.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The log size past which a writer checkpoints and truncates it (a
/// container's record is a few pages).
const CHECKPOINT_AT: u64 = 256 * 1024;

/// How long that checkpoint waits for readers before leaving it to a
/// later writer.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("database {}: {op}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: Box<rusqlite::Error>,
    },
    #[error(
        "database {}: not an SQLite database (stores made before hako moved to SQLite used redb: \
         move the file away and pull or create again)",
        path.display()
    )]
    NotSqlite { path: PathBuf },
    #[error("database {}: schema version {found}, newer than this hako knows ({SCHEMA_VERSION})", path.display())]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("database lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A database file; nothing is opened until a transaction runs.
#[derive(Debug, Clone)]
pub struct Database {
    path: PathBuf,
    lock_path: PathBuf,
}

impl Database {
    /// The database at `path` (created on first use), whose writers lock
    /// `<path>.lock`.
    pub fn new(path: &Path) -> Database {
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        Database {
            path: path.to_path_buf(),
            lock_path: PathBuf::from(lock),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite_err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordsError + '_ {
        move |source| {
            if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase)
            ) {
                RecordsError::NotSqlite {
                    path: self.path.clone(),
                }
            } else {
                RecordsError::Sqlite {
                    path: self.path.clone(),
                    op,
                    source: Box::new(source),
                }
            }
        }
    }

    /// Blocks until this process is the only writer.
    fn write_lock(&self) -> Result<Flock<File>, RecordsError> {
        let lock_err = |source| RecordsError::Lock {
            path: self.lock_path.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(lock_err)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => return Ok(l),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(lock_err(std::io::Error::from(e))),
            }
        }
    }

    /// Opens a connection, creating the file and its schema if needed.
    fn connect(&self) -> Result<Connection, RecordsError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(self.sqlite_err("opening"))?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(self.sqlite_err("configuring"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(self.sqlite_err("configuring"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(self.sqlite_err("configuring"))?;
        let version = Self::schema_version(&conn).map_err(self.sqlite_err("reading the schema"))?;
        if version > SCHEMA_VERSION {
            return Err(RecordsError::NewerSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            let _lock = self.write_lock()?;
            // Another process may have made it meanwhile: all of this is
            // idempotent. The journal mode sticks to the file and cannot
            // change inside a transaction.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(self.sqlite_err("switching to WAL"))?;
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(self.sqlite_err("creating the schema"))?;
        }
        Ok(conn)
    }

    fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
    }

    /// Runs `f` in a read transaction: it sees one consistent state.
    pub fn read<T, E: From<RecordsError>>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(self.sqlite_err("beginning a read"))?;
        let r = Reader {
            conn: &tx,
            path: &self.path,
        };
        f(&r)
    }

    /// Runs `f` in a write transaction, committed if `f` returns `Ok` and
    /// rolled back otherwise.
    pub fn write<T, E: From<RecordsError>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.connect()?;
        let _lock = self.write_lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sqlite_err("beginning a write"))?;
        let out = f(&Writer {
            reader: Reader {
                conn: &tx,
                path: &self.path,
            },
        })?;
        tx.commit().map_err(self.sqlite_err("committing"))?;
        self.checkpoint_if_large(&conn);
        Ok(out)
    }

    fn wal_path(&self) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push("-wal");
        PathBuf::from(p)
    }

    /// Checkpoints and truncates the log once it is past [`CHECKPOINT_AT`]
    /// (the caller still holds the write lock). Best effort: when readers
    /// keep it busy, the next writer tries again.
    fn checkpoint_if_large(&self, conn: &Connection) {
        let big = std::fs::metadata(self.wal_path()).is_ok_and(|m| m.len() > CHECKPOINT_AT);
        if big && conn.busy_timeout(CHECKPOINT_WAIT).is_ok() {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

/// The reads of a transaction.
pub struct Reader<'t> {
    conn: &'t Connection,
    path: &'t Path,
}

/// A record: its key and value.
pub type Row = (String, Vec<u8>);

impl Reader<'_> {
    fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordsError + '_ {
        move |source| RecordsError::Sqlite {
            path: self.path.to_path_buf(),
            op,
            source: Box::new(source),
        }
    }

    /// The value of record `key` of `kind`.
    pub fn get(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, RecordsError> {
        self.conn
            .prepare_cached("SELECT value FROM records WHERE kind = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row((kind, key), |r| r.get(0)).optional())
            .map_err(self.err("reading a record"))
    }

    /// Every record of `kind`, by key.
    pub fn all(&self, kind: &str) -> Result<Vec<Row>, RecordsError> {
        self.conn
            .prepare_cached("SELECT key, value FROM records WHERE kind = ?1 ORDER BY key")
            .and_then(|mut s| {
                s.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(self.err("listing records"))
    }

    /// Up to `limit` records of `kind` whose key starts with `prefix`, by key.
    pub fn with_prefix(
        &self,
        kind: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Row>, RecordsError> {
        // Keys from `prefix` up to (not including) the prefix with its last
        // character advanced; the Rust check keeps it exact for any text.
        let upper = next_prefix(prefix);
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT key, value FROM records WHERE kind = ?1 AND key >= ?2 \
                 AND (?3 IS NULL OR key < ?3) ORDER BY key",
            )
            .and_then(|mut s| {
                s.query_map((kind, prefix, upper), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .filter(|row| {
                        row.as_ref()
                            .map_or(true, |(k, _): &Row| k.starts_with(prefix))
                    })
                    .take(limit)
                    .collect()
            })
            .map_err(self.err("looking up a key prefix"))?;
        Ok(rows)
    }

    /// The key name `name` of `kind` points at.
    pub fn name(&self, kind: &str, name: &str) -> Result<Option<String>, RecordsError> {
        self.conn
            .prepare_cached("SELECT key FROM names WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.query_row((kind, name), |r| r.get(0)).optional())
            .map_err(self.err("reading a name"))
    }

    /// The names of `kind` that point at `key`.
    pub fn names_of(&self, kind: &str, key: &str) -> Result<Vec<String>, RecordsError> {
        self.conn
            .prepare_cached("SELECT name FROM names WHERE kind = ?1 AND key = ?2 ORDER BY name")
            .and_then(|mut s| s.query_map((kind, key), |r| r.get(0))?.collect())
            .map_err(self.err("reading names"))
    }
}

/// The writes of a transaction (and its reads, through `Deref`).
pub struct Writer<'t> {
    reader: Reader<'t>,
}

impl<'t> std::ops::Deref for Writer<'t> {
    type Target = Reader<'t>;
    fn deref(&self) -> &Reader<'t> {
        &self.reader
    }
}

impl Writer<'_> {
    /// Adds or replaces record `key` of `kind`.
    pub fn put(&self, kind: &str, key: &str, value: &[u8]) -> Result<(), RecordsError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute((kind, key, value)))
            .map(drop)
            .map_err(self.err("writing a record"))
    }

    /// Removes record `key` of `kind`, returning its value (its names stay:
    /// see [`Writer::remove_names_of`]).
    pub fn delete(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, RecordsError> {
        let old = self.get(kind, key)?;
        if old.is_some() {
            self.conn
                .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")
                .and_then(|mut s| s.execute((kind, key)))
                .map_err(self.err("removing a record"))?;
        }
        Ok(old)
    }

    /// Points `name` of `kind` at `key`, returning the key it pointed at.
    pub fn set_name(
        &self,
        kind: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, RecordsError> {
        let old = self.name(kind, name)?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO names (kind, name, key) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute((kind, name, key)))
            .map_err(self.err("writing a name"))?;
        Ok(old)
    }

    /// Removes `name` of `kind`, returning the key it pointed at.
    pub fn remove_name(&self, kind: &str, name: &str) -> Result<Option<String>, RecordsError> {
        let old = self.name(kind, name)?;
        if old.is_some() {
            self.conn
                .prepare_cached("DELETE FROM names WHERE kind = ?1 AND name = ?2")
                .and_then(|mut s| s.execute((kind, name)))
                .map_err(self.err("removing a name"))?;
        }
        Ok(old)
    }

    /// Removes every name of `kind` that points at `key`; returns how many.
    pub fn remove_names_of(&self, kind: &str, key: &str) -> Result<usize, RecordsError> {
        self.conn
            .prepare_cached("DELETE FROM names WHERE kind = ?1 AND key = ?2")
            .and_then(|mut s| s.execute((kind, key)))
            .map_err(self.err("removing names"))
    }
}

/// The smallest string above every string that starts with `prefix`
/// when one exists: `prefix` with its last character advanced by one.
fn next_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if next == 0xD800 {
            next = 0xE000; // skip the surrogates
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "hako-records-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    type R<T> = Result<T, RecordsError>;

    #[test]
    fn records_and_names_round_trip() -> R<()> {
        let d = TempDir::new("rt");
        let db = Database::new(&d.0.join("t.db"));
        db.write(|w| {
            w.put("c", "abc1", b"one")?;
            w.put("c", "abd2", b"two")?;
            w.put("p", "abc1", b"other kind")?;
            assert_eq!(w.set_name("c", "web", "abc1")?, None);
            assert_eq!(w.set_name("c", "web2", "abc1")?, None);
            Ok::<_, RecordsError>(())
        })?;
        db.read(|r| {
            assert_eq!(r.get("c", "abc1")?.as_deref(), Some(&b"one"[..]));
            assert_eq!(r.get("c", "nope")?, None);
            assert_eq!(r.all("c")?.len(), 2);
            assert_eq!(r.name("c", "web")?.as_deref(), Some("abc1"));
            assert_eq!(r.names_of("c", "abc1")?, vec!["web", "web2"]);
            assert_eq!(r.with_prefix("c", "ab", 5)?.len(), 2);
            assert_eq!(r.with_prefix("c", "abc", 5)?[0].0, "abc1");
            assert_eq!(r.with_prefix("c", "ab", 1)?.len(), 1);
            assert!(r.with_prefix("c", "b", 5)?.is_empty());
            Ok::<_, RecordsError>(())
        })?;
        db.write(|w| {
            assert_eq!(w.delete("c", "abc1")?.as_deref(), Some(&b"one"[..]));
            assert_eq!(w.remove_names_of("c", "abc1")?, 2);
            assert_eq!(w.remove_name("c", "web")?, None);
            Ok::<_, RecordsError>(())
        })?;
        db.read(|r| {
            assert_eq!(r.all("c")?.len(), 1);
            assert_eq!(r.all("p")?.len(), 1);
            Ok::<_, RecordsError>(())
        })
    }

    #[test]
    fn a_failed_write_is_rolled_back() -> R<()> {
        let d = TempDir::new("rb");
        let db = Database::new(&d.0.join("t.db"));
        let e = db.write(|w| {
            w.put("c", "k", b"v")?;
            Err::<(), _>(RecordsError::Lock {
                path: "x".into(),
                source: std::io::Error::other("stop"),
            })
        });
        assert!(e.is_err());
        db.read(|r| {
            assert_eq!(r.get("c", "k")?, None);
            Ok::<_, RecordsError>(())
        })
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_named_in_the_error() {
        let d = TempDir::new("bad");
        let p = d.0.join("t.db");
        std::fs::write(&p, [b'r'; 4096]).unwrap_or_else(|e| panic!("{e}"));
        let e = Database::new(&p)
            .read(|r| r.all("c"))
            .expect_err("garbage opened");
        assert!(matches!(e, RecordsError::NotSqlite { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn concurrent_writers_lose_nothing() -> R<()> {
        let d = TempDir::new("conc");
        let db = Database::new(&d.0.join("t.db"));
        std::thread::scope(|s| {
            for t in 0..4 {
                let db = db.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        db.write(|w| w.put("c", &format!("{t}-{i}"), b"x"))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                });
            }
        });
        db.read(|r| {
            assert_eq!(r.all("c")?.len(), 100);
            Ok::<_, RecordsError>(())
        })
    }

    #[test]
    fn the_log_stays_small_across_many_short_lived_writers() -> R<()> {
        let d = TempDir::new("wal");
        let db = Database::new(&d.0.join("t.db"));
        let value = vec![b'x'; 6000]; // two pages, like a container record
        for i in 0..300 {
            // A new connection each time, as every `hako` command has.
            db.write(|w| w.put("c", &format!("{i:04}"), &value))?;
            let wal = std::fs::metadata(db.wal_path()).map_or(0, |m| m.len());
            assert!(
                wal <= CHECKPOINT_AT + 64 * 1024,
                "log {wal} bytes after {i} writes"
            );
        }
        db.read(|r| {
            assert_eq!(r.all("c")?.len(), 300);
            Ok::<_, RecordsError>(())
        })
    }

    #[test]
    fn next_prefix_advances_the_last_character() {
        assert_eq!(next_prefix("ab").as_deref(), Some("ac"));
        assert_eq!(next_prefix("a9").as_deref(), Some("a:"));
        assert_eq!(next_prefix(""), None);
        assert_eq!(next_prefix("a\u{10FFFF}").as_deref(), Some("b"));
    }
}
