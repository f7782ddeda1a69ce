//! `vpe image ...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use fs_proto::vpe::ImageTag;

use super::output;
use crate::client::VpeClient;
use crate::image::Role;
use crate::store::transfer::LocalImage;

#[derive(Subcommand, Debug)]
pub(super) enum ImageCommand {
    /// Upload an image into the namespace as the next generation of NAME.
    /// Give a directory with an image.toml (as scripts/vm-image/build.sh
    /// writes), or kernel=FILE initrd=FILE disk=FILE with --cmdline.
    Register {
        /// Image name.
        name: String,
        /// DIR, or ROLE=FILE for each of kernel, initrd and disk.
        #[arg(required = true)]
        files: Vec<String>,
        /// Kernel command line (needed with ROLE=FILE; overrides the directory's).
        #[arg(long)]
        cmdline: Option<String>,
        /// Let every user see and run it.
        #[arg(long)]
        shared: bool,
        /// Tag (role) for the new generation, e.g. stable.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Images you may use (yours and shared ones).
    Ls,
    /// One image: owner, visibility, tags, generations.
    Show {
        /// Image name.
        name: String,
    },
    /// Tag a generation, remove a tag, or change who may see the image.
    Tag {
        /// NAME[:GEN|:TAG] (the generation the tag goes on).
        image: String,
        /// Tag to put on that generation.
        tag: Option<String>,
        /// Remove this tag.
        #[arg(long)]
        untag: Option<String>,
        /// Let every user see and run it.
        #[arg(long, conflicts_with = "private")]
        shared: bool,
        /// Only you.
        #[arg(long)]
        private: bool,
    },
    /// Remove one generation (NAME:GEN) or the whole image (NAME).
    Rm {
        /// NAME or NAME:GEN.
        image: String,
    },
    /// Write sizes and BLAKE3 hashes into a local image directory's image.toml.
    Seal {
        /// The image directory.
        dir: PathBuf,
    },
}

pub(super) fn seal(dir: &Path) -> anyhow::Result<()> {
    let manifest = crate::image::seal(dir)?;
    println!("{} {}", manifest.id().map(|i| i.to_string()).unwrap_or_default(), dir.display());
    Ok(())
}

fn local_image(name: &str, files: &[String], cmdline: Option<String>) -> anyhow::Result<LocalImage> {
    if let [one] = files {
        let path = Path::new(one);
        if path.is_dir() {
            let mut image = LocalImage::from_dir(path)?;
            if let Some(c) = cmdline {
                image.manifest.cmdline = c;
            }
            return Ok(image);
        }
    }
    let mut by_role = BTreeMap::new();
    for f in files {
        let Some((role, path)) = f.split_once('=') else { bail!("{f}: expected a directory or ROLE=FILE") };
        let role = Role::ALL
            .into_iter()
            .find(|r| r.as_str() == role)
            .with_context(|| format!("{role}: not kernel, initrd or disk"))?;
        by_role.insert(role, PathBuf::from(path));
    }
    let cmdline = cmdline.context("--cmdline is needed when the files are given one by one")?;
    Ok(LocalImage::hash(name.to_string(), cmdline, by_role)?)
}

pub(super) async fn run(client: &VpeClient, cmd: ImageCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Register { name, files, cmdline, shared, tag } => {
            let image = local_image(&name, &files, cmdline)?;
            let info = client.register_image(&name, &image, shared, tag).await?;
            output::image(&info, json)
        }
        ImageCommand::Ls => output::images(&client.images().await?, json),
        ImageCommand::Show { name } => output::image(&client.image(&name).await?, json),
        ImageCommand::Tag { image, tag, untag, shared, private } => {
            let shared = if shared {
                Some(true)
            } else if private {
                Some(false)
            } else {
                None
            };
            if tag.is_none() && untag.is_none() && shared.is_none() {
                bail!("nothing to change: give a TAG, --untag TAG, --shared or --private");
            }
            output::image(&client.tag_image(ImageTag { image, tag, untag, shared }).await?, json)
        }
        ImageCommand::Rm { image } => {
            client.remove_image(&image).await?;
            if !json {
                println!("removed {image}");
            }
            Ok(())
        }
        ImageCommand::Seal { dir } => seal(&dir),
    }
}
