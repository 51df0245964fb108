//! Datasets in object storage (`s3://`, `gs://`, `az://`) through the `object_store` crate.
//!
//! A [`RemoteDir`] is one "folder" of a bucket: a store client plus a key prefix, with blocking
//! methods (a small tokio runtime drives the requests). Credentials and endpoints come from the
//! standard environment variables of each store (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, ...; `GOOGLE_SERVICE_ACCOUNT`, ...; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, ...). Errors name the object's URL and a one-line reason, with
//! the values of secret variables removed.
//!
//! The methods block (as do [`crate::Dataset::open`] and the readers on a URL); from async code,
//! call them inside `tokio::task::spawn_blocking`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::SchemaError;
use crate::remote_client::{block_on, client, reason, remote_error, safe_url_text};

/// The URL schemes of object storage that acs reads and writes.
pub const REMOTE_SCHEMES: [&str; 3] = ["s3", "gs", "az"];

/// Default size of one part of a multipart upload (and the size above which uploads are
/// multipart); `ACS_STORE_PART_BYTES` overrides it.
pub const DEFAULT_PART_BYTES: u64 = 16 << 20;

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Whether `text` is an object-store URL acs handles (`s3://`, `gs://`, `az://`).
pub fn is_remote_url(text: &str) -> bool {
    REMOTE_SCHEMES
        .iter()
        .any(|scheme| text.len() > scheme.len() + 3 && text.starts_with(&format!("{scheme}://")))
}

/// One folder of a bucket: where a dataset lives in object storage.
#[derive(Clone)]
pub struct RemoteDir {
    /// `scheme://bucket/prefix`, without a trailing slash.
    url: String,
    /// `scheme://bucket`: identifies the store client.
    bucket_url: String,
    prefix: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for RemoteDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDir").field("url", &self.url).finish()
    }
}

