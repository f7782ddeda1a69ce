//! `vpe template ...`.

use clap::Subcommand;
use fs_proto::vpe::Template;

use super::output;
use super::vms::parse_mem;
use crate::client::VpeClient;

#[derive(Subcommand, Debug)]
pub(super) enum TemplateCommand {
    /// Create (or replace your own) template: run settings to reuse with `vpe run --template`.
    Create {
        /// Template name.
        name: String,
        /// Site.
        #[arg(long)]
        site: Option<String>,
        /// Image, NAME[:GEN|:TAG].
        #[arg(long)]
        image: Option<String>,
        /// Virtual CPUs.
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory, e.g. 512M or 1G (plain numbers are MiB).
        #[arg(long, value_parser = parse_mem)]
        mem: Option<u64>,
        /// A segment to attach (repeat for several NICs).
        #[arg(long = "net")]
        nets: Vec<String>,
        /// Let every user use it.
        #[arg(long)]
        shared: bool,
    },
    /// Templates you may use (yours and shared ones).
    Ls,
    /// Remove one of your templates.
    Rm {
        /// Template name.
        name: String,
    },
}

pub(super) async fn run(client: &VpeClient, cmd: TemplateCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TemplateCommand::Create { name, site, image, cpus, mem, nets, shared } => {
            let t = Template { name, owner: String::new(), shared, site, image, cpus, memory_mib: mem, nets };
            output::templates(&[client.create_template(t).await?], json)
        }
        TemplateCommand::Ls => output::templates(&client.templates().await?, json),
        TemplateCommand::Rm { name } => {
            client.remove_template(&name).await?;
            if !json {
                println!("removed template {name}");
            }
            Ok(())
        }
    }
}
