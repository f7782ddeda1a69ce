//! [`VpeClient`]: the user's side of the VM service, used by the `vpe`
//! command line, the benchmark and the tests.
//!
//! A user's configuration is their renkei client configuration
//! (`RENKEI_CONFIG`, see fs-client) with a `[vpe]` table naming the manager:
//!
//! ```toml
//! [vpe]
//! manager = { addr = "192.0.2.10:7480", name = "vpe" }
//! ```
//!
//! Image bytes go straight from the user to the namespace with the renkei
//! client (under the upload directory); only the request to register them
//! goes to the manager.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fs_client::{Client, ClientConfig, ClientError};
use fs_proto::endpoint::{client_endpoint, TlsIdentity};
use fs_proto::rpc::{CallError, Dialer, PeerAddr};
use fs_proto::vpe::{
    ConsoleText, ImageInfo, ImageRegister, PopInfo, RunRequest, Template, UserInfo, VmInfo, VpeRequest, VpeResponse,
};

use crate::store::transfer::LocalImage;

/// Bound on calls that return at once.
const SHORT: Duration = Duration::from_secs(60);

/// Failures of the user's side.
#[derive(Debug, thiserror::Error)]
pub enum VpeClientError {
    /// The configuration is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The manager refused or could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The namespace (uploads) failed.
    #[error(transparent)]
    Namespace(#[from] ClientError),
    /// The manager answered something the request does not expect.
    #[error("unexpected answer from the manager: {0}")]
    Unexpected(String),
}

impl VpeClientError {
    /// The remote error code, if the manager answered with one.
    pub fn code(&self) -> Option<fs_proto::ErrorCode> {
        match self {
            VpeClientError::Call(c) => c.code(),
            VpeClientError::Namespace(c) => c.code(),
            _ => None,
        }
    }
}

type R<T> = Result<T, VpeClientError>;

/// The `[vpe]` table of a user's client configuration.
pub use fs_client::config::VpeSection;

/// A connected user.
#[derive(Clone)]
pub struct VpeClient {
    fs: Client,
    dialer: Dialer,
    manager: PeerAddr,
    long: Duration,
}

macro_rules! expect {
    ($resp:expr, $pat:pat => $out:expr) => {
        match $resp {
            $pat => Ok($out),
            other => Err(VpeClientError::Unexpected(format!("{other:?}"))),
        }
    };
}

impl VpeClient {
    /// Loads a client configuration with a `[vpe]` table and connects.
    pub async fn from_config_file(path: &Path) -> R<Self> {
        let fs_config = ClientConfig::load(path)?;
        let section = fs_config.vpe.clone().ok_or_else(|| {
            VpeClientError::Config(format!(
                "{} has no [vpe] table naming the manager (manager = {{ addr = \"HOST:PORT\", name = \"vpe\" }})",
                path.display()
            ))
        })?;
        Self::connect(fs_config, section).await
    }

    /// Connects with an explicit configuration.
    pub async fn connect(fs_config: ClientConfig, section: VpeSection) -> R<Self> {
        let tls = TlsIdentity::load(&fs_config.tls).map_err(ClientError::from)?;
        let bind: SocketAddr = if section.manager.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e| VpeClientError::Config(format!("{e}")))?;
        let endpoint = client_endpoint(bind, &tls, &fs_config.transport).map_err(ClientError::from)?;
        let fs = Client::with_endpoint(fs_config, tls.identity, endpoint.clone());
        let dialer = Dialer::new(endpoint, Duration::from_secs(10));
        Ok(Self { fs, dialer, manager: section.manager, long: Duration::from_secs(section.long_timeout_secs) })
    }

    /// The namespace client (same identity).
    pub fn fs(&self) -> &Client {
        &self.fs
    }

    /// One request to the manager.
    pub async fn call(&self, req: VpeRequest, timeout: Duration) -> R<VpeResponse> {
        Ok(self.dialer.call::<_, VpeResponse>(&self.manager, &req, timeout).await?)
    }

    /// Who the manager thinks we are and what we may do.
    pub async fn whoami(&self) -> R<UserInfo> {
        expect!(self.call(VpeRequest::WhoAmI, SHORT).await?, VpeResponse::WhoAmI(u) => u)
    }

    /// PoPs and their load.
    pub async fn pops(&self) -> R<Vec<PopInfo>> {
        expect!(self.call(VpeRequest::Pops, SHORT).await?, VpeResponse::Pops(p) => p)
    }

