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

/// Why an upload was given up: the names of the counters bumped.
pub mod dropped {
    /// A write landed below what was streamed already.
    pub const REWRITE: &str = "data.upload_dropped.rewrite";
    /// The write session broke.
    pub const BROKE: &str = "data.upload_dropped.broke";
    /// The file was truncated.
    pub const TRUNCATED: &str = "data.upload_dropped.truncated";
    /// The session could not be opened.
    pub const START: &str = "data.upload_dropped.start";
    /// At commit, the upload did not hold the dirty contents.
    pub const UNFINISHED: &str = "data.upload_dropped.unfinished";
}

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

    /// Stream a write at `offset`, already recorded in `d`; Err (the name
    /// of the counter of that cause) if it rewrites bytes already sent or
    /// the session broke: the caller drops the upload. FUSE may hand over
    /// the writes of one sequential stream slightly out of order: a write
    /// beyond the end of what was sent is held in the spill file and sent
    /// once the gap before it is filled.
    pub async fn append(
        &mut self,
        counters: &Counters,
        offset: u64,
        data: &[u8],
        d: &Dirty,
    ) -> Result<(), &'static str> {
        if offset < self.sent {
            tracing::debug!(offset, len = data.len(), sent = self.sent, "a write below what was streamed");
            return Err(dropped::REWRITE);
        }
        if offset == self.sent {
            if let Err(e) = self.session.data(counters, offset, data).await {
                tracing::debug!("upload broke, will commit from the spill file: {e}");
                return Err(dropped::BROKE);
            }
            self.sent += data.len() as u64;
        }
        if self.catch_up(counters, d).await {
            Ok(())
        } else {
            Err(dropped::BROKE)
        }
    }

    /// Send what the spill file holds beyond `sent` once the dirty contents
    /// are contiguous from 0 again; false if the session broke.
    async fn catch_up(&mut self, counters: &Counters, d: &Dirty) -> bool {
        if !d.is_prefix() {
            return true;
        }
        while self.sent < d.size {
            let n = (d.size - self.sent).min(4 << 20);
            let Ok(bytes) = d.read_spill(self.sent, n) else { return false };
            if let Err(e) = self.session.data(counters, self.sent, &bytes).await {
                tracing::debug!("upload broke, will commit from the spill file: {e}");
                return false;
            }
            self.sent += n;
        }
        true
    }

    /// Commit if the upload holds exactly the dirty contents (after sending
    /// any tail still held back); otherwise give it up and return None
    /// (commit from the spill file instead).
    pub async fn finish(mut self, counters: &Counters, ino: Ino, d: &Dirty) -> Option<Result<Committed, ClientError>> {
        if !d.is_prefix() || d.size < self.sent || !self.catch_up(counters, d).await || d.size != self.sent {
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
