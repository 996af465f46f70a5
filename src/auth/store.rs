//! A directory of account JWTs, `<dir>/<account public key>.jwt`, as
//! nats-server's NATS resolver and the account server keep them. Writes are
//! atomic (a temporary file renamed over the old one); deletes rename to
//! `<key>.jwt.deleted` unless hard.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The store.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
    /// Most JWTs kept (0: unlimited).
    limit: usize,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not an account public key.
    #[error("not an account public key: {0}")]
    BadKey(String),
    /// The store holds `limit` JWTs already.
    #[error("jwt store is full")]
    Full,
    /// The file system said no.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn valid_key(key: &str) -> bool {
    key.len() == 56 && key.starts_with('A') && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl DirStore {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path, limit: usize) -> std::io::Result<DirStore> {
        std::fs::create_dir_all(dir)?;
        Ok(DirStore {
            dir: dir.to_path_buf(),
            limit,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.jwt"))
    }

    /// The stored JWT of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        if !valid_key(key) {
            return None;
        }
        std::fs::read_to_string(self.path(key))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Stores `jwt` for `key`, replacing what was there, atomically.
    pub fn put(&self, key: &str, jwt: &str) -> Result<(), StoreError> {
        if !valid_key(key) {
            return Err(StoreError::BadKey(key.to_string()));
        }
        if self.limit > 0 && self.get(key).is_none() && self.list().len() >= self.limit {
            return Err(StoreError::Full);
        }
        let tmp = self.dir.join(format!(".{key}.jwt.{}.tmp", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(jwt.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path(key))?;
        Ok(())
    }

    /// Removes `key`: renamed to `<key>.jwt.deleted`, or gone when `hard`.
    /// Returns whether it was there.
    pub fn delete(&self, key: &str, hard: bool) -> Result<bool, StoreError> {
        if !valid_key(key) {
            return Err(StoreError::BadKey(key.to_string()));
        }
        let p = self.path(key);
        if !p.exists() {
            return Ok(false);
        }
        if hard {
            std::fs::remove_file(p)?;
        } else {
            std::fs::rename(&p, self.dir.join(format!("{key}.jwt.deleted")))?;
        }
        Ok(true)
    }

    /// Every stored account key, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_suffix(".jwt").filter(|k| valid_key(k)).map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The store's hash as nats-server's PACK compares them: the XOR of the
    /// SHA-256 of each stored JWT.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for k in self.list() {
            if let Some(j) = self.get(&k) {
                let d = Sha256::digest(j.as_bytes());
                for (a, b) in h.iter_mut().zip(d.iter()) {
                    *a ^= b;
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = std::env::temp_dir().join(format!("petrel-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DirStore::open(&dir, 2).unwrap();
        let k1 = nkeys::KeyPair::new_account().public_key();
        let k2 = nkeys::KeyPair::new_account().public_key();
        let k3 = nkeys::KeyPair::new_account().public_key();
        s.put(&k1, "jwt1").unwrap();
        s.put(&k1, "jwt1b").unwrap();
        s.put(&k2, "jwt2").unwrap();
        assert!(matches!(s.put(&k3, "jwt3"), Err(StoreError::Full)));
        assert_eq!(s.get(&k1).as_deref(), Some("jwt1b"));
        assert_eq!(s.list().len(), 2);
        let h = s.hash();
        assert!(s.delete(&k1, false).unwrap());
        assert!(dir.join(format!("{k1}.jwt.deleted")).exists());
        assert_ne!(s.hash(), h);
        assert!(s.get(&k1).is_none());
        assert!(matches!(s.put("../etc/passwd", "x"), Err(StoreError::BadKey(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
