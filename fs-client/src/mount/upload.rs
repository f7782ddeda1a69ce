//! Write-behind for files written sequentially from the start (`cp` into
//! the mount): once such a file has [`START_AT`] bytes dirty, a write
//! session for its next generation is opened and every further appended
//! write is streamed to the file server as it arrives, so close only has to
//! send `Commit`. The spill file still holds everything: if the file is
//! written anywhere but at its end, truncated, or the session breaks, the
//! upload is dropped and close commits from the spill file as usual.

use super::commit::{open_session, Committed, Session};
use super::dirty::Dirty;
use super::remote::Remote;
use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::{Cred, Ino};

/// Dirty bytes of a sequentially written file before streaming starts.
pub const START_AT: u64 = 8 << 20;

/// An upload in progress.
pub struct Upload {
    session: Session,
    /// Bytes `[0, sent)` are on their way.
    sent: u64,
}

impl Upload {
    /// Whether `d` should start streaming.
    pub fn wanted(d: &Dirty) -> bool {
        d.is_prefix() && d.size >= START_AT
    }

    /// Open the session and send what the spill file holds.
    pub async fn start(
        remote: &Remote,
        counters: &Counters,
        cred: Option<&Cred>,
        site: &str,
        ino: Ino,
        d: &Dirty,
    ) -> Result<Upload, ClientError> {
        let mut session = open_session(remote, counters, cred, site, ino, false).await?;
        let mut off = 0;
        while off < d.size {
            let n = (d.size - off).min(4 << 20);
            let bytes = d.read_spill(off, n).map_err(|e| ClientError::Local { path: "spill".into(), source: e })?;
            if let Err(e) = session.data(counters, off, &bytes).await {
                session.abort();
                return Err(ClientError::Unexpected(format!("upload: {e}")));
            }
            off += n;
        }
        Ok(Upload { session, sent: d.size })
    }

    /// Stream a write at `offset`; false if it is not an append or the
    /// session broke (the caller drops the upload).
    pub async fn append(&mut self, counters: &Counters, offset: u64, data: &[u8]) -> bool {
        if offset != self.sent {
            return false;
        }
        match self.session.data(counters, offset, data).await {
            Ok(()) => {
                self.sent += data.len() as u64;
                true
            }
            Err(e) => {
                tracing::debug!("upload broke, will commit from the spill file: {e}");
                false
            }
        }
    }

    /// Commit if the upload holds exactly the dirty contents; otherwise give
    /// it up and return None (commit from the spill file instead).
    pub async fn finish(self, ino: Ino, d: &Dirty) -> Option<Result<Committed, ClientError>> {
        if !d.is_prefix() || d.size != self.sent {
            self.session.abort();
            return None;
        }
        Some(self.session.finish(Ok(()), ino, d.size).await)
    }

    /// Give up.
    pub fn abort(self) {
        self.session.abort();
    }
}
