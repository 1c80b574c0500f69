//! Named volumes: `<root>/volumes/<name>/_data`, recorded in the engine
//! database (docker's and podman's layout and `inspect` fields).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, FindError, VOLUMES};
use crate::options::bad;
use crate::util;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Labels", default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Made for one container's `-v /path` and removed with it.
    #[serde(rename = "Anonymous", default)]
    pub anonymous: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Find(#[from] FindError),
    #[error(transparent)]
    Option(#[from] crate::options::OptionError),
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {name} is in use by container {container}")]
    InUse { name: String, container: String },
    #[error("volume {name}: {what} {}: {source}", path.display())]
    Io {
        name: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Volumes<'a> {
    pub(crate) db: &'a Db,
    pub(crate) dir: PathBuf,
}

impl Volumes<'_> {
    /// Creates a volume; an existing one of that name is returned as it is
    /// when `exist_ok` (what `-v name:/path` wants), else is an error.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: &[String],
        anonymous: bool,
        exist_ok: bool,
    ) -> Result<VolumeRecord, VolumeError> {
        let name = match name {
            Some(n) => {
                if !util::valid_name(n) {
                    return Err(
                        bad("volume name", n, "may hold only [a-zA-Z0-9][a-zA-Z0-9_.-]").into(),
                    );
                }
                n.to_string()
            }
            None => util::random_id().map_err(|source| VolumeError::Io {
                name: "(new)".into(),
                what: "reading /dev/urandom",
                path: "/dev/urandom".into(),
                source,
            })?,
        };
        if let Some((_, v)) = self.db.find::<VolumeRecord>(&VOLUMES, &name)? {
            if v.name == name {
                if exist_ok {
                    return Ok(v);
                }
                return Err(DbError::NameInUse {
                    what: "volume",
                    name,
                    id: v.name,
                }
                .into());
            }
        }
        let labels = crate::options::parse_pairs("--label", labels)?
            .into_iter()
            .collect();
        let dir = self.dir.join(&name);
        let data = dir.join("_data");
        let rec = VolumeRecord {
            name: name.clone(),
            driver: "local".into(),
            mountpoint: data.clone(),
            created_at: util::rfc3339_nanos(util::now_nanos()),
            labels,
            anonymous,
        };
        match self.db.insert(&VOLUMES, &name, None, &rec) {
            Ok(()) => {}
            Err(DbError::NameInUse { .. }) if exist_ok => {}
            Err(e) => return Err(e.into()),
        }
        if let Err(source) = std::fs::create_dir_all(&data) {
            let _ = self.db.remove(&VOLUMES, &name);
            return Err(VolumeError::Io {
                name,
                what: "creating",
                path: data,
                source,
            });
        }
        Ok(rec)
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(self
            .db
            .all::<VolumeRecord>(&VOLUMES)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        match self.db.find::<VolumeRecord>(&VOLUMES, name)? {
            Some((_, v)) if v.name == name => Ok(v),
            _ => Err(VolumeError::NotFound(name.to_string())),
        }
    }

    /// Removes the volume and its data; `users` are the containers that
    /// mount it (an error unless `force`, which the caller must have
    /// handled by removing them).
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        let v = self.inspect(name)?;
        if let Some(c) = users.first() {
            return Err(VolumeError::InUse {
                name: v.name,
                container: c.clone(),
            });
        }
        let dir = self.dir.join(&v.name);
        match hako_image::remove_tree(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(VolumeError::Io {
                    name: v.name,
                    what: "removing",
                    path: dir,
                    source,
                })
            }
        }
        self.db.remove(&VOLUMES, &v.name)?;
        Ok(())
    }
}
