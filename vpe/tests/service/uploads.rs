//! Issue 12, finding 9: the manager acts as root in the namespace, so it
//! must not be the deputy that moves one user's upload into another's
//! image. Bob asks it to register alice's upload (by its name, through a
//! symbolic link, renamed, and as hard links of her files in an upload of
//! his own); each is refused with a clear error, alice's files are left as
//! they were, and both users still register their own uploads. No VM is
//! booted, so this needs no libvirt and always runs.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use fs_client::Client;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::vpe::{ImageInfo, ImageRegister, VpeRequest, VpeResponse};
use fs_proto::{Attr, ErrorCode};
use vpe::client::VpeClient;
use vpe::store::transfer::LocalImage;

use crate::bounded;
use crate::harness::{serial, Setup, Stack};

/// Asks the manager, as `c`'s user, to register `upload` as image `name`.
async fn register(c: &VpeClient, name: &str, upload: &str) -> Result<ImageInfo, (Option<ErrorCode>, String)> {
    let req =
        VpeRequest::ImageRegister(ImageRegister { name: name.into(), upload: upload.into(), shared: false, tag: None });
    match c.call(req, std::time::Duration::from_secs(60)).await {
        Ok(VpeResponse::Image(i)) => Ok(i),
        Ok(other) => Err((None, format!("unexpected answer {other:?}"))),
        Err(e) => Err((e.code(), e.to_string())),
    }
}

/// What an upload is: its directory's and every entry's attributes by name.
async fn snapshot(fs: &Client, dir: &str) -> Result<(Attr, BTreeMap<String, Attr>)> {
    let attr = fs.stat(dir).await.with_context(|| format!("stat {dir}"))?;
    let mut entries = BTreeMap::new();
    for e in fs.list(dir).await.with_context(|| format!("list {dir}"))? {
        entries.insert(e.name.clone(), e.attr.context("no attributes")?);
    }
    Ok((attr, entries))
}

/// Ino, kind, owner, mode, links, generation and hash: what must not change.
fn essentials(a: &Attr) -> (u64, String, u32, u32, u32, u32, u64, Option<[u8; 32]>) {
    (a.ino, format!("{:?}", a.kind), a.uid, a.gid, a.perm, a.nlink, a.gen, a.hash)
}

fn same(a: &(Attr, BTreeMap<String, Attr>), b: &(Attr, BTreeMap<String, Attr>)) -> bool {
    essentials(&a.0) == essentials(&b.0)
        && a.1.len() == b.1.len()
        && a.1.iter().zip(&b.1).all(|((n1, a1), (n2, a2))| n1 == n2 && essentials(a1) == essentials(a2))
}

