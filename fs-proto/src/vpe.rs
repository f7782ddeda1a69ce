//! The VM service (vpe): what users send to the manager (`vpe serve`), what
//! PoP agents (`vpe agent`) report to it, and what it asks of them.
//!
//! Three conversations, all QUIC with mutual TLS under federation
//! certificates, one request per bidirectional stream:
//!
//! - user -> manager: [`VpeRequest`] / [`VpeReply`], on connections users dial;
//!   the user is the certificate's name, never something the request says.
//! - agent -> manager: [`AgentRequest`] / [`AgentReply`] (heartbeats with the
//!   PoP's load), on the connection the agent dials; the PoP's name and site
//!   come from its host certificate.
//! - manager -> agent: [`PopRequest`] / [`PopReply`], on streams the manager
//!   opens on that same connection (agents need no listening port).
//!
//! Image bytes never travel here: users upload them into the namespace with
//! the renkei client and agents read them from the namespace.

use crate::error::RemoteError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A network segment and the address a NIC has on it (`10.1.0.5/24`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddr {
    /// The segment's name.
    pub segment: String,
    /// Address with prefix length.
    pub address: String,
}

/// A file the guest's init writes into its disk at boot (the test image
/// writes it to `/renkei-marks/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFile {
    /// File name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// Contents.
    pub content: String,
}

/// Where one boot's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// From the PoP starting the run (its VM host free) to the domain
    /// started: staging the image (includes `fetch`), overlay, swap, seed.
    pub prepare: Duration,
    /// Fetching and verifying the image into the PoP's cache (zero when cached).
    pub fetch: Duration,
    /// From the domain started to the guest's boot marker.
    pub boot: Duration,
    /// The guest's own uptime at its boot marker (kernel + init).
    pub guest_boot: Option<Duration>,
    /// Image bytes moved from the namespace (0 when cached).
    pub fetched_bytes: u64,
    /// From the manager accepting the run to the agent reporting the guest
    /// booted (includes placement, any wait for the PoP's VM host, e.g. its
    /// one-time KVM probe at start, and the network hops).
    pub run_to_booted: Duration,
}

/// Where a VM is in its life, as the manager tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmPhase {
    /// Placed; the agent is staging and booting it.
    Starting,
    /// The guest booted.
    Running,
    /// Its disk is being written back to the namespace.
    Saving,
    /// Being destroyed.
    Stopping,
    /// Its PoP no longer reports it (agent restarted without it, or PoP lost).
    Lost,
}

impl std::fmt::Display for VmPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A VM as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The name the user gave (unique per user).
    pub name: String,
    /// The owner (federation user name).
    pub owner: String,
    /// Its name on the PoP (libvirt domain `renkei-<pop_name>`).
    pub pop_name: String,
    /// Site.
    pub site: String,
    /// PoP (agent host name).
    pub pop: String,
    /// State.
    pub phase: VmPhase,
    /// Image as `NAME:GEN`.
    pub image: String,
    /// The image's content id (hex BLAKE3).
    pub image_id: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NICs in order.
    pub nics: Vec<NicAddr>,
    /// `kvm` or `tcg`, once running.
    pub accel: Option<String>,
    /// Boot timings, once running.
    pub timings: Option<Timings>,
    /// When the run was accepted (ms since the epoch).
    pub created_ms: u64,
}

/// One generation of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGen {
    /// Generation number (1, 2, ...).
    pub gen: u64,
    /// Content id (hex BLAKE3 of command line, sizes and hashes).
    pub id: String,
    /// Bytes of kernel + initrd + disk.
    pub size: u64,
    /// When it was made (ms since the epoch).
    pub created_ms: u64,
    /// How it was made (`registered`, `saved from VM web`).
    pub origin: String,
}

