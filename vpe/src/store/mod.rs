//! Images and templates in the renkei namespace.
//!
//! ```text
//! /vpe/                          root 0755, made by `vpe serve`
//! /vpe/images/NAME/              root; 0755 when shared, 0700 when private
//! /vpe/images/NAME/info.toml     owner, shared, tags, generations (vpe serve writes it)
//! /vpe/images/NAME/GEN/          kernel, initrd, disk, image.toml (sealed; root, 0444)
//! /vpe/upload/                   root, 1777: uploads in progress (`vpe image register`)
//! /vpe/staging/                  root, 0700: an upload while the manager checks it
//! /vpe/templates/NAME.toml       VM templates (vpe serve writes them)
//! ```
//!
//! Users upload an image's files into a directory of their own under
//! `/vpe/upload` (`USER.NONCE`; the manager takes only the caller's, see
//! `manager::images`); the manager checks them against the sealed manifest (the
//! namespace records every file's BLAKE3, so no bytes are read), moves the
//! directory to `/vpe/images/NAME/GEN` and makes it root's, so nobody can
//! change a registered generation. Agents read images with their host
//! certificates through [`NamespaceSource`], which the PoP's image cache
//! verifies byte by byte against the manifest whose id the manager gave.
//!
//! # Layout
//! - [`layout`]: the paths above.
//! - [`catalog`]: `info.toml` and the pure rules over it (visibility, generations, tags).
//! - [`source`]: [`NamespaceSource`], an [`crate::ImageSource`] over fs-client.
//! - [`transfer`]: putting an image directory into the namespace.

pub mod catalog;
pub mod layout;
pub mod source;
pub mod transfer;

pub use catalog::{ImageRecord, ImageRef};
pub use source::NamespaceSource;