    /// Uploads `image` and registers it as the next generation of `name`.
    pub async fn register_image(
        &self,
        name: &str,
        image: &LocalImage,
        shared: bool,
        tag: Option<String>,
    ) -> R<ImageInfo> {
        let me = self.whoami().await?;
        let nonce = blake3::hash(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
        let upload = format!("{}/{}.{}", me.upload_dir, me.name, &nonce.to_hex()[..12]);
        let registered = async {
            image.put(&self.fs, &upload, 0o700).await?;
            let req =
                VpeRequest::ImageRegister(ImageRegister { name: name.into(), upload: upload.clone(), shared, tag });
            expect!(self.call(req, self.long).await?, VpeResponse::Image(i) => i)
        }
        .await;
        if registered.is_err() {
            // The manager moves the upload away on success; on failure it may still be there.
            let _ = self.fs.remove(&upload, true).await;
        }
        registered
    }

    /// Images we may see.
    pub async fn images(&self) -> R<Vec<ImageInfo>> {
        expect!(self.call(VpeRequest::ImageList, SHORT).await?, VpeResponse::Images(i) => i)
    }

    /// One image.
    pub async fn image(&self, name: &str) -> R<ImageInfo> {
        expect!(self.call(VpeRequest::ImageShow { name: name.into() }, SHORT).await?, VpeResponse::Image(i) => i)
    }

    /// Tags and visibility.
    pub async fn tag_image(&self, tag: fs_proto::vpe::ImageTag) -> R<ImageInfo> {
        expect!(self.call(VpeRequest::ImageTag(tag), SHORT).await?, VpeResponse::Image(i) => i)
    }

    /// Removes `NAME:GEN` or all of `NAME`.
    pub async fn remove_image(&self, image: &str) -> R<()> {
        match self.call(VpeRequest::ImageRemove { image: image.into() }, SHORT).await? {
            VpeResponse::Done | VpeResponse::Image(_) => Ok(()),
            other => Err(VpeClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts a VM; returns once it booted.
    pub async fn run(&self, req: RunRequest) -> R<VmInfo> {
        expect!(self.call(VpeRequest::Run(req), self.long).await?, VpeResponse::Vm(v) => v)
    }

    /// Our VMs.
    pub async fn list(&self) -> R<Vec<VmInfo>> {
        expect!(self.call(VpeRequest::List, SHORT).await?, VpeResponse::Vms(v) => v)
    }

    /// One of our VMs.
    pub async fn show(&self, vm: &str) -> R<VmInfo> {
        expect!(self.call(VpeRequest::Show { vm: vm.into() }, SHORT).await?, VpeResponse::Vm(v) => v)
    }

    /// The tail of a VM's console.
    pub async fn console(&self, vm: &str, max_bytes: u64) -> R<ConsoleText> {
        let req = VpeRequest::Console { vm: vm.into(), max_bytes };
        expect!(self.call(req, SHORT).await?, VpeResponse::Console(c) => c)
    }

    /// Writes a VM's disk back as a new generation.
    pub async fn save(&self, vm: &str, as_name: Option<String>) -> R<ImageInfo> {
        let req = VpeRequest::Save { vm: vm.into(), as_name };
        expect!(self.call(req, self.long).await?, VpeResponse::Image(i) => i)
    }

    /// Stops a VM.
    pub async fn stop(&self, vm: &str) -> R<()> {
        expect!(self.call(VpeRequest::Stop { vm: vm.into() }, self.long).await?, VpeResponse::Done => ())
    }

    /// Creates a template.
    pub async fn create_template(&self, t: Template) -> R<Template> {
        match self.call(VpeRequest::TemplateCreate(t), SHORT).await? {
            VpeResponse::Templates(mut v) if v.len() == 1 => Ok(v.remove(0)),
            other => Err(VpeClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Templates we may use.
    pub async fn templates(&self) -> R<Vec<Template>> {
        expect!(self.call(VpeRequest::TemplateList, SHORT).await?, VpeResponse::Templates(t) => t)
    }

    /// Removes our template.
    pub async fn remove_template(&self, name: &str) -> R<()> {
        expect!(self.call(VpeRequest::TemplateRemove { name: name.into() }, SHORT).await?, VpeResponse::Done => ())
    }
}