/// An image and its generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Name.
    pub name: String,
    /// Owner (federation user name).
    pub owner: String,
    /// Visible to every user (otherwise only to its owner).
    pub shared: bool,
    /// Tags (roles) naming generations, e.g. `stable -> 2`.
    pub tags: Vec<(String, u64)>,
    /// Generations, oldest first.
    pub generations: Vec<ImageGen>,
    /// The image's directory in the namespace.
    pub path: String,
}

/// A reusable VM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Name (unique in the federation).
    pub name: String,
    /// Owner (set by the manager from the certificate).
    pub owner: String,
    /// Usable by every user.
    pub shared: bool,
    /// Site.
    pub site: Option<String>,
    /// Image as `NAME[:GEN|:TAG]`.
    pub image: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Segments, one NIC each.
    pub nets: Vec<String>,
}

/// `vpe run`: what to start. Unset fields come from the template, then defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Site to run at.
    pub site: Option<String>,
    /// Image as `NAME[:GEN|:TAG]`.
    pub image: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Segments, one NIC each, in order (adds to the template's if given).
    pub nets: Vec<String>,
    /// VM name (default: made from the image name).
    pub name: Option<String>,
    /// Template to start from.
    pub template: Option<String>,
    /// SSH public keys to inject besides the ones the manager has for the user.
    pub ssh_keys: Vec<String>,
    /// A PoP of the site to use instead of the placement policy's choice.
    pub pop: Option<String>,
    /// A file for the guest to write into its disk.
    pub user_file: Option<UserFile>,
}

/// `vpe image register`: move an upload into the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRegister {
    /// Image name.
    pub name: String,
    /// The namespace directory the user uploaded `kernel`, `initrd`, `disk`
    /// and the sealed `image.toml` into (under the upload directory).
    pub upload: String,
    /// Make the image visible to every user.
    pub shared: bool,
    /// A tag to put on the new generation.
    pub tag: Option<String>,
}

/// Changes to an image's tags and visibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTag {
    /// `NAME[:GEN|:TAG]`: the generation a new tag points to.
    pub image: String,
    /// Put this tag on that generation (moving it if it exists).
    pub tag: Option<String>,
    /// Remove this tag.
    pub untag: Option<String>,
    /// Share (true) or make private (false).
    pub shared: Option<bool>,
}

/// A user's limits and assignments, as the manager has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Federation user name.
    pub name: String,
    /// Sites the user may use (`None`: all).
    pub allowed_sites: Option<Vec<String>>,
    /// VMs the user may run at once.
    pub max_vms: u32,
    /// VMs the user runs now.
    pub running: u32,
    /// Pre-assigned addresses per segment.
    pub addresses: Vec<(String, Vec<String>)>,
    /// SSH public keys the manager injects.
    pub ssh_keys: Vec<String>,
    /// The namespace directory for uploads.
    pub upload_dir: String,
}

/// A PoP as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopInfo {
    /// Agent host name.
    pub name: String,
    /// Site.
    pub site: String,
    /// Connected and heartbeating.
    pub alive: bool,
    /// VMs placed there (by the manager's registry and the agent's report).
    pub vms: u32,
    /// VMs it accepts.
    pub max_vms: u32,
    /// `kvm` or `tcg` once decided.
    pub accel: Option<String>,
    /// Problems the agent reports (e.g. libvirt unreachable).
    pub problems: Vec<String>,
    /// Images in its cache.
    pub cached_images: u32,
    /// Image bytes it fetched from the namespace since it started.
    pub image_bytes_fetched: u64,
}

/// A serial console log (or its tail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleText {
    /// The text (lossy UTF-8).
    pub text: String,
    /// Bytes before `text` that were left out.
    pub skipped: u64,
}