fn refused(what: &str, r: Result<ImageInfo, (Option<ErrorCode>, String)>) -> Result<(Option<ErrorCode>, String)> {
    match r {
        Ok(i) => bail!("{what}: the manager registered {i:?}"),
        Err(e) => {
            eprintln!("{what}: refused: {}", e.1);
            Ok(e)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_never_registers_another_users_upload() -> Result<()> {
    let lock = serial().await;
    bounded(300, async {
        let s = Stack::start_without_vms(lock, Setup::new(1, 1)).await?;
        let alice = VpeClient::from_config_file(&s.client_config("alice")).await?;
        let bob = VpeClient::from_config_file(&s.client_config("bob")).await?;
        let image = LocalImage::from_dir(&s.image)?;
        let me = alice.whoami().await?;
        let alice_uid = alice.fs().meta().whoami().await?.uid;
        let bob_uid = bob.fs().meta().whoami().await?.uid;
        ensure!(alice_uid != bob_uid);

        // Alice uploads her image as `vpe image register` does; before she
        // asks for it to be registered, bob asks for it.
        let upload = format!("{}/alice.0a1b2c3d4e5f", me.upload_dir);
        image.put(alice.fs(), &upload, 0o700).await?;
        let before = snapshot(alice.fs(), &upload).await?;
        ensure!(before.0.uid == alice_uid && before.1.len() == 4, "{before:?}");

        // 1. By its name.
        let (code, e) = refused("bob names alice's upload", register(&bob, "stolen", &upload).await)?;
        ensure!(code == Some(ErrorCode::PermissionDenied), "{code:?} {e}");
        ensure!(
            e.contains(&format!("{upload} is not bob's upload: it is owned by uid {alice_uid}")),
            "unclear error: {e}"
        );

        // 2. Through a symbolic link named like an upload of his.
        let upload_ino = bob.fs().stat(&me.upload_dir).await?.ino;
        let link = format!("{}/bob.5ca1ab1e", me.upload_dir);
        let req = MetaRequest::Symlink { parent: upload_ino, name: "bob.5ca1ab1e".into(), target: upload.clone() };
        bob.fs().meta().call(req).await.context("bob's symlink")?;
        let (code, e) = refused("bob's symlink to alice's upload", register(&bob, "stolen", &link).await)?;
        ensure!(code == Some(ErrorCode::InvalidArgument), "{code:?} {e}");
        ensure!(e.contains(&format!("{link} is a Symlink, not a directory")), "unclear error: {e}");
        ensure!(bob.fs().stat(&link).await?.uid == bob_uid, "bob's symlink was not left as it was");

        // 3. Renamed to a name of his: the sticky upload directory refuses it.
        let renamed = format!("{}/bob.0ddba11", me.upload_dir);
        match bob.fs().rename(&upload, &renamed).await {
            Ok(()) => bail!("bob renamed alice's upload to {renamed}"),
            Err(e) => eprintln!("bob renames alice's upload: refused: {e}"),
        }

        // 4. Hard links of alice's files in an upload of his own. Alice
        //    publishes her image's files for everyone to read and write (so
        //    the meta server lets bob link them); bob must still not get the
        //    manager to take them.
        let public = "/alice-public";
        alice.fs().mkdir(public, false, 0o755).await?;
        image.put(alice.fs(), &format!("{public}/img"), 0o755).await?;
        for f in ["kernel", "initrd", "disk", "image.toml"] {
            alice.fs().chmod(&format!("{public}/img/{f}"), 0o666).await?;
        }
        let published = snapshot(alice.fs(), &format!("{public}/img")).await?;
        let linked = format!("{}/bob.feedface", me.upload_dir);
        let dir = bob.fs().mkdir(&linked, false, 0o700).await?;
        let mut links = 0;
        for (name, a) in &published.1 {
            let req = MetaRequest::Link { ino: a.ino, new_parent: dir.ino, new_name: name.clone() };
            match bob.fs().meta().call(req).await {
                Ok(MetaResponse::Attr(_)) | Ok(MetaResponse::Entry(_)) | Ok(MetaResponse::Done) => links += 1,
                Ok(other) => bail!("link answered {other:?}"),
                Err(e) => eprintln!("bob links alice's {name}: refused by the meta server: {e}"),
            }
        }
        if links == 4 {
            let (code, e) = refused("bob's upload of links to alice's files", register(&bob, "stolen", &linked).await)?;
            ensure!(code == Some(ErrorCode::PermissionDenied), "{code:?} {e}");
            ensure!(
                e.contains(&format!("is owned by uid {alice_uid}, but the upload {linked} by uid {bob_uid}")),
                "unclear error: {e}"
            );
            // Given back to bob as it was, alice's files not taken.
            let back = bob.fs().stat(&linked).await.context("bob's upload was not given back")?;
            ensure!(back.uid == bob_uid && back.perm & 0o7777 == 0o700, "{back:?}");
        } else {
            eprintln!("the meta server refused bob's hard links to alice's files ({links} of 4 made)");
        }
        let still = snapshot(alice.fs(), &format!("{public}/img")).await?;
        ensure!(
            still.1.iter().all(|(n, a)| a.uid == alice_uid && published.1[n].ino == a.ino && a.perm & 0o777 == 0o666),
            "alice's published files changed: {still:?}"
        );

        // Nothing was registered for bob, and alice's upload is untouched.
        let bobs: Vec<ImageInfo> = bob.images().await?;
        ensure!(bobs.is_empty(), "bob has images: {bobs:?}");
        let after = snapshot(alice.fs(), &upload).await?;
        ensure!(same(&before, &after), "alice's upload changed:\n{before:?}\n{after:?}");

        // Alice registers her own upload; bob registers his own image.
        let mine =
            register(&alice, "mine", &upload).await.map_err(|e| anyhow::anyhow!("alice's own upload: {}", e.1))?;
        ensure!(mine.owner == "alice" && mine.generations.len() == 1, "{mine:?}");
        ensure!(alice.fs().stat(&upload).await.is_err(), "alice's upload is still at {upload}");
        let his = bob.register_image("his", &image, false, None).await?;
        ensure!(his.owner == "bob" && his.generations.len() == 1, "{his:?}");
        Ok(())
    })
    .await
}