impl std::fmt::Display for RemoteDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl RemoteDir {
    /// The folder at `url` (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`).
    /// Builds (or reuses) the bucket's client from the environment; sends no request.
    ///
    /// Refused: other schemes, a URL without bucket, credentials, a query or a fragment in the
    /// URL (credentials belong in the environment), `.` or `..` in the prefix.
    pub fn open(url: &str) -> Result<Self, SchemaError> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| REMOTE_SCHEMES.contains(scheme))
            .ok_or_else(|| {
                remote_error(
                    &safe_url_text(url),
                    "not an object-store URL (s3://, gs://, az://)",
                )
            })?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') || rest.contains('?') || rest.contains('#') {
            return Err(remote_error(
                &safe_url_text(url),
                "credentials, a query or a fragment in the URL are not supported (set the \
                 store's environment variables instead)",
            ));
        }
        if authority.is_empty() {
            return Err(remote_error(url, "no bucket in the URL"));
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(remote_error(
                url,
                "`.` and `..` are not allowed in the prefix",
            ));
        }
        let prefix = parts.join("/");
        let bucket_url = format!("{scheme}://{authority}");
        let url = if prefix.is_empty() {
            bucket_url.clone()
        } else {
            format!("{bucket_url}/{prefix}")
        };
        let store = client(scheme, authority, &bucket_url)?;
        Ok(Self {
            url,
            bucket_url,
            prefix,
            store,
        })
    }

    /// The folder's URL, `scheme://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of `relative` inside the folder.
    pub fn url_of(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{relative}", self.url)
        }
    }

    /// The sub-folder `relative` of this folder.
    pub fn child(&self, relative: &str) -> Self {
        let prefix = [self.prefix.as_str(), relative.trim_matches('/')]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        Self {
            url: if prefix.is_empty() {
                self.bucket_url.clone()
            } else {
                format!("{}/{prefix}", self.bucket_url)
            },
            bucket_url: self.bucket_url.clone(),
            prefix,
            store: Arc::clone(&self.store),
        }
    }

    /// Whether `other` lives in the same bucket (a copy between them stays on the server).
    pub fn same_bucket(&self, other: &RemoteDir) -> bool {
        self.bucket_url == other.bucket_url
    }

    fn key(&self, relative: &str) -> Result<ObjectPath, SchemaError> {
        let full = if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        };
        ObjectPath::parse(&full)
            .map_err(|e| remote_error(&self.url_of(relative), format!("not a valid key: {e}")))
    }

    fn fail(&self, relative: &str, error: &object_store::Error) -> SchemaError {
        let scheme = self.bucket_url.split("://").next().unwrap_or("s3");
        remote_error(&self.url_of(relative), reason(scheme, error))
    }

    /// The size of object `relative`; `None` when there is none.
    pub fn size(&self, relative: &str) -> Result<Option<u64>, SchemaError> {
        let key = self.key(relative)?;
        match block_on(self.store.head(&key)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(relative, &e)),
        }
    }

    /// The whole object `relative`; `None` when there is none.
    pub fn get(&self, relative: &str) -> Result<Option<Bytes>, SchemaError> {
        let key = self.key(relative)?;
        let result = block_on(async {
            match self.store.get(&key).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        result.map_err(|e| self.fail(relative, &e))
    }

    /// Bytes `range` of object `relative`.
    pub fn get_range(&self, relative: &str, range: Range<u64>) -> Result<Bytes, SchemaError> {
        let key = self.key(relative)?;
        let expected = range.end.saturating_sub(range.start);
        let bytes =
            block_on(self.store.get_range(&key, range)).map_err(|e| self.fail(relative, &e))?;
        if bytes.len() as u64 != expected {
            return Err(remote_error(
                &self.url_of(relative),
                format!("short read: {} of {expected} bytes", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Writes object `relative` in one request: it appears whole or not at all.
    pub fn put(&self, relative: &str, bytes: impl Into<Bytes>) -> Result<(), SchemaError> {
        let key = self.key(relative)?;
        block_on(self.store.put(&key, PutPayload::from(bytes.into())))
            .map(drop)
            .map_err(|e| self.fail(relative, &e))
    }

    /// Uploads the local file `from` as object `relative`: one request up to the part size
    /// ([`part_bytes`]), a multipart upload above it (the object appears only when the upload
    /// completes; a failed one is aborted). `on_part` is called after each uploaded part.
    pub fn upload_file(
        &self,
        from: &Path,
        relative: &str,
        on_part: &mut dyn FnMut(usize),
    ) -> Result<(), SchemaError> {
        let size = std::fs::metadata(from)
            .map_err(|e| SchemaError::io(from, e))?
            .len();
        let part = part_bytes();
        if size <= part {
            let bytes = std::fs::read(from).map_err(|e| SchemaError::io(from, e))?;
            return self.put(relative, bytes);
        }
        let key = self.key(relative)?;
        let mut file = std::fs::File::open(from).map_err(|e| SchemaError::io(from, e))?;
        let mut upload =
            block_on(self.store.put_multipart(&key)).map_err(|e| self.fail(relative, &e))?;
        let uploaded = block_on(async {
            let mut in_flight = FuturesOrdered::new();
            let mut offset = 0u64;
            let mut done = 0usize;
            while offset < size {
                let len = part.min(size - offset) as usize;
                let mut buffer = vec![0u8; len];
                std::io::Read::read_exact(&mut file, &mut buffer)
                    .map_err(|e| PartError::Local(SchemaError::io(from, e)))?;
                offset += len as u64;
                in_flight.push_back(upload.put_part(PutPayload::from(buffer)));
                if in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(result) = in_flight.next().await {
                        result.map_err(PartError::Store)?;
                        done += 1;
                        on_part(done);
                    }
                }
            }
            while let Some(result) = in_flight.next().await {
                result.map_err(PartError::Store)?;
                done += 1;
                on_part(done);
            }
            Ok(())
        });
        if let Err(e) = uploaded {
            let _ = block_on(upload.abort());
            return Err(match e {
                PartError::Local(e) => e,
                PartError::Store(e) => self.fail(relative, &e),
            });
        }
        block_on(upload.complete())
            .map(drop)
            .map_err(|e| self.fail(relative, &e))
    }

    /// Downloads object `relative` into the local file `to` (streamed; created or replaced).
    pub fn download(&self, relative: &str, to: &Path) -> Result<u64, SchemaError> {
        use std::io::Write;
        let key = self.key(relative)?;
        let mut file = std::fs::File::create(to).map_err(|e| SchemaError::io(to, e))?;
        let written = block_on(async {
            let mut stream = self.store.get(&key).await?.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                file.write_all(&chunk)
                    .map_err(|e| object_store::Error::Generic {
                        store: "local file",
                        source: Box::new(e),
                    })?;
                written += chunk.len() as u64;
            }
            Ok::<_, object_store::Error>(written)
        });
        written.map_err(|e| self.fail(relative, &e))
    }

    /// Copies object `from` of this folder to `to` of `target`: on the server when both are in
    /// the same bucket, else by streaming it through this machine.
    pub fn copy_to(&self, from: &str, target: &RemoteDir, to: &str) -> Result<(), SchemaError> {
        if self.same_bucket(target) {
            let (source, dest) = (self.key(from)?, target.key(to)?);
            return block_on(self.store.copy(&source, &dest)).map_err(|e| self.fail(from, &e));
        }
        let scratch = tempfile::NamedTempFile::new().map_err(|e| SchemaError::io(".", e))?;
        self.download(from, scratch.path())?;
        target.upload_file(scratch.path(), to, &mut |_| {})
    }

    /// Deletes object `relative` (no error when it is absent).
    pub fn delete(&self, relative: &str) -> Result<(), SchemaError> {
        let key = self.key(relative)?;
        match block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(relative, &e)),
        }
    }

    /// Every object under the folder (recursively), as (path relative to the folder, size),
    /// sorted by path.
    pub fn list(&self) -> Result<Vec<(String, u64)>, SchemaError> {
        let prefix = if self.prefix.is_empty() {
            None
        } else {
            Some(self.key("")?)
        };
        let metas: Vec<object_store::ObjectMeta> =
            block_on(self.store.list(prefix.as_ref()).try_collect())
                .map_err(|e| self.fail("", &e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.to_string();
                key.strip_prefix(&strip).map(|rel| (rel.to_owned(), m.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object under the folder.
    pub fn delete_all(&self) -> Result<(), SchemaError> {
        for (relative, _) in self.list()? {
            self.delete(&relative)?;
        }
        Ok(())
    }
}

/// A failed part: reading the local file, or the store.
enum PartError {
    Local(SchemaError),
    Store(object_store::Error),
}

/// The part size of multipart uploads: `ACS_STORE_PART_BYTES` or [`DEFAULT_PART_BYTES`].
pub fn part_bytes() -> u64 {
    std::env::var("ACS_STORE_PART_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PART_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_checked() {
        assert!(is_remote_url("s3://bucket/prefix"));
        assert!(is_remote_url("gs://b"));
        assert!(is_remote_url("az://container/x"));
        assert!(!is_remote_url("s3://"));
        assert!(!is_remote_url("out/s3://x"));
        assert!(!is_remote_url("http://host/x"));
        let err = RemoteDir::open("s3://KEY:SECRET@bucket/p").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("SECRET") && text.contains("s3://bucket/p"),
            "{text}"
        );
        let err = RemoteDir::open("s3://bucket/a/../b").unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn folders_and_children() {
        let dir = RemoteDir::open("s3://bucket//runs/x/").unwrap();
        assert_eq!(dir.url(), "s3://bucket/runs/x");
        assert_eq!(
            dir.url_of("data/a.parquet"),
            "s3://bucket/runs/x/data/a.parquet"
        );
        let child = dir.child("worker-0");
        assert_eq!(child.url(), "s3://bucket/runs/x/worker-0");
        assert!(child.same_bucket(&dir));
        let root = RemoteDir::open("s3://bucket").unwrap();
        assert_eq!(
            root.url_of("acs-manifest.json"),
            "s3://bucket/acs-manifest.json"
        );
        assert!(!root.same_bucket(&RemoteDir::open("s3://other").unwrap()));
    }
}