/// The requests users send to the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VpeRequest {
    /// Who am I, what may I do.
    WhoAmI,
    /// The PoPs and their load.
    Pops,
    /// Register an uploaded image as a new generation.
    ImageRegister(ImageRegister),
    /// Images the caller may see (own and shared).
    ImageList,
    /// One image.
    ImageShow {
        /// Name.
        name: String,
    },
    /// Tag a generation, or change visibility.
    ImageTag(ImageTag),
    /// Remove a generation (`NAME:GEN`) or a whole image (`NAME`).
    ImageRemove {
        /// What to remove.
        image: String,
    },
    /// Start a VM (answers once it booted or failed).
    Run(RunRequest),
    /// The caller's VMs.
    List,
    /// One of the caller's VMs.
    Show {
        /// VM name.
        vm: String,
    },
    /// The tail of a VM's serial console.
    Console {
        /// VM name.
        vm: String,
        /// At most this many bytes (the end of the log).
        max_bytes: u64,
    },
    /// Write a VM's disk back to the namespace as a new image generation.
    Save {
        /// VM name.
        vm: String,
        /// Image to add the generation to (default: the VM's own image).
        as_name: Option<String>,
    },
    /// Destroy a VM and everything it had on its PoP.
    Stop {
        /// VM name.
        vm: String,
    },
    /// Create (or replace one's own) template.
    TemplateCreate(Template),
    /// Templates the caller may use (own and shared).
    TemplateList,
    /// Remove one's own template.
    TemplateRemove {
        /// Name.
        name: String,
    },
}

impl VpeRequest {
    /// A stable name per variant, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            VpeRequest::WhoAmI => "whoami",
            VpeRequest::Pops => "pops",
            VpeRequest::ImageRegister(_) => "image_register",
            VpeRequest::ImageList => "image_list",
            VpeRequest::ImageShow { .. } => "image_show",
            VpeRequest::ImageTag(_) => "image_tag",
            VpeRequest::ImageRemove { .. } => "image_remove",
            VpeRequest::Run(_) => "run",
            VpeRequest::List => "list",
            VpeRequest::Show { .. } => "show",
            VpeRequest::Console { .. } => "console",
            VpeRequest::Save { .. } => "save",
            VpeRequest::Stop { .. } => "stop",
            VpeRequest::TemplateCreate(_) => "template_create",
            VpeRequest::TemplateList => "template_list",
            VpeRequest::TemplateRemove { .. } => "template_remove",
        }
    }
}

/// The manager's answers to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VpeResponse {
    /// Success with nothing to return.
    Done,
    /// The caller's limits.
    WhoAmI(UserInfo),
    /// PoPs.
    Pops(Vec<PopInfo>),
    /// One image.
    Image(ImageInfo),
    /// Images.
    Images(Vec<ImageInfo>),
    /// One VM.
    Vm(VmInfo),
    /// VMs.
    Vms(Vec<VmInfo>),
    /// Console text.
    Console(ConsoleText),
    /// Templates.
    Templates(Vec<Template>),
}

/// The frame the manager answers a user with.
pub type VpeReply = Result<VpeResponse, RemoteError>;

/// A VM as its PoP reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopVm {
    /// Its name on the PoP.
    pub name: String,
    /// The PoP's lifecycle state (`Running`, `Failed`...).
    pub state: String,
}

/// What an agent reports every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopReport {
    /// VMs this PoP accepts.
    pub max_vms: u32,
    /// VMs it has.
    pub vms: Vec<PopVm>,
    /// `kvm` or `tcg` once decided.
    pub accel: Option<String>,
    /// Ids of the images in its cache.
    pub cached_images: Vec<String>,
    /// Image bytes fetched from the namespace since the agent started.
    pub image_bytes_fetched: u64,
    /// Problems (libvirt unreachable, state directory not usable...).
    pub problems: Vec<String>,
}

/// Agent -> manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentRequest {
    /// Periodic report; the first one registers the PoP.
    Heartbeat(PopReport),
}

/// Manager -> agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentResponse {
    /// Heartbeat received.
    Ack,
}

/// The frame the manager answers an agent with.
pub type AgentReply = Result<AgentResponse, RemoteError>;

