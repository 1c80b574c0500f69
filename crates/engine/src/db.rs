//! The engine's records in an embedded database (SQLite through
//! hako-records, `engine.db`), beside the image store's: containers by
//! ID, names → ID, volumes and pods.
//!
//! Every operation is one transaction of its own; nothing holds the
//! database while a container runs. A record is written in one
//! transaction with its name, so a name is never taken by two. Commits
//! are not fsynced (WAL with `synchronous=NORMAL`): every later process
//! sees them and a killed `hako` cannot tear them; only a crash of the
//! whole machine may lose the last ones (whose containers did not survive
//! that crash either; `system prune` removes what their directories held).

use std::path::{Path, PathBuf};

use hako_records::{Database, RecordsError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One kind of JSON record by key, with the names that point at them.
pub(crate) struct Kind {
    /// The records' kind in the database: "container", "pod", "volume"
    /// (also what messages call them).
    pub what: &'static str,
}

pub(crate) const CONTAINERS: Kind = Kind { what: "container" };
pub(crate) const PODS: Kind = Kind { what: "pod" };
pub(crate) const VOLUMES: Kind = Kind { what: "volume" };

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("engine {0}")]
    Db(#[from] RecordsError),
    #[error("engine database {}: {what} record {key}: {reason}", path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        key: String,
        reason: String,
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
    db: Database,
}

fn decode<T: DeserializeOwned>(kind: &Kind, key: &str, v: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(v).map_err(|source| DbError::Decode {
        what: kind.what,
        key: key.to_string(),
        source,
    })
}

impl Db {
    pub fn new(root: &Path) -> Db {
        Db {
            db: Database::new(&root.join("engine.db")),
        }
    }

    fn encode<T: Serialize>(&self, kind: &Kind, key: &str, rec: &T) -> Result<Vec<u8>, DbError> {
        serde_json::to_vec(rec).map_err(|e| DbError::Encode {
            path: self.db.path().to_path_buf(),
            what: kind.what,
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Inserts a new record under `key`, taking `name` (if any) for it.
    pub fn insert<T: Serialize>(
        &self,
        kind: &Kind,
        key: &str,
        name: Option<&str>,
        rec: &T,
    ) -> Result<(), DbError> {
        let bytes = self.encode(kind, key, rec)?;
        self.db.write(|w| {
            if let Some(n) = name {
                if let Some(id) = w.name(kind.what, n)? {
                    return Err(DbError::NameInUse {
                        what: kind.what,
                        name: n.to_string(),
                        id,
                    });
                }
                w.set_name(kind.what, n, key)?;
            }
            w.put(kind.what, key, &bytes)?;
            Ok(())
        })
    }

    /// Replaces the record under `key` (its name stays).
    pub fn update<T: Serialize>(&self, kind: &Kind, key: &str, rec: &T) -> Result<(), DbError> {
        let bytes = self.encode(kind, key, rec)?;
        self.db.write(|w| {
            w.put(kind.what, key, &bytes)?;
            Ok(())
        })
    }

    /// Replaces the record under `key` and moves its name `from` to `to`
    /// (which must be free), in one transaction.
    pub fn rename<T: Serialize>(
        &self,
        kind: &Kind,
        key: &str,
        from: &str,
        to: &str,
        rec: &T,
    ) -> Result<(), DbError> {
        let bytes = self.encode(kind, key, rec)?;
        self.db.write(|w| {
            if let Some(id) = w.name(kind.what, to)? {
                return Err(DbError::NameInUse {
                    what: kind.what,
                    name: to.to_string(),
                    id,
                });
            }
            w.remove_name(kind.what, from)?;
            w.set_name(kind.what, to, key)?;
            w.put(kind.what, key, &bytes)?;
            Ok(())
        })
    }

    /// Removes the record under `key` and every name pointing at it.
    pub fn remove(&self, kind: &Kind, key: &str) -> Result<bool, DbError> {
        self.db.write(|w| {
            let existed = w.delete(kind.what, key)?.is_some();
            w.remove_names_of(kind.what, key)?;
            Ok(existed)
        })
    }

    /// Every record of `kind`, with its key.
    pub fn all<T: DeserializeOwned>(&self, kind: &Kind) -> Result<Vec<(String, T)>, DbError> {
        let rows = self.db.read(|r| r.all(kind.what).map_err(DbError::from))?;
        rows.into_iter()
            .map(|(k, v)| {
                let rec = decode(kind, &k, &v)?;
                Ok((k, rec))
            })
            .collect()
    }

    /// The record named or keyed `what`, or whose key starts with it
    /// (at least 3 characters, one match only): `Ok(None)` if none.
    pub fn find<T: DeserializeOwned>(
        &self,
        kind: &Kind,
        what: &str,
    ) -> Result<Option<(String, T)>, FindError> {
        let hit = self.db.read(|r| {
            if let Some(v) = r.get(kind.what, what)? {
                return Ok(Some((what.to_string(), v)));
            }
            if let Some(id) = r.name(kind.what, what)? {
                if let Some(v) = r.get(kind.what, &id)? {
                    return Ok(Some((id, v)));
                }
            }
            if what.len() < 3 || !what.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
            let mut hits = r.with_prefix(kind.what, what, 2)?;
            if hits.len() > 1 {
                return Err(FindError::Ambiguous {
                    what: kind.what,
                    prefix: what.to_string(),
                });
            }
            Ok(hits.pop())
        })?;
        match hit {
            Some((k, v)) => {
                let rec = decode(kind, &k, &v)?;
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

impl From<RecordsError> for FindError {
    fn from(e: RecordsError) -> FindError {
        FindError::Db(DbError::Db(e))
    }
}
