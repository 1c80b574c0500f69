//! The engine's records in an embedded database (redb), beside the image
//! store's: containers by ID, names → ID, volumes and pods.
//!
//! As in the image store, redb lets one process open a database at a
//! time, so every operation opens it under a blocking flock and closes it
//! again; nothing holds it while a container runs. A record is written in
//! one transaction with its name, so a name is never taken by two.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One table of JSON records by key, and the names that point at them.
pub(crate) struct Kind {
    pub records: TableDefinition<'static, &'static str, &'static [u8]>,
    pub names: TableDefinition<'static, &'static str, &'static str>,
    /// "container", "pod", "volume": for messages.
    pub what: &'static str,
}

pub(crate) const CONTAINERS: Kind = Kind {
    records: TableDefinition::new("containers"),
    names: TableDefinition::new("container_names"),
    what: "container",
};
pub(crate) const PODS: Kind = Kind {
    records: TableDefinition::new("pods"),
    names: TableDefinition::new("pod_names"),
    what: "pod",
};
pub(crate) const VOLUMES: Kind = Kind {
    records: TableDefinition::new("volumes"),
    names: TableDefinition::new("volume_names"),
    what: "volume",
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("engine database {}: {reason}", path.display())]
    Db { path: PathBuf, reason: String },
    #[error("engine database lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} name {name:?} is already in use by {id}")]
    NameInUse {
        what: &'static str,
        name: String,
        id: String,
    },
    #[error("{what} record {key}: {source}")]
    Decode {
        what: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

pub(crate) struct Db {
    path: PathBuf,
    lock_path: PathBuf,
}

/// The open database and the flock that makes this process its only
/// user; the database closes before the lock is released.
struct Open {
    db: redb::Database,
    _lock: Flock<File>,
}

impl Db {
    pub fn new(root: &Path) -> Db {
        Db {
            path: root.join("engine.db"),
            lock_path: root.join("engine.db.lock"),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn open(&self) -> Result<Open, DbError> {
        let lock_err = |source| DbError::Lock {
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
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(lock_err(std::io::Error::from(e))),
            }
        };
        let db = hako_image::store::open_database(&self.path).map_err(|e| self.err(e))?;
        Ok(Open { db, _lock: lock })
    }

    /// A write transaction whose commit is complete and consistent in the
    /// file but not fsynced (redb's Eventual durability): every later
    /// process sees it, a killed `hako` cannot tear it, and only a crash
    /// of the whole machine may lose the last commits (whose containers
    /// did not survive that crash either; `system prune` removes what
    /// their directories held). It saves ~5 ms of fdatasync per command.
    fn begin_write(&self, o: &Open) -> Result<redb::WriteTransaction, DbError> {
        let mut tx = o.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(redb::Durability::Eventual);
        Ok(tx)
    }

    /// Inserts a new record under `key`, taking `name` (if any) for it.
    pub fn insert<T: Serialize>(
        &self,
        kind: &Kind,
        key: &str,
        name: Option<&str>,
        rec: &T,
    ) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let o = self.open()?;
        let tx = self.begin_write(&o)?;
        {
            let mut names = tx.open_table(kind.names).map_err(|e| self.err(e))?;
            if let Some(n) = name {
                if let Some(id) = names.get(n).map_err(|e| self.err(e))? {
                    return Err(DbError::NameInUse {
                        what: kind.what,
                        name: n.to_string(),
                        id: id.value().to_string(),
                    });
                }
                names.insert(n, key).map_err(|e| self.err(e))?;
            }
            let mut recs = tx.open_table(kind.records).map_err(|e| self.err(e))?;
            recs.insert(key, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Replaces the record under `key` (its name stays).
    pub fn update<T: Serialize>(&self, kind: &Kind, key: &str, rec: &T) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        let o = self.open()?;
        let tx = self.begin_write(&o)?;
        {
            let mut recs = tx.open_table(kind.records).map_err(|e| self.err(e))?;
            recs.insert(key, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Removes the record under `key` and every name pointing at it.
    pub fn remove(&self, kind: &Kind, key: &str) -> Result<bool, DbError> {
        let o = self.open()?;
        let tx = self.begin_write(&o)?;
        let existed;
        {
            let mut recs = tx.open_table(kind.records).map_err(|e| self.err(e))?;
            existed = recs.remove(key).map_err(|e| self.err(e))?.is_some();
            let mut names = tx.open_table(kind.names).map_err(|e| self.err(e))?;
            let mine: Vec<String> = names
                .iter()
                .map_err(|e| self.err(e))?
                .flatten()
                .filter(|(_, v)| v.value() == key)
                .map(|(k, _)| k.value().to_string())
                .collect();
            for n in mine {
                names.remove(n.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(existed)
    }

    /// Every record of `kind`, with its key.
    pub fn all<T: DeserializeOwned>(&self, kind: &Kind) -> Result<Vec<(String, T)>, DbError> {
        let o = self.open()?;
        let tx = o.db.begin_read().map_err(|e| self.err(e))?;
        let recs = match tx.open_table(kind.records) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for row in recs.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let key = k.value().to_string();
            let rec = serde_json::from_slice(v.value()).map_err(|source| DbError::Decode {
                what: kind.what,
                key: key.clone(),
                source,
            })?;
            out.push((key, rec));
        }
        Ok(out)
    }

    /// The record named or keyed `what`, or whose key starts with it
    /// (at least 3 characters, one match only): `Ok(None)` if none.
    pub fn find<T: DeserializeOwned>(
        &self,
        kind: &Kind,
        what: &str,
    ) -> Result<Option<(String, T)>, FindError> {
        let o = self.open()?;
        let tx = o.db.begin_read().map_err(|e| self.err(e))?;
        let recs = match tx.open_table(kind.records) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e).into()),
        };
        let decode = |key: &str, v: &[u8]| {
            serde_json::from_slice(v).map_err(|source| DbError::Decode {
                what: kind.what,
                key: key.to_string(),
                source,
            })
        };
        if let Some(v) = recs.get(what).map_err(|e| self.err(e))? {
            return Ok(Some((what.to_string(), decode(what, v.value())?)));
        }
        if let Ok(names) = tx.open_table(kind.names) {
            if let Some(id) = names.get(what).map_err(|e| self.err(e))? {
                let id = id.value().to_string();
                if let Some(v) = recs.get(id.as_str()).map_err(|e| self.err(e))? {
                    return Ok(Some((id.clone(), decode(&id, v.value())?)));
                }
            }
        }
        if what.len() < 3 || !what.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut hits = Vec::new();
        for row in recs.range(what..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            if !k.value().starts_with(what) {
                break;
            }
            hits.push((k.value().to_string(), v.value().to_vec()));
            if hits.len() > 1 {
                return Err(FindError::Ambiguous {
                    what: kind.what,
                    prefix: what.to_string(),
                });
            }
        }
        match hits.pop() {
            Some((k, v)) => {
                let rec = decode(&k, &v)?;
                Ok(Some((k, rec)))
            }
            None => Ok(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{prefix:?} is the start of several {what} IDs: give more of it")]
    Ambiguous { what: &'static str, prefix: String },
}