/// Where an image generation is in the namespace, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLocation {
    /// Its directory (`/vpe/images/NAME/GEN`).
    pub path: String,
    /// Its content id (hex); the agent refuses a manifest with another id.
    pub id: String,
}

/// Start a VM on this PoP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopRun {
    /// Its name on the PoP.
    pub name: String,
    /// The guest's host name.
    pub hostname: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Swap in MiB (0: none).
    pub swap_mib: u64,
    /// NICs in order with their static addresses.
    pub nics: Vec<NicAddr>,
    /// SSH public keys.
    pub ssh_keys: Vec<String>,
    /// A file for the guest to write.
    pub user_file: Option<UserFile>,
    /// The image.
    pub image: ImageLocation,
}

/// A VM the PoP started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopStarted {
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Timings (`run_to_booted` is filled in by the manager).
    pub timings: Timings,
}

/// A disk written back to the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopSaved {
    /// The new image generation's content id (hex).
    pub id: String,
    /// Bytes of kernel + initrd + disk.
    pub size: u64,
}

/// Manager -> agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopRequest {
    /// Stage, boot and wait for the guest (answers when booted or failed).
    Run(PopRun),
    /// Destroy a VM and remove every local file it had.
    Stop {
        /// Its name on the PoP.
        name: String,
    },
    /// Write a VM's disk (with the image's kernel and initrd) into `dest`.
    Save {
        /// Its name on the PoP.
        name: String,
        /// Namespace directory to create (`/vpe/images/NAME/GEN`).
        dest: String,
    },
    /// The tail of a VM's console.
    Console {
        /// Its name on the PoP.
        name: String,
        /// At most this many bytes.
        max_bytes: u64,
    },
    /// A report now.
    Status,
}

impl PopRequest {
    /// A stable name per variant, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PopRequest::Run(_) => "run",
            PopRequest::Stop { .. } => "stop",
            PopRequest::Save { .. } => "save",
            PopRequest::Console { .. } => "console",
            PopRequest::Status => "status",
        }
    }
}

/// Agent answers to the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopResponse {
    /// Done.
    Done,
    /// A VM booted.
    Started(PopStarted),
    /// A disk was saved.
    Saved(PopSaved),
    /// Console text.
    Console(ConsoleText),
    /// A report.
    Status(PopReport),
}

/// The frame an agent answers the manager with.
pub type PopReply = Result<PopResponse, RemoteError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};

    #[test]
    fn requests_round_trip() {
        let run = VpeRequest::Run(RunRequest {
            site: Some("site1".into()),
            image: Some("test:2".into()),
            nets: vec!["lab".into(), "data".into()],
            user_file: Some(UserFile { name: "hello".into(), content: "hi".into() }),
            ..RunRequest::default()
        });
        let frame = encode(&run);
        assert_eq!(decode::<VpeRequest>(&frame[4..]).unwrap(), run);
        let pop = PopRequest::Run(PopRun {
            name: "web.alice".into(),
            hostname: "web".into(),
            cpus: 1,
            memory_mib: 256,
            swap_mib: 64,
            nics: vec![NicAddr { segment: "lab".into(), address: "10.0.0.5/24".into() }],
            ssh_keys: vec!["ssh-ed25519 AAAA alice".into()],
            user_file: None,
            image: ImageLocation { path: "/vpe/images/test/1".into(), id: "ab".repeat(32) },
        });
        let frame = encode(&pop);
        assert_eq!(decode::<PopRequest>(&frame[4..]).unwrap(), pop);
        let t = Timings {
            prepare: Duration::from_millis(30),
            guest_boot: Some(Duration::from_secs(3)),
            ..Timings::default()
        };
        let reply: PopReply = Ok(PopResponse::Started(PopStarted { accel: "tcg".into(), timings: t }));
        assert_eq!(decode::<PopReply>(&encode(&reply)[4..]).unwrap(), reply);
    }
}
